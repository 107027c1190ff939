"""Episode density: what an idle pooled episode costs, against a dedicated sandbox.

    python benchmarks/episode_density.py [--episodes 1000] [--workers 0] [--dedicated 4] \\
        [--out FILE]

Opens ``--episodes`` pooled episodes (:class:`medagentgym.sandbox.pool.SandboxPool`, one
worker per CPU unless ``--workers``), has each run one small execution that writes a file
(so its /tmp and /workspace mounts exist), keeps them all open, and reports:

* memory per idle episode: the growth of the kernel's Shmem + slab + page tables + kernel
  stacks + per-CPU memory (tmpfs superblocks and contents, mounts, inodes) and of this
  process's RSS (the host-side objects), divided by N; the drop in ``MemAvailable`` is given
  too, but on a shared machine it also moves with everyone else's work;
* processes per idle episode: the pool's process trees before and after (should be 0);
* warm execution latency (p50) and the workers' CPU per execution with no other episode
  open and with all N open (episodes' files are detached mount trees held by fds, so
  neither should grow with N);
* reset: the host-side call (p50) and the first execution after it (fresh mounts) vs a warm one;
* the same memory and start CPU for ``--dedicated`` classic ``BwrapSandbox`` instances, for
  the ratio.

The machine may be shared: compare numbers within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

from medagentgym.bench.procs import emit, process_tree, smaps_kib, total_cpu_s


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def meminfo(*keys: str) -> int:
    """Sum of /proc/meminfo fields, bytes (Shmem: tmpfs contents; Slab: mounts, inodes)."""
    total = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in keys:
            total += int(rest.split()[0]) * 1024
    return total


KERNEL = ("Shmem", "SUnreclaim", "SReclaimable", "PageTables", "KernelStack", "Percpu")


def self_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def p50(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


async def warm_latency(ep, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = await ep.execute("answer = 1")
        assert r.status == "ok", r
        out.append(time.perf_counter() - t0)
    return out


async def run(episodes: int, workers: int, dedicated: int, repeats: int) -> dict:
    from medagentgym.sandbox import SandboxLimits, create_sandbox
    from medagentgym.sandbox.pool import SandboxPool

    limits = SandboxLimits()
    out: dict = {"episodes": episodes, "cpus": len(os.sched_getaffinity(0)),
                 "python": sys.version.split()[0]}

    # -- dedicated sandboxes (today's path), for the ratio
    if dedicated:
        before_mem = mem_available()
        boxes = [create_sandbox("bwrap", None, limits=limits) for _ in range(dedicated)]
        t0 = time.perf_counter()
        await asyncio.gather(*(b.start() for b in boxes))
        start_wall = time.perf_counter() - t0
        await asyncio.sleep(0.5)
        pids = [p for b in boxes for p in process_tree(b._proc.pid)]
        out["dedicated"] = {
            "n": dedicated,
            "pss_per_sandbox_mb": smaps_kib(pids) * 1024 / dedicated / 1e6,
            "memavailable_drop_per_sandbox_mb": (before_mem - mem_available()) / dedicated / 1e6,
            "processes_per_sandbox": len(pids) / dedicated,
            "start_cpu_s_per_sandbox": total_cpu_s(pids) / dedicated,
            "start_wall_s": start_wall,
            "warm_exec_p50_ms": 1000 * p50(await warm_latency(boxes[0], repeats)),
        }
        resets = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            await boxes[0].reset()
            resets.append(time.perf_counter() - t0)
        out["dedicated"]["reset_p50_ms"] = 1000 * p50(resets)
        await asyncio.gather(*(b.close() for b in boxes))
        await asyncio.sleep(0.5)

    # -- the pool
    pool = SandboxPool(workers=workers or None, limits=limits)
    t0 = time.perf_counter()
    await pool.start()
    pool_start = time.perf_counter() - t0
    await asyncio.sleep(0.5)
    roots = [w._proc.pid for w in pool.workers]
    warmers = [pool.episode() for _ in pool.workers]  # one per worker: its spare exists
    for w in warmers:
        await w.start()
        await w.execute("answer = 1")
    await asyncio.sleep(0.5)
    procs_before = sum(len(process_tree(r)) for r in roots)
    probe = warmers[0]
    pool_pids = [p for r in roots for p in process_tree(r)]
    c0 = total_cpu_s(pool_pids)
    warm_empty = await warm_latency(probe, repeats)
    cpu_empty = (total_cpu_s(pool_pids) - c0) / repeats
    mem0, rss0, k0 = mem_available(), self_rss(), meminfo(*KERNEL)
    eps = [pool.episode() for _ in range(episodes)]
    t0 = time.perf_counter()
    for ep in eps:
        await ep.start()
    open_s = time.perf_counter() - t0

    async def first(ep):
        r = await ep.execute("open('/workspace/notes.txt', 'w').write('x' * 100)\nanswer = 1")
        assert r.status == "ok", r
    t0 = time.perf_counter()
    await asyncio.gather(*(first(ep) for ep in eps))
    first_s = time.perf_counter() - t0
    await asyncio.sleep(1.0)
    mem1, rss1, k1 = mem_available(), self_rss(), meminfo(*KERNEL)
    procs_after = sum(len(process_tree(r)) for r in roots)
    pool_pids = [p for r in roots for p in process_tree(r)]
    c0 = total_cpu_s(pool_pids)
    warm_full = await warm_latency(probe, repeats)
    cpu_full = (total_cpu_s(pool_pids) - c0) / repeats
    resets, fresh, warm_after = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        await probe.reset()
        resets.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        r = await probe.execute("answer = 1")
        fresh.append(time.perf_counter() - t0)
        assert r.status == "ok"
        t0 = time.perf_counter()
        await probe.execute("answer = 1")
        warm_after.append(time.perf_counter() - t0)
    stats = await pool.stats()
    out["pool"] = {
        "workers": len(pool.workers),
        "start_wall_s": pool_start,
        "pss_of_workers_mb": smaps_kib([p for r in roots for p in process_tree(r)]) * 1024 / 1e6,
        "open_episodes_s": open_s,
        "first_execution_of_all_s": first_s,
        "first_executions_per_s": episodes / first_s,
        "mounted": sum(s.get("mounted") or 0 for s in stats),
        "memavailable_drop_bytes_per_idle_episode": (mem0 - mem1) / episodes,
        "kernel_bytes_per_idle_episode": (k1 - k0) / episodes,
        "host_rss_bytes_per_idle_episode": (rss1 - rss0) / episodes,
        "processes_before": procs_before,
        "processes_after": procs_after,
        "processes_per_idle_episode": (procs_after - procs_before) / episodes,
        "warm_exec_p50_ms_alone": 1000 * p50(warm_empty),
        "warm_exec_p50_ms_with_all_open": 1000 * p50(warm_full),
        # the workers' CPU (payloads included) per warm execution: flat in the number of
        # open episodes, since their trees are in no mount table a payload copies
        "warm_exec_cpu_ms_alone": 1000 * cpu_empty,
        "warm_exec_cpu_ms_with_all_open": 1000 * cpu_full,
        "reset_host_p50_ms": 1000 * p50(resets),
        "first_exec_after_reset_p50_ms": 1000 * p50(fresh),
        "warm_exec_after_reset_p50_ms": 1000 * p50(warm_after),
    }
    t0 = time.perf_counter()
    for ep in eps:
        await ep.close()
    out["pool"]["close_all_s"] = time.perf_counter() - t0
    await pool.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=0, help="0: one per CPU")
    parser.add_argument("--dedicated", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(run(args.episodes, args.workers, args.dedicated, args.repeats))
    emit(result, args.out)


if __name__ == "__main__":
    main()
