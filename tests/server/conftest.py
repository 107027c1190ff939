"""Shared helpers of the server tests: a real uvicorn server in a thread, sandbox process
checks, and an answerable TREQS task."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

FAMILY = {"database": "synthetic"}  # as tests/conftest.py: one shared synthetic build


class ServerThread:
    """A real uvicorn server in a background thread, on a port the OS picked."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self.sock.close()

    @property
    def registry(self):
        return self.app.state.registry


def session_processes(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid`` (a sandbox's process tree)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


def wait_gone(sid: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def sandbox_pid(server: ServerThread, env_id: str) -> int:
    proc = server.registry.envs[env_id].core._sandbox._proc
    assert proc is not None and proc.returncode is None
    return proc.pid


def code(source: str) -> dict:
    return {"action": "validate_code", "params": {"code": source}}


@pytest.fixture(scope="module")
def gold(mag_home):
    """Test-side: an answerable TREQS task, its oracle code and its gold SQL."""
    from medagentgym.tasks.registry import get_family, load_tasks

    tasks = load_tasks("treqs", "test", **FAMILY)
    task = next(t for t in tasks if t.truth.value and t.truth.extra.get("sql"))
    code = get_family("treqs", **FAMILY).oracle_code(task)
    return {"task": task, "code": code, "sql": task.truth.extra["sql"], "n": len(tasks)}
