"""One episode: the agent and the environment take turns until the episode ends.

The error boundary lives here: an agent error becomes an observation (inside the env), an
infrastructure failure (sandbox, model endpoint, grader) is recorded on the trajectory with
its source and never counted as a wrong answer. An exception raised by the agent's own code
is the agent's failure (source ``agent``); any other exception (``RecursionError`` from a
sandbox cleanup, ``OSError``, a ``ValidationError``, ...) is an infrastructure error, of the
``sandbox`` when it was raised inside the sandbox package, else of the ``environment``.
Cancellation (Ctrl-C) is not caught: an interrupted episode is never stored, so a resumed
run starts it again.

Optional agent hooks, used when present (LLM and replay agents have them):

* ``consume_step_info() -> dict | None`` after each step: ``model_output`` and ``usage``
  for the step just taken;
* ``finish(observation, info)`` when the episode ends normally;
* ``episode_metadata() -> dict`` merged into ``Trajectory.metadata`` (also after errors).

A debugger with ``pop_usage()`` (``LLMDebugger``) adds its tokens to the step that asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from typing import Any, get_args

from medagentgym.agents.base import Agent
from medagentgym.env.env import AsyncMedAgentEnv
from medagentgym.errors import InfrastructureError, SandboxError
from medagentgym.rollout.sanitize import clean_text
from medagentgym.types import EpisodeError, ErrorSource, Task, Trajectory

CLOSE_TIMEOUT = 60.0  # seconds a sandbox may take to close before it is given up
_SOURCES: tuple[str, ...] = get_args(ErrorSource)


class EpisodeTimeout(InfrastructureError):
    """The episode ran past its wall-clock limit."""

    source = "environment"


async def run_episode(env: AsyncMedAgentEnv, agent: Agent, task: Task, *, sample_index: int = 0,
                      run_id: str = "", metadata: dict[str, Any] | None = None,
                      time_limit: float | None = None,
                      step_gate: asyncio.Semaphore | None = None,
                      restart: bool = True) -> Trajectory:
    """Run one episode and return its trajectory (never raises for a failed episode).

    ``time_limit`` bounds the whole episode in seconds; ``step_gate`` bounds steps that use
    the sandbox across concurrent episodes. After a sandbox or environment error (the time
    limit included) the env's sandbox is closed, so that the next ``areset`` starts a fresh
    one, unless ``restart`` is false (the runner closes, or discards, the env itself).
    """
    t0 = time.perf_counter()
    traj = Trajectory(run_id=run_id, task_id=task.id, dataset=task.dataset, category=task.category,
                      split=task.split, sample_index=sample_index, agent=agent.name,
                      model=agent.model, protocol=env.protocol, goal=task.goal,
                      metadata=dict(metadata or {}))
    if getattr(env.family, "score_kind", "binary") == "continuous":
        traj.metadata.setdefault("score_kind", "continuous")  # eval: mean score is a metric
    in_agent = False
    timer = asyncio.timeout(time_limit or None)
    try:
        async with timer:
            obs, info = await env.areset(task)
            traj.system_prompt = env.system_prompt
            in_agent = True
            await agent.begin(task, env.system_prompt, obs, env)
            terminated = truncated = False
            while not (terminated or truncated):
                in_agent = True
                action = await agent.act(obs, info)
                in_agent = False
                obs, reward, terminated, truncated, info = await _step(env, action, step_gate)
                _annotate_step(env, agent)
                traj.reward += reward
            finish = getattr(agent, "finish", None)
            if finish is not None:
                finish(obs, info)
            traj.terminated, traj.truncated = terminated, truncated
            traj.success = bool(info.get("success"))
    except TimeoutError as exc:
        if timer.expired():
            traj.error = EpisodeError(source="environment", type="EpisodeTimeout",
                                      message=f"episode exceeded its {time_limit:g} s limit")
        else:
            traj.error = _error(exc, in_agent)
    except SandboxError as exc:
        traj.error = EpisodeError(source="sandbox", type=type(exc).__name__,
                                  message=exception_text(exc))
    except Exception as exc:  # the boundary: one bad episode never stops the others
        traj.error = _error(exc, in_agent)
    if restart and traj.error is not None and traj.error.source in ("sandbox", "environment"):
        await _restart(env)  # the sandbox may be in any state: the next episode gets a fresh one
    meta = getattr(agent, "episode_metadata", None)
    if meta is not None:
        try:
            traj.metadata.update(meta())
            messages = traj.metadata.pop("messages", None)
            if isinstance(messages, list):
                traj.messages = messages
        except Exception as exc:  # metadata is a bonus; never lose the episode for it
            traj.metadata["metadata_error"] = f"{type(exc).__name__}: {exception_text(exc)}"
    traj.steps = list(env.history)
    traj.turns = len(traj.steps)
    traj.duration_s = time.perf_counter() - t0
    return traj


async def _step(env: AsyncMedAgentEnv, action: Any, gate: asyncio.Semaphore | None) -> Any:
    if gate is None or _is_model_action(action):
        return await env.astep(action)
    async with gate:
        return await env.astep(action)


def _is_model_action(action: Any) -> bool:
    """``debug`` waits on a model, not the sandbox: it does not take a sandbox slot."""
    if isinstance(action, dict):
        return action.get("action") == "debug"
    return isinstance(action, str) and '"debug"' in action[:200]


def _annotate_step(env: AsyncMedAgentEnv, agent: Agent) -> None:
    if not env.history:
        return
    record = env.history[-1]
    consume = getattr(agent, "consume_step_info", None)
    info = consume() if consume is not None else None
    if info:
        if info.get("model_output") is not None:
            record.model_output = info["model_output"]
        if info.get("usage"):
            record.usage = dict(info["usage"])
    pop = getattr(env.debugger, "pop_usage", None)
    extra = pop() if pop is not None else None
    if extra:
        record.usage = {**(record.usage or {}), **extra}


def _error(exc: BaseException, in_agent: bool) -> EpisodeError:
    """The record of ``exc``; never raises (a broken ``__str__``, a surrogate in the text)."""
    if isinstance(exc, InfrastructureError):
        source = getattr(exc, "source", "environment")
        source = source if source in _SOURCES else "environment"
        return EpisodeError(source=source, type=type(exc).__name__, message=exception_text(exc))
    source = "agent" if in_agent else _origin(exc)
    try:
        tb = traceback.format_exc(limit=5)
    except Exception:
        tb = ""
    return EpisodeError(source=source, type=type(exc).__name__,
                        message=clean_text(f"{exception_text(exc)}\n{tb}"[:4000]))


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, sanitised for storage; a placeholder when ``__str__`` itself fails."""
    try:
        return clean_text(str(exc), 4000)
    except Exception:
        return f"<{type(exc).__name__} without a printable message>"


def _origin(exc: BaseException) -> str:
    """``sandbox`` when the innermost frame of this package that raised ``exc`` belongs to
    the sandbox, else ``environment``."""
    source = "environment"
    with contextlib.suppress(Exception):
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            name = str(frame.f_globals.get("__name__", ""))
            if name.startswith("medagentgym."):
                source = "sandbox" if name.startswith("medagentgym.sandbox") else "environment"
    return source


async def _restart(env: AsyncMedAgentEnv) -> None:
    """Drop the env's sandbox; the next ``areset`` starts a fresh one. An env whose close
    fails keeps its sandbox: the runner then discards the whole env."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await env.aclose()
