"""Pooled episodes (medagentgym.sandbox.pool) against each other: episodes that share a
worker, or run at the same moment on two workers, can never read, write, signal, trace,
talk over IPC to, or see one another; reset leaves nothing; an idle episode has no process."""

from __future__ import annotations

import os
import threading
import time

import pytest

from medagentgym.errors import ConfigurationError
from medagentgym.sandbox import SandboxLimits, SyncSandbox, available_providers, run_sync
from medagentgym.sandbox.base import SandboxFileError
from medagentgym.sandbox.pool import SandboxPool

pytestmark = pytest.mark.skipif(not available_providers()["bwrap"][0],
                                reason="bubblewrap cannot run here")

LIMITS = SandboxLimits(memory_bytes=1024**3, max_output_bytes=100_000, nproc=48,
                       tmp_bytes=16 * 1024**2, workspace_bytes=16 * 1024**2, inodes=2_000,
                       shm_bytes=8 * 1024**2)
SECRET = "episode-A-secret-8812"


def ok(r):
    assert r.status == "ok", (r.status, r.error, r.stderr[-2000:])
    return r.answer


@pytest.fixture(scope="module")
def pool():
    p = SandboxPool(workers=2, limits=LIMITS, preload="none")
    run_sync(p.start())
    yield p
    run_sync(p.close())


def _pair(pool, same_worker=True):
    """Two started episodes: on one worker, or on two."""
    a = SyncSandbox(pool.episode()).start()
    extra = []
    try:
        for _ in range(2 * len(pool.workers)):
            b = SyncSandbox(pool.episode()).start()
            if (b.inner.worker is a.inner.worker) == same_worker:
                return a, b
            extra.append(b)
    finally:
        for e in extra:
            e.close()
    raise AssertionError("could not place the episodes")


PLANT = (f"import os\nos.makedirs('/workspace/d', exist_ok=True)\n"
         f"open('/workspace/d/s.txt', 'w').write('{SECRET}')\nopen('/tmp/s.txt', 'w').write('{SECRET}')\n"
         "answer = [os.getuid(), oct(os.stat('/workspace').st_mode & 0o7777), os.stat('/workspace').st_uid]")

# every writable mount in the episode's view (where another episode's files could be),
# and the places they live in the worker
HUNT = (
    "import os, stat\nfound = []\n"
    "tops = ['/episodes', '/proc/1/root/episodes', '/opt']\n"
    "for line in open('/proc/self/mountinfo'):\n"
    "    f = line.split()\n"
    "    if 'rw' in f[5].split(',') and not f[4].startswith(('/proc', '/sys', '/dev/pts')):\n"
    "        tops.append(f[4])\n"
    "for top in tops:\n"
    "    for root, dirs, files in os.walk(top):\n"
    "        for f in files:\n"
    "            p = os.path.join(root, f)\n"
    "            try:\n"
    "                st = os.lstat(p)\n"
    "                if stat.S_ISREG(st.st_mode) and st.st_size < 4096 and "
    "b'" + SECRET + "' in open(p, 'rb').read():\n"
    "                    found.append(p)\n"
    "            except OSError:\n                pass\n"
    "answer = [found, os.listdir('/episodes'), open('/proc/self/mountinfo').read().count('episodes')]"
)


@pytest.mark.parametrize("same_worker", [True, False])
def test_files_are_private_to_their_episode(pool, same_worker):
    a, b = _pair(pool, same_worker)
    uid_a, mode, owner = ok(a.execute(PLANT))
    assert mode == "0o700" and owner == uid_a
    found, episodes, mentions = ok(b.execute(HUNT, timeout=60))
    assert found == [] and episodes == [] and mentions == 0
    uid_b = ok(b.execute("import os\nanswer = os.getuid()"))
    if os.geteuid() == 0:
        assert uid_a != uid_b and uid_a != 0 and uid_b != 0
    # B's writes land in B only; the host's file API is confined to the episode too
    ok(b.execute("open('/workspace/d.txt', 'w').write('B')\nanswer = 1"))
    with pytest.raises(SandboxFileError):
        b.read_file("/workspace/d/s.txt")
    assert a.read_file("/workspace/d/s.txt") == SECRET.encode()
    assert ok(a.execute("import os\nanswer = sorted(os.listdir('/workspace'))")) == ["d"]
    r = b.execute("open('/episodes/x', 'w').write('x')")
    assert r.status == "error"
    a.close()
    b.close()


def test_reset_leaves_nothing_and_neighbours_keep_theirs(pool):
    a, b = _pair(pool)
    uid1 = ok(a.execute(PLANT))[0]
    ok(b.execute("open('/workspace/b.txt', 'w').write('B')\nanswer = 1"))
    t0 = time.perf_counter()
    a.reset()
    host_side = time.perf_counter() - t0
    uid2, ws, tmp = ok(a.execute("import os\nanswer = [os.getuid(), os.listdir('/workspace'), "
                                 "os.listdir('/tmp')]"))
    assert ws == [] and "s.txt" not in tmp
    if os.geteuid() == 0:
        assert uid2 != uid1
    found, _, _ = ok(a.execute(HUNT, timeout=60))
    assert found == []
    assert b.read_file("/workspace/b.txt") == b"B"
    assert host_side < 1.0  # a flag and a uid; measured in benchmarks/server_load.py
    a.close()
    b.close()


def test_concurrent_episodes_cannot_see_or_signal_each_other(pool):
    """A runs while B (on the other worker) looks for it in /proc, signals every pid it can
    name and tries to trace it: A finishes undisturbed."""
    a, b = _pair(pool, same_worker=False)
    out = {}

    def run_a():
        out["a"] = a.execute("import time\ntime.sleep(3)\nanswer = 'A finished'", timeout=20)

    t = threading.Thread(target=run_a)
    t.start()
    time.sleep(1.0)
    code = (
        "import os, signal, ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "visible = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "alive = []\n"
        "for pid in range(2, 70000):\n"
        "    try:\n        os.kill(pid, 0)\n        alive.append(pid)\n    except OSError:\n        pass\n"
        "for s in (signal.SIGSTOP, signal.SIGKILL):\n"
        "    try:\n        os.kill(-1, s)\n    except OSError:\n        pass\n"
        "r = libc.syscall(101, 16, 1, 0, 0)  # ptrace(PTRACE_ATTACH, 1)\n"
        "answer = [visible, alive, r, ctypes.get_errno()]"
    )
    visible, alive, traced, errno = ok(b.execute(code, timeout=30))
    t.join()
    assert visible == ["1"] and alive == []
    assert traced == -1 and errno == 1
    assert ok(out["a"]) == "A finished"
    a.close()
    b.close()


@pytest.mark.parametrize("same_worker", [True, False])
def test_ipc_and_keyrings_do_not_cross_episodes(pool, same_worker):
    if os.uname().machine != "x86_64":
        pytest.skip("syscall numbers in this test are x86_64's")
    a, b = _pair(pool, same_worker)
    make = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "open('/dev/shm/posix-a', 'w').write('x')\n"
            "r = libc.syscall(248, b'user', b'k', b'v', 1, -4)  # add_key to @u\n"
            "answer = [libc.shmget(0x5eed, 4096, 0o1666) >= 0, libc.msgget(0x5eed, 0o1666) >= 0, "
            "libc.semget(0x5eed, 1, 0o1666) >= 0, r, ctypes.get_errno()]")
    assert ok(a.execute(make)) == [True, True, True, -1, 1]
    look = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "r = libc.syscall(250, 0, -4, 0, 0, 0)  # keyctl get @u\n"
            "e = ctypes.get_errno()\n"
            "answer = [libc.shmget(0x5eed, 0, 0o666), libc.msgget(0x5eed, 0o666), "
            "libc.semget(0x5eed, 0, 0o666), os.listdir('/dev/shm'), r, e]")
    assert ok(b.execute(look)) == [-1, -1, -1, [], -1, 1]
    a.close()
    b.close()


def _tree(pid: int) -> set[int]:
    """``pid`` and all its descendants (host /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, stack = set(), [pid]
    while stack:
        p = stack.pop()
        out.add(p)
        stack.extend(children.get(p, []))
    return out


def test_idle_episodes_have_no_process_and_close_frees_their_mounts(pool):
    procs = [w._proc.pid for w in pool.workers]
    eps = [SyncSandbox(pool.episode()).start() for _ in range(30)]
    for ep in eps:
        ok(ep.execute("open('/workspace/f', 'w').write('x')\nanswer = 1"))
    time.sleep(0.3)
    counts = [len(_tree(p)) for p in procs]
    # bwrap, its init, the zygote, the spare payload: the same with 30 episodes
    # as with none (bounded by a constant; no process per episode)
    assert all(c <= 8 for c in counts), counts
    stats = run_sync(pool.stats())
    assert sum(s["mounted"] for s in stats) >= 30
    for ep in eps:
        ep.close()
    stats = run_sync(pool.stats())
    assert sum(s["attached"] for s in stats) == 0
    assert sum(s["mounted"] for s in stats) <= 8  # only the other tests' still-open ones


def test_a_worker_death_gives_its_episodes_fresh_state_and_spares_the_others(pool):
    a, b = _pair(pool, same_worker=False)
    ok(a.execute(PLANT))
    ok(b.execute("open('/workspace/b.txt', 'w').write('B')\nanswer = 1"))
    a.inner.worker._proc.kill()
    time.sleep(0.2)
    r = a.execute("import os\nanswer = os.listdir('/workspace')")
    assert r.status in ("ok", "killed")
    assert ok(a.execute("import os\nanswer = os.listdir('/workspace')")) == []
    assert b.read_file("/workspace/b.txt") == b"B"
    a.close()
    b.close()


def test_services_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ConfigurationError, match="services"):
        SandboxPool(services={8080: tmp_path / "s.sock"})
    with pytest.raises(ConfigurationError, match="positive"):
        SandboxPool(workers=0)


def test_a_closed_episode_or_pool_refuses_work():
    from medagentgym.errors import SandboxError

    p = SandboxPool(workers=1, preload="none", limits=LIMITS)
    ep = SyncSandbox(p.episode()).start()
    assert ok(ep.execute("answer = 5")) == 5
    ep.close()
    with pytest.raises(SandboxError):
        ep.execute("answer = 6")
    run_sync(p.close())
    with pytest.raises(SandboxError):
        p.episode()


@pytest.mark.parametrize("pooled", [True, False])
def test_python_roots_under_tmp_stay_visible_and_read_only(monkeypatch, tmp_path_factory, pooled):
    """A Python installation under the host's /tmp (a CI checkout, say) is bound again on top
    of every episode's fresh /tmp: readable, not writable, and still there after a reset."""
    import tempfile

    from medagentgym.sandbox import bwrap
    from medagentgym.sandbox.bwrap import BwrapSandbox

    root = tempfile.mkdtemp(prefix="mag-fake-python-", dir="/tmp")
    try:
        os.chmod(root, 0o755)
        with open(f"{root}/marker.txt", "w") as fh:
            fh.write("python root")
        os.chmod(f"{root}/marker.txt", 0o644)
        real = bwrap._python_roots
        monkeypatch.setattr(bwrap, "_python_roots", lambda: [*real(), root])
        probe = (f"import os\nans = [open('{root}/marker.txt').read()]\n"
                 f"try:\n    open('{root}/new.txt', 'w').write('x')\n    ans.append('written')\n"
                 "except OSError as exc:\n    ans.append(type(exc).__name__)\nanswer = ans")
        if pooled:
            p = SandboxPool(workers=1, limits=LIMITS, preload="none")
            box = SyncSandbox(p.episode())
        else:
            p = None
            box = SyncSandbox(BwrapSandbox(limits=LIMITS, preload="none"))
        box.start()
        try:
            assert ok(box.execute(probe)) == ["python root", "OSError"]
            box.reset()
            assert ok(box.execute(probe)) == ["python root", "OSError"]
        finally:
            box.close()
            if p is not None:
                run_sync(p.close())
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def test_the_request_socket_carries_nothing_back_to_the_worker(pool):
    """A pooled payload's request channel is a unix socket (its episode's mounts come over
    it). Agent code that writes junk into every socket it holds, passes its own fds back and
    keeps a thread writing changes nothing: its probes still see its own values, and the
    worker goes on serving it and a neighbour."""
    a, b = _pair(pool)
    ok(b.execute("open('/workspace/b.txt', 'w').write('B')\nanswer = 1"))
    hostile = (
        "import os, socket, stat, threading\nsent = 0\n"
        "def spam(fd):\n    try:\n        s = socket.socket(fileno=os.dup(fd))\n"
        "        s.setblocking(False)\n"
        "        for _ in range(2000):\n"
        "            s.send(b'{\"op\": \"exec\", \"ep\": 1, \"uid\": 0}' * 100)\n"
        "    except OSError:\n        pass\n"
        "for fd in range(3, 256):\n"
        "    try:\n        if not stat.S_ISSOCK(os.fstat(fd).st_mode):\n            continue\n"
        "    except OSError:\n        continue\n"
        "    try:\n        s = socket.socket(fileno=os.dup(fd))\n"
        "        socket.send_fds(s, [b'T'], [os.open('/workspace', os.O_RDONLY)])\n"
        "        sent += 1\n    except OSError:\n        pass\n"
        "    threading.Thread(target=spam, args=(fd,), daemon=True).start()\n"
        "mine = 'A-owns-this'\nanswer = sent")
    r = a.execute(hostile, probes={"mine": "mine", "files": "__import__('os').listdir('/workspace')"})
    assert r.status == "ok", (r.error, r.stderr[-1000:])
    assert r.answer >= 1  # the request socket was there to abuse
    assert r.probes["mine"].value == "A-owns-this" and r.probes["files"].value == []
    assert ok(a.execute("import os\nanswer = os.listdir('/workspace')")) == []
    assert ok(b.execute("import os\nanswer = os.listdir('/workspace')")) == ["b.txt"]
    a.close()
    b.close()
