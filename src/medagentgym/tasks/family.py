"""The task-family protocol: what every kind of task (SQL QA, calculators, FHIR, code, ML)
provides to the environment, and the dataset spec that configures it.

A family is *behaviour*, configured per dataset by its :class:`DatasetSpec` and its typed
options (:class:`FamilyOptions`); tasks are *data* (:class:`medagentgym.types.Task`). The
environment never branches on dataset names: it asks the family for prompts, sandbox inputs,
the request_info index and grades.

Grading is ``async grade(ctx)`` over a :class:`~medagentgym.tasks.contract.GradeContext`
(answer, execution with probe values, sandbox files, services, history). Families whose
verdict is a function of the ``answer`` value alone implement ``grade_value`` and keep the
default ``grade``. Optional hooks: ``probes`` (expressions evaluated after the agent's code in
its namespace), ``make_services`` (host services the sandbox reaches at localhost:PORT),
``setup`` / ``teardown`` (per episode) and ``actions`` (extra actions).

Families that build their tasks from data derive from
:class:`medagentgym.tasks.base.DatasetFamily`, which owns options, splits, sources and the
task cache, so that such a family implements only ``build_records``, prompting and grading.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from medagentgym.errors import ConfigurationError
from medagentgym.types import ActionName, Grade, Task

if TYPE_CHECKING:
    from typing import Self

    from medagentgym.tasks.contract import ActionHandler, Episode, GradeContext, Service


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its family (``"module:Class"``, imported lazily) and what
    configures it. ``options`` are the dataset's identity (a caller cannot override them);
    ``databases`` are the ids of the :class:`~medagentgym.data.databases.DatabaseSpec` it runs
    on; ``sources`` the open sources (``medagentgym data pull NAME``) its tasks come from."""

    name: str
    family: str  # "module:Class"
    description: str
    scenario: str
    version: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    in_distribution: bool = True
    licence: str = ""
    splits: tuple[str, ...] = ("train", "test")
    sources: tuple[str, ...] = ()
    databases: tuple[str, ...] = ()

    @property
    def env_id(self) -> str:
        return f"medagentgym/{self.name}-v{self.version}"


# --------------------------------------------------------------------------- options

#: who may set an option: ``client`` (anyone, also a remote client of the server), ``host``
#: (the process that runs the family: paths and other host matters) or ``identity`` (fixed by
#: the dataset's spec)
Scope = Literal["client", "host", "identity"]


def option(default: Any, description: str = "", *, scope: Scope = "client",
           client_le: float | None = None, **constraints: Any) -> Any:
    """A family option (a pydantic ``Field``) with who may set it. ``client_le`` is a tighter
    upper bound for remote clients (the server's resource policy)."""
    extra: dict[str, Any] = {"scope": scope}
    if client_le is not None:
        extra["client_le"] = client_le
    return Field(default, description=description, json_schema_extra=extra, **constraints)


class FamilyOptions(BaseModel):
    """A family's options: typed, bounded, nothing else accepted. Subclass it per family and
    declare fields with :func:`option`; the server's per-dataset allow-list is derived from
    it (:meth:`client_model`), so it is the one source of truth."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def parse(cls, dataset: str, options: Mapping[str, Any]) -> Self:
        """Validated options; a one-line ConfigurationError naming the bad option(s) and
        listing the valid ones."""
        try:
            return cls.model_validate(dict(options))
        except ValidationError as exc:
            problems = []
            for err in exc.errors(include_url=False):
                name = ".".join(str(p) for p in err["loc"]) or "options"
                if err["type"] == "extra_forbidden":
                    problems.append(f"unknown option {name!r}")
                else:
                    problems.append(f"{name}: {err['msg']}")
            valid = ", ".join(n for n in cls.model_fields if cls.scope(n) != "identity")
            text = "; ".join(problems).replace("\n", " ")
            raise ConfigurationError(f"{dataset}: {text} (options: {valid or 'none'})") from None

    @classmethod
    def scope(cls, name: str) -> Scope:
        extra = cls.model_fields[name].json_schema_extra
        return extra.get("scope", "client") if isinstance(extra, dict) else "client"  # type: ignore[return-value]

    @classmethod
    def names(cls, scope: Scope | None = None) -> list[str]:
        return [n for n in cls.model_fields if scope is None or cls.scope(n) == scope]

    @classmethod
    def client_model(cls, base: type[BaseModel], *, fixed: Iterable[str] = (),
                     name: str | None = None) -> type[BaseModel]:
        """``base`` plus the options a remote client may set (``None``: the family's
        default), with the client bounds; ``fixed``: options the dataset's spec sets."""
        fixed = set(fixed)
        fields: dict[str, Any] = {}
        for key, info in cls.model_fields.items():
            if cls.scope(key) != "client" or key in fixed:
                continue
            meta = list(info.metadata)
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if extra.get("client_le") is not None:
                meta.append(annotated_types.Le(extra["client_le"]))
            typ = Annotated[(info.annotation, *meta)] if meta else info.annotation  # type: ignore[valid-type]
            fields[key] = (typ | None, Field(None, description=info.description))
        return create_model(name or f"{cls.__name__}ForClients", __base__=base, **fields)


# --------------------------------------------------------------------------- the protocol


class TaskFamily(abc.ABC):
    """Behaviour shared by the datasets of one kind of task."""

    #: the paper's action set for this family (the env adds ``submit`` in the submit protocol)
    allowed_actions: tuple[ActionName, ...] = ("validate_code", "debug", "terminal")
    #: modules the sandbox's warm worker preloads ("core", "science" or a list)
    preload: str | tuple[str, ...] = "core"
    #: whether a verdict needs the agent's ``answer`` (False: graded from probes, files or
    #: service state on every ``validate_code`` in the paper protocol)
    needs_answer: bool = True
    #: "binary" (score 0 or 1) or "continuous" (a metric in [0, 1]; ``correct`` = threshold met)
    score_kind: str = "binary"
    #: the family's typed options (``extra="forbid"``); a family without options keeps this
    Options: ClassVar[type[FamilyOptions]] = FamilyOptions

    def __init__(self, spec: DatasetSpec, **options: Any) -> None:
        self.spec = spec
        self.options = self.Options.parse(spec.name, options)

    @property
    def name(self) -> str:
        return self.spec.name

    # -- tasks --------------------------------------------------------------------------
    @abc.abstractmethod
    def load_tasks(self, split: str) -> list[Task]:
        """The split's tasks, each with its ground truth attached (host-side)."""

    # -- prompting ----------------------------------------------------------------------
    @abc.abstractmethod
    def instructions(self, task: Task) -> str:
        """The task-specific part of the system prompt (data layout, answer contract)."""

    def example_code(self, task: Task) -> str | None:
        """The code of the worked example turn shown in the system prompt: it must show the
        format (imports, printing, the answer contract) and never this task's answer.
        None: no example."""
        if self.needs_answer:
            return ("import pandas as pd\n"
                    "df = pd.DataFrame({'heart_rate': [72, 88, 95]})\n"
                    "print(df.describe())\n"
                    "answer = float(df['heart_rate'].mean())")
        return ("import pandas as pd\n"
                "df = pd.DataFrame({'heart_rate': [72, 88, 95]})\n"
                "print(df.describe())")

    def stages(self, task: Task) -> list[str]:
        """Goals shown one after another in an episode (one for most families)."""
        return [task.goal]

    # -- grading ------------------------------------------------------------------------
    async def grade(self, ctx: GradeContext) -> Grade:
        """The verdict for one graded moment of an episode. Never raises on agent input:
        whatever the agent left is graded (wrong, with a reason), not excused."""
        if not ctx.has_answer:
            return Grade.wrong("no `answer` was set")
        return self.grade_value(ctx.task, ctx.answer, stage=ctx.stage)

    def grade_value(self, task: Task, answer: Any, *, stage: int = 0) -> Grade:
        """Grade the value of the agent's ``answer`` for ``stage`` of ``task`` (families whose
        verdict depends on the value alone)."""
        raise NotImplementedError(f"{self.name}: implement grade_value or grade")

    def probes(self, task: Task, stage: int = 0) -> dict[str, str] | None:
        """Python expressions evaluated after the agent's code, in its namespace, whose JSON
        values the grader compares (``ctx.probes``). None: no probes."""
        return None

    # -- episodes -------------------------------------------------------------------------
    def make_services(self) -> dict[str, Service]:
        """Host services (by name) the sandbox reaches at ``localhost:service.port``; made
        once per environment, started before its sandbox, reset before every episode."""
        return {}

    async def setup(self, episode: Episode) -> None:
        """Before an episode's first step (services are already reset): stage files, seed
        state."""
        return None

    async def teardown(self, episode: Episode) -> None:
        """After an episode (before the next one starts, or when the env closes)."""
        return None

    def actions(self) -> dict[str, ActionHandler]:
        """Extra actions: name -> async handler(episode, params) -> (observation, grade)."""
        return {}

    # -- tools --------------------------------------------------------------------------
    def info_index(self, task: Task) -> Any | None:
        """The request_info index for the task's data (``None``: request_info unsupported)."""
        return None

    def oracle_code(self, task: Task, *, stage: int = 0) -> str:
        """Reference code that stores the correct answer in ``answer`` (for ``validate``)."""
        solution = task.truth.solution
        if isinstance(solution, list):
            return solution[stage]
        if solution is None:
            raise NotImplementedError(f"{self.name}: task {task.id} has no reference solution")
        return solution
