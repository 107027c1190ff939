"""Environment server density: sessions held, reset and step latency, idle expiry.

    python benchmarks/server_load.py [--sessions 512] [--clients 64] [--steps 4] \\
        [--exec-steps 1] [--idle 60] [--think 0] [--sandbox pool] [--mirror ../shared/data] \\
        [--profile FILE] [--out FILE]

Starts the server (``medagentgym serve``'s app, ``create_app(sandbox_pool=True)`` for
``--sandbox pool``) in its own process on loopback, then ``--clients`` concurrent HTTP clients
each open sessions one after another (``POST /envs``, TREQS on the synthetic database),
``reset`` them, and step each ``--steps`` times with an action that executes no code (a reply
that is not a JSON action: the whole step path — parse, feedback, history — without the
sandbox) and ``--exec-steps`` times with a small code action. Every session stays open.
``--think S`` makes each client wait ~S seconds before every request, as an RL trainer's
client waits for its model: with ``--clients`` equal to ``--sessions`` every session is
live at once and the load is ~sessions/S requests/s (the density measure); without it the
clients send back to back (the saturation measure: latency is then queueing, clients /
throughput). It reports:

* sessions held at the end and at the peak (sampled every 2 s; with a load longer than
  ``--idle`` the first sessions expire before the last open), per CPU core, and the server's memory per session (RSS of the
  server process plus PSS of its sandbox processes, over the sessions);
* reset latency (p50, p99) and step latency excluding execution (p50, p99), and executing
  steps apart (they queue on the pool's workers: one per CPU);
* idle expiry: after the load stops, how long until the server has closed every session
  (``idle_timeout_s = --idle``), and whether its sandbox processes are back to the
  workers alone.

The load is bounded (sessions x steps requests); compare numbers within one run on a shared
machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from medagentgym.bench.procs import emit, machine_cpu_s, own_cpu_s, process_tree, smaps_kib

ADMIN = "bench-admin-token-0123456789"
NOT_AN_ACTION = "I am still thinking about it."


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def start_server(port: int, sessions: int, idle: float, sandbox: str,
                 profile: Path | None = None) -> subprocess.Popen:
    run = (f"uvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning', "
           "backlog=4096, timeout_keep_alive=600)")
    if profile is not None:  # the server's own profile, written when it is stopped
        # uvicorn re-raises the signal it caught after its shutdown, with the handler it
        # found: this one, which writes the profile
        run = ("import cProfile, signal, sys\npr = cProfile.Profile()\n"
               "def done(*_):\n    pr.disable()\n"
               f"    pr.dump_stats({str(profile)!r})\n    sys.exit(0)\n"
               "signal.signal(signal.SIGTERM, done)\npr.enable()\n" + run + "\ndone()")
    code = (
        "import uvicorn\nfrom medagentgym.server.app import create_app\n"
        f"app = create_app(max_envs={sessions + 8}, idle_timeout_s={idle}, token=None, "
        f"admin_token={ADMIN!r}, sandbox_pool={sandbox == 'pool'})\n" + run + "\n")
    return subprocess.Popen([sys.executable, "-c", code])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_server(port, args.sessions, args.idle, args.sandbox, args.profile)
    url = f"http://127.0.0.1:{port}"
    limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4)
    out: dict[str, Any] = {"sessions_asked": args.sessions, "clients": args.clients,
                           "think_s": args.think,
                           "cpus": len(os.sched_getaffinity(0)), "sandbox": args.sandbox,
                           "idle_timeout_s": args.idle}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start")
                await asyncio.sleep(0.2)
            # the task set builds once (first create): not part of the per-session numbers
            t0 = time.perf_counter()
            r = await http.post("/envs", json={"dataset": "treqs", "options": {"database": "synthetic"}})
            r.raise_for_status()
            first = r.json()
            # ... and the first reset starts the sandbox pool's workers (one per CPU)
            h = {"X-Env-Secret": first["secret"]}
            (await http.post(f"/envs/{first['env_id']}/reset", json={"seed": 0}, headers=h)
             ).raise_for_status()
            await http.delete(f"/envs/{first['env_id']}", headers={"X-Env-Secret": first["secret"]})
            out["task_build_s"] = round(time.perf_counter() - t0, 2)

            create_s, reset_s, step_s, exec_s, errors = [], [], [], [], []
            # the server's own time per request (its Server-Timing header)
            srv: dict[str, list[float]] = {"create": [], "reset": [], "step": [], "exec": []}

            def server_time(kind: str, r: Any) -> None:
                head = r.headers.get("server-timing", "")
                if "dur=" in head:
                    srv[kind].append(float(head.split("dur=")[1].split(";")[0]) / 1e3)
            held: list[tuple[str, str]] = []
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(args.sessions):
                queue.put_nowait(i)

            # clients with think time (a model answering between steps) are spread over
            # several connection pools: httpx scans its whole pool on every request
            https = [http] + [httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(
                max_connections=20, max_keepalive_connections=20))
                for _ in range((args.clients - 1) // 16 if args.think else 0)]
            rng = random.Random(0)

            async def think() -> None:
                if args.think:
                    await asyncio.sleep(args.think * rng.uniform(0.5, 1.5))

            async def timed(http: Any, kind: str, samples: list[float], path: str,
                            **kw: Any) -> Any:
                """One request after the client's think time: its latency as the client and
                as the server saw it."""
                await think()
                t = time.perf_counter()
                r = await http.post(path, **kw)
                samples.append(time.perf_counter() - t)
                server_time(kind, r)
                r.raise_for_status()
                return r

            async def client(k: int) -> None:
                http = https[k % len(https)]
                while True:
                    try:
                        i = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    try:
                        env = (await timed(http, "create", create_s, "/envs", json={
                            "dataset": "treqs", "options": {"database": "synthetic"}})).json()
                        h = {"X-Env-Secret": env["secret"]}
                        eid = env["env_id"]
                        await timed(http, "reset", reset_s, f"/envs/{eid}/reset",
                                    json={"seed": i}, headers=h)
                        for _ in range(args.steps):
                            await timed(http, "step", step_s, f"/envs/{eid}/step",
                                        json={"action": NOT_AN_ACTION}, headers=h)
                        for _ in range(args.exec_steps):
                            await timed(http, "exec", exec_s, f"/envs/{eid}/step", headers=h,
                                        json={"action": {"action": "validate_code",
                                                         "params": {"code": "answer = 1 + 1"}}})
                        held.append((eid, env["secret"]))
                    except Exception as exc:  # counted, reported
                        errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")

            peak = {"held": 0}

            async def watch() -> None:  # sessions the server holds, sampled during the load
                while True:
                    await asyncio.sleep(2.0)
                    with contextlib.suppress(Exception):
                        got = await http.get("/envs", headers={"X-Admin-Token": ADMIN})
                        peak["held"] = max(peak["held"], got.json()["count"])

            watcher = asyncio.get_running_loop().create_task(watch())
            t0 = time.perf_counter()
            cpu0 = own_cpu_s(server.pid)
            busy0 = machine_cpu_s()
            await asyncio.gather(*(client(k) for k in range(args.clients)))
            wall = time.perf_counter() - t0
            for extra in https[1:]:
                await extra.aclose()
            server_cpu = own_cpu_s(server.pid) - cpu0
            busy1 = machine_cpu_s()
            watcher.cancel()
            listing = (await http.get("/envs", headers={"X-Admin-Token": ADMIN})).json()
            pids = process_tree(server.pid)
            rss = smaps_kib([server.pid], "Rss") / 1024
            sandbox_pss = smaps_kib(pids[1:], "Pss") / 1024
            n = len(held)
            out.update({
                "sessions_held": listing.get("count", n),
                "sessions_held_peak": max(peak["held"], listing.get("count", n)),
                "sessions_held_per_core": round(max(peak["held"], listing.get("count", n))
                                                / out["cpus"], 1),
                "errors": len(errors), "first_errors": errors[:3],
                "load_wall_s": round(wall, 1),
                "requests_per_s": round((len(create_s) + len(reset_s) + len(step_s)
                                         + len(exec_s)) / wall, 1),
                "create_ms": {"p50": round(1e3 * pct(create_s, 0.5), 1),
                              "p99": round(1e3 * pct(create_s, 0.99), 1)},
                "reset_ms": {"p50": round(1e3 * pct(reset_s, 0.5), 1),
                             "p99": round(1e3 * pct(reset_s, 0.99), 1)},
                "step_without_execution_ms": {"p50": round(1e3 * pct(step_s, 0.5), 1),
                                              "p99": round(1e3 * pct(step_s, 0.99), 1),
                                              "n": len(step_s)},
                "step_with_execution_ms": {"p50": round(1e3 * pct(exec_s, 0.5), 1),
                                           "p99": round(1e3 * pct(exec_s, 0.99), 1),
                                           "n": len(exec_s)},
                # the same, as the server saw them (Server-Timing: request in to response
                # out; the rest of what a client sees is its own loop, the network, the OS)
                "server_side_ms": {k: {"p50": round(1e3 * pct(v, 0.5), 1),
                                       "p99": round(1e3 * pct(v, 0.99), 1)}
                                   for k, v in srv.items() if v},
                # the server process alone (event loop, HTTP, env logic; not the sandboxes)
                "server_cpu_ms_per_request": round(1e3 * server_cpu / max(1, len(create_s) + len(
                    reset_s) + len(step_s) + len(exec_s)), 2),
                "server_share_of_one_core": round(server_cpu / wall, 3),
                "machine_busy": round((busy1[0] - busy0[0]) / max(1e-9, busy1[1] - busy0[1]), 3),
                "server_processes": len(pids),
                "server_rss_mb": round(rss, 1),
                "sandbox_pss_mb": round(sandbox_pss, 1),
                "mb_per_session": round((rss + sandbox_pss) / max(1, n), 2),
            })
            # idle expiry: nothing touches the sessions now
            t0 = time.perf_counter()
            total = out["sessions_held"]
            while total and time.perf_counter() - t0 < args.idle * 2 + 60:
                await asyncio.sleep(1.0)
                total = (await http.get("/envs", headers={"X-Admin-Token": ADMIN})).json()["count"]
            out["all_expired_after_s"] = round(time.perf_counter() - t0, 1) if not total else None
            out["sessions_left_after_expiry"] = total
            await asyncio.sleep(1.0)
            out["server_processes_after_expiry"] = len(process_tree(server.pid))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=512)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--exec-steps", type=int, default=1)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--think", type=float, default=0.0,
                        help="seconds a client waits before each request (x0.5-1.5, seeded): "
                             "the model's time between steps; 0 = back to back (saturation)")
    parser.add_argument("--sandbox", choices=("pool", "dedicated"), default="pool")
    parser.add_argument("--mirror", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--profile", type=Path, default=None,
                        help="write the server process's cProfile stats here")
    args = parser.parse_args()
    os.environ.setdefault("MEDAGENTGYM_HOME", tempfile.mkdtemp(prefix="mag-bench-"))
    from medagentgym.data.sources import pull

    pull("treqs", args.mirror if args.mirror.exists() else None)
    result = {"benchmark": "server_load",
              "command": "python benchmarks/server_load.py " + " ".join(sys.argv[1:]),
              **asyncio.run(run(args))}
    emit(result, args.out)


if __name__ == "__main__":
    main()
