"""Cheap episodes: a few warm workers serve many episodes (``bwrap`` only).

>>> from medagentgym.sandbox.pool import SandboxPool
>>> async with SandboxPool({"/data/db.sqlite": "mimic.db"}) as pool:  # doctest: +SKIP
...     async with pool.episode() as ep:       # no process, no mount until it runs code
...         r = await ep.execute("answer = 1 + 1")
...         await ep.reset()                    # host-side only: the next call gets fresh state

Today's :class:`~medagentgym.sandbox.bwrap.BwrapSandbox` gives every episode its own warm
process tree (bubblewrap, zygote, spare payload). A :class:`SandboxPool` starts
``workers`` of those zygotes (default: one per CPU) in *pooled* mode, and an episode becomes
only its private writable state inside one of them:

* a ``/tmp`` and a ``/workspace`` tmpfs (each with its size and inode budget), owned by the
  episode's own uid, held by the zygote as two *detached* mount trees (file descriptors from
  ``open_tree``; no mount table lists them, so an execution costs the same with 1 or 4,000
  episodes open);
* every execution forks from the warm zygote as before; the zygote clones the episode's two
  trees and passes the copies with the request (``SCM_RIGHTS``); the payload, still
  privileged in its own mount namespace, attaches them over ``/tmp`` and ``/workspace``,
  checks that they are in place, and only then drops to the episode's uid, every capability
  and the seccomp filter (no other episode's files exist anywhere in its view);
* an episode is pinned to the worker that holds its files; a worker runs one execution at
  a time, so executions of episodes sharing a worker queue (no two of them are ever alive
  at once: nothing to signal, trace or talk to over IPC, and every payload is PID 1 of a PID
  namespace that dies with it).

An idle episode is a Python object on the host and, once it has run code, two tmpfs
superblocks (and two fds) in the worker (kilobytes; ``benchmarks/server_load.py`` measures it): no process.
``reset()`` is host-side (a new uid, and the next request asks the zygote for fresh mounts);
``close()`` drops the trees.

Not pooled: families with services (``make_services``, e.g. MedAgentBench's FHIR server). A
worker's forwarder relays 127.0.0.1:PORT to one service socket, and a service holds state
(the records an episode wrote): sharing it between episodes would let one episode read or
change what another wrote, so such families keep a dedicated sandbox per episode
(:class:`SandboxPool` refuses ``services``).

A worker that dies takes its episodes' files with it (as a dedicated sandbox's restart does
today); the next request of each of them gets fresh, empty state on the restarted worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medagentgym.errors import ConfigurationError, SandboxError
from medagentgym.sandbox.base import (
    SandboxLimits,
    WorkerSandbox,
    _allocate_uid,
    sandbox_uid_range,
)
from medagentgym.sandbox.bwrap import BwrapSandbox

__all__ = ["PoolWorker", "PooledEpisode", "SandboxPool", "SandboxPools"]

#: most episodes one pool keeps at once (each needs a distinct uid from this process's range)
MAX_EPISODES = len(sandbox_uid_range()) - 96


class PoolWorker(BwrapSandbox):
    """A bwrap zygote in pooled mode: it keeps many episodes' /tmp and /workspace trees."""

    name = "bwrap-pool"

    def _worker_config(self) -> dict[str, Any]:
        cfg = super()._worker_config()
        cfg["pool"] = cfg.pop("episode")
        cfg["uid"] = cfg["gid"] = None  # each request names its episode's uid
        return cfg

    def _bwrap_args(self) -> list[str]:
        args = super()._bwrap_args()
        i = args.index("--remount-ro")
        return [*args[:i], "--perms", "0700", "--size", str(4 * 1024**2),
                "--tmpfs", "/episodes", *args[i:]]

    def _new_episode_identity(self) -> dict[str, int]:
        return {}

    async def reset(self) -> None:  # a worker has no episode of its own
        return None


class PooledEpisode(WorkerSandbox):
    """One episode of a :class:`SandboxPool`: the ``WorkerSandbox`` interface (execute, run,
    read_file, write_file, reset, close, probes, limits), served by a shared worker."""

    name = "bwrap-pool"
    isolates = True
    host_workdir = False

    def __init__(self, pool: SandboxPool, ep: int) -> None:
        super().__init__(None, limits=pool.limits, preload="none")
        self.pool = pool
        self.ep = ep
        self.worker: PoolWorker | None = None
        self.uid = self.gid = 0
        self._fresh = True

    # what the shared worker knows, seen from the episode (tests kill the worker through it)
    @property
    def _proc(self) -> Any:  # type: ignore[override]
        return self.worker._proc if self.worker is not None else None

    @_proc.setter
    def _proc(self, value: Any) -> None:
        pass

    @property
    def restarts(self) -> int:  # type: ignore[override]
        return self.worker.restarts if self.worker is not None else 0

    @restarts.setter
    def restarts(self, value: int) -> None:
        pass

    @property
    def info(self) -> dict[str, Any]:  # type: ignore[override]
        base = dict(self.worker.info) if self.worker is not None else {}
        base.update({"episode": self.ep, "uid": self.uid, "pooled": True})
        return base

    @info.setter
    def info(self, value: dict[str, Any]) -> None:
        pass

    def _command(self, config: dict[str, Any]) -> list[str]:  # pragma: no cover - unused
        raise SandboxError("a pooled episode has no process of its own")

    async def start(self) -> None:
        if self._closed:
            raise SandboxError("sandbox is closed")
        if self.worker is None:
            self.worker = await self.pool._attach(self)

    async def reset(self) -> None:
        """A new episode: a new uid now; the worker mounts fresh /tmp and /workspace at this
        episode's next request (nothing runs in between, so nothing can see the old ones)."""
        if self.worker is None:
            return
        self.pool._new_identity(self)
        self._fresh = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.pool._issued -= 1
        worker, self.worker = self.worker, None
        if worker is not None:
            await self.pool._detach(self, worker, self._fresh)

    async def _raw_request(self, req: dict[str, Any], timeout: float,
                           extra_wait: float = 0.0) -> dict[str, Any] | str:
        if self.worker is None:
            await self.start()
        assert self.worker is not None
        req.update({"ep": self.ep, "uid": self.uid, "gid": self.gid})
        if self._fresh:
            req["fresh"] = True
            self._fresh = False
        return await self.worker._raw_request(req, timeout, extra_wait)

    def _request_limits(self) -> dict[str, int]:
        assert self.worker is not None
        return self.worker._request_limits()

    async def _control(self, req: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        raise SandboxError("a pooled episode takes no control requests")


class SandboxPool:
    """``workers`` warm bwrap zygotes (default: one per CPU) sharing one set of read-only
    ``inputs``, serving any number of episodes (up to :data:`MAX_EPISODES`)."""

    def __init__(
        self,
        inputs: Mapping[str, str | os.PathLike[str]] | None = None,
        *,
        workers: int | None = None,
        limits: SandboxLimits | None = None,
        preload: str | Sequence[str] = "core",
        env: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        services: Mapping[int, Any] | None = None,
    ) -> None:
        if services:
            raise ConfigurationError(
                "a sandbox pool cannot share services between episodes (one episode could "
                "reach the state another wrote); use a dedicated sandbox (create_sandbox) for "
                "families with services")
        n = workers if workers is not None else (len(os.sched_getaffinity(0)) or 1)
        if not isinstance(n, int) or n < 1:
            raise ConfigurationError(f"pool workers must be a positive integer: {workers!r}")
        self.inputs = {str(k): Path(v) for k, v in (inputs or {}).items()}
        self.limits = limits or SandboxLimits()
        self.workers = [PoolWorker(self.inputs, limits=self.limits, preload=preload, env=env,
                                   start_timeout=start_timeout) for _ in range(n)]
        self._load = [0] * n
        self._ids = itertools.count(1)
        self._live_uids: set[int] = set()
        self._episodes: set[PooledEpisode] = set()
        self._issued = 0  # episodes handed out and not closed (started or not)
        self._start_locks: list[asyncio.Lock] | None = None
        self._started = [False] * n
        self._closed = False

    @property
    def privileged(self) -> bool:
        return self.workers[0].privileged

    def episode(self) -> PooledEpisode:
        """A new, unstarted episode (``await ep.start()`` or ``async with``)."""
        if self._closed:
            raise SandboxError("sandbox pool is closed")
        self._issued += 1  # until the episode is closed, started or not
        return PooledEpisode(self, next(self._ids))

    @property
    def idle(self) -> bool:
        """No episode of this pool is open (started or not yet)."""
        return self._issued <= 0

    def __len__(self) -> int:
        return len(self._episodes)

    async def start(self) -> None:
        """Start every worker now (otherwise each starts at its first episode)."""
        await asyncio.gather(*(self._ensure(i) for i in range(len(self.workers))))

    async def _ensure(self, i: int) -> None:
        if self._started[i]:
            return
        if self._start_locks is None:
            self._start_locks = [asyncio.Lock() for _ in self.workers]
        async with self._start_locks[i]:  # workers start in parallel, each once
            if not self._started[i]:
                await self.workers[i].start()
                self._started[i] = True

    def _new_identity(self, ep: PooledEpisode) -> None:
        if not self.privileged:
            return  # a user namespace maps one uid: episodes are kept apart by mounts only
        self._live_uids.discard(ep.uid)
        for _ in range(len(sandbox_uid_range())):
            uid = _allocate_uid()
            if uid not in self._live_uids:
                break
        else:  # pragma: no cover - bounded by MAX_EPISODES
            raise SandboxError("no free sandbox uid")
        self._live_uids.add(uid)
        ep.uid = ep.gid = uid

    async def _attach(self, ep: PooledEpisode) -> PoolWorker:
        if self._closed:
            raise SandboxError("sandbox pool is closed")
        if len(self._episodes) >= MAX_EPISODES:
            raise SandboxError(f"sandbox pool is full ({MAX_EPISODES} episodes); close some")
        if not all(self._started):
            await self.start()  # every worker at once: later episodes never wait for one
        i = min(range(len(self.workers)), key=self._load.__getitem__)
        self._load[i] += 1
        self._episodes.add(ep)
        self._new_identity(ep)
        return self.workers[i]

    async def _detach(self, ep: PooledEpisode, worker: PoolWorker, never_ran: bool) -> None:
        self._episodes.discard(ep)
        self._live_uids.discard(ep.uid)
        i = self.workers.index(worker)
        self._load[i] -= 1
        if never_ran or worker._proc is None or worker._proc.returncode is not None:
            return  # nothing of it in the worker
        with contextlib.suppress(Exception):
            await worker._control({"op": "ep_close", "ep": ep.ep})

    async def stats(self) -> list[dict[str, Any]]:
        """Per worker: its pid, episodes attached here, episodes holding mounts there."""
        out = []
        for i, w in enumerate(self.workers):
            row: dict[str, Any] = {"attached": self._load[i],
                                   "pid": w._proc.pid if w._proc is not None else None}
            if w._proc is not None and w._proc.returncode is None:
                reply = await w._control({"op": "stats"})
                row["mounted"] = reply.get("episodes")
            out.append(row)
        return out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for ep in list(self._episodes):
            ep._closed = True
            ep.worker = None
        self._episodes.clear()
        await asyncio.gather(*(w.close() for w in self.workers), return_exceptions=True)

    async def __aenter__(self) -> SandboxPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SandboxPools:
    """Pools keyed by (inputs, preload): what an environment asks for when it pools its
    episodes (``AsyncMedAgentEnv(..., sandbox_pool=pools)``). Each pool starts with its first
    episode; ``close()`` stops them all."""

    def __init__(self, *, workers: int | None = None, limits: SandboxLimits | None = None,
                 max_pools: int = 8) -> None:
        self.workers = workers
        self.limits = limits
        self.max_pools = max_pools
        self._pools: dict[tuple[Any, ...], SandboxPool] = {}
        self._closing: set[asyncio.Future[Any]] = set()

    def episode(self, inputs: Mapping[str, str | os.PathLike[str]] | None = None, *,
                preload: str | Sequence[str] = "core") -> PooledEpisode:
        """A pooled episode for these inputs (a pool is made for a new input set); raises
        when ``max_pools`` sets are open and none of them is idle."""
        ep = self.try_episode(inputs, preload=preload)
        if ep is None:
            raise ConfigurationError(
                f"more than {self.max_pools} distinct sandbox input sets in use at once; raise "
                "SandboxPools(max_pools=...) or use dedicated sandboxes")
        return ep

    def try_episode(self, inputs: Mapping[str, str | os.PathLike[str]] | None = None, *,
                    preload: str | Sequence[str] = "core") -> PooledEpisode | None:
        """Like :meth:`episode`, but ``None`` instead of an error when every one of the
        ``max_pools`` pools is in use (families whose tasks each bring their own inputs:
        the caller then gives the episode a dedicated sandbox). A pool with no episode
        left is closed to make room for a new input set."""
        from medagentgym.sandbox.base import resolve_preload

        key = (tuple(sorted((str(k), str(v)) for k, v in (inputs or {}).items())),
               tuple(resolve_preload(preload)))
        pool = self._pools.pop(key, None)
        if pool is None:
            if len(self._pools) >= self.max_pools:
                idle = next((k for k, p in self._pools.items() if p.idle), None)
                if idle is None:
                    return None
                old = self._pools.pop(idle)
                self._closing.add(asyncio.ensure_future(old.close()))
                self._closing = {t for t in self._closing if not t.done()}
            pool = SandboxPool(inputs, workers=self.workers, limits=self.limits,
                               preload=preload)
        self._pools[key] = pool  # most recently used last: the idle ones first go first
        return pool.episode()

    @property
    def pools(self) -> list[SandboxPool]:
        return list(self._pools.values())

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        closing, self._closing = list(self._closing), set()
        await asyncio.gather(*(p.close() for p in pools), *closing, return_exceptions=True)
