"""Issue 16 (part 2): a CLI that tells the truth.

End-to-end (subprocess) where the exit status, stdout/stderr split or timing matters:
preflight against a loopback server answering 401, a dead port, a base URL without /v1;
runs whose episodes all fail on infrastructure; the run-directory lock and the refusal of a
``--resume`` with other settings; progress on stderr and results on stdout; a moved data
home; a full disk; a busy ``view`` port; ``train``/``verify`` with missing inputs;
``data status``; the dataset positionally or with ``-d``; examples in every ``--help``.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from medagentgym.cli import app
from medagentgym.llm.testserver import Reply, TestServer
from medagentgym.rollout.store import TrajectoryStore

MAIN = "from medagentgym.cli import main; main()"
runner = CliRunner()
WRONG = Reply.action("validate_code", code="answer = 'surely not the answer'")


def cli(*args, env=None, timeout=180, code=MAIN):
    full = {**os.environ, "NO_COLOR": "1", "OPENAI_API_KEY": "sk-test-key",
            "MEDAGENTGYM_PROGRESS_INTERVAL": "0", **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, env=full, timeout=timeout, check=False)


def one_line_error(proc, code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in err and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert proc.stdout == ""
    return err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rollout_args(base_url: str, out: Path, *extra) -> list:
    return ["rollout", "treqs", "--model", "scripted", "--base-url", base_url, "--out", out,
            "--database", "synthetic", "--limit", "2", "--max-turns", "1", "--no-debugger",
            "--max-retries", "0", "--infra-retries", "0", *extra]


# ------------------------------------------------------------------------------ preflight


def startup_seconds() -> float:
    """What starting the command line costs here (on a loaded machine it is seconds): the
    under-10-s bounds below are on what the command does after that."""
    t0 = time.monotonic()
    cli("rollout", "--help")
    return time.monotonic() - t0


def test_rollout_against_a_401_fails_fast_with_the_key_fix(tmp_path):
    baseline = startup_seconds()
    with _strict_server(key="sk-right") as base:
        t0 = time.monotonic()
        proc = cli(*rollout_args(base + "/v1", tmp_path / "run"),
                   env={"OPENAI_API_KEY": "sk-wrong"})
        elapsed = time.monotonic() - t0
    err = one_line_error(proc, 2)
    assert "401" in err and "OPENAI_API_KEY" in err and "sk-wrong" not in err
    assert elapsed - baseline < 10, (elapsed, baseline)
    assert not (tmp_path / "run" / "trajectories.jsonl").exists()  # nothing booked


def test_rollout_against_a_dead_port_fails_in_under_10_s(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    baseline = startup_seconds()
    t0 = time.monotonic()
    proc = cli(*rollout_args(url, tmp_path / "run"))
    elapsed = time.monotonic() - t0
    err = one_line_error(proc, 2)
    assert "connection refused" in err and url in err and "--base-url" in err
    assert elapsed - baseline < 10, (elapsed, baseline)


def test_an_unreachable_host_fails_within_the_connect_limit():
    """A host that never answers the connection (here: a listener whose accept queue is
    full, so SYNs are dropped) ends the preflight after its connect limit, not minutes."""
    from medagentgym.errors import ConfigurationError
    from medagentgym.llm.client import PREFLIGHT_CONNECT_S, preflight
    from medagentgym.llm.config import LLMConfig

    assert PREFLIGHT_CONNECT_S <= 5
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(c)
        time.sleep(0.2)
        t0 = time.monotonic()
        with pytest.raises(ConfigurationError, match="no connection within 1 s"):
            preflight(LLMConfig(model="m", base_url=f"http://127.0.0.1:{port}/v1"),
                      api_key="k", connect_timeout=1.0, read_timeout=1.0)
        elapsed = time.monotonic() - t0
        for c in fillers:
            c.close()
    assert elapsed < 10


def test_a_base_url_without_v1_gets_did_you_mean(tmp_path):
    with _strict_server(key="sk-test-key") as base:
        proc = cli(*rollout_args(base, tmp_path / "run"))
    err = one_line_error(proc, 2)
    assert f"did you mean --base-url {base}/v1" in err


def test_preflight_warns_about_an_unlisted_model():
    from medagentgym.llm.client import preflight
    from medagentgym.llm.config import LLMConfig

    with _strict_server(key="k") as base:
        assert preflight(LLMConfig(model="m", base_url=base + "/v1"), api_key="k") == []
        (warning,) = preflight(LLMConfig(model="gpt-9", base_url=base + "/v1"), api_key="k")
    assert "'gpt-9' is not among the models" in warning and "(m)" in warning


class _Strict(http.server.BaseHTTPRequestHandler):
    """An endpoint that serves only under /v1 and checks the key."""

    key = ""

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.key}":
            return self._send(401, {"error": {"message": "Incorrect API key provided"}})
        if self.path == "/v1/models":
            return self._send(200, {"object": "list", "data": [{"id": "m"}]})
        self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._route()


class _strict_server:  # a context manager used like a function
    def __init__(self, key: str) -> None:
        handler = type("H", (_Strict,), {"key": key})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------- runs that tell the truth


def test_all_episodes_failing_on_infrastructure_exit_1_with_a_summary(mag_home, tmp_path):
    with TestServer(responder=lambda body: Reply.error(401, "Incorrect API key provided")) as server:
        proc = cli(*rollout_args(server.base_url, tmp_path / "run", "--no-preflight"),
                   env={"MEDAGENTGYM_HOME": str(mag_home)})
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: all 2 episodes failed on infrastructure")
    assert "model_endpoint" in last and "401" in last and "--resume" in last
    assert "Traceback" not in proc.stderr
    assert "no graded episodes" in proc.stdout  # the result itself still goes to stdout


def test_stdout_is_only_the_result_and_progress_goes_to_stderr(mag_home, tmp_path):
    with TestServer(responder=lambda body: WRONG) as server:
        proc = cli(*rollout_args(server.base_url, tmp_path / "run", "--json"),
                   env={"MEDAGENTGYM_HOME": str(mag_home)})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # `rollout ... --json > out; jq . out` works
    assert report["stored_pairs"] == 2 and report["summary"]["treqs"]["success"] == 0
    # not a terminal: plain-text progress lines on stderr
    assert "treqs/test: 2 episodes to run" in proc.stderr
    assert "treqs/test: 2/2 done" in proc.stderr


def test_run_dir_lock_and_settings_mismatch_on_resume(mag_home, tmp_path, monkeypatch):
    out = tmp_path / "run"
    env = {"MEDAGENTGYM_HOME": str(mag_home)}
    with TestServer(responder=lambda body: WRONG) as server:
        first = cli(*rollout_args(server.base_url, out), env=env)
        assert first.returncode == 0, first.stderr
        lines = out.joinpath("trajectories.jsonl").read_text().count("\n")
        # another model (or other sampling) into the same directory is refused
        args = rollout_args(server.base_url, out, "--resume")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
        for changed, shown in (
                ([a if a != "scripted" else "other-model" for a in args],
                 "model.model 'scripted' -> 'other-model'"),
                ([*args, "--temperature", "0.9"], "temperature_schedule '0,0.6' -> '0.9'"),
                ([*args, "--top-p", "0.5"], "model.top_p None -> 0.5")):
            res = runner.invoke(app, [str(a) for a in changed])
            msg = str(res.exception)
            assert shown in msg and "other settings" in msg and "another --out" in msg, msg
        # a second writer while one holds the directory is refused at once
        with TrajectoryStore(out).locked():
            err = one_line_error(cli(*args, env=env), 2)
        assert "in use by another" in err and str(os.getpid()) in err
        # the same settings resume fine
        again = cli(*args, "--json", env=env)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["new_episodes"] == 0
    assert out.joinpath("trajectories.jsonl").read_text().count("\n") == lines


def test_run_resume_refuses_other_settings(mag_home, tmp_path):
    out = tmp_path / "run"
    base = ["run", "treqs", "--out", out, "--limit", "1", "--database", "synthetic", "-q"]
    assert runner.invoke(app, [str(a) for a in base]).exit_code == 0
    res = runner.invoke(app, [str(a) for a in [*base, "--resume", "--max-turns", "3"]])
    assert "max_turns 15 -> 3" in str(res.exception)


ENOSPC_MAIN = """
import errno, os
real = os.fsync
def fsync(fd):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        target = ""
    if target.endswith("trajectories.jsonl"):
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(fd)
os.fsync = fsync
from medagentgym.cli import main; main()
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the fd")
def test_a_full_disk_is_one_line_with_the_way_out(mag_home, tmp_path):
    env = {"MEDAGENTGYM_HOME": str(mag_home)}
    proc = cli("run", "treqs", "--out", tmp_path / "run", "--limit", "2", "--database",
               "synthetic", "-q", env=env, code=ENOSPC_MAIN)
    err = one_line_error(proc, 1)
    assert "no space left" in err and "free space, then run the same command with --resume" in err
    with TestServer(responder=lambda body: WRONG) as server:
        proc = cli(*rollout_args(server.base_url, tmp_path / "r2", "-q"), env=env,
                   code=ENOSPC_MAIN)
    err = one_line_error(proc, 1)
    assert "free space" in err and "--resume" in err


# ------------------------------------------------------------------------ data home


@pytest.mark.slow  # builds a synthetic database in a fresh home
def test_the_data_home_can_be_moved(mirror, tmp_path):
    from medagentgym.data import home

    old, new = tmp_path / "old_home", tmp_path / "moved" / "home"
    env = {"MEDAGENTGYM_HOME": str(old)}
    built = cli("data", "pull", "treqs", "--from", mirror, env=env)
    assert built.returncode == 0, built.stderr
    first = cli("run", "treqs", "--out", tmp_path / "a", "--limit", "2", "--database",
                "synthetic", "-q", env=env)
    assert first.returncode == 0 and "2/2 solved" in first.stdout, first.stderr
    (cache,) = (old / "tasks" / "treqs").glob("*.jsonl")
    text = cache.read_text()
    assert f"{home.HOME_MARK}/db/" in text and str(old) not in text  # relative to the home
    new.parent.mkdir()
    shutil.move(str(old), str(new))
    moved_cache = new / "tasks" / "treqs" / cache.name
    stamp = moved_cache.stat().st_mtime_ns
    second = cli("run", "treqs", "--out", tmp_path / "b", "--limit", "2", "--database",
                 "synthetic", "-q", "--json", env={"MEDAGENTGYM_HOME": str(new)})
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["summary"]["treqs"]["success"] == 2
    assert moved_cache.stat().st_mtime_ns == stamp  # used as moved, not rebuilt
    # a cache written with absolute paths (before this change) is read against the new home
    legacy = moved_cache.read_text().replace(f"{home.HOME_MARK}/", f"{old}/")
    moved_cache.write_text(legacy)
    import medagentgym.tasks.cache as cache_mod

    splits = cache_mod.read_splits(moved_cache, ["test"])
    assert all(p.startswith(str(new)) for t in splits["test"] for p in t.inputs.values())

    status = cli("data", "status", "--json", env={"MEDAGENTGYM_HOME": str(new)})
    sets = [a for a in json.loads(status.stdout)["artefacts"] if a["kind"] == "tasks"]
    assert sets and all(a["finished"] for a in sets), sets
    assert sets[0]["name"] == f"treqs/{cache.name}" and "tasks" in sets[0]["summary"]
    assert "unfinished" not in status.stdout


# --------------------------------------------------------------- no raw tracebacks


def test_view_on_a_busy_port_is_one_line(tmp_path):
    from tests.eval.synth import traj, write_run

    run = write_run(tmp_path / "r", [traj("t0", success=True)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        err = one_line_error(cli("view", run, "--port", port), 2)
    assert f"port {port}" in err and "in use" in err and "--port" in err


@pytest.mark.parametrize("args, needle", [
    (["train", "sft", "--model", "./ckpt/nowhere", "--data", "{data}", "--out", "{out}"],
     "--model ckpt/nowhere does not exist"),
    (["train", "sft", "--model", "{model}", "--data", "{tmp}/missing.jsonl", "--out", "{out}"],
     "missing.jsonl does not exist"),
    (["train", "dpo", "--model", "{tmp}", "--data", "{data}", "--out", "{out}"],
     "without config.json"),
    (["train", "verifier", "--model", "{model}", "--data", "{data}", "--eval-data", "{empty}",
      "--out", "{out}"], "is empty"),
    (["train", "grpo", "--model", "./nothing-here", "--data", "{data}", "--out", "{out}"],
     "does not exist"),
    (["verify", "{tmp}", "--model", "{model}"], "no trajectories.jsonl"),
    (["verify", "{run}", "--model", "{tmp}/no-verifier"], "does not exist"),
])
def test_train_and_verify_check_inputs_before_loading_a_model(tmp_path, args, needle):
    from tests.eval.synth import traj, write_run

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": []}\n')
    (tmp_path / "empty.jsonl").write_text("")
    run = write_run(tmp_path / "run", [traj("t0", success=True)])
    fill = {"data": data, "out": tmp_path / "out", "model": model, "tmp": tmp_path,
            "empty": tmp_path / "empty.jsonl", "run": run}
    proc = cli(*[a.format(**fill) for a in args], timeout=60)
    err = one_line_error(proc, 2)
    assert needle in err, err


# ------------------------------------------------------------------------ consistency


def test_the_dataset_is_positional_or_dash_d(mag_home, tmp_path):
    def ids(*args):
        res = runner.invoke(app, [str(a) for a in args])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    assert ids("tasks", "list", "treqs", "--json", "--limit", "2") == \
        ids("tasks", "list", "-d", "treqs", "--json", "--limit", "2")
    assert ids("validate", "treqs", "--limit", "1", "--json")["solved"] == \
        ids("validate", "-d", "treqs", "--limit", "1", "--json")["solved"] == 1
    for i, form in enumerate((["treqs"], ["-d", "treqs"], ["--dataset", "treqs"])):
        rep = ids("run", *form, "--out", tmp_path / str(i), "--limit", "1", "--json", "-q")
        assert rep["summary"]["treqs"]["success"] == 1
    clash = runner.invoke(app, ["run", "treqs", "-d", "eicu", "--out", str(tmp_path / "x")])
    assert "two datasets given" in str(clash.exception)
    task_id = ids("tasks", "list", "treqs", "--json", "--limit", "1")["tasks"][0]["id"]
    assert ids("tasks", "show", "treqs", task_id, "--json")["task"]["id"] == task_id
    assert ids("tasks", "show", "-d", "treqs", task_id, "--json")["task"]["id"] == task_id


def _commands(command, prefix=""):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, f"{prefix} {name}".strip())
    else:
        yield prefix


def test_every_command_has_examples_in_its_help_and_version():
    root = typer.main.get_command(app)
    paths = list(_commands(root))
    assert len(paths) > 25
    for path in paths:
        res = runner.invoke(app, [*path.split(), "--help"])
        assert res.exit_code == 0, path
        assert "Examples:" in res.stdout and f"medagentgym {path}" in res.stdout, path
    from medagentgym import __version__

    for flag in ("--version", "-V"):
        res = runner.invoke(app, [flag])
        assert res.exit_code == 0 and res.stdout.strip() == __version__
