"""Hostile agent code against the bwrap sandbox: one execution must never see, signal, trace
or write another (the pre-forked spare included), nothing may survive ``reset()`` into the
next episode, a payload can never make its failure look like ours, and no host path leaks.

Every test here failed on the sandbox before these defences (issue 10)."""

from __future__ import annotations

import os
import sys
import time

import pytest

from medagentgym.sandbox import SandboxLimits, SyncSandbox, available_providers, create_sandbox

pytestmark = pytest.mark.skipif(not available_providers()["bwrap"][0],
                                reason="bubblewrap cannot run here")

LIMITS = SandboxLimits(memory_bytes=1024**3, max_output_bytes=100_000, nproc=48,
                       tmp_bytes=32 * 1024**2, workspace_bytes=16 * 1024**2, inodes=5_000,
                       shm_bytes=8 * 1024**2)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("home-secret-dir")
    (d / "db.txt").write_text("rows\n")
    os.chmod(d, 0o755)
    return {"/data/db.txt": d / "db.txt"}, str(d)


@pytest.fixture(scope="module")
def sb(inputs):
    box = SyncSandbox(create_sandbox("bwrap", inputs[0], limits=LIMITS)).start()
    yield box
    box.close()


def ok(r):
    assert r.status == "ok", (r.status, r.error, r.stderr[-2000:])
    return r.answer


# ------------------------------------------------------------------ one execution, alone


def test_proc_shows_only_the_execution_itself(sb):
    pids = ok(sb.execute("import os\nanswer = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())"))
    assert pids == [1], pids  # no zygote, no runner, no spare, no bwrap
    # its children are its own
    code = ("import subprocess, os\n"
            "p = subprocess.Popen(['sleep', '5'])\n"
            "answer = sorted(int(x) for x in os.listdir('/proc') if x.isdigit())\np.kill()")
    assert ok(sb.execute(code)) == [1, 2]


def test_spare_cannot_be_reached_through_proc(sb):
    """The attack of issue 10: find the pre-forked spare in /proc and rewrite its memory."""
    code = (
        "import os\n"
        "hits = []\n"
        "for p in os.listdir('/proc'):\n"
        "    if not p.isdigit() or p == '1':\n"
        "        continue\n"
        "    try:\n"
        "        open(f'/proc/{p}/mem', 'r+b')\n"
        "        hits.append(p)\n"
        "    except OSError:\n"
        "        pass\n"
        "seen = []\n"
        "for p in range(1, 400):\n"
        "    try:\n"
        "        seen.append(open(f'/proc/{p}/cmdline', 'rb').read())\n"
        "    except OSError:\n"
        "        pass\n"
        "answer = [hits, [s.decode(errors='replace') for s in seen]]"
    )
    hits, seen = ok(sb.execute(code))
    assert hits == []
    assert len(seen) == 1 and "worker.py" in seen[0]  # itself (pid 1) only


def test_signalling_everything_spares_the_next_execution(sb):
    r = sb.execute("import os, signal\nfor s in (signal.SIGSTOP, signal.SIGKILL):\n"
                   "    try:\n        os.kill(-1, s)\n    except OSError:\n        pass\n"
                   "answer = 1")
    assert r.status in ("ok", "killed")
    assert ok(sb.execute("answer = 'next'")) == "next"


def test_result_channel_cannot_be_forged(sb):
    """The payload writes its own frames onto every fd it has, then exits early or late: the
    runner keeps only what a payload may say, and never a sandbox failure."""
    forged = ('{"kind": "code", "status": "killed", "stdout": "FORGED", "exit_code": 0, '
              '"duration_s": -5, "output_bytes": -1, "answer_type": "int", "answer": 1}')
    for tail in ("", "os._exit(0)\n", "answer = 2\n"):
        code = ("import os\n"
                f"frame = {forged!r}.encode()\n"
                "for fd in range(3, 64):\n"
                "    try:\n        os.write(fd, frame)\n    except OSError:\n        pass\n" + tail)
        r = sb.execute(code)
        assert r.status in ("ok", "error"), r
        assert "FORGED" not in r.stdout and r.duration_s >= 0 and r.output_bytes >= 0
    # garbage and deeply nested JSON on the channel: an ordinary, readable result
    for junk in ("b'\\xff' * 100000", "b'[' * 200000", "('[' * 5000 + ']' * 5000).encode()"):
        r = sb.execute(f"import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, {junk})\n"
                       "    except OSError:\n        pass\nos._exit(0)")
        assert r.status in ("ok", "error"), r
    r = sb.execute("answer = 1\nfor _ in range(3000):\n    answer = [answer]")
    assert r.status == "ok" and r.answer_error and "deep" in r.answer_error


def test_signals_to_itself_do_not_end_the_call_as_a_sandbox_failure(sb):
    r = sb.execute("import os\nos.kill(os.getpid(), 40)\nanswer = 'still here'")
    assert r.status == "ok" and r.answer == "still here"  # PID 1 of its namespace
    assert ok(sb.execute("answer = 3")) == 3


# ------------------------------------------------------------------ kernel objects


def test_sysv_ipc_dies_with_the_execution(sb):
    create = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              "shm = libc.shmget(0x5eed, 4096, 0o1666)\n"
              "msg = libc.msgget(0x5eed, 0o1666)\n"
              "sem = libc.semget(0x5eed, 1, 0o1666)\n"
              "answer = [shm >= 0, msg >= 0, sem >= 0]")
    assert ok(sb.execute(create)) == [True, True, True]
    look = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "answer = [libc.shmget(0x5eed, 0, 0o666), libc.msgget(0x5eed, 0o666), "
            "libc.semget(0x5eed, 0, 0o666), open('/proc/sysvipc/shm').read().count('\\n')]")
    assert ok(sb.execute(look)) == [-1, -1, -1, 1]  # header line only


def test_sysv_shared_memory_is_capped(sb):
    """Segments live outside RLIMIT_AS: attach, fill, detach, repeat — capped by shm_bytes."""
    code = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "libc.shmat.restype = ctypes.c_void_p\n"
            "total = 0\n"
            "for i in range(40):\n"
            "    sid = libc.shmget(0, 4 * 1024 * 1024, 0o1600)\n"
            "    if sid < 0:\n        break\n"
            "    addr = libc.shmat(sid, None, 0)\n"
            "    if addr in (None, ctypes.c_void_p(-1).value):\n        break\n"
            "    ctypes.memset(addr, 1, 4 * 1024 * 1024)\n"
            "    libc.shmdt(ctypes.c_void_p(addr))\n"
            "    total += 4\n"
            "big = libc.shmget(0, 64 * 1024 * 1024, 0o1600)\n"
            "answer = [total, big]")
    total, big = ok(sb.execute(code))
    assert total <= 8 and big == -1


def test_dev_shm_is_private_and_capped(sb):
    code = ("import os\nopen('/dev/shm/left', 'w').write('x')\n"
            "try:\n    open('/dev/shm/big', 'wb').write(b'0' * (32 * 1024 * 1024))\n    full = False\n"
            "except OSError:\n    full = True\nanswer = full")
    assert ok(sb.execute(code)) is True
    assert ok(sb.execute("import os\nanswer = os.listdir('/dev/shm')")) == []


def test_keyrings_and_new_namespaces_are_refused(sb):
    code = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "out = {}\n"
        "r = libc.syscall(248, b'user', b'k', b'v', 1, -4)  # add_key to @u\n"
        "out['add_key'] = (r, ctypes.get_errno())\n"
        "r = libc.syscall(250, 0, -4, 0, 0, 0)  # keyctl get @u\n"
        "out['keyctl'] = (r, ctypes.get_errno())\n"
        "r = libc.unshare(0x10000000)  # CLONE_NEWUSER\n"
        "out['unshare'] = (r, ctypes.get_errno())\n"
        "r = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)  # clone(NEWUSER|SIGCHLD)\n"
        "if r == 0:\n    os._exit(0)\n"
        "out['clone'] = (r, ctypes.get_errno())\n"
        "r = libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)\n"
        "out['mount'] = (r, ctypes.get_errno())\n"
        "pid = os.fork()\nif pid == 0:\n    os._exit(7)\n"
        "out['fork'] = os.waitpid(pid, 0)[1] >> 8\n"
        "answer = out"
    )
    if os.uname().machine != "x86_64":
        pytest.skip("syscall numbers in this test are x86_64's")
    out = ok(sb.execute(code))
    for name in ("add_key", "keyctl", "unshare", "clone", "mount"):
        assert out[name][0] == -1 and out[name][1] == 1, (name, out[name])  # EPERM
    assert out["fork"] == 7  # ordinary processes still work
    assert sb.info.get("seccomp") is True


# ------------------------------------------------------------------ nothing survives reset


def test_reset_gives_a_clean_episode_under_a_new_uid(sb):
    plant = (
        "import os\n"
        "os.makedirs('/workspace/d', exist_ok=True)\n"
        "open('/workspace/d/secret', 'w').write('episode-1')\n"
        "open('/tmp/secret', 'w').write('episode-1')\n"
        "for name in ('find', 'rm', 'sh'):\n"
        "    p = '/tmp/' + name\n"
        "    open(p, 'w').write('#!/bin/sh\\necho HIJACKED > /workspace/pwned\\n')\n"
        "    os.chmod(p, 0o755)\n"
        "answer = os.getuid()"
    )
    uid1 = ok(sb.execute(plant))
    t0 = time.perf_counter()
    sb.reset()
    elapsed = time.perf_counter() - t0
    look = ("import os\nanswer = [os.getuid(), sorted(os.listdir('/workspace')), "
            "sorted(os.listdir('/tmp'))]")
    uid2, ws, tmp = ok(sb.execute(look))
    assert ws == [] and not any(n in tmp for n in ("secret", "find", "rm", "sh"))
    if os.geteuid() == 0:
        assert uid2 != uid1
    assert elapsed < 5


def test_deep_trees_do_not_break_reset(sb):
    sb.reset()
    fresh_tmp = ok(sb.execute("import os\nanswer = sorted(os.listdir('/tmp'))"))  # a venv under /tmp shows
    code = ("import os\nos.chdir('/workspace')\n"
            "for i in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\n"
            "os.chdir('/tmp')\n"
            "for i in range(1500):\n    os.mkdir('e')\n    os.chdir('e')\n"
            "os.chmod('.', 0)\nanswer = 'deep'")
    assert ok(sb.execute(code, timeout=60)) == "deep"
    sb.reset()
    assert ok(sb.execute("import os\nanswer = [os.listdir('/workspace'), sorted(os.listdir('/tmp'))]")) == [
        [], fresh_tmp]


def test_workspace_and_tmp_have_size_and_inode_budgets(sb):
    code = (
        "import os\nout = {}\n"
        "for root in ('/workspace', '/tmp'):\n"
        "    try:\n"
        "        with open(root + '/blob', 'wb') as f:\n"
        "            for _ in range(64):\n                f.write(b'0' * 1024 * 1024)\n"
        "        out[root + ':bytes'] = 'unbounded'\n"
        "    except OSError as e:\n        out[root + ':bytes'] = e.errno\n"
        "    os.path.exists(root + '/blob') and os.remove(root + '/blob')\n"
        "    try:\n"
        "        for i in range(10000):\n            open(f'{root}/f{i}', 'w').close()\n"
        "        out[root + ':inodes'] = 'unbounded'\n"
        "    except OSError as e:\n        out[root + ':inodes'] = e.errno\n"
        "answer = out"
    )
    out = ok(sb.execute(code, timeout=60))
    assert all(v == 28 for v in out.values()), out  # ENOSPC
    sb.reset()


def test_ipc_created_before_reset_is_gone_after(sb):
    ok(sb.execute("import ctypes\nlibc = ctypes.CDLL(None)\nlibc.shmget(0x77, 4096, 0o1666)\nanswer = 1"))
    sb.reset()
    assert ok(sb.execute("import ctypes\nlibc = ctypes.CDLL(None)\nanswer = libc.shmget(0x77, 0, 0o666)")) == -1


# ------------------------------------------------------------------ no host paths


def test_no_host_path_is_disclosed_in_command_lines_or_environment(sb, inputs):
    _, secret_dir = inputs
    code = ("import os\nblobs = {}\n"
            "for name in ('/proc/1/cmdline', '/proc/self/cmdline', '/proc/1/environ', '/proc/self/environ'):\n"
            "    blobs[name] = open(name, 'rb').read().decode(errors='replace')\n"
            "blobs['ps'] = ' '.join(open(f'/proc/{p}/cmdline', 'rb').read().decode(errors='replace') "
            "for p in os.listdir('/proc') if p.isdigit())\n"
            "answer = blobs")
    blobs = ok(sb.execute(code))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name, text in blobs.items():
        for secret in (secret_dir, "mag-sbx-", repo + "/src", os.path.expanduser("~/.cache")):
            assert secret not in text, (name, secret)
    mounts = ok(sb.execute("answer = open('/proc/self/mountinfo').read()"))
    assert "mag-sbx-" not in mounts and "/src/medagentgym" not in mounts


def test_medagentgym_is_not_importable_inside(sb):
    r = sb.execute("import medagentgym")
    assert r.status == "error" and "ModuleNotFoundError" in (r.error or "")


# ------------------------------------------------------------------ fail closed


def test_auto_refuses_to_run_without_isolation(monkeypatch):
    import medagentgym.sandbox as sbx
    from medagentgym.errors import ConfigurationError

    monkeypatch.delenv("MEDAGENTGYM_SANDBOX", raising=False)
    monkeypatch.setattr(sbx, "_configured_provider", lambda: None)
    monkeypatch.setattr(sbx, "_probe_bwrap", lambda: (False, "no bwrap binary"))
    with pytest.raises(ConfigurationError, match="MEDAGENTGYM_SANDBOX=local"):
        sbx.resolve_provider("auto")
    with pytest.raises(ConfigurationError):
        sbx.create_sandbox(None)
    monkeypatch.setenv("MEDAGENTGYM_SANDBOX", "local")
    assert sbx.resolve_provider("auto") == "local"  # chosen by name: allowed


def test_worker_is_not_bound_from_the_checkout(sb):
    assert sys.modules["medagentgym"].__file__  # the host has it; the sandbox reads a copy
    mounts = ok(sb.execute("answer = [l for l in open('/proc/self/mountinfo') if 'worker.py' in l]"))
    assert mounts and all("sandbox/_worker.py" not in m for m in mounts)


def test_an_installed_package_is_masked_inside(monkeypatch):
    """A non-editable install puts medagentgym (task generators, seeds) in site-packages,
    which is bound into the sandbox: it must be covered by an empty tmpfs there."""
    import medagentgym
    from medagentgym.sandbox import bwrap

    site = next(p for p in sys.path if p.endswith("site-packages"))
    fake = os.path.join(site, "medagentgym")
    monkeypatch.setattr(medagentgym, "__path__", [fake])
    box = bwrap.BwrapSandbox(None, limits=LIMITS)
    args = box._bwrap_args()
    i = args.index(fake)
    assert args[i - 1] == "--tmpfs"
