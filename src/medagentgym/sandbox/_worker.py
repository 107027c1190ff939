"""The warm worker ("zygote") that runs inside a sandbox.

This file is executed as a standalone script inside the sandbox: it imports nothing from
``medagentgym`` (the package is not visible in there) and only the standard library at module
level. It reads its configuration (one JSON line) on stdin, preloads the heavy scientific
libraries once, then serves requests from the host, one JSON object per line on stdin,
answering one JSON object per line on stdout.

Every request runs in a fresh *payload* forked from the zygote, so each execution starts from
the same clean, pre-imported state and nothing an execution does survives it:

    zygote --(unshare CLONE_NEWPID; fork; setns back)--> payload P (PID 1 of its namespace)

P is forked ahead of its request (the next spare while the current request runs). With
``private_view`` (the ``bwrap`` provider), P first makes its own view of the system while
it still holds the zygote's capabilities: its own mount and IPC namespaces, a ``/proc`` that
shows only its own PID namespace (no other execution, no spare, no host command lines), capped
System V IPC (the objects die with the execution), and a fresh size-capped ``/dev/shm``. Then it
starts a new session, drops to the episode's unprivileged uid and every capability, sets
no_new_privs, installs a seccomp filter, and stays non-dumpable (nobody can open its memory or
files through ``/proc``) until its request has arrived. The zygote supervises P: it streams P's
stdout/stderr with a byte cap, enforces the wall-clock deadline, and reports the outcome; what P
reports (the captured ``answer``) is untrusted and the zygote keeps only the fields P may speak
for. When P exits, the kernel kills everything left in P's PID namespace, so daemonised, setsid
and double-forked children cannot outlive the call. Without PID namespaces (``isolation:
none``, the unsafe ``local`` provider) the zygote kills P's process group instead.

Between episodes (the ``reset`` request) the zygote throws the spare away, mounts a fresh
``/tmp`` and ``/workspace`` (tmpfs with a size and an inode budget, owned by the next episode's
uid) and forks a new spare: nothing an episode wrote, and no process, survives it.
"""

from __future__ import annotations

import base64
import ctypes
import gc
import io
import json
import os
import platform
import resource
import select
import signal
import socket
import struct
import sys
import time
import traceback

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
M_MMAP_THRESHOLD = -3  # mallopt
# the new mount API (the same numbers on x86_64 and aarch64)
SYS_OPEN_TREE, SYS_MOVE_MOUNT = 428, 429
OPEN_TREE_CLONE, AT_RECURSIVE, AT_EMPTY_PATH, AT_FDCWD = 1, 0x8000, 0x1000, -100
MOVE_MOUNT_F_EMPTY_PATH = 4
#: pooled workers build each episode's /tmp and /workspace here before detaching them
#: (root only, 0700; payloads detach it from their view)
EPISODES = "/episodes"
SANDBOX_WORKSPACE = "/workspace"
MAX_EPISODE_ID = 2**31
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
CAP_LAST = 63
ANSWER_MAX_BYTES = 4 * 1024 * 1024
FILE_MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
_READ_CHUNK = 65536

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


# --------------------------------------------------------------------------- answers


def to_jsonable(value, _depth=0):
    """Convert ``value`` to plain JSON types (numpy/pandas/datetime included)."""
    if _depth > 50:
        raise ValueError("answer is nested too deeply")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    mod = type(value).__module__ or ""
    if mod.startswith("numpy"):
        import numpy as np

        if isinstance(value, np.ndarray):
            return [to_jsonable(v, _depth + 1) for v in value.tolist()]
        if isinstance(value, np.datetime64):
            if np.isnat(value):
                return None
            return str(value)
        if isinstance(value, np.generic):
            return to_jsonable(value.item(), _depth + 1)
    if mod.startswith("pandas"):
        import pandas as pd

        if isinstance(value, pd.DataFrame):
            # a *named* index is data (a groupby key); row numbers are not
            named = any(n is not None for n in value.index.names)
            frame = value.reset_index() if named else value.reset_index(drop=True)
            return [
                {str(k): to_jsonable(v, _depth + 2) for k, v in row.items()}
                for row in frame.to_dict(orient="records")
            ]
        if isinstance(value, pd.Series):
            if any(n is not None for n in value.index.names):  # e.g. groupby(...).size()
                keys = value.index.tolist()
                return [[*map(lambda k: to_jsonable(k, _depth + 2), k if isinstance(k, tuple) else (k,)),
                         to_jsonable(v, _depth + 2)] for k, v in zip(keys, value.tolist(), strict=True)]
            return [to_jsonable(v, _depth + 1) for v in value.tolist()]
        if isinstance(value, pd.Index):
            return [to_jsonable(v, _depth + 1) for v in value.tolist()]
        if value is pd.NaT:
            return None
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
        if isinstance(value, pd.Timedelta):
            return value.total_seconds()
        if value is pd.NA:
            return None
    import datetime as dt
    import decimal
    import fractions

    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal | fractions.Fraction):
        return float(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(to_jsonable(k, _depth + 1)): to_jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        items = [to_jsonable(v, _depth + 1) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if isinstance(value, list | tuple | range):
        return [to_jsonable(v, _depth + 1) for v in value]
    if hasattr(value, "tolist"):
        return to_jsonable(value.tolist(), _depth + 1)
    return repr(value)


def type_name(value):
    t = type(value)
    mod = t.__module__
    return t.__qualname__ if mod in ("builtins", None) else f"{mod.split('.')[0]}.{t.__qualname__}"


# --------------------------------------------------------------------------- privileges


def _drop_all_capabilities():
    """Clear the permitted, effective and inheritable capability sets."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _enc(text):
    return None if text is None else text.encode()


def _mount(source, target, fstype, flags, data=None):
    if _libc.mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _umount(target):
    if _libc.umount2(_enc(target), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


def _episode_mounts(cfg, first):
    """In the zygote: a fresh, budgeted /tmp and /workspace for the next episode. The old
    ones are detached whole (any tree, any depth: nothing walks them)."""
    ep = cfg.get("episode")
    if not ep:
        return
    uid, gid = cfg.get("uid") or 0, cfg.get("gid") or 0
    inodes = int(ep["inodes"])
    for target, size, mode, owner in (("/tmp", ep["tmp_bytes"], 0o1777, (0, 0)),
                                      ("/workspace", ep["workspace_bytes"], 0o700, (uid, gid))):
        if not first:
            _umount(target)
        _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV,
               f"size={int(size)},nr_inodes={inodes},mode={mode:o},uid={owner[0]},gid={owner[1]}")
    # a Python installation under the host's /tmp (a CI checkout, say) is bound again on top
    for stash, target in ep.get("tmp_roots") or []:
        os.makedirs(target, mode=0o755, exist_ok=True)
        _mount(stash, target, None, MS_BIND | MS_REC)
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _private_view(cfg):
    """In P, still privileged: its own mount and IPC namespaces, a /proc of its own PID
    namespace, capped System V IPC and a fresh /dev/shm (see the module docstring)."""
    if _libc.unshare(CLONE_NEWNS | CLONE_NEWIPC) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(mount, ipc) failed: {os.strerror(err)}")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    shm = int(cfg.get("shm_bytes") or 64 * 1024 * 1024)
    for name, value in (("shmmax", shm), ("shmall", max(1, shm // 4096)), ("shmmni", 32),
                        ("msgmni", 16), ("msgmnb", 65536), ("msgmax", 8192),
                        ("sem", "32 1024 32 32")):
        with open(f"/proc/sys/kernel/{name}", "w") as fh:
            fh.write(str(value))
    _mount("/proc/sys", "/proc/sys", None, MS_BIND | MS_REC)
    _mount(None, "/proc/sys", None,
           MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if os.path.isdir("/dev/shm"):
        _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
               f"size={shm},nr_inodes=1024,mode=1777")


# Syscalls agent code never needs and that reach state outside the execution: kernel keyrings
# (shared by a uid), new namespaces (kernel attack surface), mounts, BPF, perf, modules, kexec.
_DENY = {
    "x86_64": {"keyctl": 250, "add_key": 248, "request_key": 249, "unshare": 272, "setns": 308,
               "mount": 165, "umount2": 166, "pivot_root": 155, "bpf": 321,
               "perf_event_open": 298, "userfaultfd": 323, "kexec_load": 246,
               "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
               "delete_module": 176, "open_by_handle_at": 304, "name_to_handle_at": 303,
               "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
               "fsmount": 432, "fspick": 433, "mount_setattr": 442, "io_uring_setup": 425,
               "syslog": 103, "acct": 163, "swapon": 167, "swapoff": 168, "reboot": 169,
               "quotactl": 179, "ptrace": 101},
    "aarch64": {"keyctl": 219, "add_key": 217, "request_key": 218, "unshare": 97, "setns": 268,
                "mount": 40, "umount2": 39, "pivot_root": 41, "bpf": 280,
                "perf_event_open": 241, "userfaultfd": 282, "kexec_load": 104,
                "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
                "delete_module": 106, "open_by_handle_at": 265, "name_to_handle_at": 264,
                "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
                "fsmount": 432, "fspick": 433, "mount_setattr": 442, "io_uring_setup": 425,
                "syslog": 116, "acct": 89, "swapon": 224, "swapoff": 225, "reboot": 142,
                "quotactl": 60, "ptrace": 117},
}
_ARCH = {"x86_64": (0xC000003E, 56, 435), "aarch64": (0xC00000B7, 220, 435)}
_CLONE_NS_FLAGS = 0x7E020080  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME


def _seccomp_program(machine):
    """A classic-BPF seccomp filter: EPERM for ``_DENY``, clone with namespace flags and any
    foreign ABI (i386 / x32 entry points); ENOSYS for clone3 (libc falls back to clone)."""
    if machine not in _DENY:
        return None
    arch, nr_clone, nr_clone3 = _ARCH[machine]
    eperm, enosys, allow = 0x00050000 | 1, 0x00050000 | 38, 0x7FFF0000
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    deny = sorted(set(_DENY[machine].values()))
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, eperm), (ld, 0, 0, 0)]
    if machine == "x86_64":
        prog += [(jge, 0, 1, 0x40000000), (ret, 0, 0, eperm)]  # x32 syscalls
    prog += [(jeq, 0, 1, nr_clone3), (ret, 0, 0, enosys)]
    prog += [(jeq, 0, 3, nr_clone), (ld, 0, 0, 16), (jset, 0, 1, _CLONE_NS_FLAGS),
             (ret, 0, 0, eperm)]
    # after the clone block the accumulator may hold clone's flags: reload the number
    prog += [(ld, 0, 0, 0)]
    for i, nr in enumerate(deny):
        remaining = len(deny) - i - 1
        prog += [(jeq, remaining + 1, 0, nr)]
    prog += [(ret, 0, 0, allow), (ret, 0, 0, eperm)]
    return prog


def _install_seccomp():
    prog = _seccomp_program(platform.machine())
    if prog is None:
        return False
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = Fprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter refused: {os.strerror(err)}")
    return True


def _apply_limits(limits):
    def setlim(res, value):
        if value is None:
            return
        _soft, hard = resource.getrlimit(res)
        value = int(value)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(res, (value, value))

    setlim(resource.RLIMIT_AS, limits.get("memory_bytes"))
    setlim(resource.RLIMIT_FSIZE, limits.get("file_bytes"))
    setlim(resource.RLIMIT_NPROC, limits.get("nproc"))
    setlim(resource.RLIMIT_NOFILE, limits.get("nofile"))
    setlim(resource.RLIMIT_CORE, 0)
    cpu = limits.get("cpu_seconds")
    if cpu is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu) + 1))


def _become_payload(cfg):
    """In P: its own view, a new session, unprivileged identity, no capabilities, the seccomp
    filter. Irreversible. P stays non-dumpable until its request arrives."""
    _payload_view(cfg)
    _drop_privileges(cfg, cfg.get("uid"), cfg.get("gid"))


def _payload_view(cfg):
    """In P, first half (privileged): its own mount/IPC view and session."""
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    if cfg.get("private_view"):
        _private_view(cfg)
    os.setsid()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _syscall_fd(number, *args):
    fd = _libc.syscall(number, *args)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syscall {number}: {os.strerror(err)}")
    return fd


def _detached_clone(fd):
    """A new detached copy of the mount tree ``fd`` holds (no mount table holds it)."""
    return _syscall_fd(SYS_OPEN_TREE, ctypes.c_int(fd), b"",
                       ctypes.c_uint(OPEN_TREE_CLONE | AT_RECURSIVE | AT_EMPTY_PATH | os.O_CLOEXEC))


def _enter_episode(tree_fds, uid):
    """In a pooled worker's P, still privileged, once its request arrived with its episode's
    two mount trees (fresh detached copies the zygote cloned for this execution and passed
    over the request socket): attach them over /tmp and /workspace, detach /episodes (the zygote's staging place), and check that
    the view is the episode's own before anything of the agent's runs."""
    tmp_fd, ws_fd = tree_fds
    devices = []
    for fd, target in ((tmp_fd, "/tmp"), (ws_fd, SANDBOX_WORKSPACE)):
        if _libc.syscall(SYS_MOVE_MOUNT, ctypes.c_int(fd), b"", ctypes.c_int(AT_FDCWD),
                         target.encode(), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"move_mount {target}: {os.strerror(err)}")
        devices.append(os.fstat(fd).st_dev)
        os.close(fd)
    if os.path.ismount(EPISODES):
        _umount(EPISODES)
    # fail closed: never run agent code beside other episodes, or in state not its own
    if os.listdir(EPISODES):
        raise OSError("other episodes are still visible")
    ws = os.stat(SANDBOX_WORKSPACE)
    if [os.stat("/tmp").st_dev, ws.st_dev] != devices or ws.st_uid != uid:
        raise OSError("the episode's mounts are not in place")


def _recv_trees(sock_fd):
    """The two mount-tree fds a pooled request comes with ([] on EOF: no request)."""
    with socket.socket(fileno=os.dup(sock_fd)) as sock:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 1, 2)
    if msg != b"T" or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        if not msg:
            return []
        raise OSError("a pooled request came without its episode's mounts")
    return fds


def _drop_privileges(cfg, uid, gid):
    """In P, second half: unprivileged identity, no capabilities, the seccomp filter."""
    if cfg.get("drop_privileges"):
        for cap in range(CAP_LAST + 1):  # needs CAP_SETPCAP, so before changing uid
            _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
        if uid is not None and os.getuid() == 0 and uid != 0:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)  # clears the permitted and effective sets
        _drop_all_capabilities()
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # a uid change may have reset it
    if cfg.get("seccomp"):
        _install_seccomp()
    workdir = cfg.get("workdir")
    if workdir:
        os.chdir(workdir)


# --------------------------------------------------------------------------- payloads


def _trim_traceback(exc):
    """Traceback lines from the agent's code only (the worker's frames are noise)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != "<code>":
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    text = "".join(lines)
    if len(text) > 8000:
        text = text[:2000] + "\n... (traceback trimmed) ...\n" + text[-5000:]
    return text


def _run_code(code, result_fd, probe_fd=None):
    """Execute agent code in a fresh namespace; send the outcome on ``result_fd``. With
    ``probe_fd``, then read the host's probes from it (they enter only now), evaluate them in
    the same namespace, and send their values as a second frame."""
    outcome = {"kind": "code"}
    status = "ok"
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        compiled = compile(code, "<code>", "exec")
    except (SyntaxError, ValueError) as exc:  # ValueError: source has null bytes
        status = "error"
        line = getattr(exc, "lineno", None)
        outcome["error"] = f"{type(exc).__name__}: {getattr(exc, 'msg', exc)}" + (
            f" (line {line})" if line else "")
        outcome["error_line"] = line
        outcome["traceback"] = "".join(traceback.format_exception_only(type(exc), exc))
        compiled = None
    if compiled is not None:
        try:
            exec(compiled, namespace)
        except SystemExit as exc:
            if exc.code not in (None, 0):
                status = "error"
                outcome["error"] = f"SystemExit: {exc.code}"
        except BaseException as exc:
            status = "memory" if isinstance(exc, MemoryError) else "error"
            outcome["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            tb = exc.__traceback__
            line = None
            while tb is not None:
                if tb.tb_frame.f_code.co_filename == "<code>":
                    line = tb.tb_lineno
                tb = tb.tb_next
            outcome["error_line"] = line
            try:
                outcome["traceback"] = _trim_traceback(exc)
            except MemoryError:
                outcome["traceback"] = outcome["error"]
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    if "answer" in namespace:
        value = namespace["answer"]
        try:
            outcome["answer_type"] = type_name(value)
            outcome["answer"] = to_jsonable(value)
            payload = json.dumps(outcome, allow_nan=True)
            if len(payload) > ANSWER_MAX_BYTES:
                raise ValueError(f"answer is too large to return ({len(payload)} bytes)")
        except Exception as exc:
            outcome.pop("answer", None)
            outcome["answer_error"] = f"{type(exc).__name__}: {exc}"[:500]
    outcome["status"] = status
    try:
        data = json.dumps(outcome, allow_nan=True).encode()
    except Exception as exc:
        data = json.dumps({"kind": "code", "status": "error",
                           "error": f"could not encode result: {exc}"}).encode()
    if probe_fd is None:
        try:
            os.set_blocking(result_fd, True)
        except OSError:
            pass
        _send_frame(result_fd, data)
        return
    # what probes print (an agent's function echoing its hidden inputs) is never shown
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    for fd in (result_fd, probe_fd):  # the agent's code may have changed them
        try:
            os.set_blocking(fd, True)
        except OSError:
            pass
    _send_frame(result_fd, data)
    probes = _recv_frame(probe_fd)
    values = {}
    for probe in json.loads(probes) if probes else []:
        values[probe["name"]] = _eval_probe(probe["expr"], namespace)
    try:
        data = json.dumps({"probes": values}, allow_nan=True).encode()
    except Exception as exc:
        data = json.dumps({"probes": {}, "error": f"could not encode probes: {exc}"}).encode()
    _send_frame(result_fd, data)


def _eval_probe(expr, namespace):
    """One probe: a Python expression evaluated in the agent's namespace -> its JSON value."""
    try:
        value = eval(compile(expr, "<probe>", "eval"), namespace)
        out = {"type": type_name(value), "value": to_jsonable(value)}
        if len(json.dumps(out, allow_nan=True)) > ANSWER_MAX_BYTES:
            return {"error": "value is too large to return"}
        return out
    except BaseException as exc:  # the agent's code may make a probe fail in any way
        try:
            return {"error": f"{type(exc).__name__}: {exc}"[:500]}
        except BaseException:
            return {"error": "probe failed"}


def _send_frame(fd, data):
    _write_all(fd, struct.pack(">Q", len(data)) + data)


def _recv_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, min(_READ_CHUNK, n - len(buf)))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _recv_frame(fd):
    head = _recv_exact(fd, 8)
    if head is None:
        return None
    return _recv_exact(fd, struct.unpack(">Q", head)[0])


def _file_op(req, result_fd):
    """read_file / write_file, as the episode's uid inside its own view (trusted code: no
    agent code has run in this process). Only regular files; sizes bounded."""
    outcome = {"kind": "file", "status": "ok"}
    path = str(req.get("path") or "")
    try:
        if req["op"] == "read_file":
            limit = max(0, min(int(req.get("max_bytes") or FILE_MAX_BYTES), FILE_MAX_BYTES))
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
            try:
                import stat

                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise OSError(21, "not a regular file")
                data = bytearray()
                while len(data) <= limit:
                    chunk = os.read(fd, min(_READ_CHUNK, limit + 1 - len(data)))
                    if not chunk:
                        break
                    data += chunk
            finally:
                os.close(fd)
            outcome["truncated"] = len(data) > limit
            outcome["size"] = st.st_size
            outcome["data"] = base64.b64encode(bytes(data[:limit])).decode()
        else:
            data = base64.b64decode(req.get("data") or "")
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            outcome["size"] = len(data)
    except Exception as exc:
        outcome["status"] = "error"
        outcome["error"] = f"{type(exc).__name__}: {exc}"[:500]
    _send_frame(result_fd, json.dumps(outcome).encode())


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# --------------------------------------------------------------------------- payload


def _read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, _READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _payload_main(cfg, req_r, out_w, err_w, res_w):
    """Body of P: become unprivileged, wait for the request, run it. Never returns."""
    code = 70
    req = {}
    try:
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        # keep only stdio, the request pipe and the result pipe
        keep = sorted({req_r, res_w})
        low = 3
        for fd in keep:
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 65536)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True,
                                      line_buffering=False)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
        for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        if cfg.get("pool"):
            # a pooled worker serves many episodes: which one (its files, its uid) is known
            # only once the request arrives, so P waits privileged, in its own view
            _payload_view(cfg)
            trees = _recv_trees(req_r)
            if not trees:
                os._exit(0)
            data = _recv_frame(req_r)
            if not data:
                os._exit(0)
            req = json.loads(data)
            uid, gid = req.get("uid"), req.get("gid")
            if not (isinstance(req.get("ep"), int) and isinstance(uid, int)
                    and isinstance(gid, int)):
                raise ValueError("pooled request without its episode")
            _enter_episode(trees, uid)
            _drop_privileges(cfg, uid, gid)
        else:
            _become_payload(cfg)
            data = _recv_frame(req_r)  # blocks while the sandbox is idle
            if not data:
                os._exit(0)
            req = json.loads(data)
        if not req.get("has_probes"):
            os.close(req_r)
        _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # its own /proc/self again (RLIMIT_CORE is 0)
        _apply_limits(req.get("limits") or {})  # only lowering: allowed unprivileged
        if req["op"] == "exec":
            _run_code(req["code"], res_w, req_r if req.get("has_probes") else None)
            code = 0
        elif req["op"] in ("read_file", "write_file"):
            _file_op(req, res_w)
            code = 0
        else:
            os.close(res_w)
            argv = req["argv"]
            os.execvpe(argv[0], argv, dict(os.environ))
    except FileNotFoundError as exc:
        try:
            os.write(2, f"{exc.filename or req.get('argv', ['?'])[0]}: command not found\n".encode())
        except OSError:
            pass
        code = 127
    except BaseException:
        try:
            os.write(2, traceback.format_exc().encode(errors="replace"))
        except OSError:
            pass
        code = 70
    finally:
        os._exit(code)


#: fd of the zygote's own PID namespace: after forking a payload into a fresh namespace, the
#: zygote points its children's namespace back here, so that the next fork can get its own
_OWN_PIDNS = []


def _fork_spare(cfg, host_fds):
    """Fork the next payload P straight from the zygote, ahead of its request; with PID
    namespaces P is PID 1 of a fresh one. Returns ``(pid, out_r, err_r, res_r, req_w)``."""
    pidns = cfg.get("isolation") == "pidns"
    if pidns:
        if not _OWN_PIDNS:
            _OWN_PIDNS.append(os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC))
        if _libc.unshare(CLONE_NEWPID) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWPID) failed: {os.strerror(err)}")
    try:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        if cfg.get("pool"):  # the request brings its episode's mount trees (SCM_RIGHTS)
            req_r, req_w = (s.detach() for s in socket.socketpair(socket.AF_UNIX,
                                                                 socket.SOCK_STREAM))
        else:
            req_r, req_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                for fd in (*host_fds, *_OWN_PIDNS, out_r, err_r, res_r, req_w):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                _payload_main(cfg, req_r, out_w, err_w, res_w)
            finally:
                os._exit(70)
        for fd in (out_w, err_w, res_w, req_r):
            os.close(fd)
        return pid, out_r, err_r, res_r, req_w
    finally:
        # the zygote's next child must not land in this namespace (its init may be gone):
        # a zygote that cannot point back at its own namespace cannot fork safely again
        if pidns and _libc.setns(_OWN_PIDNS[0], CLONE_NEWPID) != 0:
            os._exit(71)


def _try_spare(cfg, host_fds):
    """:func:`_fork_spare`, or the exception that stopped it (reported with the request)."""
    try:
        return _fork_spare(cfg, host_fds)
    except Exception as exc:
        return exc


def _discard(spare):
    """Throw an unused spare away: P reads EOF instead of a request and exits."""
    if isinstance(spare, BaseException):
        return
    pid, out_r, err_r, res_r, req_w = spare
    for fd in (req_w, out_r, err_r, res_r):
        os.close(fd)
    os.waitpid(pid, 0)


def _serve(cfg, req, spare, fork_next):
    """Run one request in the spare P (the zygote supervises it) and return its result;
    ``fork_next()`` forks the next spare while P runs. Never raises."""
    if isinstance(spare, BaseException):
        fork_next()
        return {"status": "killed", "error": f"sandbox could not start the execution: {spare!r}",
                "stdout": "", "stderr": ""}
    try:
        return _supervise(cfg, req, spare, fork_next)
    except Exception as exc:
        pid = spare[0]
        try:
            _kill(pid, cfg)
            os.waitpid(pid, 0)
        except (OSError, ChildProcessError):
            pass
        return {"status": "killed", "error": f"sandbox supervisor failed: {exc!r}",
                "stdout": "", "stderr": traceback.format_exc()[-4000:]}


def _frames(buf):
    """Complete length-prefixed frames at the start of ``buf`` (and the bytes after them)."""
    frames, pos = [], 0
    while len(buf) - pos >= 8:
        n = struct.unpack(">Q", bytes(buf[pos:pos + 8]))[0]
        if n > len(buf) - pos - 8:
            break
        frames.append(bytes(buf[pos + 8:pos + 8 + n]))
        pos += 8 + n
    return frames, len(buf) - pos


def _clean_probes(probes, raw, failure):
    """One entry per probe the *host* asked for (names from the request, never from P):
    a JSON value with its type, or an error."""
    got = {}
    if raw is not None:
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("probes"), dict):
            got = parsed["probes"]
    out = {}
    for probe in probes:
        name = probe["name"]
        item = got.get(name)
        clean = {}
        if isinstance(item, dict):
            if isinstance(item.get("error"), str):
                clean["error"] = item["error"][:500]
            elif "value" in item and isinstance(item.get("type"), str):
                if _depth_ok(item["value"]):
                    clean = {"value": item["value"], "type": item["type"][:200]}
                else:
                    clean["error"] = f"value is nested more than {MAX_DEPTH} levels deep"
        if not clean:
            clean["error"] = failure or "the probe returned nothing"
        out[name] = clean
    return out


# What P may report about itself (it runs the agent's code: every field is untrusted).
_TEXT_FIELDS = {"answer_type": 200, "answer_error": 500, "error": 2000, "traceback": 10000,
                "data": 2 * FILE_MAX_BYTES}


def _depth_ok(value, limit=MAX_DEPTH):
    """Iteratively: is ``value`` nested at most ``limit`` deep?"""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
    return True


def _clean_outcome(raw, op):
    """The fields of P's report that P may speak for, type-checked and trimmed; None if the
    report is unreadable. ``status`` can only say ok / error / memory: a payload can never
    claim that the sandbox failed."""
    try:
        outcome = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(outcome, dict):
        return None
    clean = {}
    for key, cap in _TEXT_FIELDS.items():
        value = outcome.get(key)
        if isinstance(value, str):
            clean[key] = value[:cap]
    line = outcome.get("error_line")
    if isinstance(line, int) and not isinstance(line, bool) and 0 <= line < 10**9:
        clean["error_line"] = line
    if outcome.get("status") in ("ok", "error", "memory"):
        clean["status"] = outcome["status"]
    if op in ("read_file", "write_file"):
        for key in ("size",):
            if isinstance(outcome.get(key), int) and not isinstance(outcome.get(key), bool):
                clean[key] = outcome[key]
        if isinstance(outcome.get("truncated"), bool):
            clean["truncated"] = outcome["truncated"]
    elif "answer" in outcome and "answer_type" in clean:
        if _depth_ok(outcome["answer"]):
            clean["answer"] = outcome["answer"]
        else:
            clean["answer_error"] = f"answer is nested more than {MAX_DEPTH} levels deep"
    elif "answer_type" in clean and "answer_error" not in clean:
        clean["answer_error"] = "answer could not be read"
    return clean


def _supervise(cfg, req, spawned, fork_next=None):
    pid, out_r, err_r, res_r, req_w = spawned
    timeout = float(req.get("timeout") or 30.0)
    cap = int(req.get("max_output_bytes") or 1_000_000)
    limits = dict(req.get("limits") or {})
    if limits.get("cpu_seconds") is None:
        limits["cpu_seconds"] = int(timeout) + 2
    req["limits"] = limits
    result_cap = 3 * FILE_MAX_BYTES if req["op"] in ("read_file", "write_file") else 2 * ANSWER_MAX_BYTES
    # probes stay here until P says the agent's code has finished
    probes = req.pop("probes", None) if req["op"] == "exec" else None
    probe_timeout = float(req.pop("probe_timeout", None) or 10.0)
    req["has_probes"] = bool(probes)
    if probes:
        result_cap += 2 * ANSWER_MAX_BYTES
    start = time.monotonic()
    try:
        _send_frame(req_w, json.dumps(req).encode())
    except OSError:
        pass  # P died early; reported below from its exit status
    if not probes:
        os.close(req_w)
        req_w = None
    if fork_next is not None:
        # the next spare is forked while P runs (on another core); its time is not P's
        before = time.monotonic()
        fork_next()
        start += time.monotonic() - before
    deadline = start + timeout
    probes_sent = False
    bufs = {out_r: bytearray(), err_r: bytearray(), res_r: bytearray()}
    total = {out_r: 0, err_r: 0}
    open_fds = {out_r, err_r, res_r}
    pidfd = os.pidfd_open(pid)
    status_word = None
    reason = None
    poller = select.poll()
    for fd in open_fds:
        poller.register(fd, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    payload_done = False
    drain_deadline = None
    while True:
        now = time.monotonic()
        if reason is None and now >= deadline:
            reason = "timeout"
            _kill(pid, cfg)
        wait_until = deadline if reason is None else now + 1.0
        if payload_done:
            if not open_fds:
                break
            if drain_deadline is None:
                drain_deadline = now + (0.05 if cfg.get("isolation") != "pidns" else 2.0)
            if now >= drain_deadline:
                break
            wait_until = min(wait_until, drain_deadline)
        events = poller.poll(max(0.0, wait_until - now) * 1000.0)
        for fd, _ev in events:
            if fd == pidfd:
                if not payload_done:
                    _, status_word = os.waitpid(pid, 0)
                    payload_done = True
                    if cfg.get("isolation") != "pidns":
                        _kill_group(pid)
                    poller.unregister(pidfd)
                continue
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except OSError:
                chunk = b""
            if not chunk:
                poller.unregister(fd)
                open_fds.discard(fd)
                continue
            if fd == res_r:
                if len(bufs[fd]) <= result_cap:
                    bufs[fd] += chunk
                if probes and not probes_sent and reason is None and _frames(bufs[res_r])[0]:
                    probes_sent = True
                    deadline = time.monotonic() + probe_timeout
                    try:
                        _send_frame(req_w, json.dumps(probes).encode())
                    except OSError:
                        pass
                    os.close(req_w)
                    req_w = None
                continue
            total[fd] += len(chunk)
            room = cap - len(bufs[out_r]) - len(bufs[err_r])
            if room > 0:
                bufs[fd] += chunk[:room]
            if total[out_r] + total[err_r] > cap and reason is None:
                reason = "output_limit"
                _kill(pid, cfg)
    if not payload_done:
        _kill(pid, cfg)
        _, status_word = os.waitpid(pid, 0)
    if req_w is not None:
        os.close(req_w)
    os.close(pidfd)
    for fd in (out_r, err_r, res_r):
        try:
            os.close(fd)
        except OSError:
            pass
    duration = time.monotonic() - start
    result = {
        "stdout": bufs[out_r].decode("utf-8", errors="replace"),
        "stderr": bufs[err_r].decode("utf-8", errors="replace"),
        "duration_s": duration,
        "output_bytes": total[out_r] + total[err_r],
    }
    exit_code = None
    term_signal = None
    if status_word is not None:
        if os.WIFEXITED(status_word):
            exit_code = os.WEXITSTATUS(status_word)
        elif os.WIFSIGNALED(status_word):
            term_signal = os.WTERMSIG(status_word)
            exit_code = -term_signal
    result["exit_code"] = exit_code
    outcome = None
    frames, _rest = _frames(bufs[res_r])
    if frames:
        outcome = _clean_outcome(frames[0], req["op"])
    if outcome:
        result.update(outcome)
    if probes:
        result["probes"] = _clean_probes(probes, frames[1] if len(frames) > 1 else None,
                                         "timed out" if reason == "timeout" and probes_sent else None)
        if probes_sent and reason == "timeout":
            reason = None  # the agent's code finished; only its probes ran out of time
    if reason == "timeout":
        result["status"] = "timeout"
        result["error"] = f"execution exceeded the {timeout:g} s time limit"
    elif reason == "output_limit":
        result["status"] = "output_limit"
        result["error"] = f"output exceeded the {cap} byte limit"
    elif term_signal == signal.SIGXCPU:
        result["status"] = "timeout"
        result["error"] = "execution exceeded its CPU time limit"
    elif req["op"] != "run":
        if outcome is None:
            if term_signal is not None:
                result["status"] = "memory" if term_signal in (signal.SIGSEGV, signal.SIGBUS) else "killed"
                result["error"] = f"process killed by signal {_signal_name(term_signal)}"
            elif exit_code == 0:
                result["status"] = "ok"
            else:
                result["status"] = "error"
                result.setdefault("error", f"process exited with status {exit_code}")
                if "MemoryError" in result["stderr"][-2000:]:
                    result["status"] = "memory"
        elif "status" not in result:
            result["status"] = "error"
            result["error"] = result.get("error") or "the execution reported no status"
    else:
        if term_signal is not None:
            result["status"] = "killed"
            result["error"] = f"process killed by signal {_signal_name(term_signal)}"
        else:
            result["status"] = "ok" if exit_code == 0 else "error"
    return result


def _kill(pid, cfg):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if cfg.get("isolation") != "pidns":
        _kill_group(pid)


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(num):
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"{num}"


# --------------------------------------------------------------------------- zygote


def _warm_up():
    """Exercise the common pandas/sqlite paths once, so that lazily built caches (dispatch
    tables, compiled regexes, lazily imported submodules) already exist in every fork."""
    import io
    import sqlite3

    import pandas as pd

    try:
        df = pd.DataFrame({"k": [1, 2, 2], "v": [0.5, 1.5, 2.5], "s": ["a", "b", "c"],
                           "t": ["2105-01-01 00:00:00"] * 3})
        df["t"] = pd.to_datetime(df["t"])
        df.groupby(df.k % 2).v.agg(["mean", "sum", "count"])
        df.groupby("k").size()
        df.merge(df, on="k").sort_values("v").head()
        df[df.v > 1].reset_index(drop=True).to_dict(orient="records")
        pd.read_csv(io.StringIO(df.to_csv(index=False)))
        con = sqlite3.connect(":memory:")
        df.drop(columns="t").to_sql("t", con, index=False)
        pd.read_sql("select k, avg(v) from t group by k", con)
        con.close()
    except Exception:  # a warm-up is an optimisation only
        pass


def _preload(names):
    loaded, failed = [], {}
    for name in names:
        try:
            __import__(name)
            loaded.append(name)
        except Exception as exc:  # a missing optional library is not an error
            failed[name] = f"{type(exc).__name__}: {exc}"[:200]
    return loaded, failed


def _send(obj):
    sys.__stdout__.write(json.dumps(obj, allow_nan=True) + "\n")
    sys.__stdout__.flush()


# --------------------------------------------------------------------------- services


def _start_forwarder(cfg):
    """A process that listens on 127.0.0.1:PORT (and [::1]:PORT) in the sandbox's network
    namespace for each service and relays every connection to the service's unix socket,
    which the host serves. Payloads live in their own PID namespaces: they can connect to it,
    nothing else."""
    services = cfg.get("services") or []
    if not services:
        return None
    pid = os.fork()
    if pid == 0:
        try:
            _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
            listeners = _listen(services)
            if cfg.get("drop_privileges"):  # it keeps the zygote's uid (the socket's owner)
                for cap in range(CAP_LAST + 1):
                    _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
                _drop_all_capabilities()
            _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            _relay(listeners)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(0)
    return pid


def _listen(services):
    import socket

    listeners = {}
    for svc in services:
        port, path = int(svc["port"]), str(svc["socket"])
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            try:
                srv = socket.socket(family, socket.SOCK_STREAM)
                srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                srv.bind((host, port))
                srv.listen(64)
                srv.setblocking(False)
                listeners[srv] = path
            except OSError:
                if family == socket.AF_INET:
                    raise
    return listeners


def _relay(listeners, max_connections=64):
    """Accept on every listener; two threads per connection copy bytes each way."""
    import selectors
    import socket
    import threading

    slots = threading.BoundedSemaphore(max_connections)

    def pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def serve(client, path):
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(path)
            back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
            back.start()
            pipe(client, upstream)
            back.join()
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()
            slots.release()

    sel = selectors.DefaultSelector()
    for srv, path in listeners.items():
        sel.register(srv, selectors.EVENT_READ, path)
    while True:
        for key, _events in sel.select():
            try:
                client, _ = key.fileobj.accept()
            except OSError:
                continue
            if not slots.acquire(blocking=False):
                client.close()  # too many at once: refuse rather than queue
                continue
            client.setblocking(True)
            threading.Thread(target=serve, args=(client, key.data), daemon=True).start()


def _reset(cfg, req):
    """A new episode: a new uid (never one an earlier episode used), fresh /tmp and
    /workspace. The caller has already thrown the spare away."""
    uid, gid = req.get("uid"), req.get("gid")
    if cfg.get("drop_privileges") and isinstance(uid, int) and isinstance(gid, int):
        cfg["uid"], cfg["gid"] = uid, gid
    _episode_mounts(cfg, first=False)


# --------------------------------------------------------------------------- pooled episodes


def _ep_open(cfg, uid, gid):
    """In a pooled zygote: a fresh, budgeted /tmp and /workspace for an episode, owned by its
    uid, as two *detached* mount trees held by fds (no mount table lists them, so forking
    and unsharing cost the same with 1 or 4,000 episodes open). Each is built on the
    root-only /episodes/stage, cloned whole (``open_tree``) and detached from there at once.
    Returns ``(tmp_fd, workspace_fd)``."""
    pool = cfg["pool"]
    inodes = int(pool["inodes"])
    fds = []
    try:
        for name, size, mode in (("tmp", pool["tmp_bytes"], 0o1777),
                                 ("workspace", pool["workspace_bytes"], 0o700)):
            target = f"{EPISODES}/stage/{name}"
            os.makedirs(target, mode=0o700, exist_ok=True)
            owner = (0, 0) if name == "tmp" else (uid, gid)
            _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV,
                   f"size={int(size)},nr_inodes={inodes},mode={mode:o},uid={owner[0]},gid={owner[1]}")
            try:
                # a Python installation under the host's /tmp is bound again on top
                for stash, root in (pool.get("tmp_roots") or []) if name == "tmp" else []:
                    sub = f"{target}{root[len('/tmp'):]}"
                    os.makedirs(sub, mode=0o755, exist_ok=True)
                    _mount(stash, sub, None, MS_BIND | MS_REC)
                    _mount(None, sub, None,
                           MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
                fds.append(_syscall_fd(SYS_OPEN_TREE, ctypes.c_int(AT_FDCWD), target.encode(),
                                       ctypes.c_uint(OPEN_TREE_CLONE | AT_RECURSIVE | os.O_CLOEXEC)))
            finally:
                _umount(target)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds[0], fds[1]


def _ep_close(episodes, ep):
    """Forget an episode: its trees go when no payload holds a copy (payloads are gone)."""
    state = episodes.pop(ep, None)
    if state is not None:
        for fd in state:
            os.close(fd)


def _pool_request(cfg, req, episodes):
    """Validate a pooled request's episode, creating its state when it is new (or was
    reset: ``fresh``); returns the episode id. ``episodes``: id -> (tmp fd, workspace fd)."""
    ep, uid, gid = req.get("ep"), req.get("uid"), req.get("gid")
    for value in (ep, uid, gid):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_EPISODE_ID:
            raise ValueError("a pooled request names its episode and uid (integers)")
    if req.get("fresh") or ep not in episodes:
        _ep_close(episodes, ep)
        tmp_fd, ws_fd = _ep_open(cfg, uid, gid)
        episodes[ep] = (tmp_fd, ws_fd)
    return ep


def _pool_main(cfg, host_in, host_fds):
    """The request loop of a pooled zygote: many episodes, one execution at a time, each
    in the spare payload forked ahead while the previous one ran."""
    episodes = {}
    # two fds per open episode: as many as the hard limit allows
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    spare = None
    for line in host_in:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            rid = req.get("id")
            op = req.get("op")
        except (ValueError, AttributeError) as exc:
            _send({"id": None, "status": "killed", "error": f"bad request: {exc}"})
            continue
        if op == "exit":
            break
        if op == "ep_close":
            result = {"status": "ok"}
            ep = req.get("ep")
            if isinstance(ep, int) and ep in episodes:
                try:
                    _ep_close(episodes, ep)
                except OSError as exc:
                    result = {"status": "error", "error": f"close failed: {exc}"}
            result["id"] = rid
            _send(result)
            continue
        if op == "stats":
            _send({"id": rid, "status": "ok", "episodes": len(episodes)})
            continue
        if op not in ("exec", "run", "read_file", "write_file"):
            _send({"id": rid, "status": "killed", "error": f"unknown op {op!r}"})
            continue
        try:
            ep = _pool_request(cfg, req, episodes)
        except Exception as exc:
            _send({"id": rid, "status": "killed", "error": f"episode setup failed: {exc}"})
            continue
        req.pop("fresh", None)
        if spare is None:
            spare = _try_spare(cfg, host_fds)
        current, spare = spare, None
        if not isinstance(current, BaseException):
            # the spare learns which episode it serves only now: its two mount trees travel
            # with the request (SCM_RIGHTS), so it needs nothing from before it was forked
            # (a copy made here: a payload cannot clone a tree made in another namespace)
            clones = []
            try:
                clones = [_detached_clone(fd) for fd in episodes[ep]]
                with socket.socket(fileno=os.dup(current[4])) as sock:
                    socket.send_fds(sock, [b"T"], clones)
            except OSError:
                pass  # P fails closed without them; _serve reports how it ended
            finally:
                for fd in clones:
                    os.close(fd)

        def fork_next():
            nonlocal spare
            spare = _try_spare(cfg, host_fds)

        result = _serve(cfg, req, current, fork_next)
        result["id"] = rid
        _send(result)


def main():
    # The host channel must not leak into payloads: keep it on high, close-on-exec fds.
    host_in = os.fdopen(os.dup(0), "r", buffering=1)
    host_out_fd = os.dup(1)
    cfg = json.loads(host_in.readline())  # config on stdin: nothing of it in our argv
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    sys.__stdout__ = sys.stdout = io.TextIOWrapper(io.FileIO(host_out_fd, "w", closefd=False),
                                                   line_buffering=True)
    os.dup2(null, 1)
    os.close(null)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    nice = cfg.get("nice")
    if isinstance(nice, int) and not isinstance(nice, bool) and 0 < nice < 20:
        os.nice(nice)  # agent code yields the CPU to the host's control plane
    # Nobody may ptrace us or open our fds through /proc (the host channel lives here).
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    t0 = time.monotonic()
    _episode_mounts(cfg, first=True)
    forwarder = _start_forwarder(cfg)
    seccomp = None
    if cfg.get("seccomp"):
        seccomp = _seccomp_program(platform.machine()) is not None
    loaded, failed = _preload(cfg.get("preload") or [])
    if "pandas" in loaded:
        _warm_up()
    # Everything imported so far lives as long as the zygote: a payload's garbage collector
    # need not walk it (walking it would copy every page it touches into the payload), and
    # large buffers the zygote handles (a payload's output) go back to the kernel when freed
    # rather than growing the heap every later fork has to copy.
    gc.collect()
    gc.freeze()
    _libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    _send({"ready": True, "pid": os.getpid(), "uid": cfg.get("uid"), "preloaded": loaded,
           "preload_failed": failed, "preload_s": time.monotonic() - t0,
           "python": sys.version.split()[0], "seccomp": seccomp,
           "services": [int(svc["port"]) for svc in cfg.get("services") or []]})
    del forwarder  # it dies with the zygote (PR_SET_PDEATHSIG) or with the PID namespace
    host_fds = (host_in.fileno(), host_out_fd)
    if cfg.get("pool"):
        _pool_main(cfg, host_in, host_fds)
        return
    spare = _try_spare(cfg, host_fds)

    def fork_next():
        nonlocal spare
        spare = _try_spare(cfg, host_fds)

    for line in host_in:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
        except ValueError as exc:
            _send({"id": None, "status": "killed", "error": f"bad request: {exc}"})
            continue
        if not isinstance(req, dict):
            _send({"id": None, "status": "killed", "error": "bad request: not an object"})
            continue
        rid = req.get("id")
        op = req.get("op")
        if op == "exit":
            break
        if op == "reset":
            try:
                _discard(spare)
                _reset(cfg, req)
                result = {"status": "ok"}
            except Exception as exc:
                result = {"status": "error", "error": f"reset failed: {exc}"}
            spare = _try_spare(cfg, host_fds)
            result["id"] = rid
            _send(result)
            continue
        if op not in ("exec", "run", "read_file", "write_file"):
            _send({"id": rid, "status": "killed", "error": f"unknown op {op!r}"})
            continue
        current, spare = spare, None
        result = _serve(cfg, req, current, fork_next)
        if spare is None:  # P failed before the next spare was forked
            fork_next()
        result["id"] = rid
        _send(result)


if __name__ == "__main__":
    main()
