"""The ``local`` provider: the warm worker as a plain subprocess. It does NOT isolate.

Agent code gets rlimits, its own process group, a private working directory and an
allow-listed environment (no API keys) — but it can read any file the host user can, reach
the network, and a child that leaves its process group can outlive the call. Inputs are
linked under the work dir, and their sandbox paths (``/data/...``) in code and commands are
rewritten to point there. Use it only on
machines without namespaces, for code you trust.
"""

from __future__ import annotations

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
        """Inputs live under the work dir here: point the prompt's paths (``/data/...``) there."""
        if not self.inputs:
            return text
        import re

        pattern = "|".join(re.escape(t) for t in sorted(self.inputs, key=len, reverse=True))
        return re.sub(pattern, lambda m: str(self.workdir / m.group(0).lstrip("/")), text)

    async def execute(self, code: str, *, timeout: float = 30.0) -> Any:
        return await super().execute(self._local_path(code), timeout=timeout)

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
