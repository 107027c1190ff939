"""The sandbox interface: results, limits, and the provider ABC.

A *provider* (bwrap, local, and later docker) knows how to start the warm worker
(``_worker.py``) in some kind of isolation. Everything after the start — the request/response
protocol, deadlines, restarts after a crash — is shared and lives in :class:`WorkerSandbox`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import tempfile
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medagentgym.errors import ConfigurationError, SandboxError

log = logging.getLogger(__name__)

Status = Literal["ok", "error", "timeout", "memory", "killed", "output_limit"]

WORKER_SCRIPT = Path(__file__).with_name("_worker.py")
#: Where the task's working directory appears inside the sandbox.
SANDBOX_WORKDIR = "/workspace"
#: Modules the warm worker imports once so executions don't pay for them.
CORE_PRELOAD = ("numpy", "pandas", "sqlite3", "json", "csv", "math", "statistics", "re",
                "collections", "datetime")
SCIENCE_PRELOAD = ("scipy", "scipy.stats", "statsmodels.api", "sklearn", "lifelines", "Bio")


PRELOAD_PRESETS = {"none": (), "core": CORE_PRELOAD, "science": (*CORE_PRELOAD, *SCIENCE_PRELOAD)}


def resolve_preload(preload: str | Sequence[str]) -> list[str]:
    """A preset name ("none", "core", "science") or an explicit list of module names."""
    if isinstance(preload, str):
        if preload not in PRELOAD_PRESETS:
            raise ConfigurationError(
                f"unknown preload preset {preload!r}; use one of {sorted(PRELOAD_PRESETS)} "
                "or a list of module names")
        return list(PRELOAD_PRESETS[preload])
    return [str(m) for m in preload]


class SandboxLimits(BaseModel):
    """Resource limits applied to every execution (per process, via rlimits)."""

    model_config = ConfigDict(frozen=True)

    memory_bytes: int = Field(4 * 1024**3, description="address-space limit per process")
    file_bytes: int = Field(256 * 1024**2, description="largest file a process may write")
    nproc: int = Field(64, description="processes and threads the code may run at once")
    nofile: int = Field(1024, description="open file descriptors per process")
    max_output_bytes: int = Field(1_000_000, description="stdout+stderr kept per execution")
    tmp_bytes: int = Field(512 * 1024**2, description="size of the private /tmp")
    workspace_bytes: int = Field(512 * 1024**2,
                                 description="size of /workspace (bwrap: a tmpfs per episode)")
    inodes: int = Field(20_000, description="files and directories allowed in /tmp and in "
                                            "/workspace, each (bwrap)")
    shm_bytes: int = Field(64 * 1024**2, description="System V shared memory and /dev/shm "
                                                     "per execution (bwrap)")
    nice: int = Field(5, ge=0, le=19, description=(
        "CPU niceness of the sandbox's processes, added to the host's: agent code yields "
        "the CPU to the harness (event loop, model client, server) when both want it"))

    def for_request(self) -> dict[str, int]:
        return {
            "memory_bytes": self.memory_bytes,
            "file_bytes": self.file_bytes,
            "nproc": self.nproc,
            "nofile": self.nofile,
        }


class ProbeValue(BaseModel):
    """What one probe returned: a JSON value (and the Python type it had), or an error."""

    value: Any = None
    type: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ExecResult(BaseModel):
    """What one execution (``execute`` or ``run``) produced."""

    status: Status
    answer: Any = None
    answer_type: str | None = Field(None, description="Python type of `answer`, if it was set")
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    exit_code: int | None = None
    error: str | None = Field(None, description="one-line summary of what went wrong")
    error_line: int | None = None
    traceback: str | None = None
    answer_error: str | None = Field(None, description="why `answer` could not be returned")
    output_bytes: int = 0
    probes: dict[str, ProbeValue] | None = Field(
        None, description="trusted expressions evaluated after the code, in its namespace")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def has_answer(self) -> bool:
        return self.answer_type is not None and self.answer_error is None

    def feedback(self, max_chars: int = 4000) -> str:
        """The text an agent sees: status, output and (trimmed) error."""
        parts = []
        out = self.stdout.strip()
        if out:
            parts.append(out)
        if self.status == "ok":
            if self.stderr.strip():
                parts.append(self.stderr.strip())
        else:
            parts.append(self.traceback.strip() if self.traceback else self.stderr.strip())
            if self.status != "error" or not self.traceback:
                parts.append(f"[{self.status}] {self.error or ''}".strip())
        text = "\n".join(p for p in parts if p)
        if len(text) > max_chars:
            half = max_chars // 2
            text = text[:half] + f"\n... ({len(text) - max_chars} characters omitted) ...\n" + text[-half:]
        return text


class Sandbox(abc.ABC):
    """Async interface every provider implements."""

    name: str = "abstract"
    #: whether the provider isolates agent code from the host
    isolates: bool = False

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def execute(self, code: str, *, timeout: float = 30.0,
                      probes: Mapping[str, str] | None = None,
                      probe_timeout: float = 10.0) -> ExecResult:
        """Run Python ``code`` in a fresh copy of the warm worker; capture ``answer``.

        ``probes`` (name -> Python expression) are sent into the sandbox only after the code
        has finished, evaluated in its namespace, and come back as JSON values in
        ``result.probes`` — compare them on the host (the agent's code may have patched
        anything in there). What probes print is discarded; they get ``probe_timeout``
        seconds of their own."""

    @abc.abstractmethod
    async def run(self, argv: Sequence[str], *, timeout: float = 30.0) -> ExecResult:
        """Run a command (argv list, no host shell) in the sandbox's working directory."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def reset(self) -> None:
        """Start a new episode: nothing earlier executions left behind remains."""

    @abc.abstractmethod
    async def read_file(self, path: str, *, max_bytes: int = 1024**2) -> bytes:
        """A file as the sandbox sees it (relative paths: the working directory), read with
        the episode's own rights; at most ``max_bytes`` (a longer file raises SandboxFileError)."""

    @abc.abstractmethod
    async def write_file(self, path: str, data: bytes) -> None:
        """Write a file into the sandbox with the episode's own rights."""

    @property
    @abc.abstractmethod
    def workdir(self) -> Path | None:
        """Host path of the working directory, or None where it exists only inside the
        sandbox (bwrap: a tmpfs per episode) — use ``read_file``/``write_file`` then."""

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SandboxFileError(Exception):
    """A file could not be read from or written to the sandbox (missing, not a regular file,
    too large). Its cause is the sandbox's content — what the agent left — not our failure."""


_uid_counter = itertools.count()
UID_BASE = 0x10000000
_UIDS_PER_PROCESS = 4096


def sandbox_uid_range(pid: int | None = None) -> range:
    """The uids the sandboxes of process ``pid`` run as (``_allocate_uid``)."""
    pid = os.getpid() if pid is None else pid
    start = UID_BASE + (pid % 65536) * _UIDS_PER_PROCESS
    return range(start, start + _UIDS_PER_PROCESS)


def _allocate_uid() -> int:
    """A fresh non-root uid for one episode: RLIMIT_NPROC is per episode, and nothing of an
    earlier episode (files, processes) belongs to it. Reused only after 4,096 episodes of
    this process — by then the tmpfs mounts and PID namespaces of the old one are long gone."""
    return sandbox_uid_range()[next(_uid_counter) % _UIDS_PER_PROCESS]


def count_user_processes(uid: int) -> int:
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    n += 1
            except OSError:
                continue
    return n


def remove_tree(path: str | os.PathLike[str], *, keep_root: bool = False) -> None:
    """Delete a directory tree of any depth without recursion (a 3,000-deep tree an agent
    made must not raise RecursionError); symlinks are removed, never followed; errors on
    single entries are skipped."""
    root = os.fspath(path)
    if not os.path.lexists(root):
        return
    if os.path.islink(root) or not os.path.isdir(root):
        if not keep_root:
            with contextlib.suppress(OSError):
                os.unlink(root)
        return
    stack: list[tuple[str, bool]] = [(root, False)]
    while stack:
        current, expanded = stack.pop()
        if expanded:
            if current != root or not keep_root:
                with contextlib.suppress(OSError):
                    os.rmdir(current)
            continue
        with contextlib.suppress(OSError):
            os.chmod(current, 0o700)  # a directory the agent made unreadable
        stack.append((current, True))
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                stack.append((entry.path, False))
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


class WorkerSandbox(Sandbox):
    """Shared machinery: start the warm worker through ``self._command()`` and talk to it."""

    #: whether the working directory is a host directory (local) or lives only inside the
    #: sandbox (bwrap: a tmpfs per episode, reached through read_file / write_file)
    host_workdir: bool = True

    def __init__(
        self,
        inputs: Mapping[str, str | os.PathLike[str]] | None = None,
        *,
        limits: SandboxLimits | None = None,
        preload: str | Sequence[str] = "core",
        env: Mapping[str, str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        start_timeout: float = 60.0,
        services: Mapping[int, str | os.PathLike[str]] | None = None,
    ) -> None:
        self.inputs = {str(k): Path(v) for k, v in (inputs or {}).items()}
        self.services = {}
        for port, sock in (services or {}).items():
            if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
                raise ConfigurationError(f"service port must be an integer 1-65535: {port!r}")
            self.services[port] = Path(sock)
        for target, source in self.inputs.items():
            if not target.startswith("/") or ".." in Path(target).parts:
                raise ConfigurationError(f"sandbox input path must be absolute: {target!r}")
            if not source.exists():
                raise ConfigurationError(f"sandbox input {target!r}: host path {source} does not exist")
        self.limits = limits or SandboxLimits()
        self.preload = resolve_preload(preload)
        self.extra_env = dict(env or {})
        self._own_workdir = workdir is None
        self._workdir = Path(workdir) if workdir else None
        self.start_timeout = start_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._lock: asyncio.Lock | None = None
        self._ids = itertools.count(1)
        self._stderr_tail: deque[str] = deque(maxlen=50)
        self._stderr_task: asyncio.Task[None] | None = None
        self.info: dict[str, Any] = {}
        self.restarts = 0
        self._closed = False

    # -- provider hooks ---------------------------------------------------------------
    @abc.abstractmethod
    def _command(self, config: dict[str, Any]) -> list[str]:
        """argv that starts ``_worker.py``; ``config`` goes to it on stdin, not in argv."""

    def _worker_config(self) -> dict[str, Any]:
        return {"preload": self.preload, "isolation": "none", "drop_privileges": False,
                "workdir": str(self.workdir)}

    def _worker_env(self) -> dict[str, str]:
        """The allow-listed environment: nothing from the host unless named."""
        import sys

        venv_bin = str(Path(sys.executable).parent)
        env = {
            "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": SANDBOX_WORKDIR if self.isolates else str(self.workdir),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TMPDIR": "/tmp",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            "MPLBACKEND": "Agg",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "NUMEXPR_NUM_THREADS": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
        }
        env.update(self.extra_env)
        return env

    def _pass_fds(self) -> tuple[int, ...]:
        """File descriptors the launcher reads at start (closed here once it started)."""
        return ()

    def _new_episode_identity(self) -> dict[str, int]:
        """What the worker's ``reset`` request carries (bwrap as root: a fresh uid)."""
        return {}

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def workdir(self) -> Path | None:
        if not self.host_workdir:
            return None
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="mag-sbx-"))
        return self._workdir

    async def start(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            return
        if self._closed:
            raise SandboxError("sandbox is closed")
        import stat

        for port, sock in self.services.items():
            try:
                is_socket = stat.S_ISSOCK(os.stat(sock).st_mode)
            except OSError:
                is_socket = False
            if not is_socket:
                raise ConfigurationError(
                    f"service on port {port}: {sock} is not a listening unix socket; start the "
                    "service before the sandbox")
        self._lock = self._lock or asyncio.Lock()
        if self.host_workdir:
            self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._worker_config()
        argv = self._command(config)
        fds = self._pass_fds()
        t0 = time.perf_counter()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._launch_env(),
                limit=64 * 1024 * 1024,
                start_new_session=True,
                pass_fds=fds,
                **self._spawn_kwargs(),
            )
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stderr_tail.clear()
        self._stderr_task = asyncio.get_running_loop().create_task(self._pump_stderr(self._proc))
        try:
            config.setdefault("nice", self.limits.nice)
            self._proc.stdin.write(json.dumps(config).encode() + b"\n")
            await self._proc.stdin.drain()
            line = await asyncio.wait_for(self._proc.stdout.readline(), self.start_timeout)
        except TimeoutError:
            await self._kill()
            raise SandboxError(f"{self.name} sandbox did not start within {self.start_timeout:g} s")
        except (ConnectionError, BrokenPipeError):
            line = b""
        if not line:
            await self._proc.wait()
            await asyncio.sleep(0.05)
            raise SandboxError(
                f"{self.name} sandbox failed to start (exit {self._proc.returncode}): "
                + " | ".join(self._stderr_tail)[-2000:]
            )
        self.info = json.loads(line)
        self.info["start_s"] = time.perf_counter() - t0
        log.debug("%s sandbox ready: %s", self.name, self.info)

    def _launch_env(self) -> dict[str, str]:
        return self._worker_env()

    def _spawn_kwargs(self) -> dict[str, Any]:
        return {}

    async def _pump_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while True:
            line = await proc.stderr.readline()
            if not line:
                return
            self._stderr_tail.append(line.decode(errors="replace").rstrip())

    async def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stderr_task
        self._proc = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        proc = self._proc
        if proc is not None and proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.write(b'{"op": "exit"}\n')
                await proc.stdin.drain()
                await asyncio.wait_for(proc.wait(), 2.0)
        await self._kill()
        if self._own_workdir and self._workdir is not None:
            await asyncio.to_thread(remove_tree, self._workdir)

    def reset_workdir(self) -> None:
        """Empty the host working directory (providers that have one)."""
        if self.host_workdir and self._workdir is not None:
            remove_tree(self._workdir, keep_root=True)

    async def reset(self) -> None:
        """Forget everything earlier executions left behind. The worker stays warm: it drops
        its spare, mounts a fresh /tmp and /workspace (bwrap) and runs the next episode under
        a new uid — milliseconds, not a restart. Host-side cleanup runs off the event loop."""
        if self.host_workdir and self._workdir is not None:
            await asyncio.to_thread(self.reset_workdir)
        if self._proc is None or self._proc.returncode is not None:
            return  # the next request starts a fresh worker
        reply = await self._control({"op": "reset", **self._new_episode_identity()})
        if reply.get("status") != "ok":
            log.warning("%s sandbox: reset failed (%s); restarting it", self.name,
                        str(reply.get("error"))[-200:])
            await self._kill()

    # -- requests -----------------------------------------------------------------------
    async def _exchange(self, req: dict[str, Any], timeout: float) -> dict[str, Any] | str:
        """Send one request to the worker and read its one-line reply: the parsed reply, or
        a string saying why there is none (the worker is then stopped)."""
        if self._proc is None or self._proc.returncode is not None:
            if self._proc is not None:
                self.restarts += 1
            await self.start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        req["id"] = next(self._ids)
        try:
            proc.stdin.write(json.dumps(req).encode() + b"\n")
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except (TimeoutError, ConnectionError, BrokenPipeError, ValueError) as exc:
            await self._kill()
            return f"sandbox stopped responding ({type(exc).__name__}); restarted"
        if not line:
            await self._kill()
            tail = " | ".join(self._stderr_tail)[-500:]
            return f"sandbox worker died; restarted. {tail}".strip()
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            await self._kill()
            return "sandbox worker sent an unreadable reply; restarted"
        data.pop("id", None)
        return data

    async def _control(self, req: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            data = await self._exchange(req, timeout)
        return {"status": "error", "error": data} if isinstance(data, str) else data

    async def _raw_request(self, req: dict[str, Any], timeout: float,
                           extra_wait: float = 0.0) -> dict[str, Any] | str:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            req["timeout"] = timeout
            req["max_output_bytes"] = self.limits.max_output_bytes
            req["limits"] = self._request_limits()
            return await self._exchange(req, timeout + extra_wait + 10.0)

    async def _request(self, req: dict[str, Any], timeout: float,
                       extra_wait: float = 0.0) -> ExecResult:
        t0 = time.perf_counter()
        data = await self._raw_request(req, timeout, extra_wait)
        if isinstance(data, str):
            return ExecResult(status="killed", duration_s=time.perf_counter() - t0, error=data)
        try:
            return ExecResult.model_validate(data)
        except Exception as exc:  # the zygote vets what the payload says; be safe anyway
            return ExecResult(status="error", duration_s=time.perf_counter() - t0,
                              error=f"the execution's result could not be read: {type(exc).__name__}")

    def _request_limits(self) -> dict[str, int]:
        return self.limits.for_request()

    async def execute(self, code: str, *, timeout: float = 30.0,
                      probes: Mapping[str, str] | None = None,
                      probe_timeout: float = 10.0) -> ExecResult:
        if not isinstance(code, str):
            raise TypeError("code must be a string")
        req: dict[str, Any] = {"op": "exec", "code": code}
        if probes:
            for name, expr in probes.items():
                if not isinstance(name, str) or not isinstance(expr, str):
                    raise TypeError("probes map names to Python expressions (strings)")
            req["probes"] = [{"name": n, "expr": e} for n, e in probes.items()]
            req["probe_timeout"] = float(probe_timeout)
        return await self._request(req, timeout, probe_timeout if probes else 0.0)

    async def run(self, argv: Sequence[str], *, timeout: float = 30.0) -> ExecResult:
        if isinstance(argv, str) or not argv:
            raise TypeError("argv must be a non-empty list of strings (no shell on the host)")
        return await self._request({"op": "run", "argv": [str(a) for a in argv]}, timeout)

    async def read_file(self, path: str, *, max_bytes: int = 1024**2,
                        timeout: float = 30.0) -> bytes:
        import base64

        data = await self._raw_request({"op": "read_file", "path": str(path),
                                        "max_bytes": int(max_bytes)}, timeout)
        if isinstance(data, str) or data.get("status") != "ok":
            why = data if isinstance(data, str) else (data.get("error") or data.get("status"))
            raise SandboxFileError(f"cannot read {path!r} in the sandbox: {why}")
        if data.get("truncated"):
            raise SandboxFileError(f"{path!r} is larger than {max_bytes} bytes "
                                   f"({data.get('size')} bytes)")
        try:
            return base64.b64decode(str(data.get("data") or ""), validate=True)
        except ValueError as exc:
            raise SandboxFileError(f"cannot read {path!r}: bad data ({exc})") from None

    async def write_file(self, path: str, data: bytes, *, timeout: float = 30.0) -> None:
        import base64

        if not isinstance(data, bytes | bytearray):
            raise TypeError("data must be bytes")
        reply = await self._raw_request({"op": "write_file", "path": str(path),
                                         "data": base64.b64encode(bytes(data)).decode()}, timeout)
        if isinstance(reply, str) or reply.get("status") != "ok":
            why = reply if isinstance(reply, str) else (reply.get("error") or reply.get("status"))
            raise SandboxFileError(f"cannot write {path!r} in the sandbox: {why}")
