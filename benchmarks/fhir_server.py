"""The embedded FHIR server of MedAgentBench: start-up time and memory, requests per second
(read, search, create) over its unix socket, and the episode reset.

    .venv/bin/python benchmarks/fhir_server.py [--mirror ../shared/data] \
        [--out docs/benchmarks/fhir_server.json]

* start-up — a fresh interpreter (``python -c``) that loads the sources, builds the seed
  (500 recorded patients + synthesised labs; with the default 2,000 generated tasks; with
  10,000) and starts a server listening, against a fresh interpreter that only imports the
  package: seconds and resident memory (VmRSS) of each;
* requests/s — one client sending requests back to back over the unix socket (HTTP/1.1, one
  connection per request, as the sandbox's relay does), and four clients at once, against
  calling the server's handler directly (no HTTP) in the same run;
* reset — ``await server.reset()`` after an episode of 0 and of 64 created resources
  (p50/p99 over 2,000 and 300 resets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from medagentgym.bench.procs import emit

ROOT = Path(__file__).resolve().parents[1]


def _pct(v: list[float], q: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))]


_STARTUP = r"""
import json, sys, time, asyncio
t0 = time.perf_counter()
import medagentgym
from medagentgym.tasks import medagentbench as m
from medagentgym.tasks.fhir.server import FhirServer
d, n = sys.argv[1], int(sys.argv[2])
t_import = time.perf_counter() - t0
if n >= 0:
    seed = m._source(d)[2] if n == 0 else m._generated(d, n, 0, "{}", tuple(range(1, 11)))[1]
    svc = FhirServer(seed)
    asyncio.run(svc.start())
rss = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmRSS")][0]
print(json.dumps({"seconds": time.perf_counter() - t0, "import_s": t_import,
                  "rss_mb": rss / 1024, "resources": len(seed) if n >= 0 else 0}))
"""


def startup(source: str, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, n in (("import only", -1), ("published seed", 0),
                     ("+ 2,000 generated tasks", 2000), ("+ 10,000 generated tasks", 10000)):
        runs = []
        for _ in range(repeats):
            p = subprocess.run([sys.executable, "-c", _STARTUP, source, str(n)], check=True,
                               capture_output=True, text=True, cwd=ROOT)
            runs.append(json.loads(p.stdout))
        out[label] = {"seconds_p50": round(statistics.median(r["seconds"] for r in runs), 3),
                      "rss_mb_p50": round(statistics.median(r["rss_mb"] for r in runs), 1),
                      "resources": runs[0]["resources"]}
    base = out["import only"]
    for v in out.values():
        v["extra_seconds"] = round(v["seconds_p50"] - base["seconds_p50"], 3)
        v["extra_rss_mb"] = round(v["rss_mb_p50"] - base["rss_mb_p50"], 1)
    return out


def _raw(sock_path: str, request: bytes) -> int:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(request)
    chunks = []
    while True:
        b = s.recv(65536)
        if not b:
            break
        chunks.append(b)
    s.close()
    data = b"".join(chunks)
    return int(data[9:12])


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost:8080\r\n\r\n".encode()


def _post(path: str, body: dict) -> bytes:
    raw = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: "
            f"application/fhir+json\r\nContent-Length: {len(raw)}\r\n\r\n").encode() + raw


def throughput(seed: Any, seconds: float) -> dict[str, Any]:
    from medagentgym.tasks.contract import HttpRequest
    from medagentgym.tasks.fhir.seed import NOW
    from medagentgym.tasks.fhir.server import FhirServer

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    svc = FhirServer(seed, now=NOW)
    run(svc.start())
    bp = {"resourceType": "Observation", "status": "final", "code": {"text": "BP"},
          "subject": {"reference": "Patient/S6534835"}, "valueString": "118/77 mmHg",
          "effectiveDateTime": "2023-11-13T10:15:00+00:00"}
    kinds = {
        "read Patient/{id}": (_get("/fhir/Patient/S6534835"), 200),
        "search Patient (name + birthdate)": (
            _get("/fhir/Patient?given=Peter&family=Stafford&birthdate=1932-12-29"), 200),
        "search Observation (patient + code, _count=5000)": (
            _get("/fhir/Observation?patient=S6426560&code=GLU&_count=5000"), 200),
        "create Observation (POST)": (_post("/fhir/Observation", bp), 201),
    }
    results: dict[str, Any] = {}
    for name, (req, want) in kinds.items():
        is_post = req.startswith(b"POST")
        # direct handler calls (no HTTP), the baseline
        head, _, body = req.partition(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n")[0].decode().split(" ")
        hreq = HttpRequest(method, target, {}, body)

        async def direct(n: int, hreq: HttpRequest = hreq, is_post: bool = is_post) -> float:
            t0 = time.perf_counter()
            for i in range(n):
                if is_post and i % 60 == 0:
                    await svc.reset()
                await svc.handle(hreq)
            return time.perf_counter() - t0

        n = 200
        while run(direct(n)) < seconds / 4:
            n *= 2
        direct_rps = n / run(direct(n))

        def client(n: int, req: bytes = req, want: int = want, is_post: bool = is_post) -> None:
            for i in range(n):
                if is_post and i % 15 == 0:  # 4 clients stay under 64 creations per episode
                    run(svc.reset())
                assert _raw(str(svc.socket_path), req) == want

        t0 = time.perf_counter()
        count = 0
        while time.perf_counter() - t0 < seconds:
            client(50)
            count += 50
        one = count / (time.perf_counter() - t0)
        run(svc.reset())
        threads = [threading.Thread(target=client, args=(max(50, int(one * seconds / 4)),))
                   for _ in range(4)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        four = 4 * max(50, int(one * seconds / 4)) / (time.perf_counter() - t0)
        results[name] = {"http_1_client_rps": round(one), "http_4_clients_rps": round(four),
                         "direct_handler_rps": round(direct_rps),
                         "http_share_of_direct": round(one / direct_rps, 3)}
        run(svc.reset())

    # reset after an episode of k created resources
    resets: dict[str, Any] = {}
    for k in (0, 64):
        times = []
        for _ in range(2000 if k == 0 else 300):
            for _ in range(k):
                run(svc.handle(HttpRequest("POST", "/fhir/Observation", {},
                                           json.dumps(bp).encode())))
            async def timed() -> float:
                t0 = time.perf_counter()
                await svc.reset()
                return time.perf_counter() - t0
            times.append(run(timed()))
        resets[f"after {k} writes"] = {"p50_us": round(_pct(times, 0.5) * 1e6, 1),
                                       "p99_us": round(_pct(times, 0.99) * 1e6, 1)}
    run(svc.stop())
    loop.call_soon_threadsafe(loop.stop)
    return {"requests": results, "reset": resets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mirror", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--seconds", type=float, default=3.0, help="per request kind")
    parser.add_argument("--repeats", type=int, default=3, help="start-up runs per variant")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    source = str((args.mirror / "medagentbench").resolve())
    if not Path(source).is_dir():
        sys.exit(f"no MedAgentBench source at {source} (pass --mirror DIR)")
    from medagentgym.tasks.medagentbench import _source

    report = {"startup": startup(source, args.repeats),
              **throughput(_source(source)[2], args.seconds)}
    emit(report, args.out)


if __name__ == "__main__":
    main()
