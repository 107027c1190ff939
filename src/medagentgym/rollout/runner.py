"""Run many episodes concurrently: N tasks x K samples over a pool of environments.

Each worker coroutine owns one :class:`AsyncMedAgentEnv` (and so one warm sandbox) and
pulls (task, sample) pairs from a shared queue; finished trajectories are appended to the
store as they complete, so a crash loses at most the episodes in flight, and ``resume``
skips pairs already stored (an infrastructure failure does not count as stored: it runs
again).

Three separate bounds:

* ``concurrency`` — episodes in flight (= environments = sandbox processes);
* ``sandbox_concurrency`` — steps executing in sandboxes at once (CPU-bound; default: no
  bound beyond ``concurrency``);
* model calls in flight — the chat client's per-endpoint limit (``LLMConfig.concurrency``).

An episode that ends with an infrastructure error (model endpoint, sandbox, environment,
wall-clock limit) is re-run from scratch up to ``infra_retries`` times on a fresh sandbox —
safe, because an episode has no effect outside its own sandbox. Cancelling the run
(Ctrl-C) stops every episode in flight, closes the sandboxes and stores nothing partial.

One episode never stops the run: whatever it raises is recorded on its trajectory (see
:mod:`medagentgym.rollout.episode`), including a failure to make its env or agent, and after
an infrastructure error the env's sandbox is closed; an env whose close raises (or takes more
than ``CLOSE_TIMEOUT`` s) is discarded and the worker makes a new one. Trajectories are
written off the event loop, and the store never raises for one bad record. What still
stops a run: cancellation, a configuration error in making the first envs, and a store
that cannot write at all.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from medagentgym.agents.base import Agent
from medagentgym.env.env import AsyncMedAgentEnv
from medagentgym.rollout.episode import CLOSE_TIMEOUT, exception_text, run_episode
from medagentgym.rollout.store import TrajectoryStore
from medagentgym.types import EpisodeError, Task, Trajectory

log = logging.getLogger(__name__)

AgentFactory = Callable[[], Agent] | Callable[[int], Agent]
#: where episode slots get their next (task, sample) pair; ``None``: no more (see run_tasks_async)
PairSource = Callable[[], Awaitable[tuple[Task, int] | None]]


@dataclass(frozen=True)
class TemperatureSchedule:
    """Sampling temperature by sample index: the paper uses T=0 for sample 0, T=0.6 after.

    ``values`` gives explicit temperatures for the first samples; later samples use
    ``rest``.
    """

    first: float = 0.0
    rest: float = 0.6
    values: tuple[float, ...] = ()

    def __call__(self, sample_index: int) -> float:
        if sample_index < len(self.values):
            return self.values[sample_index]
        return self.first if sample_index == 0 and not self.values else self.rest

    @classmethod
    def parse(cls, text: str) -> TemperatureSchedule:
        """``"0.7"`` (every sample), ``"0,0.6"`` (first, rest) or ``"0,0.3,0.6,..."``
        (one per sample; the last repeats)."""
        parts = [float(p) for p in text.replace(" ", "").split(",") if p]
        if not parts:
            raise ValueError("empty temperature schedule")
        if len(parts) == 1:
            return cls(first=parts[0], rest=parts[0])
        if len(parts) == 2:
            return cls(first=parts[0], rest=parts[1])
        return cls(first=parts[0], rest=parts[-1], values=tuple(parts))


def takes_sample_index(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` accepts a positional argument (the sample index)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL):
            return True
    return False


def pending_pairs(tasks: Sequence[Task], samples: int, store: TrajectoryStore | None = None,
                  resume: bool = False) -> list[tuple[Task, int]]:
    """The (task, sample) pairs still to run."""
    done = store.done_keys() if (store is not None and resume) else set()
    return [(t, k) for t in tasks for k in range(samples) if (t.id, k) not in done]


async def run_tasks_async(
    dataset: str,
    tasks: Sequence[Task],
    agent_factory: AgentFactory,
    *,
    split: str = "test",
    samples: int = 1,
    concurrency: int = 2,
    store: TrajectoryStore | None = None,
    resume: bool = False,
    run_id: str = "",
    on_done: Callable[[Trajectory], None] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    sandbox_concurrency: int | None = None,
    episode_timeout: float | None = None,
    infra_retries: int = 0,
    retry_delay: float = 1.0,
    debugger_factory: Callable[[], Any] | None = None,
    sandbox_pool: Any = False,
    pair_source: PairSource | None = None,
) -> list[Trajectory]:
    """Run every (task, sample) pair not yet stored; returns the new trajectories.

    ``agent_factory`` is called once per episode, with the sample index when it takes an
    argument (for temperature schedules and per-sample seeds). ``debugger_factory`` gives
    each environment its own ``debug`` model (so debugger tokens land on the right episode).
    ``sandbox_pool`` (True, or a :class:`medagentgym.sandbox.pool.SandboxPools`): episodes
    share a few warm bwrap workers (one per CPU) instead of one sandbox process tree each.
    ``pair_source`` (the Ray backend's work stealing): instead of the pending pairs of
    ``tasks``, each of the ``concurrency`` episode slots awaits ``pair_source()`` for its next
    (task, sample) and stops at ``None``; ``store``/``resume`` then filter nothing.
    """
    own_pool = None
    if sandbox_pool is True:
        from medagentgym.sandbox.pool import SandboxPools

        sandbox_pool = own_pool = SandboxPools()
    try:
        return await _run_tasks(dataset, tasks, agent_factory, split=split, samples=samples,
                                concurrency=concurrency, store=store, resume=resume,
                                run_id=run_id, on_done=on_done, env_kwargs=env_kwargs,
                                sandbox_concurrency=sandbox_concurrency,
                                episode_timeout=episode_timeout, infra_retries=infra_retries,
                                retry_delay=retry_delay, debugger_factory=debugger_factory,
                                sandbox_pool=sandbox_pool or None, pair_source=pair_source)
    finally:
        if own_pool is not None:
            await own_pool.close()


async def _run_tasks(
    dataset: str,
    tasks: Sequence[Task],
    agent_factory: AgentFactory,
    *,
    split: str,
    samples: int,
    concurrency: int,
    store: TrajectoryStore | None,
    resume: bool,
    run_id: str,
    on_done: Callable[[Trajectory], None] | None,
    env_kwargs: dict[str, Any] | None,
    sandbox_concurrency: int | None,
    episode_timeout: float | None,
    infra_retries: int,
    retry_delay: float,
    debugger_factory: Callable[[], Any] | None,
    sandbox_pool: Any,
    pair_source: PairSource | None = None,
) -> list[Trajectory]:
    queue: asyncio.Queue[tuple[Task, int]] = asyncio.Queue()
    if pair_source is None:
        for pair in pending_pairs(tasks, samples, store, resume):
            queue.put_nowait(pair)

        async def next_pair() -> tuple[Task, int] | None:
            try:
                return queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
    else:
        next_pair = pair_source
    results: list[Trajectory] = []
    n_workers = max(1, concurrency if pair_source else min(concurrency, queue.qsize()))
    gate = asyncio.Semaphore(sandbox_concurrency) if sandbox_concurrency else None
    with_index = takes_sample_index(agent_factory)
    jitter = random.Random()

    def make_agent(k: int) -> Agent:
        return agent_factory(k) if with_index else agent_factory()  # type: ignore[call-arg]

    def make_env() -> AsyncMedAgentEnv:
        kwargs = dict(env_kwargs or {})
        if sandbox_pool is not None:
            kwargs.setdefault("sandbox_pool", sandbox_pool)
        if debugger_factory is not None:
            kwargs["debugger"] = debugger_factory()
        return AsyncMedAgentEnv(dataset, split, tasks=tasks, **kwargs)

    async def finish(traj: Trajectory) -> None:
        if store is not None:
            await asyncio.to_thread(store.append, traj)  # fsync: not on the event loop
        results.append(traj)
        if on_done is not None:
            try:
                on_done(traj)
            except Exception as exc:  # a progress callback never stops the run
                log.warning("on_done failed for %s: %s", traj.key, exception_text(exc))

    async def worker() -> None:
        env: AsyncMedAgentEnv | None = make_env()  # a configuration error stops the run here

        async def attempt(task: Task, k: int) -> Trajectory:
            nonlocal env
            try:
                if env is None:
                    env = make_env()
                return await run_episode(env, make_agent(k), task, sample_index=k,
                                         run_id=run_id, time_limit=episode_timeout,
                                         step_gate=gate, restart=False)
            except Exception as exc:  # the env or agent factory (run_episode never raises)
                return failed_episode(task, k, exc, run_id=run_id)

        try:
            while True:
                pair = await next_pair()
                if pair is None:
                    return
                task, k = pair
                failures: list[dict[str, Any]] = []
                while True:
                    traj = await attempt(task, k)
                    if traj.error is None or traj.error.source == "agent":
                        break
                    env, dropped = await recycle(env)  # a fresh sandbox for what comes next
                    if dropped:
                        traj.metadata["env_discarded"] = dropped
                    if len(failures) >= infra_retries:
                        break
                    failures.append(traj.error.model_dump())
                    delay = retry_delay * 2 ** (len(failures) - 1)
                    await asyncio.sleep(delay * (0.5 + jitter.random() / 2))
                if failures:
                    traj.metadata["infra_failures"] = failures
                await finish(traj)
        finally:
            await recycle(env)

    workers = [asyncio.ensure_future(worker()) for _ in range(n_workers)]
    try:
        await asyncio.gather(*workers)
    except BaseException:  # cancelled (Ctrl-C) or a worker failed: stop the others cleanly
        await stop(workers)
        raise
    return results


async def stop(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait for them. One already being cancelled (``gather`` returns
    at the first cancelled task, while others still close their sandboxes) is not cancelled
    again: that would interrupt its cleanup."""
    for t in tasks:
        if not t.done() and not (isinstance(t, asyncio.Task) and t.cancelling()):
            t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def recycle(env: AsyncMedAgentEnv | None) -> tuple[AsyncMedAgentEnv | None, str | None]:
    """Close ``env``'s sandbox (the next episode starts a fresh one). An env whose close
    raises or hangs is discarded: returns ``(None, why)``, and the caller makes a new one."""
    if env is None:
        return None, None
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await env.aclose()
    except Exception as exc:  # RecursionError from a deep tree, OSError, a hung close, ...
        why = f"{type(exc).__name__}: {exception_text(exc)}"
        log.warning("discarding an environment whose close failed: %s", why)
        return None, why
    return env, None


def failed_episode(task: Task, k: int, exc: BaseException, *, run_id: str = "") -> Trajectory:
    """The record of an episode that could not even start (its env or agent could not be
    made): an infrastructure error of the environment, run again by ``--resume``."""
    return Trajectory(run_id=run_id, task_id=task.id, dataset=task.dataset,
                      category=task.category, split=task.split, sample_index=k, goal=task.goal,
                      error=EpisodeError(source="environment", type=type(exc).__name__,
                                         message=exception_text(exc)))


def run_tasks(dataset: str, tasks: Sequence[Task], agent_factory: AgentFactory,
              **kwargs: Any) -> list[Trajectory]:
    """Blocking wrapper over :func:`run_tasks_async` (runs on the sandbox portal loop)."""
    from medagentgym.sandbox import run_sync

    return run_sync(run_tasks_async(dataset, tasks, agent_factory, **kwargs))


def summarize(trajs: Sequence[Trajectory]) -> dict[str, Any]:
    """Success counts by dataset, infrastructure failures reported apart."""
    out: dict[str, Any] = {}
    for t in trajs:
        d = out.setdefault(t.dataset, {"episodes": 0, "success": 0, "infra_errors": 0,
                                       "turns": 0, "duration_s": 0.0})
        d["episodes"] += 1
        d["turns"] += t.turns
        d["duration_s"] += t.duration_s
        if t.error is not None and t.error.source != "agent":
            d["infra_errors"] += 1
        elif t.success:
            d["success"] += 1
    for d in out.values():
        graded = d["episodes"] - d["infra_errors"]
        d["success_rate"] = d["success"] / graded if graded else 0.0
        d["mean_turns"] = d["turns"] / d["episodes"] if d["episodes"] else 0.0
    return out
