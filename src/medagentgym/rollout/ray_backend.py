"""The Ray backend: Ray workers pull (task, sample) pairs from the driver, one store.

The driver (the process that runs ``medagentgym rollout --backend ray``) computes the pairs
still to run and puts them in a :class:`WorkQueue`, a small async Ray actor on the driver's
node. Each Ray worker runs the ordinary async runner (:func:`run_tasks_async`) with its own
environments and chat clients, and its episode slots *lease* pairs from that queue as they
free up, a few at a time (the slots waiting together ask together): work stealing, so a fast
worker or node takes more and a slow one holds only what it is running. Every finished
trajectory streams back at once (a Ray streaming generator). Only the driver writes the
store, one flushed line per episode, so the store format, ``--resume`` and the report are the
same as with the local backend.

No episode is lost or duplicated: the driver accepts each (task, sample) once. When a worker
ends (finished, failed, killed, its node lost), the pairs it had leased and not delivered go
back to the queue, each at most ``shard_retries`` times, and the workers still running take
them (when none is left, the driver starts a fresh one). A pair out of retries, or one no
worker delivered, is stored as an infrastructure error (source ``environment``, type
``WorkerLost``), which ``--resume`` runs again. A lease queue that is empty while pairs are
still out keeps the other workers waiting, so a lost node's pairs are re-run by the
surviving nodes before they exit.

Pooled workers (``sandbox_pool=True``): each worker process serves all its episodes from one
:class:`~medagentgym.sandbox.pool.SandboxPools` (a warm bwrap worker per CPU slot of its
node) where bwrap works; families with services keep dedicated sandboxes. Then one Ray worker
per node is right: the pool already uses the node's cores, and a second worker would only
start a second set of warm sandboxes competing for the same cores. Each such worker's episode
slots are a share of ``concurrency`` proportional to its node's CPU slots. Without pooling
(every episode its own sandbox process tree), one worker per CPU slot spreads those trees'
Python and event-loop work over the cores.

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
import collections
import contextlib
import itertools
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
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


class _Sink:
    """Duck-types the store for :func:`run_tasks_async` (which only appends when it is given
    a pair source): each finished episode goes to a callback."""

    def __init__(self, sink: Callable[[Trajectory], None]) -> None:
        self.sink = sink

    def append(self, traj: Trajectory) -> None:
        self.sink(traj)


Lease = Callable[[int], Awaitable[list[tuple[Task, int]] | None]]


def _stream(dataset: str, split: str, tasks: list[Task], lease: Callable[[], Lease], agents: Any,
            run_id: str, runner_kwargs: dict[str, Any], pool: dict[str, Any] | None = None,
            tag: Callable[[tuple[str, int]], Any] | None = None) -> Iterator[tuple[str, Any]]:
    """A worker's body: the async runner with ``concurrency`` episode slots that get their
    pairs from ``lease()(n)`` (a batch of up to ``n`` pairs, ``None`` when the work is over);
    yields ``("traj", json)`` per finished episode, then ``("stats", dict)`` or
    ``("error", text)``. The runner runs on its own event loop in a thread so that episodes
    finish while earlier ones are yielded. ``pool`` (``{"workers": n}``): every episode of
    this process shares one :class:`~medagentgym.sandbox.pool.SandboxPools`. ``tag``: each
    ``"traj"`` payload is ``(tag(key), json)`` instead (the driver learns which pair came back
    even if it cannot read the record)."""
    from medagentgym.rollout.runner import run_tasks_async

    out: queue.Queue[tuple[str, Any] | None] = queue.Queue()
    episodes = 0

    def emit(traj: Trajectory) -> None:
        nonlocal episodes
        episodes += 1
        line = record_line(traj).decode("utf-8")
        out.put(("traj", line if tag is None else (tag(traj.key), line)))

    async def main() -> None:
        take = lease()
        buffer: collections.deque[tuple[Task, int]] = collections.deque()
        lock = asyncio.Lock()
        waiting = 0
        over = False

        async def next_pair() -> tuple[Task, int] | None:
            # the slots that wait together ask together: one lease of as many pairs
            nonlocal waiting, over
            waiting += 1
            try:
                async with lock:
                    if not buffer and not over:
                        got = await take(waiting)
                        if got is None:
                            over = True
                        else:
                            buffer.extend(got)
                    return buffer.popleft() if buffer else None
            finally:
                waiting -= 1

        pools, pooled, why = None, False, "not asked"
        if pool is not None:
            pooled, why = _can_pool(runner_kwargs.get("env_kwargs") or {})
            if pooled:
                from medagentgym.sandbox.pool import SandboxPools

                pools = SandboxPools(workers=pool.get("workers"))
        agent_factory, debugger_factory = await agents.open()
        stats: dict[str, Any] = {}
        try:
            await run_tasks_async(dataset, tasks, agent_factory, split=split, run_id=run_id,
                                  store=_Sink(emit),  # type: ignore[arg-type]
                                  debugger_factory=debugger_factory, pair_source=next_pair,
                                  sandbox_pool=pools or False, **runner_kwargs)
        finally:
            stats = await agents.close()
            if pools is not None:
                stats["pools"] = [len(p.workers) for p in pools.pools]
                await pools.close()
        out.put(("stats", {"pid": os.getpid(), "node": _node_id(), "episodes": episodes,
                           "sandbox_pool": pooled if pool is not None else None,
                           **({} if pooled or pool is None else {"pool_refused": why}),
                           **stats}))

    def body() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            out.put(("error", f"{type(exc).__name__}: {exception_text(exc)}"))
        finally:
            out.put(None)

    thread = threading.Thread(target=body, name="mag-ray-worker", daemon=True)
    thread.start()
    while (item := out.get()) is not None:
        yield item
    thread.join()


def _can_pool(env_kwargs: dict[str, Any]) -> tuple[bool, str]:
    """Whether this process can pool its episodes' sandboxes: bwrap works here and the run
    did not choose another provider."""
    provider = env_kwargs.get("sandbox_provider")
    if provider not in (None, "auto", "bwrap"):
        return False, f"sandbox provider {provider!r} is not bwrap"
    from medagentgym.sandbox import _probe_bwrap

    ok, reason = _probe_bwrap()
    return ok, reason


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:
        return None


def run_shard(dataset: str, split: str, tasks: list[Task], keys: list[tuple[str, int]],
              agents: Any, run_id: str, runner_kwargs: dict[str, Any],
              pool: dict[str, Any] | None = None) -> Iterator[tuple[str, Any]]:
    """A worker's body on a fixed list of (task id, sample) ``keys`` (no Ray needed): what
    :func:`run_worker` does with pairs leased from the driver's queue."""
    by_id = {t.id: t for t in tasks}
    todo = collections.deque((by_id[tid], k) for tid, k in keys)

    def lease() -> Lease:
        async def take(n: int) -> list[tuple[Task, int]] | None:
            got = [todo.popleft() for _ in range(min(n, len(todo)))]
            return got or None
        return take

    yield from _stream(dataset, split, tasks, lease, agents, run_id, runner_kwargs, pool)


def run_worker(wid: str, dataset: str, split: str, work: tuple[list[Task], list[tuple[int, int]]],
               pairs_queue: Any, agents: Any, run_id: str, runner_kwargs: dict[str, Any],
               pool: dict[str, Any] | None = None) -> Iterator[tuple[str, Any]]:
    """One Ray worker (the body of a Ray task, a streaming generator): pulls pair indices
    from the driver's :class:`WorkQueue` as its episode slots free up, and streams every
    finished trajectory back."""
    tasks, pairs = work
    index = {(tasks[t].id, k): i for i, (t, k) in enumerate(pairs)}

    def lease() -> Lease:
        async def take(n: int) -> list[tuple[Task, int]] | None:
            got = await pairs_queue.lease.remote(wid, n)
            return None if got is None else [(tasks[pairs[i][0]], pairs[i][1]) for i in got]
        return take

    yield from _stream(dataset, split, tasks, lease, agents, run_id, runner_kwargs, pool,
                       tag=index.get)


class WorkQueue:
    """The driver's queue of pair indices, served to workers as a small async Ray actor
    (pinned to the driver's node): workers :meth:`lease` a few at a time, the driver marks
    them :meth:`done` as it stores them and :meth:`release` s what a finished or lost worker
    still held (back into the queue, each pair at most ``retries`` times)."""

    def __init__(self, retries: int) -> None:
        self.retries = retries
        self.queue: collections.deque[int] = collections.deque()
        self.leases: dict[str, set[int]] = {}
        self.served: collections.Counter[str] = collections.Counter()
        self.attempts: collections.Counter[int] = collections.Counter()
        self.closed = False
        self.gone: set[str] = set()  # released workers: a late lease of theirs gets nothing
        self.changed = asyncio.Condition()

    async def put(self, items: list[int]) -> None:
        async with self.changed:
            self.queue.extend(items)
            self.changed.notify_all()

    async def lease(self, wid: str, n: int) -> list[int] | None:
        """Up to ``n`` pairs for worker ``wid``; waits while the queue is empty but pairs
        are still out (a lost worker's come back); ``None`` once everything is done."""
        async with self.changed:
            while True:
                if self.closed or wid in self.gone:
                    return None
                if self.queue:
                    got = [self.queue.popleft() for _ in range(min(max(1, n), len(self.queue)))]
                    self.leases.setdefault(wid, set()).update(got)
                    self.served[wid] += len(got)
                    return got
                if not any(self.leases.values()):
                    self.changed.notify_all()
                    return None
                await self.changed.wait()

    async def done(self, wid: str, items: list[int]) -> None:
        async with self.changed:
            self.leases.get(wid, set()).difference_update(items)
            self.changed.notify_all()

    async def release(self, wid: str, accepted: list[int]) -> tuple[int, list[int]]:
        """Worker ``wid`` is gone: what it held and the driver did not store goes back to
        the queue; returns (how many went back, the pairs out of retries)."""
        async with self.changed:
            self.gone.add(wid)
            held = self.leases.pop(wid, set()) - set(accepted)
            back, gave_up = [], []
            for i in sorted(held):
                self.attempts[i] += 1
                (back if self.attempts[i] <= self.retries else gave_up).append(i)
            self.queue.extend(back)
            self.changed.notify_all()
            return len(back), gave_up

    async def close(self) -> None:
        async with self.changed:
            self.closed = True
            self.changed.notify_all()

    def stats(self) -> dict[str, int]:
        return dict(self.served)


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
    """A worker reported an error or died before finishing its pairs."""


def _placement(ray: Any, n_pairs: int, workers: int | None, pooled: bool,
               concurrency: int) -> list[dict[str, Any]]:
    """One dict per Ray worker to start: its scheduling, episode slots and pool size.

    Pooled: one worker per alive node (its pool sized to the node's CPU slots, its slots a
    share of ``concurrency`` proportional to them), unless ``workers`` is given. Not pooled:
    one worker per CPU slot of the cluster (each episode has its own sandbox process tree, so
    more processes use more cores), or ``workers``."""
    nodes = [(n["NodeID"], int(n.get("Resources", {}).get("CPU", 0)))
             for n in ray.nodes() if n.get("Alive")]
    nodes = [(nid, cpus) for nid, cpus in nodes if cpus > 0]
    total = sum(c for _, c in nodes) or max(1, int(ray.cluster_resources().get("CPU", 1)))
    if pooled and not workers and nodes:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = nodes[:max(1, n_pairs)]
        total = sum(c for _, c in nodes)
        # hard: a soft affinity is only a hint (Ray may put two workers on one node)
        return [{"strategy": NodeAffinitySchedulingStrategy(nid, soft=False),
                 "slots": max(1, math.ceil(concurrency * cpus / total)),
                 "pool": {"workers": cpus}} for nid, cpus in nodes]
    n = max(1, min(workers or total, n_pairs))
    pool = {"workers": max(1, total // n)} if pooled else None
    return [{"strategy": "SPREAD" if pooled else "DEFAULT",
             "slots": max(1, math.ceil(concurrency / n)), "pool": pool} for _ in range(n)]


def _driver_node(ray: Any) -> Any:
    """Scheduling that keeps an actor on the driver's node (it dies with the driver anyway)."""
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    except Exception:  # Ray client mode: no local node
        return "DEFAULT"


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
    sandbox_pool: bool = False,
) -> list[Trajectory]:
    """Like :func:`run_tasks_async`, over Ray workers (Ray must be initialized, see
    :func:`ray_session`). ``agents`` is :class:`StaticAgents`, :class:`LLMAgents` or a
    picklable agent factory. ``concurrency`` and ``sandbox_concurrency`` are totals, split
    between the workers; workers pull pairs as their slots free up (work stealing).
    ``sandbox_pool``: each worker serves all its episodes from one pooled sandbox set (where
    bwrap works), and one worker per node is started unless ``workers`` says otherwise.
    ``shard_retries``: how many times a pair held by a lost worker is run again before it is
    stored as ``WorkerLost``. Worker-side stats are collected into ``stats``
    (``{"workers": [...], "lost": n, "served": {worker: pairs leased}}``) when given."""
    ray = import_ray()
    if not hasattr(agents, "open"):
        agents = StaticAgents(agents)
    pairs = pending_pairs(tasks, samples, store, resume)
    stats = stats if stats is not None else {}
    stats.setdefault("workers", [])
    stats.setdefault("lost", 0)
    if not pairs:
        return []
    plan = _placement(ray, len(pairs), workers, bool(sandbox_pool), concurrency)
    n = len(plan)
    per_worker = {
        "env_kwargs": dict(env_kwargs or {}),
        "sandbox_concurrency": sandbox_concurrency and max(1, math.ceil(sandbox_concurrency / n)),
        "episode_timeout": episode_timeout, "infra_retries": infra_retries,
        "retry_delay": retry_delay,
    }
    worker_agents = agents.for_workers(n)
    unique = list({t.id: t for t, _ in pairs}.values())
    position = {t.id: i for i, t in enumerate(unique)}
    index = {(t.id, k): i for i, (t, k) in enumerate(pairs)}
    work = ray.put((unique, [(position[t.id], k) for t, k in pairs]))  # shipped once
    remote = ray.remote(num_cpus=1, max_retries=0)(run_worker)
    pairs_queue = ray.remote(WorkQueue).options(
        num_cpus=0, max_restarts=0, max_concurrency=1000,
        scheduling_strategy=_driver_node(ray)).remote(shard_retries)
    results: list[Trajectory] = []
    accepted: set[int] = set()
    live: set[str] = set()
    jobs: list[asyncio.Future[None]] = []
    names = (f"w{i}" for i in itertools.count())

    async def accept(traj: Trajectory) -> None:
        if store is not None:
            await asyncio.to_thread(store.append, traj)  # fsync: not on the event loop
        results.append(traj)
        if on_done is not None:
            try:
                on_done(traj)
            except Exception as exc:  # a progress callback never stops the run
                log.warning("on_done failed for %s: %s", traj.key, exception_text(exc))

    def start(spec: dict[str, Any]) -> None:
        wid = next(names)
        live.add(wid)
        jobs.append(asyncio.ensure_future(run(wid, spec)))

    async def run(wid: str, spec: dict[str, Any]) -> None:
        mine: list[int] = []
        failure: str | None = None
        gen = remote.options(num_returns="streaming", scheduling_strategy=spec["strategy"]).remote(
            wid, dataset, split, work, pairs_queue, worker_agents, run_id,
            {**per_worker, "concurrency": spec["slots"]}, spec["pool"])
        try:
            async for ref in gen:
                kind, payload = await ref
                if kind == "traj":
                    i, line = payload
                    if isinstance(i, int):  # its lease is over, whatever the record says
                        pairs_queue.done.remote(wid, [i])
                    try:
                        traj = Trajectory.model_validate_json(line)
                    except Exception as exc:  # not stored: WorkerLost at the end
                        log.warning("unreadable trajectory from a Ray worker: %r", exc)
                        continue
                    if i is None or index.get(traj.key) != i or i in accepted:
                        continue  # not ours to store, or stored already: each key once
                    accepted.add(i)
                    mine.append(i)
                    await accept(traj)
                elif kind == "stats":
                    stats["workers"].append({"worker": wid, **payload})
                elif kind == "error":
                    failure = payload
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                ray.cancel(gen, force=True)
            raise
        except Exception as exc:  # the worker, its node or its connection is gone
            failure = f"{type(exc).__name__}: {exception_text(exc)}"
        live.discard(wid)
        # whatever it held and did not deliver goes back to the queue (or is given up)
        back, gave_up = await pairs_queue.release.remote(wid, mine)
        if failure is not None or back or gave_up:
            log.warning("Ray worker %s ended with %d pair(s) undelivered (%d re-queued): %s",
                        wid, back + len(gave_up), back, failure or "finished without them")
        message = (f"Ray worker lost after {shard_retries + 1} attempt(s): "
                   f"{failure or 'the worker finished without this episode'}")[:4000]
        for i in gave_up:
            t, k = pairs[i]
            if i not in accepted:
                accepted.add(i)
                stats["lost"] += 1
                await accept(_lost(t, k, run_id, message))
        if back and not live:  # nobody left to take them: a fresh worker (anywhere)
            start({"strategy": "DEFAULT", "slots": max(1, math.ceil(concurrency / n)),
                   "pool": plan[0]["pool"]})

    await pairs_queue.put.remote(list(range(len(pairs))))
    for spec in plan:
        start(spec)
    try:
        while not all(j.done() for j in jobs):  # a replacement may join while we wait
            await asyncio.gather(*jobs)
        stats["served"] = await pairs_queue.stats.remote()
        for i, (t, k) in enumerate(pairs):  # every pair accounted for, even with no worker left
            if i not in accepted:
                accepted.add(i)
                stats["lost"] += 1
                await accept(_lost(t, k, run_id, "no Ray worker delivered this episode"))
    except BaseException:
        await stop(jobs)
        raise
    finally:
        with contextlib.suppress(Exception):
            ray.kill(pairs_queue)
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
