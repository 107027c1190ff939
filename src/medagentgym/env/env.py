"""``MedAgentEnv``: a Gymnasium environment with the paper's actions.

Observations and actions are text. ``reset`` returns the task's goal (the user turn) and puts
the system prompt in ``info["system_prompt"]``; ``step`` takes the paper's JSON action (a
string, as a model writes it, or a dict) and returns the environment's answer.

Protocols:

* ``paper`` (default, as published): every ``validate_code`` run whose code sets ``answer``
  is graded, the verdict is shown, and the episode ends at the first correct answer.
* ``submit``: ``validate_code`` only runs code; the agent ends the episode with ``submit``,
  graded once — the honest protocol for evaluation and RL without a correctness oracle.

Multi-stage tasks (EHR-SeqSQL) show their sub-questions one after another; each stage is
graded on its own and the reward is the fraction of stages solved.

The episode logic lives in :class:`AsyncMedAgentEnv` (``await env.areset()``,
``await env.astep()``), which the rollout runner drives; :class:`MedAgentEnv` is the
synchronous Gymnasium face over it.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import gymnasium as gym
from gymnasium import spaces

from medagentgym.env.actions import CustomAction, parse_action
from medagentgym.env.prompts import STYLES as PROMPT_STYLES
from medagentgym.env.prompts import system_prompt
from medagentgym.errors import AgentError, ConfigurationError, GraderError
from medagentgym.sandbox import create_sandbox
from medagentgym.sandbox.base import ExecResult, WorkerSandbox, resolve_preload
from medagentgym.tasks.contract import Episode, GradeContext, SandboxView, Service
from medagentgym.tasks.registry import get_family, get_spec
from medagentgym.types import Grade, StepRecord, Task

PROTOCOLS = ("paper", "submit")
MAX_TEXT = 1_000_000
FEEDBACK_CHARS = 4000  # output an agent sees of one execution (validate_code, terminal)

Debugger = Callable[[str, str], str | Awaitable[str]]


class TextSpace(spaces.Text):
    """Any string up to ``max_length`` characters (Gymnasium's Text limits the charset)."""

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length


class AsyncMedAgentEnv:
    """The episode logic, asynchronous. One episode at a time; one sandbox per env."""

    def __init__(
        self,
        dataset: str,
        split: str = "test",
        *,
        protocol: str = "paper",
        max_turns: int = 15,
        sandbox: str | None = "auto",
        debugger: Debugger | None = None,
        tasks: Sequence[Task] | None = None,
        code_timeout: float = 120.0,
        terminal_timeout: float = 60.0,
        show_verdict: bool = True,
        prompt_style: str = "paper",
        sandbox_pool: Any = None,
        **family_options: Any,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ConfigurationError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
        if prompt_style not in PROMPT_STYLES:
            raise ConfigurationError(f"unknown prompt style {prompt_style!r}; choose one of "
                                     f"{', '.join(PROMPT_STYLES)}")
        self.prompt_style = prompt_style
        self.spec = get_spec(dataset)
        self.family = get_family(self.spec.name, **family_options)
        self.split = split
        self.protocol = protocol
        self.max_turns = max_turns
        self.sandbox_provider = sandbox
        # a medagentgym.sandbox.pool.SandboxPools: episodes share warm bwrap workers
        # (families with services keep a dedicated sandbox)
        self.sandbox_pool = sandbox_pool
        self.debugger = debugger
        self.code_timeout = code_timeout
        self.terminal_timeout = terminal_timeout
        self.show_verdict = show_verdict
        self._tasks = list(tasks) if tasks is not None else None
        self._by_id: dict[str, Task] | None = None
        self._sandbox: WorkerSandbox | None = None
        self._sandbox_inputs: dict[str, str] | None = None
        self.task: Task | None = None
        self.system_prompt = ""
        self.turn = 0
        self.stage = 0
        self.stage_goals: list[str] = []
        self.stage_solved: list[bool] = []
        self.stage_best: list[float] = []
        self.done = True
        self.history: list[StepRecord] = []
        self._services: dict[str, Service] | None = None
        self._episode: Episode | None = None
        self._extra_actions = self.family.actions()
        self._handlers = {"request_info": self._request_info, "validate_code": self._validate_code,
                          "submit": self._submit, "debug": self._debug,
                          "terminal": self._terminal}

    # -- tasks --------------------------------------------------------------------------
    @property
    def tasks(self) -> list[Task]:
        if self._tasks is None:
            self._tasks = self.family.load_tasks(self.split)
            if not self._tasks:
                raise ConfigurationError(f"dataset {self.spec.name!r} split {self.split!r} has no tasks")
        return self._tasks

    def get_task(self, task_id: str) -> Task:
        if self._by_id is None:
            self._by_id = {t.id: t for t in self.tasks}
        try:
            return self._by_id[task_id]
        except KeyError:
            raise ConfigurationError(f"no task {task_id!r} in {self.spec.name}/{self.split}") from None

    @property
    def allowed_actions(self) -> tuple[str, ...]:
        assert self.task is not None
        actions: tuple[str, ...] = tuple(a for a in self.task.allowed_actions if a != "submit")
        actions += tuple(a for a in self._extra_actions if a not in actions)
        if self.protocol == "submit":
            actions += ("submit",)
        return actions

    # -- episode ------------------------------------------------------------------------
    async def areset(self, task: Task) -> tuple[str, dict[str, Any]]:
        if not task.has_truth:
            raise ConfigurationError(f"task {task.id} was loaded without its ground truth")
        await self._end_episode()
        self.task = task
        self.turn = 0
        self.stage = 0
        self.stage_goals = self.family.stages(task)
        self.stage_solved = [False] * len(self.stage_goals)
        self.stage_best = [0.0] * len(self.stage_goals)
        self.done = False
        self.history = []
        await self._prepare_sandbox(task)
        services = self._services or {}
        for svc in services.values():
            await svc.reset()
        assert self._sandbox is not None
        self._episode = Episode(task=task, sandbox=self._sandbox, services=services)
        await self.family.setup(self._episode)
        described = {name: _describe(name, handler)
                     for name, handler in self._extra_actions.items()}
        self.system_prompt = task_system_prompt(
            self.family, task, self.allowed_actions, self.protocol, self.max_turns,
            style=self.prompt_style, described=described)
        obs = self._goal_text(0)
        return obs, self._info(system_prompt=self.system_prompt)

    def _goal_text(self, stage: int) -> str:
        goal = self.stage_goals[stage]
        if len(self.stage_goals) > 1:
            return f"Question {stage + 1} of {len(self.stage_goals)}: {goal}"
        return goal

    async def _end_episode(self) -> None:
        """The family's teardown for the episode that ran last, once."""
        episode, self._episode = self._episode, None
        if episode is not None:
            await self.family.teardown(episode)

    async def _start_services(self) -> dict[int, Any]:
        """The family's services, made and started once per env: port -> unix socket."""
        if self._services is None:
            services = self.family.make_services()
            ports: dict[int, str] = {}
            for name, svc in services.items():
                if svc.port in ports:
                    raise ConfigurationError(f"{self.spec.name}: services {ports[svc.port]!r} "
                                             f"and {name!r} both want port {svc.port}")
                ports[svc.port] = name
            self._services = {}
            for name, svc in services.items():
                await svc.start()
                self._services[name] = svc
        return {svc.port: svc.socket_path for svc in self._services.values()}

    async def _prepare_sandbox(self, task: Task) -> None:
        inputs = dict(task.inputs)
        if self._sandbox is not None and inputs != self._sandbox_inputs:
            await self._sandbox.close()
            self._sandbox = None
        if self._sandbox is None:
            services = await self._start_services()
            pooled = None
            if self.sandbox_pool is not None and not services:
                # None: every pool is busy with other input sets (tasks that each bring
                # their own files); this episode gets a sandbox of its own
                take = getattr(self.sandbox_pool, "try_episode", None) or self.sandbox_pool.episode
                pooled = take(inputs, preload=self.family.preload)
            if pooled is not None:
                self._sandbox = pooled
            else:
                self._sandbox = create_sandbox(self.sandbox_provider, inputs,
                                               preload=self.family.preload, services=services)
            self._sandbox_inputs = inputs
            await self._sandbox.start()
        else:
            await self._sandbox.reset()

    async def astep(self, action: str | dict[str, Any]) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.task is None or self.done:
            raise RuntimeError("call reset() before step() (the episode is over or not started)")
        t0 = time.perf_counter()
        self.turn += 1
        raw = action if isinstance(action, str) else None
        record: dict[str, Any] = {"turn": self.turn, "raw_action": raw}
        reward = 0.0
        grade: Grade | None = None
        exec_status: str | None = None
        try:
            parsed = parse_action(action, self._extra_actions)
            record["action"] = parsed.model_dump()
            if parsed.action not in self.allowed_actions:
                raise AgentError(f"Action {parsed.action!r} is not available for this task. "
                                 f"Use one of: {', '.join(self.allowed_actions)}.")
            obs, grade, exec_status = await self._dispatch(parsed)
        except AgentError as exc:
            obs = f"Error: {exc}"
            record["parse_error"] = str(exc)
        terminated = False
        submitted = record.get("action", {}).get("action") == "submit"
        if grade is not None:
            # the reward is the gain in the stage's best score: an episode's rewards add up to
            # the mean over stages of the best score reached (1 per solved binary stage)
            best = max(self.stage_best[self.stage], grade.score)
            reward = (best - self.stage_best[self.stage]) / len(self.stage_goals)
            self.stage_best[self.stage] = best
        if grade is not None and grade.correct:
            self.stage_solved[self.stage] = True
        if grade is not None and (grade.correct or submitted):
            # paper protocol: a stage ends when solved; submit protocol: when submitted
            if self.stage + 1 < len(self.stage_goals):
                self.stage += 1
                lead = "Correct." if self.protocol == "paper" else "Submitted."
                obs += f"\n\n{lead} Next question.\n{self._goal_text(self.stage)}"
            else:
                terminated = True
        truncated = not terminated and self.turn >= self.max_turns
        self.done = terminated or truncated
        self.history.append(StepRecord(
            **record, observation=obs, reward=reward, grade=grade, exec_status=exec_status,
            duration_s=time.perf_counter() - t0))
        info = self._info(grade=grade.model_dump(exclude={"detail"}) if grade else None,
                          exec_status=exec_status,
                          action=record.get("action", {}).get("action"),
                          parse_error=record.get("parse_error"))
        return obs, reward, terminated, truncated, info

    def _info(self, **extra: Any) -> dict[str, Any]:
        assert self.task is not None
        return {
            "task_id": self.task.id,
            "dataset": self.task.dataset,
            "category": self.task.category,
            "turn": self.turn,
            "stage": self.stage,
            "stages": len(self.stage_goals),
            "success": all(self.stage_solved),
            "allowed_actions": list(self.allowed_actions),
            **extra,
        }

    # -- actions ------------------------------------------------------------------------
    async def _dispatch(self, act: Any) -> tuple[str, Grade | None, str | None]:
        if isinstance(act, CustomAction):
            assert self._episode is not None
            text, grade = await self._extra_actions[act.action](self._episode, act.params)
            return text, grade, None
        handler = self._handlers.get(act.action)
        if handler is None:
            raise AgentError(f"unsupported action {act.action!r}")
        return await handler(act)

    async def _request_info(self, act: Any) -> tuple[str, Grade | None, str | None]:
        index = self.family.info_index(self.task)
        if index is None:
            return "request_info is not supported for this dataset.", None, None
        return index.answer(act.info_type, act.data_path, act.keyterm), None, None

    async def _validate_code(self, act: Any) -> tuple[str, Grade | None, str | None]:
        grading = self.protocol == "paper"
        result = await self._execute(act.code, probes=grading)
        grade = None
        text = result.feedback(FEEDBACK_CHARS) or "(no output)"
        if grading and (result.has_answer or not self.family.needs_answer):
            grade = await self._grade(result=result)
            if self.show_verdict and not grade.correct:
                text += f"\n\n[answer checked: not correct — {grade.reason}]"
        elif result.answer_error:
            text += f"\n\n[answer could not be read: {result.answer_error}]"
        elif result.status == "ok" and not result.has_answer:
            text += "\n\n[no `answer` variable was set]"
        return text, grade, result.status

    async def _submit(self, act: Any) -> tuple[str, Grade | None, str | None]:
        if act.code is not None:
            result = await self._execute(act.code, probes=True)
            text = result.feedback(FEEDBACK_CHARS)
            if not result.has_answer and self.family.needs_answer:
                return (text + "\n\n[submitted code set no `answer`]",
                        Grade(correct=False, score=0.0, reason="no answer"), result.status)
            grade = await self._grade(result=result, submitted=True)
            status: str | None = result.status
        else:
            text, status = "", None
            grade = await self._grade(answer=act.answer, has_answer=True, submitted=True)
        return (text + "\n\nAnswer submitted.").strip(), grade, status

    async def _debug(self, act: Any) -> tuple[str, Grade | None, str | None]:
        if self.debugger is None:
            return ("debug is not configured in this environment (no debugger model); "
                    "read the error message and fix the code yourself."), None, None
        text = self.debugger(act.code, act.error_msg)
        if inspect.isawaitable(text):  # an async debugger (e.g. an LLM behind an endpoint)
            text = await text
        return text, None, None

    async def _terminal(self, act: Any) -> tuple[str, Grade | None, str | None]:
        assert self._sandbox is not None
        r = await self._sandbox.run(["/bin/sh", "-c", act.cmd], timeout=self.terminal_timeout)
        return _terminal_text(r), None, r.status

    async def _grade(self, *, result: ExecResult | None = None, answer: Any = None,
                     has_answer: bool = False, submitted: bool = False) -> Grade:
        """The verdict on what the agent did. Graders never raise on agent input (a bad value is
        graded wrong), so an exception here is a grader bug on our side: a GraderError."""
        assert self.task is not None
        if result is not None:
            answer, has_answer = result.answer, result.has_answer
        ctx = GradeContext(task=self.task, stage=self.stage, answer=answer,
                           has_answer=has_answer, result=result,
                           sandbox=SandboxView(self._sandbox), services=self._services or {},
                           history=tuple(self.history), protocol=self.protocol,
                           submitted=submitted)
        try:
            grade = await self.family.grade(ctx)
        except Exception as exc:
            raise GraderError(f"{self.spec.name} grader failed on task {self.task.id}: "
                              f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(grade, Grade):
            raise GraderError(f"{self.spec.name} grader returned {type(grade).__name__}, not a Grade")
        return grade

    async def _execute(self, code: str, *, probes: bool = False) -> ExecResult:
        assert self._sandbox is not None and self.task is not None
        exprs = self.family.probes(self.task, self.stage) if probes else None
        return await self._sandbox.execute(code, timeout=self.code_timeout, probes=exprs)

    async def aclose(self) -> None:
        try:
            await self._end_episode()
        finally:
            if self._sandbox is not None:
                await self._sandbox.close()
                self._sandbox = None
            services, self._services = self._services or {}, None
            for svc in services.values():
                await svc.stop()


def _describe(name: str, handler: Any) -> str:
    """A family action's entry in the system prompt: its handler's docstring."""
    doc = inspect.getdoc(handler) or "(no description)"
    return f"- {name}: {doc}"


def _terminal_text(r: ExecResult) -> str:
    """What ``terminal`` shows: the output, trimmed as ``validate_code``'s, and the exit status."""
    output = ExecResult(status="ok", stdout=r.stdout, stderr=r.stderr)
    text = output.feedback(FEEDBACK_CHARS) or "(no output)"
    if r.status != "ok":
        error = f": {r.error[:500]}" if r.error else ""
        text += f"\n[exit status {r.exit_code}; {r.status}{error}]"
    return text


def task_system_prompt(family: Any, task: Task, actions: Sequence[str], protocol: str,
                       max_turns: int, *, style: str = "paper",
                       described: dict[str, str] | None = None) -> str:
    """The system prompt an episode of ``task`` starts with (the one place it is built: the
    environment and the RL export both call it)."""
    return system_prompt(family.instructions(task), actions, protocol, max_turns, described,
                         style=style, preload=resolve_preload(family.preload),
                         needs_answer=family.needs_answer,
                         example_code=family.example_code(task))


class MedAgentEnv(gym.Env[str, str]):
    """Gymnasium environment over one dataset split. See the module docstring."""

    metadata = {"render_modes": ["ansi"]}  # noqa: RUF012

    def __init__(self, dataset: str, split: str = "test", *, render_mode: str | None = None,
                 **kwargs: Any) -> None:
        self.core = AsyncMedAgentEnv(dataset, split, **kwargs)
        self.render_mode = render_mode
        self.observation_space = TextSpace(MAX_TEXT)
        self.action_space = TextSpace(MAX_TEXT)
        self._last_obs = ""

    @property
    def tasks(self) -> list[Task]:
        return self.core.tasks

    @property
    def task(self) -> Task | None:
        return self.core.task

    @property
    def system_prompt(self) -> str:
        return self.core.system_prompt

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode: ``options={"task_id": ...}`` or ``{"task_index": i}``, else a
        task drawn with the env's seeded generator."""
        super().reset(seed=seed)
        options = options or {}
        if "task_id" in options:
            task = self.core.get_task(options["task_id"])
        elif "task_index" in options:
            task = self.core.tasks[int(options["task_index"]) % len(self.core.tasks)]
        else:
            task = self.core.tasks[int(self.np_random.integers(len(self.core.tasks)))]
        from medagentgym.sandbox import run_sync

        obs, info = run_sync(self.core.areset(task))
        self._last_obs = obs
        return obs, info

    def step(self, action: str | dict[str, Any]) -> tuple[str, float, bool, bool, dict[str, Any]]:
        from medagentgym.sandbox import run_sync

        obs, reward, terminated, truncated, info = run_sync(self.core.astep(action))
        self._last_obs = obs
        return obs, reward, terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self._last_obs
        return None

    def close(self) -> None:
        from medagentgym.sandbox import run_sync

        run_sync(self.core.aclose())
        super().close()
