"""Conformance suite: every available provider must pass (containment tests need isolation)."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from medagentgym.errors import ConfigurationError
from medagentgym.sandbox import SyncSandbox, create_sandbox
from tests.sandbox.conftest import MARK, PROVIDERS, stray_processes

# ------------------------------------------------------------------ results and answers


@pytest.mark.parametrize(
    ("code", "answer", "answer_type"),
    [
        ("answer = 42", 42, "int"),
        ("answer = 2.5", 2.5, "float"),
        ("answer = 'text'", "text", "str"),
        ("answer = [1, 'a', None]", [1, "a", None], "list"),
        ("answer = (1, 2)", [1, 2], "tuple"),
        ("answer = {'a': 1, 2: [3]}", {"a": 1, "2": [3]}, "dict"),
        ("answer = None", None, "NoneType"),
        ("answer = True", True, "bool"),
        ("import numpy as np\nanswer = np.int64(7)", 7, "numpy.int64"),
        ("import numpy as np\nanswer = np.float32(0.5)", 0.5, "numpy.float32"),
        ("import numpy as np\nanswer = np.arange(3)", [0, 1, 2], "numpy.ndarray"),
        ("import numpy as np\nanswer = bool(np.bool_(True))", True, "bool"),
        (
            "import pandas as pd\nanswer = pd.DataFrame({'x': [1, 2], 'y': ['a', 'b']})",
            [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}],
            "pandas.DataFrame",
        ),
        ("import pandas as pd\nanswer = pd.Series([1.5, 2.5])", [1.5, 2.5], "pandas.Series"),
        ("import pandas as pd\nanswer = pd.Timestamp('2105-12-31 23:59:00')",
         "2105-12-31T23:59:00", "pandas.Timestamp"),
        ("import datetime\nanswer = datetime.datetime(2101, 2, 3, 4, 5, 6)",
         "2101-02-03T04:05:06", "datetime.datetime"),
        ("import datetime\nanswer = datetime.date(2101, 2, 3)", "2101-02-03", "datetime.date"),
        ("answer = {3, 1, 2}", [1, 2, 3], "set"),
        ("import decimal\nanswer = decimal.Decimal('1.25')", 1.25, "decimal.Decimal"),
    ],
)
def test_answer_capture(sandbox, code, answer, answer_type):
    r = sandbox.execute(code, timeout=30)
    assert r.status == "ok", r
    assert r.answer == answer
    assert r.answer_type == answer_type
    assert r.has_answer


def test_unset_answer_is_none(sandbox):
    r = sandbox.execute("x = 1", timeout=30)
    assert r.status == "ok"
    assert r.answer is None and r.answer_type is None and not r.has_answer


def test_dataframe_with_named_index_keeps_index(sandbox):
    r = sandbox.execute(
        "import pandas as pd\nanswer = pd.DataFrame({'n': [3]}, index=pd.Index(['k'], name='key'))"
    )
    assert r.answer == [{"key": "k", "n": 3}]


def test_filtered_dataframe_drops_row_numbers(sandbox):
    r = sandbox.execute(
        "import pandas as pd\ndf = pd.DataFrame({'n': [1, 2, 3]})\nanswer = df[df.n > 1]")
    assert r.answer == [{"n": 2}, {"n": 3}]


def test_series_with_named_index_keeps_keys(sandbox):
    r = sandbox.execute(
        "import pandas as pd\ndf = pd.DataFrame({'g': ['a', 'a', 'b']})\n"
        "answer = df.groupby('g').size()")
    assert r.answer == [["a", 2], ["b", 1]]
    r = sandbox.execute("import pandas as pd\nanswer = pd.Series([3, 4], index=[7, 8])")
    assert r.answer == [3, 4]


def test_parquet_round_trip(sandbox):
    pytest.importorskip("pyarrow")
    r = sandbox.execute(
        "import io\nimport pandas as pd\nbuf = io.BytesIO()\n"
        "pd.DataFrame({'a': [1, 2]}).to_parquet(buf)\n"
        "answer = int(pd.read_parquet(io.BytesIO(buf.getvalue())).a.sum())")
    assert r.answer == 3, r


def test_unserialisable_answer_reports_why(sandbox):
    r = sandbox.execute("answer = object()")
    assert r.status == "ok"
    assert isinstance(r.answer, str) and r.answer.startswith("<object object")


def test_stdout_and_stderr(sandbox):
    r = sandbox.execute("import sys\nprint('out line')\nprint('err line', file=sys.stderr)")
    assert r.status == "ok"
    assert r.stdout == "out line\n"
    assert r.stderr == "err line\n"
    assert r.duration_s > 0


def test_syntax_error_reports_line(sandbox):
    r = sandbox.execute("x = 1\ny = (\nprint(x", timeout=30)
    assert r.status == "error"
    assert r.error.startswith("SyntaxError")
    assert r.error_line in (2, 3)


def test_runtime_error_has_trimmed_traceback(sandbox):
    r = sandbox.execute("def f(x):\n    return 1 / x\n\nanswer = f(0)", timeout=30)
    assert r.status == "error"
    assert r.error == "ZeroDivisionError: division by zero"
    assert r.error_line == 2
    assert 'File "<code>", line 4' in r.traceback
    assert "_worker" not in r.traceback and "worker.py" not in r.traceback
    assert "ZeroDivisionError" in r.feedback()


def test_answer_is_captured_even_after_error(sandbox):
    r = sandbox.execute("answer = 5\nraise ValueError('late')")
    assert r.status == "error" and r.answer == 5


def test_sys_exit(sandbox):
    assert sandbox.execute("import sys; sys.exit(0)").status == "ok"
    r = sandbox.execute("import sys; sys.exit(3)")
    assert r.status == "error" and "3" in r.error


def test_each_execution_starts_clean(sandbox):
    r1 = sandbox.execute("import json\njson.marker = 1\nleaked = 7\nanswer = 1")
    assert r1.answer == 1
    r2 = sandbox.execute("import json\nanswer = [hasattr(json, 'marker'), 'leaked' in globals()]")
    assert r2.answer == [False, False]


def test_workdir_files_persist_and_are_readable_from_the_host(sandbox):
    r = sandbox.execute("open('notes.txt', 'w').write('kept')\nimport os\nanswer = os.getcwd()")
    assert r.status == "ok"
    assert sandbox.read_file("notes.txt") == b"kept"
    assert sandbox.execute("answer = open('notes.txt').read()").answer == "kept"
    sandbox.write_file("from_host.txt", b"\x00bytes")
    assert sandbox.execute("answer = list(open('from_host.txt', 'rb').read())").answer == [0, 98, 121, 116, 101, 115]


def test_input_is_readable(sandbox):
    r = sandbox.execute("answer = open('/data/input.txt').read()")
    assert r.answer == "hello from the host\n", r


def test_timeout_busy_loop(sandbox):
    t0 = time.monotonic()
    r = sandbox.execute("while True:\n    pass", timeout=1.0)
    assert r.status == "timeout"
    assert time.monotonic() - t0 < 5
    assert sandbox.execute("answer = 'alive'").answer == "alive"


def test_timeout_sleep(sandbox):
    r = sandbox.execute("import time\ntime.sleep(60)", timeout=0.5)
    assert r.status == "timeout"
    assert r.duration_s < 3


def test_memory_bomb_single_allocation(sandbox):
    r = sandbox.execute("x = bytearray(8 * 1024**3)", timeout=30)
    assert r.status == "memory", r


def test_memory_bomb_growing(sandbox):
    r = sandbox.execute("chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024**2))",
                        timeout=30)
    assert r.status == "memory", r
    assert sandbox.execute("answer = 1").answer == 1


def test_huge_output_is_capped(sandbox):
    t0 = time.monotonic()
    r = sandbox.execute("import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1_000_000)",
                        timeout=60)
    assert r.status == "output_limit"
    assert len(r.stdout) + len(r.stderr) <= sandbox.inner.limits.max_output_bytes
    assert time.monotonic() - t0 < 30


def test_output_flood_via_print(sandbox):
    r = sandbox.execute("while True:\n    print('spam ' * 100)", timeout=30)
    assert r.status == "output_limit"


def test_run_command(sandbox):
    r = sandbox.run(["python", "-c", "print('from run')"], timeout=30)
    assert r.status == "ok" and r.stdout == "from run\n" and r.exit_code == 0
    r = sandbox.run(["sh", "-c", "exit 4"], timeout=30)
    assert r.status == "error" and r.exit_code == 4
    r = sandbox.run(["definitely-not-a-command-xyz"], timeout=30)
    assert r.status == "error" and r.exit_code == 127 and "not found" in r.stderr
    r = sandbox.run(["sleep", "30"], timeout=0.5)
    assert r.status == "timeout"


def test_run_rejects_a_shell_string(sandbox):
    with pytest.raises(TypeError):
        sandbox.run("ls -l", timeout=5)


def test_secret_environment_is_not_inherited(sandbox, monkeypatch):
    # variables set on the host after start and before start must both be invisible
    r = sandbox.execute("import os\nanswer = sorted(os.environ)")
    assert not any("KEY" in k or "TOKEN" in k or "SECRET" in k for k in r.answer)
    assert "MAG_PLANTED_SECRET" not in r.answer


def test_worker_death_between_calls_restarts_transparently(sandbox):
    before = sandbox.inner.restarts
    proc = sandbox.inner._proc
    assert proc is not None
    proc.kill()
    time.sleep(0.3)
    r = sandbox.execute("answer = 1")
    assert r.status in ("ok", "killed")
    assert sandbox.execute("answer = 2").answer == 2
    assert sandbox.inner.restarts == before + 1


def test_worker_death_during_a_call_is_reported_as_killed(sandbox):
    proc = sandbox.inner._proc
    assert proc is not None
    killer = threading.Timer(0.5, proc.kill)
    killer.start()
    r = sandbox.execute("import time\ntime.sleep(20)", timeout=30)
    killer.join()
    assert r.status == "killed"
    assert "restarted" in r.error
    assert sandbox.execute("answer = 3").answer == 3


# --------------------------------------------------------------------------- containment


def test_runs_as_unprivileged_user(isolating):
    r = isolating.execute(
        "import os\n"
        "status = open('/proc/self/status').read()\n"
        "caps = [l.split()[1] for l in status.splitlines() if l.startswith('CapEff')][0]\n"
        "answer = [os.getuid(), caps]"
    )
    uid, caps = r.answer
    assert caps == "0000000000000000"
    if os.geteuid() == 0:
        assert uid != 0


def test_fork_bomb_is_contained(isolating):
    before = len(os.listdir("/proc"))
    r = isolating.execute(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        timeout=3,
    )
    assert r.status in ("timeout", "error", "killed")
    time.sleep(0.2)
    assert len(os.listdir("/proc")) < before + 20
    assert stray_processes() == []
    assert isolating.execute("answer = 'ok'").answer == "ok"


def test_setsid_and_double_forked_children_die_with_the_call(isolating):
    code = f"""
import os, subprocess
subprocess.Popen(['sleep', '987'], start_new_session=True)
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp('sh', ['sh', '-c', 'exec -a {MARK} sleep 986'])
    os._exit(0)
os.waitpid(pid, 0)
answer = 'spawned'
"""
    r = isolating.execute(code, timeout=10)
    assert r.answer == "spawned", r
    time.sleep(0.2)
    assert stray_processes() == []
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _cmd(p).startswith("sleep 98")]
    assert leftovers == []


def _cmd(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_no_network(isolating):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(3)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        try:
            conn, _ = server.accept()
            accepted.append(conn)
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    r = isolating.execute(
        "import socket\n"
        "results = []\n"
        f"for host in ['127.0.0.1', 'localhost', '10.0.2.2']:\n"
        "    s = socket.socket(); s.settimeout(1)\n"
        "    try:\n"
        f"        s.connect((host, {port})); results.append('connected')\n"
        "    except OSError as e:\n"
        "        results.append(type(e).__name__)\n"
        "answer = results",
        timeout=20,
    )
    t.join()
    server.close()
    assert accepted == []
    assert "connected" not in r.answer
    ifaces = isolating.run(["cat", "/proc/net/dev"], timeout=10).stdout
    assert "eth" not in ifaces and "ens" not in ifaces


def test_cannot_write_outside_workdir(isolating):
    r = isolating.execute(
        "results = {}\n"
        "for path in ['/etc/mag_x', '/usr/mag_x', '/mag_x', '/root/mag_x', '/data/input.txt',"
        " '/opt/medagentgym/worker.py']:\n"
        "    try:\n"
        "        open(path, 'a').write('x'); results[path] = 'written'\n"
        "    except OSError as e:\n"
        "        results[path] = type(e).__name__\n"
        "open('/tmp/ok', 'w').write('fine')\n"
        "open('/workspace/ok', 'w').write('fine')\n"
        "answer = results"
    )
    assert r.status == "ok", r
    assert "written" not in r.answer.values(), r.answer
    for path in ("/etc/mag_x", "/usr/mag_x", "/mag_x"):
        assert not os.path.exists(path)


def test_cannot_read_host_secrets(isolating, tmp_path):
    planted = []
    for base in dict.fromkeys(("/root", os.path.expanduser("~"), str(tmp_path))):
        p = os.path.join(base, ".mag_planted_secret")
        try:
            with open(p, "w") as fh:
                fh.write("TOP-SECRET-GROUND-TRUTH")
            planted.append(p)
        except OSError:
            continue
    try:
        code = (
            "import os\n"
            f"paths = {planted!r}\n"
            "found = []\n"
            "for p in paths:\n"
            "    try:\n"
            "        found.append(open(p).read())\n"
            "    except OSError:\n"
            "        pass\n"
            "for root in ['/root', '/home', '/tmp', '/work', '/var', '/srv', '/mnt', '/opt']:\n"
            "    for d, _, files in os.walk(root):\n"
            "        for f in files:\n"
            "            if 'mag_planted' in f:\n"
            "                found.append(os.path.join(d, f))\n"
            "answer = [found, sorted(os.listdir('/root')) if os.path.isdir('/root') else []]"
        )
        r = isolating.execute(code, timeout=60)
        found, root_listing = r.answer
        assert found == []
        assert set(root_listing) <= {".pyenv"}  # only the interpreter's own path, if any
    finally:
        for p in planted:
            os.unlink(p)


def test_host_processes_are_invisible(isolating):
    r = isolating.execute("import os\nanswer = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())")
    assert os.getpid() not in r.answer or len(r.answer) < 10
    assert len(r.answer) < 10


def test_planted_environment_variable_invisible(tmp_path, monkeypatch):
    from medagentgym.sandbox import available_providers, open_sandbox

    if not available_providers()["bwrap"][0]:
        pytest.skip("bwrap unavailable")
    monkeypatch.setenv("MAG_PLANTED_SECRET", "s3cr3t-value")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted")
    with open_sandbox("bwrap") as sb:
        r = sb.execute(
            "import os\n"
            "env = dict(os.environ)\n"
            "blob = open('/proc/self/environ', 'rb').read().decode()\n"
            "answer = ['MAG_PLANTED_SECRET' in env, 'OPENAI_API_KEY' in env, 's3cr3t' in blob]"
        )
        assert r.answer == [False, False, False]
        r = sb.run(["sh", "-c", "env"], timeout=10)
        assert "s3cr3t" not in r.stdout and "sk-planted" not in r.stdout


def test_unknown_provider_is_a_configuration_error():
    from medagentgym.sandbox import resolve_provider

    with pytest.raises(ConfigurationError, match="choose one of"):
        resolve_provider("dockerz")


def test_provider_from_environment(monkeypatch):
    from medagentgym.sandbox import resolve_provider

    monkeypatch.setenv("MEDAGENTGYM_SANDBOX", "local")
    assert resolve_provider(None) == "local"
    assert resolve_provider("auto") == "local"
    assert resolve_provider("bwrap") == "bwrap"


def test_local_provider_maps_input_paths(tmp_path):
    from medagentgym.sandbox import open_sandbox

    (tmp_path / "x.db").write_text("db")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "t.csv").write_text("csv")
    from medagentgym.sandbox.local import LocalSandbox

    LocalSandbox._warned = False  # it warns once per process
    with pytest.warns(RuntimeWarning, match="does NOT isolate"), open_sandbox(
            "local", {"/data/x.db": tmp_path / "x.db", "/data/x": tmp_path / "x"}) as sb:
        r = sb.execute("answer = [open('/data/x.db').read(), open('/data/x/t.csv').read()]")
        assert r.answer == ["db", "csv"], r
        sb.inner.reset_workdir()
        assert sb.execute("answer = open('/data/x/t.csv').read()").answer == "csv"


def test_bad_input_path_is_rejected(tmp_path):
    from medagentgym.sandbox import create_sandbox

    with pytest.raises(ConfigurationError, match="does not exist"):
        create_sandbox("bwrap", {"/data/x": tmp_path / "missing"})
    with pytest.raises(ConfigurationError, match="absolute"):
        create_sandbox("bwrap", {"data/x": tmp_path})


def test_async_api_runs_sandboxes_concurrently():
    import asyncio

    from medagentgym.sandbox import available_providers, open_sandbox_async

    provider = "bwrap" if available_providers()["bwrap"][0] else "local"

    async def main():
        async with open_sandbox_async(provider, preload="none") as a, \
                open_sandbox_async(provider, preload="none") as b:
            t0 = time.monotonic()
            ra, rb = await asyncio.gather(
                a.execute("import time\ntime.sleep(0.5)\nanswer = 'a'"),
                b.execute("import time\ntime.sleep(0.5)\nanswer = 'b'"),
            )
            return ra.answer, rb.answer, time.monotonic() - t0

    a, b, elapsed = asyncio.run(main())
    assert (a, b) == ("a", "b")
    assert elapsed < 0.95  # ran in parallel


def test_no_stray_processes_after_suite(_processes_before_module):
    """Runs last in this module (pytest keeps file order): nothing may be left behind.

    Sandboxes that other test modules still hold open (their idle workers) were there before
    this module started and are not this module's to judge."""
    import gc

    gc.collect()
    time.sleep(0.3)
    left = [p for p in stray_processes(allow_idle_workers=False)
            if p.split()[0] not in _processes_before_module]
    assert left == []


@pytest.fixture(scope="module", autouse=True)
def _processes_before_module():
    return {p.split()[0] for p in stray_processes(allow_idle_workers=False)}


# ------------------------------------------------------------------ task-contract capabilities


def test_probes_run_after_the_code_in_its_namespace(sandbox):
    code = ("import json\nrows = [{'a': 1}, {'a': 2}]\n"
            "def double(x):\n    print('HIDDEN-INPUT', x)\n    return 2 * x\n"
            "print('shown')\nanswer = len(rows)")
    r = sandbox.execute(code, probes={"n": "len(rows)", "call": "double(21)",
                                      "missing": "nope", "frame": "rows"})
    assert r.status == "ok" and r.answer == 2
    assert r.probes["n"].value == 2 and r.probes["n"].type == "int"
    assert r.probes["call"].value == 42
    assert "NameError" in r.probes["missing"].error
    assert r.probes["frame"].value == [{"a": 1}, {"a": 2}]
    assert "shown" in r.stdout and "HIDDEN-INPUT" not in r.stdout + r.stderr


def test_probe_code_is_absent_while_the_agent_code_runs(sandbox):
    """The agent's code looks for the probe's text everywhere it can read; it is not there."""
    code = ("import os\nneedle = ''.join(['PROBE-', 'SECRET-7']).encode()\nfound = []\n"
            "for fd in range(0, 64):\n"
            "    try:\n        os.set_blocking(fd, False)\n"
            "        found.append(needle in os.read(fd, 1 << 20))\n"
            "    except OSError:\n        pass\n"
            "answer = any(found)")
    r = sandbox.execute(code, probes={"s": "'PROBE-SECRET-7'"})
    assert r.answer is False and r.probes["s"].value == "PROBE-SECRET-7"


def test_a_hanging_probe_times_out_without_failing_the_code(sandbox):
    r = sandbox.execute("def f():\n    while True:\n        pass\nanswer = 1",
                        probes={"hang": "f()", "ok": "1 + 1"}, probe_timeout=1.0)
    assert r.status == "ok" and r.answer == 1
    assert r.probes["hang"].error and r.probes["ok"].error  # P was stopped: nothing came back
    assert sandbox.execute("answer = 'alive'").answer == "alive"


def test_read_and_write_file_limits(sandbox):
    import pytest

    from medagentgym.sandbox.base import SandboxFileError

    sandbox.execute("open('big.bin', 'wb').write(b'x' * 100_000)\nimport os\n"
                    "os.mkfifo('fifo') if hasattr(os, 'mkfifo') else None")
    with pytest.raises(SandboxFileError, match="larger"):
        sandbox.read_file("big.bin", max_bytes=1000)
    assert len(sandbox.read_file("big.bin", max_bytes=200_000)) == 100_000
    with pytest.raises(SandboxFileError):
        sandbox.read_file("does-not-exist")
    with pytest.raises(SandboxFileError, match="regular"):
        sandbox.read_file("fifo")


@pytest.fixture(scope="module")
def service_socket(tmp_path_factory):
    """A tiny HTTP service on a unix socket, served by a thread on the host."""
    import socketserver
    import threading

    path = tmp_path_factory.mktemp("svc") / "svc.sock"

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            line = self.rfile.readline().decode(errors="replace").strip()
            body = f"echo {line}".encode()
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                             % len(body) + body)

    server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield path
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_service_is_reachable_at_its_fixed_port_and_nothing_else(provider, service_socket):
    inner = create_sandbox(provider, services={8080: service_socket}, preload="none")
    with SyncSandbox(inner) as sb:
        for _ in range(2):  # a service outlives executions, and episodes
            r = sb.execute("import urllib.request\n"
                           "answer = urllib.request.urlopen('http://localhost:8080/fhir/x', timeout=5).read().decode()")
            assert r.answer == "echo GET /fhir/x HTTP/1.1", r
            sb.reset()
        if inner.isolates:
            r = sb.execute("import socket\nout = []\nfor port in (8081, 80, 443):\n"
                           "    s = socket.socket()\n    s.settimeout(2)\n"
                           "    out.append(s.connect_ex(('127.0.0.1', port)))\nanswer = out")
            assert all(code != 0 for code in r.answer)


def test_service_socket_must_exist(tmp_path):
    from medagentgym.errors import ConfigurationError

    inner = create_sandbox(PROVIDERS[0], services={8080: tmp_path / "missing.sock"})
    with pytest.raises(ConfigurationError, match="unix socket"):
        SyncSandbox(inner).start()
