"""inspect_ai: ``inspect eval medagentgym/<dataset>`` and the ``medagentgym`` sandbox.

Installed with the ``inspect`` extra, the package registers itself with inspect through the
``inspect_ai`` entry point, so every registered dataset is a task::

    inspect eval medagentgym/treqs -T database=synthetic -T limit=20 --model openai/gpt-4o

or from Python::

    from inspect_ai import eval
    eval("medagentgym/treqs", model="openai/gpt-4o", task_args={"database": "synthetic"})

Each sample is one of our tasks (``id`` = the task id, ``input`` = its question; the gold
answer is never in the sample: it stays on the host). Its sandbox is a
:class:`MedAgentGymSandbox` holding a real env on that task (our sandbox, the task's data
mounted read-only); the default solver is inspect's ``react`` agent with our actions as
tools (``validate_code``, ``request_info``, ``terminal``, ``submit``), and
:func:`medagentgym_scorer` returns the episode's reward from our grader — or, when the agent
never submitted (another solver), grades its final message as the submitted answer.

``sandbox="medagentgym"`` also works for inspect's own tasks and agents (``bash()``,
``python()``): without a task it is a bare sandbox of ours (namespaces, no network, no
host files) that runs their commands.
"""

from __future__ import annotations

import shlex
import uuid
from typing import Any, Literal

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.scorer import Score, Target, accuracy, mean, scorer, stderr
from inspect_ai.solver import Generate, Solver, TaskState, solver
from inspect_ai.tool import Tool, tool
from inspect_ai.util import (
    ExecResult,
    SandboxEnvironment,
    SandboxEnvironmentConfigType,
    sandbox,
    sandboxenv,
)
from pydantic import BaseModel, ConfigDict, Field

from medagentgym.integrations.tools import ToolEpisode
from medagentgym.sandbox.base import SANDBOX_WORKDIR

SANDBOX_NAME = "medagentgym"
DEFAULT_EXEC_TIMEOUT = 600.0
#: how much of a file ``read_file`` returns at most (inspect's own default cap is 100 MiB)
MAX_READ_BYTES = 64 * 1024**2


class MedAgentGymSandboxConfig(BaseModel):
    """What a sample's sandbox holds: an env of ``dataset``/``split`` (or a bare sandbox when
    ``dataset`` is None), with the env's options and the family's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str | None = None
    split: str = "test"
    protocol: Literal["paper", "submit"] = "submit"
    max_turns: int = Field(15, ge=1, le=1000)
    provider: str | None = Field(None, description="our sandbox provider (None: the default)")
    options: tuple[tuple[str, Any], ...] = ()


# -------------------------------------------------------------------------------- sandbox


@sandboxenv(name=SANDBOX_NAME)
class MedAgentGymSandbox(SandboxEnvironment):
    """inspect's sandbox interface over one of our sandboxes (and, for our tasks, the env
    whose sandbox it is: ``episode``)."""

    def __init__(self, inner: Any, episode: ToolEpisode | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.episode = episode

    # -- lifecycle -----------------------------------------------------------------------
    @classmethod
    def config_deserialize(cls, config: dict[str, Any]) -> BaseModel:
        return MedAgentGymSandboxConfig(**config)

    @classmethod
    async def sample_init(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                          metadata: dict[str, str]) -> dict[str, SandboxEnvironment]:
        cfg = config if isinstance(config, MedAgentGymSandboxConfig) else \
            MedAgentGymSandboxConfig()
        if cfg.dataset is None:
            from medagentgym.sandbox import create_sandbox

            inner = create_sandbox(cfg.provider or "auto")
            await inner.start()
            return {"default": cls(inner)}
        episode = ToolEpisode(cfg.dataset, cfg.split, protocol=cfg.protocol,
                              max_turns=cfg.max_turns, sandbox=cfg.provider or "auto",
                              tasks=_tasks(cfg), **dict(cfg.options))
        try:
            await episode.start(task_id=metadata.get("task_id"))
        except BaseException:
            await episode.aclose()
            raise
        return {"default": cls(episode.env._sandbox, episode)}

    @classmethod
    async def sample_cleanup(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                             environments: dict[str, SandboxEnvironment],
                             interrupted: bool) -> None:
        for env in environments.values():
            if isinstance(env, MedAgentGymSandbox):
                if env.episode is not None:
                    await env.episode.aclose()
                else:
                    await env.inner.close()

    # -- commands and files --------------------------------------------------------------
    def _base(self) -> str:
        return str(self.inner.workdir) if self.inner.host_workdir else SANDBOX_WORKDIR

    def _path(self, file: str) -> str:
        return file if file.startswith("/") else f"{self._base()}/{file}"

    async def exec(self, cmd: list[str], input: str | bytes | None = None,
                   cwd: str | None = None, env: dict[str, str] | None = None,
                   user: str | None = None, timeout: int | None = None,
                   timeout_retry: bool = True, concurrency: bool = True) -> ExecResult[str]:
        if user not in (None, ""):
            from inspect_ai.util import SandboxUserUnsupportedError

            raise SandboxUserUnsupportedError(
                f"the {SANDBOX_NAME} sandbox runs every command as its own unprivileged "
                f"user; user={user!r} is not supported")
        if not cmd:
            raise ValueError("exec needs a command")
        argv = [str(a) for a in cmd]
        if env:
            argv = ["/usr/bin/env", *(f"{k}={v}" for k, v in env.items()), *argv]
        script = 'cd -- "$0" || exit 126; '
        if input is not None:
            where = self._base() if self.inner.host_workdir else "/tmp"
            stdin = f"{where}/.inspect-stdin-{uuid.uuid4().hex}"
            data = input.encode() if isinstance(input, str) else bytes(input)
            await self.inner.write_file(stdin, data)
            quoted = shlex.quote(stdin)
            script += f'"$@" < {quoted}; s=$?; rm -f {quoted}; exit $s'
        else:
            script += 'exec "$@" < /dev/null'
        workdir = self._path(cwd) if cwd else self._base()
        result = await self.inner.run(["/bin/sh", "-c", script, workdir, *argv],
                                      timeout=float(timeout or DEFAULT_EXEC_TIMEOUT))
        if result.status == "timeout":
            raise TimeoutError(f"command timed out after {timeout or DEFAULT_EXEC_TIMEOUT} s")
        code = result.exit_code if result.exit_code is not None else (
            0 if result.status == "ok" else 1)
        stderr_text = result.stderr
        if result.status not in ("ok", "error") and result.error:
            stderr_text = (stderr_text + f"\n[{result.status}: {result.error}]").lstrip()
        return ExecResult(success=code == 0 and result.status == "ok", returncode=code,
                          stdout=result.stdout, stderr=stderr_text)

    async def write_file(self, file: str, contents: str | bytes) -> None:
        from medagentgym.sandbox.base import SandboxFileError

        data = contents.encode() if isinstance(contents, str) else bytes(contents)
        try:
            await self.inner.write_file(self._path(file), data)
        except SandboxFileError as exc:
            raise PermissionError(str(exc)) from None

    async def read_file(self, file: str, text: bool = True) -> str | bytes:  # type: ignore[override]
        from medagentgym.sandbox.base import SandboxFileError

        try:
            data = await self.inner.read_file(self._path(file), max_bytes=MAX_READ_BYTES)
        except SandboxFileError as exc:
            message = str(exc)
            if "larger than" in message:
                from inspect_ai.util import OutputLimitExceededError

                raise OutputLimitExceededError(limit_str=f"{MAX_READ_BYTES} bytes",
                                               truncated_output=None) from None
            raise FileNotFoundError(message) from None
        return data.decode("utf-8", errors="replace") if text else data


_TASK_CACHE: dict[MedAgentGymSandboxConfig, list[Any]] = {}


def _tasks(cfg: MedAgentGymSandboxConfig) -> list[Any]:
    """The split's tasks (with their truth, host-side), loaded once per configuration."""
    key = cfg.model_copy(update={"protocol": "submit", "max_turns": 1, "provider": None})
    if key not in _TASK_CACHE:
        from medagentgym.tasks.registry import load_tasks

        assert cfg.dataset is not None
        _TASK_CACHE[key] = load_tasks(cfg.dataset, cfg.split, **dict(cfg.options))
    return _TASK_CACHE[key]


def _episode() -> ToolEpisode:
    env = sandbox().as_type(MedAgentGymSandbox)
    if env.episode is None:
        raise RuntimeError(f"this sample's {SANDBOX_NAME} sandbox holds no MedAgentGym task "
                           "(a task from medagentgym_task() sets one up)")
    return env.episode


# ---------------------------------------------------------------------------------- tools


@tool
def validate_code() -> Tool:
    async def execute(code: str) -> str:
        """Run Python code in the sandbox and return its output.

        Args:
            code: Python source; set the variable `answer` to the result.

        Returns:
            The output of the run.
        """
        return await _episode().call("validate_code", {"code": code})

    return execute


@tool
def request_info() -> Tool:
    async def execute(info_type: str, keyterm: str = "", data_path: str = "") -> str:
        """Look up column names, column values or a term in the task's data.

        Args:
            info_type: one of "column_names", "column_values", "term".
            keyterm: the table, column or term to look up.
            data_path: the data file or table the question is about (optional).

        Returns:
            What the data holds for the request.
        """
        return await _episode().call("request_info", {"info_type": info_type,
                                                      "keyterm": keyterm,
                                                      "data_path": data_path})

    return execute


@tool
def terminal() -> Tool:
    async def execute(cmd: str) -> str:
        """Run a shell command in the sandbox.

        Args:
            cmd: the command line.

        Returns:
            The command's output and exit status.
        """
        return await _episode().call("terminal", {"cmd": cmd})

    return execute


@tool
def submit() -> Tool:
    async def execute(code: str = "", answer: str = "") -> str:
        """Submit the final answer; the task ends and the answer is graded.

        Args:
            code: Python code that sets the variable `answer` (preferred).
            answer: the answer itself, when no code is given.

        Returns:
            A confirmation.
        """
        params = {"code": code} if code else {"answer": answer}
        return await _episode().call("submit", params)

    return execute


def medagentgym_tools() -> list[Tool]:
    return [validate_code(), request_info(), terminal(), submit()]


@solver
def medagentgym_prompt() -> Solver:
    """Put the task's system prompt (instructions for tool use) before the question."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        from inspect_ai.model import ChatMessageSystem

        state.messages.insert(0, ChatMessageSystem(content=_episode().system_prompt()))
        return state

    return solve


@scorer(metrics=[accuracy(), mean(), stderr()])
def medagentgym_scorer() -> Any:
    """The episode's reward from our grader. An episode the agent did not end (a solver
    without our ``submit``) is graded now, its final message being the submitted answer."""

    async def score(state: TaskState, target: Target) -> Score:
        episode = _episode()
        explanation = "graded in the episode"
        if not episode.done:
            answer = state.output.completion.strip() if state.output else ""
            await episode.call("submit", {"answer": answer[:100_000]})
            explanation = "the final message graded as the submitted answer"
        grade = (episode.info or {}).get("grade") or {}
        return Score(value=float(episode.reward),
                     explanation=f"{explanation}: {grade.get('reason', '')}".strip(": "),
                     metadata={"success": bool(episode.info.get("success")),
                               "tool_calls": episode.calls})

    return score


# ---------------------------------------------------------------------------------- tasks


def medagentgym_task(dataset: str, split: str = "test", *, protocol: str = "submit",
                     max_turns: int = 15, provider: str | None = None,
                     limit: int | None = None, task_ids: str | list[str] | None = None,
                     solver: Any = None, **options: Any) -> Task:
    """An inspect ``Task`` over ``dataset``/``split`` (``options``: the family's, e.g.
    ``database="synthetic"``). ``task_ids``: only these (a list or comma-separated);
    ``solver``: instead of ``react`` with our tools."""
    from inspect_ai.agent import as_solver, react

    from medagentgym.tasks.registry import get_spec

    spec = get_spec(dataset)
    cfg = MedAgentGymSandboxConfig(dataset=spec.name, split=split, protocol=protocol,  # type: ignore[arg-type]
                                   max_turns=max_turns, provider=provider,
                                   options=tuple(sorted(options.items())))
    tasks = _tasks(cfg)
    if isinstance(task_ids, str):
        task_ids = [t.strip() for t in task_ids.split(",") if t.strip()]
    if task_ids:
        wanted = set(task_ids)
        tasks = [t for t in tasks if t.id in wanted]
        missing = wanted - {t.id for t in tasks}
        if missing:
            from medagentgym.errors import ConfigurationError

            raise ConfigurationError(f"no task {sorted(missing)[0]!r} in {spec.name}/{split}")
    samples = [Sample(id=t.id, input=t.goal, metadata={"task_id": t.id,
                                                       "category": t.category})
               for t in tasks[:limit]]
    if solver is None:
        agent = react(prompt=None, tools=medagentgym_tools(), submit=False)
        solver = [medagentgym_prompt(), as_solver(agent)]
    return Task(dataset=MemoryDataset(samples, name=f"medagentgym/{spec.name}"),
                solver=solver, scorer=medagentgym_scorer(),
                sandbox=(SANDBOX_NAME, cfg), message_limit=4 * max_turns + 4,
                name=spec.name)


def _task_function(name: str) -> Any:
    def make(split: str = "test", protocol: str = "submit", max_turns: int = 15,
             provider: str | None = None, limit: int | None = None,
             task_ids: str | None = None, **options: Any) -> Task:
        return medagentgym_task(name, split, protocol=protocol, max_turns=max_turns,
                                provider=provider, limit=limit, task_ids=task_ids, **options)

    make.__name__ = make.__qualname__ = name
    make.__doc__ = f"MedAgentGym {name}: our actions as tools, our grader as the scorer."
    return make


def _register_tasks() -> None:
    """One inspect task per registered dataset, named ``medagentgym/<dataset>``."""
    from medagentgym.tasks.registry import list_datasets

    for name in list_datasets():
        globals()[name] = task(name=name)(_task_function(name))


_register_tasks()
