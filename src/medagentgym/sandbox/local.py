"""The ``local`` provider: the warm worker as a plain subprocess. It does NOT isolate.

Agent code gets rlimits, its own process group, a private working directory and an
allow-listed environment (no API keys) — but it can read any file the host user can, reach
the network, and a child that leaves its process group can outlive the call. Inputs are
linked under the work dir, and their sandbox paths (``/data/...``) in code and commands are
rewritten to point there. Use it only on
machines without namespaces, for code you trust.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from typing import Any

from medagentgym.sandbox.base import WORKER_SCRIPT, WorkerSandbox

log = logging.getLogger(__name__)

UNSAFE_WARNING = (
    "medagentgym: the 'local' sandbox provider does NOT isolate agent code (it can read your "
    "files and reach the network); use the 'bwrap' provider for untrusted code"
)


class LocalSandbox(WorkerSandbox):
    name = "local"
    isolates = False
    _warned = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not LocalSandbox._warned:
            LocalSandbox._warned = True
            warnings.warn(UNSAFE_WARNING, RuntimeWarning, stacklevel=3)
            log.warning(UNSAFE_WARNING)
        if self.inputs:
            self._link_inputs()
        self._relays: dict[int, Any] = {}  # service port -> host-side relay server

    async def start(self) -> None:
        await super().start()
        await self._start_relays()

    async def _start_relays(self) -> None:
        """Without a network namespace, each service gets a relay on an ephemeral host port,
        and its fixed port in code and commands is rewritten to that one."""
        import asyncio

        for port, sock in self.services.items():
            if port in self._relays:
                continue

            async def relay(reader: Any, writer: Any, sock: str = str(sock)) -> None:
                try:
                    up_r, up_w = await asyncio.open_unix_connection(sock)
                except OSError:
                    writer.close()
                    return

                async def copy(src: Any, dst: Any) -> None:
                    try:
                        while data := await src.read(65536):
                            dst.write(data)
                            await dst.drain()
                    except (OSError, asyncio.IncompleteReadError):
                        pass
                    finally:
                        with contextlib.suppress(Exception):
                            dst.write_eof()

                await asyncio.gather(copy(reader, up_w), copy(up_r, writer))
                writer.close()
                up_w.close()

            self._relays[port] = await asyncio.start_server(relay, "127.0.0.1", 0)

    def _service_ports(self) -> dict[int, int]:
        return {port: srv.sockets[0].getsockname()[1] for port, srv in self._relays.items()}

    async def close(self) -> None:
        for srv in self._relays.values():
            srv.close()
        self._relays.clear()
        await super().close()

    def _link_inputs(self) -> None:
        """Without mount namespaces, inputs appear under the work dir instead."""
        for target, source in self.inputs.items():
            link = self.workdir / target.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(source.resolve())

    def reset_workdir(self) -> None:
        super().reset_workdir()
        self._link_inputs()
        (self.workdir / ".tmp").mkdir(exist_ok=True)

    def _worker_env(self) -> dict[str, str]:
        env = super()._worker_env()
        tmp = self.workdir / ".tmp"  # never the host's /tmp
        tmp.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmp)
        return env

    def _local_path(self, text: str) -> str:
        """Inputs live under the work dir here: point the prompt's paths (``/data/...``) there,
        and services' fixed ports to their relays."""
        import re

        for port, real in self._service_ports().items():
            text = re.sub(rf"\b(localhost|127\.0\.0\.1):{port}\b", rf"\g<1>:{real}", text)
        if not self.inputs:
            return text
        pattern = "|".join(re.escape(t) for t in sorted(self.inputs, key=len, reverse=True))
        return re.sub(pattern, lambda m: str(self.workdir / m.group(0).lstrip("/")), text)

    async def execute(self, code: str, *, timeout: float = 30.0, **kwargs: Any) -> Any:
        return await super().execute(self._local_path(code), timeout=timeout, **kwargs)

    async def run(self, argv: Any, *, timeout: float = 30.0) -> Any:
        if isinstance(argv, str) or not argv:
            raise TypeError("argv must be a non-empty list of strings (no shell on the host)")
        return await super().run([self._local_path(str(a)) for a in argv], timeout=timeout)

    def _worker_config(self) -> dict[str, Any]:
        cfg = super()._worker_config()
        cfg["isolation"] = "none"
        return cfg

    def _command(self, config: dict[str, Any]) -> list[str]:
        return [sys.executable, "-s", "-B", str(WORKER_SCRIPT)]

    def _spawn_kwargs(self) -> dict[str, Any]:
        return {"cwd": str(self.workdir)}
