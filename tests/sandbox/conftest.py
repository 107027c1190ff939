"""Fixtures: one sandbox per provider available on this machine (the conformance matrix)."""

from __future__ import annotations

import os

import pytest

from medagentgym.sandbox import SandboxLimits, SyncSandbox, available_providers, create_sandbox
from medagentgym.sandbox.base import sandbox_uid_range

MARK = "mag-conformance-7301"
# the uids this test process's sandboxes run as (medagentgym.sandbox.base._allocate_uid), so
# that sandboxes of other processes on the machine are not mistaken for ours
_OUR_UIDS = sandbox_uid_range()


def _providers() -> list[str]:
    found = []
    for name, (ok, _why) in available_providers().items():
        if ok:
            found.append(name)
    return found


PROVIDERS = _providers()


@pytest.fixture(scope="module", params=PROVIDERS)
def sandbox(request, tmp_path_factory):
    """A started sandbox with a read-only input file at /data/input.txt."""
    data = tmp_path_factory.mktemp("inputs") / "input.txt"
    data.write_text("hello from the host\n")
    limits = SandboxLimits(memory_bytes=2 * 1024**3, max_output_bytes=200_000, nproc=48)
    if request.param == "local":
        from medagentgym.sandbox.local import LocalSandbox

        LocalSandbox._warned = False  # it warns once per process
    with pytest.warns(RuntimeWarning) if request.param == "local" else _nullcontext():
        inner = create_sandbox(request.param, {"/data/input.txt": data}, limits=limits)
    sb = SyncSandbox(inner).start()
    yield sb
    sb.close()


@pytest.fixture
def isolating(sandbox):
    """Skip containment tests on providers that do not isolate (local)."""
    if not sandbox.inner.isolates:
        pytest.skip(f"provider {sandbox.provider!r} does not isolate")
    return sandbox


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def stray_processes(marker: str = MARK, *, allow_idle_workers: bool = True) -> list[str]:
    """Processes whose command line carries ``marker`` or that run as a sandbox uid.

    A live sandbox keeps one idle, pre-forked payload (the worker script, as the sandbox
    uid) ready for its next call; ``allow_idle_workers`` ignores those.
    """
    found = []
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            uid = os.stat(f"/proc/{entry.name}").st_uid
        except OSError:
            continue
        idle_worker = allow_idle_workers and "/opt/medagentgym/worker.py" in cmd
        if marker in cmd or (os.geteuid() == 0 and uid in _OUR_UIDS and not idle_worker):
            found.append(f"{entry.name} uid={uid}: {cmd[:120]}")
    return found
