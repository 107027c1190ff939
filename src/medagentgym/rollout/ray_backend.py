"""The Ray backend: shard (task, sample) pairs over Ray workers, merge into one store.

The driver (the process that runs ``medagentgym rollout --backend ray``) computes the pairs
still to run, deals them round-robin into one shard per worker and starts one Ray task per
shard. Each worker runs the ordinary async runner (:func:`run_tasks_async`) on its shard,
with its own environments, sandboxes and chat clients, and streams every finished trajectory
back as soon as it ends (a Ray streaming generator). Only the driver writes the store, one
flushed line per episode, so the store format, ``--resume`` and the report are the same as
with the local backend.

No episode is lost or duplicated: the driver accepts each (task, sample) of a shard once; if
a worker dies (node lost, OOM kill), the pairs it had not returned go to a new shard, up to
``shard_retries`` times; pairs still unfinished after that are stored as infrastructure
errors (source ``environment``, type ``WorkerLost``), which ``--resume`` runs again.

Secrets: the API key is resolved on the driver and travels to the workers inside the task's
arguments (wrapped in :class:`Secret`, whose ``repr`` hides it); it is never written to the
store or ``run.json`` and never put into a worker's environment (so never into a sandbox).

Ray is optional: ``pip install 'medagentgym[ray]'``. ``address=None`` starts a local Ray
instance with one CPU slot per core (and shuts it down after), unless Ray is already
initialized in this process; ``address="auto"`` or ``"ray://host:10001"`` joins a cluster,
whose workers need the package and a data home (``$MEDAGENTGYM_HOME``) with the dataset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from medagentgym.errors import ConfigurationError
from medagentgym.rollout.episode import exception_text
from medagentgym.rollout.runner import (
    AgentFactory,
    TemperatureSchedule,
    pending_pairs,
    stop,
)
from medagentgym.rollout.store import TrajectoryStore, record_line
from medagentgym.types import EpisodeError, Task, Trajectory

RAY_HINT = "the Ray backend needs Ray: pip install 'medagentgym[ray]'"

log = logging.getLogger(__name__)


def import_ray() -> Any:
    """``import ray``, or a one-line :class:`ConfigurationError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigurationError(RAY_HINT) from None
    return ray


class Secret:
    """A string that does not show itself in ``repr``/``str`` (logs, Ray's task listings)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (self._value,))


Factories = tuple[AgentFactory, Callable[[], Any] | None]


@dataclass
class StaticAgents:
    """Picklable agent (and optional debugger) factories, e.g. ``StaticAgents(OracleAgent)``."""

    agent_factory: AgentFactory
    debugger_factory: Callable[[], Any] | None = None

    def for_workers(self, n: int) -> StaticAgents:
        return self

    async def open(self) -> Factories:
        return self.agent_factory, self.debugger_factory

    async def close(self) -> dict[str, Any]:
        return {}


@dataclass
class LLMAgents:
    """What a worker needs to build LLM agents: endpoint settings (no secret), the key,
    the agent settings and the temperature schedule. :meth:`open` makes the chat clients
    (in the worker's own event loop); :meth:`close` closes them and returns their stats."""

    model: Any  # LLMConfig
    debugger: Any = None  # LLMConfig | None: the `debug` action's model (None: off)
    settings: Any = None  # AgentSettings | None
    schedule: TemperatureSchedule = field(default_factory=TemperatureSchedule)
    seed: int | None = None
    api_key: Secret | None = None
    debugger_api_key: Secret | None = None
    _clients: list[Any] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def resolve(cls, model: Any, debugger: Any = None, **kw: Any) -> LLMAgents:
        """Read the keys here (the driver), so that workers need no credentials of their own."""
        from medagentgym.llm.config import resolve_api_key

        key = resolve_api_key(model)
        dkey = resolve_api_key(debugger) if debugger is not None else None
        return cls(model=model, debugger=debugger, api_key=Secret(key) if key else None,
                   debugger_api_key=Secret(dkey) if dkey else None, **kw)

    def for_workers(self, n: int) -> LLMAgents:
        """Split the per-endpoint request limit between ``n`` worker processes."""
        def share(cfg: Any) -> Any:
            if cfg is None:
                return None
            return cfg.model_copy(update={"concurrency": max(1, math.ceil(cfg.concurrency / n))})
        return replace(self, model=share(self.model), debugger=share(self.debugger), _clients=[])

    async def open(self) -> Factories:
        from medagentgym.agents.llm_agent import LLMAgent, LLMDebugger
        from medagentgym.llm.client import ChatClient

        def key(s: Secret | None) -> str | None:
            return s.reveal() if s is not None else None

        client = ChatClient(self.model, api_key=key(self.api_key))
        self._clients = [client]
        debug_client = None
        if self.debugger is not None:
            if self.debugger.model_dump() == self.model.model_dump():
                debug_client = client
            else:
                debug_client = ChatClient(self.debugger, api_key=key(self.debugger_api_key))
                self._clients.append(debug_client)
        schedule, seed, settings = self.schedule, self.seed, self.settings

        def agent_factory(k: int) -> Any:
            return LLMAgent(client, temperature=schedule(k),
                            seed=None if seed is None else int(seed) + k, settings=settings)

        dfactory = (lambda: LLMDebugger(debug_client)) if debug_client is not None else None
        return agent_factory, dfactory

    @property
    def clients(self) -> list[Any]:
        return list(self._clients)

    async def close(self) -> dict[str, Any]:
        stats = {name: c.stats.model_dump() for name, c in zip(("model", "debugger"),
                                                               self._clients, strict=False)}
        for c in self._clients:
            with contextlib.suppress(Exception):
                await c.aclose()
        return stats


class _ShardFilter:
    """Duck-types the store for :func:`run_tasks_async`: everything outside the shard counts
    as done (so the runner runs exactly the shard), and appends go to a callback."""

    def __init__(self, keys: set[tuple[str, int]], sink: Callable[[Trajectory], None]) -> None:
        self.keys = keys
        self.sink = sink

    def done_keys(self) -> _Complement:
        return _Complement(self.keys)

    def append(self, traj: Trajectory) -> None:
        self.sink(traj)


class _Complement:
    def __init__(self, keys: set[tuple[str, int]]) -> None:
        self.keys = keys

    def __contains__(self, key: object) -> bool:
        return key not in self.keys


def run_shard(dataset: str, split: str, tasks: list[Task], keys: list[tuple[str, int]],
              agents: Any, run_id: str, runner_kwargs: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """One worker's shard (the body of the Ray task): yields ``("traj", json)`` per finished
    episode, then ``("stats", dict)`` or ``("error", text)``. Runs the async runner on its
    own event loop in a thread so that episodes finish while earlier ones are yielded."""
    from medagentgym.rollout.runner import run_tasks_async

    out: queue.Queue[tuple[str, Any] | None] = queue.Queue()
    samples = 1 + max(k for _, k in keys)
    sink = _ShardFilter(set(keys), lambda t: out.put(("traj", record_line(t).decode("utf-8"))))

    async def main() -> None:
        agent_factory, debugger_factory = await agents.open()
        stats: dict[str, Any] = {}
        try:
            await run_tasks_async(dataset, tasks, agent_factory, split=split, samples=samples,
                                  store=sink, resume=True, run_id=run_id,  # type: ignore[arg-type]
                                  debugger_factory=debugger_factory, **runner_kwargs)
        finally:
            stats = await agents.close()
        out.put(("stats", {"pid": os.getpid(), **stats}))

    def body() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            out.put(("error", f"{type(exc).__name__}: {exception_text(exc)}"))
        finally:
            out.put(None)

    thread = threading.Thread(target=body, name="mag-ray-shard", daemon=True)
    thread.start()
    while (item := out.get()) is not None:
        yield item
    thread.join()


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, initialized: the running instance if this process has one, else a cluster at
    ``address``, else a fresh local instance (shut down on exit)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 2
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ConfigurationError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


class ShardFailed(Exception):
    """A worker reported an error or died before finishing its shard."""


async def run_tasks_ray_async(
    dataset: str,
    tasks: Sequence[Task],
    agents: Any,
    *,
    split: str = "test",
    samples: int = 1,
    concurrency: int = 8,
    store: TrajectoryStore | None = None,
    resume: bool = False,
    run_id: str = "",
    on_done: Callable[[Trajectory], None] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    sandbox_concurrency: int | None = None,
    episode_timeout: float | None = None,
    infra_retries: int = 0,
    retry_delay: float = 1.0,
    workers: int | None = None,
    shard_retries: int = 1,
    stats: dict[str, Any] | None = None,
) -> list[Trajectory]:
    """Like :func:`run_tasks_async`, over Ray workers (Ray must be initialized, see
    :func:`ray_session`). ``agents`` is :class:`StaticAgents`, :class:`LLMAgents` or a
    picklable agent factory. ``concurrency`` and ``sandbox_concurrency`` are totals, split
    between the ``workers`` (default: the cluster's CPU slots). Worker-side client stats
    are collected into ``stats`` (``{"workers": [...], "lost": n}``) when given."""
    ray = import_ray()
    if not hasattr(agents, "open"):
        agents = StaticAgents(agents)
    pairs = pending_pairs(tasks, samples, store, resume)
    stats = stats if stats is not None else {}
    stats.setdefault("workers", [])
    stats.setdefault("lost", 0)
    if not pairs:
        return []
    n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    n = max(1, min(n, len(pairs)))
    shards = [pairs[i::n] for i in range(n)]
    per_worker = {
        "concurrency": max(1, math.ceil(concurrency / n)),
        "env_kwargs": dict(env_kwargs or {}),
        "sandbox_concurrency": sandbox_concurrency and max(1, math.ceil(sandbox_concurrency / n)),
        "episode_timeout": episode_timeout, "infra_retries": infra_retries,
        "retry_delay": retry_delay,
    }
    worker_agents = agents.for_workers(n)
    remote = ray.remote(num_cpus=1, max_retries=0)(run_shard)
    by_id = {t.id: t for t in tasks}
    results: list[Trajectory] = []
    accepted: set[tuple[str, int]] = set()

    async def accept(traj: Trajectory) -> None:
        accepted.add(traj.key)
        if store is not None:
            await asyncio.to_thread(store.append, traj)  # fsync: not on the event loop
        results.append(traj)
        if on_done is not None:
            try:
                on_done(traj)
            except Exception as exc:  # a progress callback never stops the run
                log.warning("on_done failed for %s: %s", traj.key, exception_text(exc))

    async def run(shard: list[tuple[Task, int]], attempt: int) -> None:
        keys = [(t.id, k) for t, k in shard]
        wanted = set(keys)
        shard_tasks = list({t.id: t for t, _ in shard}.values())
        gen = remote.options(num_returns="streaming").remote(
            dataset, split, shard_tasks, keys, worker_agents, run_id, per_worker)
        try:
            async for ref in gen:
                kind, payload = await ref
                if kind == "traj":
                    try:
                        traj = Trajectory.model_validate_json(payload)
                    except Exception as exc:  # its pair stays open: run again below
                        log.warning("unreadable trajectory from a Ray worker: %r", exc)
                        continue
                    if traj.key in wanted and traj.key not in accepted:
                        await accept(traj)
                elif kind == "stats":
                    stats["workers"].append(payload)
                elif kind == "error":
                    raise ShardFailed(payload)
            missing = len(wanted - accepted)
            if missing:
                raise ShardFailed(f"the worker finished without {missing} of its episodes")
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                ray.cancel(gen, force=True)
            raise
        except Exception as exc:
            left = [(t, k) for t, k in shard if (t.id, k) not in accepted]
            if not left:
                return
            if attempt < shard_retries:
                await run(left, attempt + 1)
                return
            message = (f"Ray worker lost after {attempt + 1} attempt(s): "
                       f"{type(exc).__name__}: {exception_text(exc)}")
            for t, k in left:
                stats["lost"] += 1
                await accept(_lost(by_id[t.id], k, run_id, message[:4000]))

    jobs = [asyncio.ensure_future(run(shard, 0)) for shard in shards]
    try:
        await asyncio.gather(*jobs)
    except BaseException:
        await stop(jobs)
        raise
    return results


def _lost(task: Task, k: int, run_id: str, message: str) -> Trajectory:
    return Trajectory(run_id=run_id, task_id=task.id, dataset=task.dataset,
                      category=task.category, split=task.split, sample_index=k, goal=task.goal,
                      error=EpisodeError(source="environment", type="WorkerLost", message=message),
                      metadata={"backend": "ray", "lost_at": time.time()})


def run_tasks_ray(dataset: str, tasks: Sequence[Task], agents: Any, *, address: str | None = None,
                  num_cpus: int | None = None, **kwargs: Any) -> list[Trajectory]:
    """Blocking: start or join Ray (:func:`ray_session`) and run :func:`run_tasks_ray_async`."""
    with ray_session(address, num_cpus):
        return asyncio.run(run_tasks_ray_async(dataset, tasks, agents, **kwargs))
