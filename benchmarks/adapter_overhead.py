"""What an adapter costs per step: the same ``validate_code`` step (``answer = 1``) taken
in-process (``AsyncMedAgentEnv.astep``), through the server's REST API
(:class:`medagentgym.server.client.EnvClient`) and through OpenEnv's own client over the
server's WebSocket (``openenv.core.GenericEnvClient``), interleaved step by step on one task
(the in-process env is the Gymnasium one, ``medagentgym.make``).

    python benchmarks/adapter_overhead.py [--steps 200] [--out docs/benchmarks/adapter_overhead.json]

Reported as ratios to the in-process step of the same run (a shared machine's absolute
timings are noisy). Needs the ``server`` and ``openenv`` extras; runs in a temporary data home
(TREQS questions from ``--mirror``, the synthetic database).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from medagentgym.bench.procs import emit

ACTION = {"action": "validate_code", "params": {"code": "answer = 1"}}


def _pct(v: list[float], q: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))]


def _ms(v: list[float]) -> dict[str, float]:
    return {"p50_ms": round(_pct(v, 0.5) * 1e3, 3), "p90_ms": round(_pct(v, 0.9) * 1e3, 3),
            "mean_ms": round(statistics.fmean(v) * 1e3, 3), "n": len(v)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ["MEDAGENTGYM_HOME"] = tempfile.mkdtemp(prefix="mag-bench-")

    import uvicorn
    from openenv.core import GenericEnvClient

    from medagentgym.api import make
    from medagentgym.data.sources import pull
    from medagentgym.server.app import create_app
    from medagentgym.server.client import EnvClient
    from medagentgym.tasks.registry import load_tasks

    pull("treqs", args.mirror if args.mirror.exists() else None)
    opts = {"database": "synthetic"}
    task = load_tasks("treqs", "test", **opts)[0]
    n = args.steps
    results: dict[str, object] = {"steps": n, "action": ACTION}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(max_envs=4), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    local = make("treqs", "test", tasks=[task], max_turns=10**6, **opts)
    client = EnvClient(base)
    rest = client.make("treqs", "test", max_turns=1000, **opts)
    oe = GenericEnvClient(base_url=f"{base}/openenv/treqs").sync()
    oe.connect()
    try:
        local.reset(options={"task_id": task.id})
        rest.reset(task_id=task.id)
        oe.reset(task_id=task.id, options={**opts, "max_turns": 1000})
        paths = {"in_process": local.step, "rest": rest.step, "openenv_ws": oe.step}
        times: dict[str, list[float]] = {k: [] for k in paths}
        for i in range(n):  # interleaved: the machine's load changes hit every path alike
            order = list(paths)[i % 3:] + list(paths)[: i % 3]
            for name in order:
                t0 = time.perf_counter()
                paths[name](ACTION)
                times[name].append(time.perf_counter() - t0)
        for name, v in times.items():
            results[name] = _ms(v)
    finally:
        oe.close()
        rest.close()
        client.close()
        local.close()
        server.should_exit = True
        thread.join(20)

    base_p50 = results["in_process"]["p50_ms"]  # type: ignore[index]
    results["ratio_p50_vs_in_process"] = {
        k: round(results[k]["p50_ms"] / base_p50, 2)  # type: ignore[index]
        for k in ("rest", "openenv_ws")}
    emit(results, args.out)


if __name__ == "__main__":
    main()
