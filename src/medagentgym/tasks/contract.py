"""The task contract: what a family's grader and episode hooks may see and use.

A grader is ``async def grade(self, ctx: GradeContext) -> Grade``. The context carries the
task and stage, the agent's captured ``answer``, the execution that produced it (status,
output, *probe values*), a read-only view of the sandbox (files the agent wrote), the
episode's services (e.g. a FHIR server whose state is graded) and the step history. Grading
runs on the host; nothing in the context lets a grader hand ground truth to the sandbox.

``Grade.score`` in [0, 1] is the reward: binary families give 0 or 1, metric families a
continuous score, with ``correct`` meaning "meets the task's threshold".

Episode hooks (``setup`` / ``teardown``) get an :class:`Episode`: the task, the full sandbox
(to stage files) and the services (to reset or seed them).

Services are host-side servers on a unix socket that agent code reaches at
``http://localhost:PORT`` inside the sandbox (the sandbox relays the port; see
``docs/architecture.md``). A family declares them (:meth:`TaskFamily.make_services`); the
environment starts them before its sandbox, resets them before every episode and stops them
with the sandbox. :class:`HttpService` is a small, bounded HTTP/1.1 server for such services.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medagentgym.sandbox.base import ExecResult, ProbeValue

if TYPE_CHECKING:
    from medagentgym.sandbox.base import WorkerSandbox
    from medagentgym.types import Grade, StepRecord, Task


class SandboxView:
    """Read-only access to an episode's sandbox, for graders."""

    def __init__(self, sandbox: WorkerSandbox | None) -> None:
        self._sandbox = sandbox

    async def read_file(self, path: str, *, max_bytes: int = 1024**2) -> bytes:
        """A file the agent left (relative paths: ``/workspace``); raises
        ``SandboxFileError`` when it is missing, not a regular file or too large — grade
        that as the agent's failure."""
        if self._sandbox is None:
            from medagentgym.sandbox.base import SandboxFileError

            raise SandboxFileError("this episode has no sandbox")
        return await self._sandbox.read_file(path, max_bytes=max_bytes)

    async def read_text(self, path: str, *, max_bytes: int = 1024**2) -> str:
        return (await self.read_file(path, max_bytes=max_bytes)).decode("utf-8", errors="replace")


@dataclass
class GradeContext:
    """Everything a grader may look at (all of it host-side)."""

    task: Task
    stage: int
    answer: Any
    has_answer: bool
    result: ExecResult | None
    sandbox: SandboxView
    services: Mapping[str, Service] = field(default_factory=dict)
    history: Sequence[StepRecord] = ()
    protocol: str = "paper"
    submitted: bool = False

    @property
    def probes(self) -> dict[str, ProbeValue]:
        """Values of the family's probes, evaluated after the code in its namespace."""
        return dict(self.result.probes or {}) if self.result is not None else {}


@dataclass
class Episode:
    """What episode hooks get: the task, the sandbox (read and write) and the services."""

    task: Task
    sandbox: WorkerSandbox
    services: Mapping[str, Service]
    state: dict[str, Any] = field(default_factory=dict)


#: an extra action a family adds: (episode, params) -> (observation, grade or None)
ActionHandler = Callable[[Episode, dict[str, Any]], Awaitable[tuple[str, "Grade | None"]]]


# --------------------------------------------------------------------------- services


class Service(abc.ABC):
    """A host-side service reached from the sandbox at ``http://localhost:{port}``.

    It listens on :attr:`socket_path` (a unix socket in a private temp dir). ``reset`` runs
    before every episode: whatever the last episode did to the service must be gone.
    """

    #: the port agent code connects to inside the sandbox
    port: int = 8080

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="mag-svc-"))
        os.chmod(self._dir, 0o755)  # the sandbox's relay (another uid as root) connects
        self.socket_path = self._dir / "service.sock"

    @abc.abstractmethod
    async def start(self) -> None:
        """Listen on :attr:`socket_path`."""

    async def reset(self) -> None:
        """Drop every change the previous episode made."""
        return None

    async def stop(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


@dataclass
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 500: "Internal Server Error"}


class HttpService(Service):
    """A small HTTP/1.1 server (one request per connection) for a service's ``handle``.

    Requests are read with bounds (line, headers, body); a malformed or oversized request
    gets a 4xx and never reaches ``handle``; an exception in ``handle`` is a 500 (and is
    kept in :attr:`errors` for the host to see), never a crash of the service.
    """

    max_body = 1024**2
    max_header_bytes = 16 * 1024
    timeout = 30.0

    def __init__(self) -> None:
        super().__init__()
        self._server: asyncio.AbstractServer | None = None
        self.errors: list[str] = []

    @abc.abstractmethod
    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request (agent-made: everything in it is hostile)."""

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_unix_server(self._serve, str(self.socket_path))
            os.chmod(self.socket_path, 0o666)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        await super().stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            response = await asyncio.wait_for(self._read_and_handle(reader), self.timeout)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError,
                asyncio.LimitOverrunError):
            response = HttpResponse(400, b'{"error": "bad request"}')
        try:
            reason = _REASONS.get(response.status, "Status")
            extra = "".join(f"{k}: {v}\r\n" for k, v in response.headers.items()
                            if "\r" not in k + v and "\n" not in k + v)
            head = (f"HTTP/1.1 {response.status} {reason}\r\nContent-Type: {response.content_type}"
                    f"\r\nContent-Length: {len(response.body)}\r\n{extra}"
                    "Connection: close\r\n\r\n")
            writer.write(head.encode() + response.body)
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _read_and_handle(self, reader: asyncio.StreamReader) -> HttpResponse:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > self.max_header_bytes:
            return HttpResponse(413, b'{"error": "headers too large"}')
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return HttpResponse(400, b'{"error": "bad request line"}')
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            return HttpResponse(400, b'{"error": "bad Content-Length"}')
        if length < 0 or length > self.max_body:
            return HttpResponse(413, b'{"error": "body too large"}')
        body = await reader.readexactly(length) if length else b""
        request = HttpRequest(parts[0].upper(), parts[1], headers, body)
        try:
            return await self.handle(request)
        except Exception as exc:  # a service bug must not take the service down
            self.errors.append(f"{type(exc).__name__}: {exc}"[:500])
            return HttpResponse(500, b'{"error": "internal error"}')
