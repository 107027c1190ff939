"""Helpers shared by the MedAgentBench tests: FHIR servers served from an event loop in a
thread, clients over the unix socket, and agent-style code run against a server over a
loopback TCP bridge (as the sandbox's relay would)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx

from medagentgym.tasks.fhir.seed import NOW
from medagentgym.tasks.fhir.server import FhirServer

MIRROR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SOURCE_DIR = MIRROR / "medagentbench"


class Loop:
    """An event loop in a thread, serving FHIR servers on their unix sockets."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def start(loop: Loop, seed: Any, **kw: Any) -> FhirServer:
    svc = FhirServer(seed, now=NOW, **kw)
    loop.run(svc.start())
    return svc


def client(svc: FhirServer) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(svc.socket_path)),
                        base_url="http://localhost:8080/fhir/", timeout=10)


def tcp_bridge(loop: Loop, svc: FhirServer) -> tuple[Any, int]:
    """(server, port): ``svc`` also reachable on 127.0.0.1:port."""

    async def bridge() -> Any:
        return await asyncio.start_server(svc._serve, "127.0.0.1", 0)

    srv = loop.run(bridge())
    return srv, srv.sockets[0].getsockname()[1]


def run_code(loop: Loop, svc: FhirServer, code: str) -> dict:
    """Run agent-style code on the host against ``svc`` over loopback TCP."""
    srv, port = tcp_bridge(loop, svc)
    ns: dict[str, Any] = {}
    try:
        exec(code.replace("localhost:8080", f"127.0.0.1:{port}"), ns)
    finally:
        loop.loop.call_soon_threadsafe(srv.close)
    return ns
