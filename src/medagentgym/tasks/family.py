"""The task-family protocol: what every kind of task (SQL QA, calculators, FHIR, code, ML)
provides to the environment.

A family is *behaviour*, configured per dataset by its :class:`DatasetSpec` options; tasks
are *data* (:class:`medagentgym.types.Task`). The environment never branches on dataset
names: it asks the family for prompts, sandbox inputs, the request_info index and grades.

Grading is ``async grade(ctx)`` over a :class:`~medagentgym.tasks.contract.GradeContext`
(answer, execution with probe values, sandbox files, services, history). Families whose
verdict is a function of the ``answer`` value alone implement ``grade_value`` and keep the
default ``grade``. Optional hooks: ``probes`` (expressions evaluated after the agent's code in
its namespace), ``make_services`` (host services the sandbox reaches at localhost:PORT),
``setup`` / ``teardown`` (per episode) and ``actions`` (extra actions).
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

from medagentgym.types import ActionName, Grade, Task

if TYPE_CHECKING:
    from medagentgym.tasks.contract import ActionHandler, Episode, GradeContext, Service
    from medagentgym.tasks.registry import DatasetSpec


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

    def __init__(self, spec: DatasetSpec, **options: Any) -> None:
        self.spec = spec
        self.options = options

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
