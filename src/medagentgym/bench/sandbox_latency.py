"""Sandbox latency, throughput and memory — warm worker vs a fresh interpreter, same run.

Workloads: (a) ``answer = 1``; (b) pandas work on a 1,000-row frame; (c) a sqlite query on a
1,000-row table bound read-only into the sandbox. Each runs through the warm worker
(``execute``) and through a fresh ``python -c`` subprocess doing the same work (no sandbox:
the cheapest thing a naive implementation can do), and the ratio is reported. Throughput is
``answer = 1`` executions/s with 1, 2 and 4 sandboxes running in parallel; memory is the warm
worker's resident set (RSS) and proportional set (PSS).

CPU per execution (what bounds how many executions a machine serves, whatever the latency):
the CPU time of the sandbox's whole process tree per ``execute`` (its payloads included),
against the *fork floor* measured in the same run: a plain process with the same preloaded
modules that forks, runs the same code in the child and reaps it — the least any design that
forks a fresh process per execution can cost.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from medagentgym.bench.procs import process_tree, total_cpu_s

WORKLOADS = {
    "a_trivial": "answer = 1",
    "b_pandas": (
        "import pandas as pd\n"
        "df = pd.DataFrame({'k': range(1000), 'v': [i * 0.5 for i in range(1000)]})\n"
        "answer = float(df.groupby(df.k % 10).v.mean().sum())"
    ),
    "c_sqlite": (
        "import sqlite3\n"
        "con = sqlite3.connect('file:{db}?mode=ro', uri=True)\n"
        "answer = con.execute('select count(*), avg(v) from t where k < 500').fetchone()\n"
        "con.close()"
    ),
}


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    idx = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[idx]


def _summary(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(_pct(times, 0.5) * 1e3, 3), "p90_ms": round(_pct(times, 0.9) * 1e3, 3),
            "mean_ms": round(statistics.fmean(times) * 1e3, 3), "n": len(times)}


def _make_db(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("create table t (k integer, v real, s text)")
    con.executemany("insert into t values (?, ?, ?)", [(i, i * 0.25, f"row{i}") for i in range(1000)])
    con.commit()
    con.close()
    os.chmod(path, 0o644)


_FLOOR = """
import gc, os, resource, sys, time
import numpy, pandas, sqlite3, json, csv, math, statistics, re, collections, datetime
df = pandas.DataFrame({"k": [1, 2, 2], "v": [0.5, 1.5, 2.5]}); df.groupby("k").v.mean()
gc.collect(); gc.freeze()
code, n = sys.argv[1], int(sys.argv[2])
def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
c0, t0 = cpu(), time.perf_counter()
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        exec(code, {})
        os._exit(0)
    os.waitpid(pid, 0)
print((cpu() - c0) / n, (time.perf_counter() - t0) / n)
"""


def _fork_floor(code: str, n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _FLOOR, code, str(n)], check=True,
                         capture_output=True, text=True).stdout.split()
    return {"cpu_ms": round(float(out[0]) * 1e3, 3), "wall_ms": round(float(out[1]) * 1e3, 3)}


def _memory_kib(pid: int) -> dict[str, int]:
    """RSS/PSS of the Python worker process under ``pid`` (bwrap wraps it)."""
    best: dict[str, int] = {}
    for p in process_tree(pid):
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        vals = {}
        for line in rollup.splitlines():
            parts = line.split()
            if parts and parts[0] in ("Rss:", "Pss:"):
                vals[parts[0][:-1].lower() + "_kib"] = int(parts[1])
        if vals.get("rss_kib", 0) > best.get("rss_kib", 0):
            best = vals
    return best


async def _measure(provider: str, repeats: int, db: Path) -> dict[str, Any]:
    from medagentgym.sandbox import create_sandbox

    inputs = {"/data/bench.db": db}
    sb = create_sandbox(provider, inputs)
    await sb.start()
    results: dict[str, Any] = {"provider": sb.name, "worker_start_s": round(sb.info["start_s"], 3)}
    db_in_sandbox = "/data/bench.db" if sb.isolates else str(db)
    try:
        for name, code in WORKLOADS.items():
            code = code.replace("{db}", db_in_sandbox)
            for _ in range(5):  # warm-up
                r = await sb.execute(code)
                assert r.status == "ok", r
            warm = []
            cpu0 = total_cpu_s(process_tree(sb._proc.pid)) if sb._proc else 0.0
            for _ in range(repeats):
                t0 = time.perf_counter()
                r = await sb.execute(code)
                warm.append(time.perf_counter() - t0)
                assert r.status == "ok", r
            cpu_ms = ((total_cpu_s(process_tree(sb._proc.pid)) - cpu0) / repeats * 1e3) if sb._proc else None
            fresh_code = code.replace("/data/bench.db", str(db)) + "\nprint(answer)"
            fresh = []
            for _ in range(max(10, repeats // 10)):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", fresh_code], check=True, capture_output=True)
                fresh.append(time.perf_counter() - t0)
            w, f = _summary(warm), _summary(fresh)
            results[name] = {"warm_worker": w, "fresh_python": f,
                             "speedup_p50": round(f["p50_ms"] / w["p50_ms"], 1)}
            if cpu_ms is not None and "{db}" not in WORKLOADS[name]:
                floor = _fork_floor(WORKLOADS[name], repeats)
                results[name]["cpu_ms_per_exec"] = round(cpu_ms, 3)
                results[name]["fork_floor"] = floor
                results[name]["cpu_over_floor"] = round(cpu_ms / floor["cpu_ms"], 2)
        results["memory"] = _memory_kib(sb._proc.pid) if sb._proc else {}
    finally:
        await sb.close()

    throughput = {}
    for n in (1, 2, 4):
        boxes = [create_sandbox(provider, inputs) for _ in range(n)]
        await asyncio.gather(*(b.start() for b in boxes))
        try:
            stop = time.perf_counter() + 3.0
            counts = [0] * n

            async def loop(i: int, box: Any, stop: float, counts: list[int]) -> None:
                while time.perf_counter() < stop:
                    r = await box.execute("answer = 1")
                    assert r.status == "ok"
                    counts[i] += 1

            t0 = time.perf_counter()
            await asyncio.gather(*(loop(i, b, stop, counts) for i, b in enumerate(boxes)))
            throughput[str(n)] = round(sum(counts) / (time.perf_counter() - t0), 1)
        finally:
            await asyncio.gather(*(b.close() for b in boxes))
    results["executions_per_s"] = throughput
    return results


def main(provider: str = "auto", repeats: int = 200, out: Path | None = None) -> dict[str, Any]:
    from medagentgym.sandbox import resolve_provider

    provider = resolve_provider(provider)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        db = Path(tmp) / "bench.db"
        _make_db(db)
        res = asyncio.run(_measure(provider, repeats, db))
    res["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                      "platform": platform.platform(), "euid": os.geteuid()}
    print(f"provider: {res['provider']}  worker start: {res['worker_start_s']} s  "
          f"memory: {res['memory']}")
    print(f"{'workload':12} {'warm p50':>9} {'warm p90':>9} {'fresh p50':>10} {'speedup':>8}")
    for name in WORKLOADS:
        r = res[name]
        print(f"{name:12} {r['warm_worker']['p50_ms']:8.2f}ms {r['warm_worker']['p90_ms']:8.2f}ms "
              f"{r['fresh_python']['p50_ms']:9.1f}ms {r['speedup_p50']:7.1f}x")
    for name in WORKLOADS:
        r = res[name]
        if "cpu_ms_per_exec" in r:
            print(f"{name:12} CPU per execution {r['cpu_ms_per_exec']:.2f} ms (sandbox tree) vs "
                  f"fork floor {r['fork_floor']['cpu_ms']:.2f} ms: {r['cpu_over_floor']}x")
    print("executions/s with 1/2/4 sandboxes:", res["executions_per_s"])
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
    return res
