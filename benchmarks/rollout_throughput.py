"""Rollout throughput: LLM-agent episodes against the local test server (simulated latency).

    python benchmarks/rollout_throughput.py [--mirror ../shared/data] [--delay 0.2] \\
        [--concurrency 1,8,32,128] [--turns 1,5] [--episodes 0] [--sandbox dedicated,pool] \\
        [--out docs/benchmarks/rollout_throughput.json]

The OpenAI-compatible test server (``medagentgym.llm.testserver``) runs in its own process
and answers every request after ``--delay`` seconds with a wrong answer
(``answer = 1``), so a ``--turns 5`` episode takes exactly five model calls and five sandbox
executions (TREQS tasks, synthetic database, bubblewrap sandbox, paper protocol). For each
episode length and concurrency it reports:

* ``eps_per_s`` over the whole run and ``steady_eps_per_s`` after the first ``c`` episodes
  (sandbox start-up excluded), and the ideal ``c / (turns * delay)`` for comparison;
* CPU use: the benchmark's share of all cores (rollout process + sandboxes + test server) and
  each part as CPU-ms per step; the machine's total use (``/proc/stat``) is given apart,
  since other work on a shared machine shows up there;
* harness overhead per step at concurrency 1: episode wall time minus the time spent waiting
  for the model (``ChatClient.chat``) and executing code (``AsyncMedAgentEnv._execute``),
  per step; with the client's own overhead over the server's delay given apart;
* memory: peak RSS growth of the rollout process and peak PSS of its sandbox processes,
  per concurrent episode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from medagentgym.bench.procs import (
    cpu_by_pid,
    descendants,
    machine_cpu_s,
    own_cpu_s,
    smaps_kib,
)

SAMPLE_S = 0.25  # how often memory and sandbox CPU are sampled


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


class Timers:
    """Wall time spent in model calls, code execution and resets (patched in, class-wide)."""

    def __init__(self) -> None:
        self.chat = self.execute = self.reset = self.act = self.step = self.episode = 0.0
        self.calls = 0
        self.sampler_cpu = 0.0  # the benchmark's own /proc sampling, subtracted

    def install(self) -> None:
        from medagentgym.agents.llm_agent import LLMAgent
        from medagentgym.env.env import AsyncMedAgentEnv
        from medagentgym.llm.client import ChatClient

        def timed(cls: Any, name: str, attr: str) -> None:
            orig = getattr(cls, name)

            async def wrapper(*a: Any, **kw: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await orig(*a, **kw)
                finally:
                    setattr(self, attr, getattr(self, attr) + time.perf_counter() - t0)
                    if attr == "chat":
                        self.calls += 1
            setattr(cls, name, wrapper)

        timed(ChatClient, "chat", "chat")
        timed(AsyncMedAgentEnv, "_execute", "execute")
        timed(AsyncMedAgentEnv, "areset", "reset")
        timed(AsyncMedAgentEnv, "astep", "step")
        timed(LLMAgent, "act", "act")
        import medagentgym.rollout.runner as runner_module

        timed(runner_module, "run_episode", "episode")


async def one_run(tasks: list[Any], concurrency: int, turns: int, episodes: int, base_url: str,
                  server_pid: int, delay: float, timers: Timers,
                  sandbox: str = "dedicated") -> dict[str, Any]:
    from medagentgym.agents.llm_agent import LLMAgent
    from medagentgym.llm import ChatClient, LLMConfig
    from medagentgym.rollout.runner import run_tasks_async

    samples = math.ceil(episodes / len(tasks))
    picked = tasks[: math.ceil(episodes / samples)]
    cfg = LLMConfig(model="bench", base_url=base_url, concurrency=1024, max_retries=2)
    done: list[float] = []
    peak = {"rss": 0.0, "pss": 0.0, "procs": 0}
    me = os.getpid()
    old = set(descendants(me, server_pid))
    sandbox_cpu: dict[int, float] = {}  # last seen CPU of each sandbox process

    async def sampler() -> None:
        while True:
            await asyncio.sleep(SAMPLE_S)
            c0 = time.thread_time()
            kids = [p for p in descendants(me, server_pid) if p not in old]
            sandbox_cpu.update(cpu_by_pid(kids))
            peak["pss"] = max(peak["pss"], smaps_kib(kids) / 1024)
            peak["procs"] = max(peak["procs"], len(kids))
            peak["rss"] = max(peak["rss"], _rss_mb())
            timers.sampler_cpu += time.thread_time() - c0

    rss0 = _rss_mb()
    timers.__init__()  # type: ignore[misc]
    pools = None
    if sandbox == "pool":
        from medagentgym.sandbox.pool import SandboxPools

        pools = SandboxPools()  # one warm worker per CPU, shared by every episode
    async with ChatClient(cfg, api_key="bench") as client:
        sample_task = asyncio.get_running_loop().create_task(sampler())
        t0 = time.perf_counter()
        cpu0, m0, s0 = time.process_time(), machine_cpu_s(), own_cpu_s(server_pid)
        try:
            trajs = await run_tasks_async(
                "treqs", picked, lambda: LLMAgent(client), samples=samples,
                concurrency=concurrency,
                env_kwargs={"database": "synthetic", "max_turns": turns},
                on_done=lambda t: done.append(time.perf_counter()),
                sandbox_pool=pools)
            wall = time.perf_counter() - t0
            cpu, m1, s1 = time.process_time() - cpu0, machine_cpu_s(), own_cpu_s(server_pid) - s0
            await asyncio.sleep(SAMPLE_S * 1.5)  # one more sample of the pool's workers
        finally:
            if pools is not None:
                await pools.close()
        cpu -= timers.sampler_cpu
        sample_task.cancel()
    kids = sum(sandbox_cpu.values())  # sampled: misses at most the last 0.25 s of each
    steps = sum(t.turns for t in trajs)
    busy, total = m1[0] - m0[0], m1[1] - m0[1]
    ncpu = os.cpu_count() or 1
    late = sorted(done)[min(concurrency, len(done) // 2):]
    steady = (len(late) - 1) / (late[-1] - late[0]) if len(late) > 1 else float("nan")
    errors = sum(1 for t in trajs if t.error is not None)
    # the CPU-bound limit: every core busy with this run's own work per episode (rollout
    # process + sandboxes; the test server stands in for a model served elsewhere)
    cpu_per_episode = (cpu + kids) / max(1, len(trajs))
    out: dict[str, Any] = {
        "sandbox": sandbox,
        "concurrency": concurrency, "turns": turns, "episodes": len(trajs), "steps": steps,
        "errors": errors, "wall_s": round(wall, 2),
        "eps_per_s": round(len(trajs) / wall, 2), "steady_eps_per_s": round(steady, 2),
        "ideal_eps_per_s": round(concurrency / (turns * delay), 2),
        "cpu_bound_eps_per_s": round(ncpu / cpu_per_episode, 2) if cpu_per_episode else None,
        "cpu_bound_eps_per_s_with_server": round(ncpu * len(trajs) / (cpu + kids + s1), 2)
        if cpu + kids + s1 else None,
        "steps_per_s": round(steps / wall, 1),
        "cpu": {
            "benchmark_util": round((cpu + s1 + kids) / (wall * ncpu), 3),
            "rollout_process_util_of_one_core": round(cpu / wall, 3),
            "rollout_process_ms_per_step": round(cpu * 1e3 / steps, 2),
            "sandboxes_ms_per_step": round(kids * 1e3 / steps, 2),
            "server_ms_per_step": round(s1 * 1e3 / steps, 2),
            "machine_util_all_processes": round(busy / total, 3) if total else None,
        },
        "memory": {
            "rollout_rss_growth_mb": round(peak["rss"] - rss0, 1),
            "sandbox_pss_mb": round(peak["pss"], 1), "child_processes": peak["procs"],
            "mb_per_concurrent_episode": round(
                (max(0.0, peak["rss"] - rss0) + peak["pss"]) / concurrency, 1),
        },
    }
    if concurrency == 1:  # no overlap: wall time decomposes exactly
        other = timers.episode - timers.chat - timers.execute  # inside episodes
        out["harness_overhead_per_step_ms"] = {
            "total": round(other * 1e3 / steps, 2),
            "excluding_reset": round((other - timers.reset) * 1e3 / steps, 2),
            "agent_act_minus_model_call": round((timers.act - timers.chat) * 1e3 / steps, 2),
            "env_step_minus_execution": round((timers.step - timers.execute) * 1e3 / steps, 2),
            "episode_loop_rest": round(
                (timers.episode - timers.act - timers.step - timers.reset) * 1e3 / steps, 2),
            "runner_outside_episodes_per_run_ms": round((wall - timers.episode) * 1e3, 1),
            "reset_per_episode": round(timers.reset * 1e3 / len(trajs), 2),
            "code_execution_per_step": round(timers.execute * 1e3 / steps, 2),
            "model_call_per_step": round(timers.chat * 1e3 / max(1, timers.calls), 2),
            "client_http_over_server_delay": round(
                (timers.chat / max(1, timers.calls) - delay) * 1e3, 2),
        }
    return out


NOTES = [
    "concurrency = episodes in flight; sandbox=dedicated: one warm sandbox per runner worker; "
    "sandbox=pool: one warm worker per CPU shared by all (medagentgym.sandbox.pool)",
    "cpu_bound_eps_per_s: the CPUs divided by this run's CPU per episode (rollout process + "
    "sandboxes; the test server stands in for a remote model); _with_server counts it too",
    "eps_per_s includes starting one sandbox per worker (~0.5 CPU-s each); steady_eps_per_s "
    "counts completions after the first `concurrency` episodes",
    "harness_overhead_per_step_ms (concurrency 1) is wall time inside episodes minus model "
    "calls (ChatClient.chat) and code execution (AsyncMedAgentEnv._execute); its "
    "reset_per_episode part includes the worker's first sandbox start",
    "memory: peak RSS growth of the rollout process plus peak PSS of its sandbox processes",
    "CPU: benchmark_util counts the rollout process, its sandboxes (sampled every 0.25 s) and "
    "the test server; machine_util_all_processes also counts other work on a shared machine",
]


def _scaling(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (sandbox, turns): throughput at each concurrency over concurrency 1, and the
    largest concurrency's throughput as a share of its run's CPU-bound limit."""
    out: dict[str, Any] = {}
    for r in runs:
        key = f"{r['sandbox']}/turns={r['turns']}"
        out.setdefault(key, {})[r["concurrency"]] = r
    summary = {}
    for key, by_c in out.items():
        base = by_c.get(1)
        top = by_c[max(by_c)]
        summary[key] = {
            "eps_per_s": {c: r["eps_per_s"] for c, r in sorted(by_c.items())},
            "vs_concurrency_1": {c: round(r["eps_per_s"] / base["eps_per_s"], 1)
                                 for c, r in sorted(by_c.items())} if base else None,
            "top_share_of_cpu_bound_limit": round(top["eps_per_s"] / top["cpu_bound_eps_per_s"], 2)
            if top.get("cpu_bound_eps_per_s") else None,
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--delay", type=float, default=0.2, help="server answer delay (s)")
    parser.add_argument("--concurrency", default="1,8,32,128")
    parser.add_argument("--turns", default="1,5", help="episode lengths (steps)")
    parser.add_argument("--episodes", default="0",
                        help="episodes per run, one number or one per concurrency (default: "
                             "max(4c, 48) one-step, max(2c, 16) longer)")
    parser.add_argument("--sandbox", default="dedicated",
                        help="dedicated (one sandbox per episode in flight), pool (warm "
                             "workers shared by all episodes: medagentgym.sandbox.pool), or "
                             "both, comma-separated")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ["MEDAGENTGYM_HOME"] = tempfile.mkdtemp(prefix="mag-bench-")

    import medagentgym as mag
    from medagentgym.data.sources import pull

    pull("treqs", args.mirror if args.mirror.exists() else None)
    tasks = mag.load_tasks("treqs", "test", database="synthetic")
    server = subprocess.Popen(
        [sys.executable, "-m", "medagentgym.llm.testserver", "--port", "0",
         "--delay", str(args.delay)], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline() if server.stdout else ""
        base_url = line.strip().split("serving on ")[-1]
        timers = Timers()
        timers.install()
        asyncio.run(one_run(tasks, 4, 1, 8, base_url, server.pid, args.delay, timers))  # warm-up
        runs = []
        levels = list(map(int, args.concurrency.split(",")))
        counts = list(map(int, args.episodes.split(",")))
        counts = counts * len(levels) if len(counts) == 1 else counts
        if len(counts) != len(levels):
            parser.error("--episodes: one number, or one per --concurrency level")
        for sandbox in args.sandbox.split(","):
            for turns in map(int, args.turns.split(",")):
                for c, given in zip(levels, counts, strict=True):
                    n = given or (max(4 * c, 48) if turns == 1 else max(2 * c, 16))
                    r = asyncio.run(one_run(tasks, c, turns, n, base_url, server.pid,
                                            args.delay, timers, sandbox))
                    print(json.dumps(r), flush=True)
                    runs.append(r)
    finally:
        server.terminate()
        server.wait(timeout=10)
    result = {
        "benchmark": "rollout_throughput",
        "command": "python benchmarks/rollout_throughput.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "server_delay_s": args.delay, "dataset": "treqs (synthetic database)",
        "agent": "LLMAgent -> real HTTP -> test server; every answer wrong (runs max_turns)",
        "sandbox": args.sandbox, "notes": NOTES, "runs": runs,
        "scaling": _scaling(runs),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
