"""End to end: LLMAgent -> real HTTP -> scripted test server, in real environment episodes
(TREQS tasks on the shared synthetic database, code run in the sandbox, graded on the host).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from medagentgym.agents.llm_agent import LLMAgent, LLMDebugger
from medagentgym.agents.replay import ReplayAgent, ReplayLibrary
from medagentgym.llm import ChatClient, LLMConfig
from medagentgym.llm.testserver import Reply, TestServer
from medagentgym.rollout.runner import (
    TemperatureSchedule,
    run_tasks_async,
    summarize,
)
from medagentgym.rollout.store import TrajectoryStore, latest_by_key

FAMILY = {"database": "synthetic"}
SECRET = "sk-planted-secret-7f3a9c1e"


@pytest.fixture(scope="module")
def treqs(mag_home):
    """TREQS test tasks on the shared synthetic database, and their reference code by goal."""
    from medagentgym.tasks import registry

    tasks = registry.load_tasks("treqs", "test", **FAMILY)
    family = registry.get_family("treqs", **FAMILY)
    unique: dict[str, object] = {}
    for t in tasks:
        unique.setdefault(t.goal, t)
    picked = list(unique.values())[:8]
    oracle = {t.goal: family.oracle_code(t, stage=0) for t in [*picked, *tasks[:6]]}
    return {"tasks": picked, "first": tasks[:6], "oracle": oracle, "home": mag_home}


def oracle_responder(oracle, *, fail_goal=None):
    def respond(body):
        goal = body["messages"][1]["content"]
        if goal == fail_goal:
            return Reply.server_error(500)
        return Reply.action("validate_code", code=oracle[goal])
    return respond


def client_for(server, **kw) -> ChatClient:
    cfg = {"model": "scripted", "base_url": server.base_url, "backoff_base": 0.005,
           "backoff_max": 0.05, "max_retries": 3, "timeout": 10.0, **kw}
    return ChatClient(LLMConfig(**cfg), api_key=kw.pop("api_key", "sk-test"))


def test_scripted_oracle_solves_tasks_with_temperature_schedule(treqs, tmp_path):
    tasks = treqs["tasks"][:6]
    schedule = TemperatureSchedule()
    store = TrajectoryStore(tmp_path / "run")

    async def go(server):
        async with client_for(server) as client:
            return await run_tasks_async(
                "treqs", tasks, lambda k: LLMAgent(client, temperature=schedule(k), seed=k),
                samples=2, concurrency=4, store=store, env_kwargs=FAMILY)

    with TestServer(responder=oracle_responder(treqs["oracle"])) as server:
        trajs = asyncio.run(go(server))
        bodies = [r.body for r in server.chat_requests()]
    assert len(trajs) == 12 and all(t.success and t.error is None for t in trajs)
    assert {(b["seed"], b["temperature"]) for b in bodies} == {(0, 0.0), (1, 0.6)}
    for t in trajs:
        step = t.steps[0]
        assert t.model == "scripted" and t.turns == 1 and step.grade.correct
        assert json.loads(step.model_output)["action"] == "validate_code"
        assert step.usage["prompt_tokens"] > 0 and step.usage["completion_tokens"] > 0
        assert t.metadata["usage"]["total_tokens"] == step.usage["total_tokens"]
        assert [m["role"] for m in t.messages] == ["system", "user", "assistant", "user"]
        assert "messages" not in t.metadata
        assert t.metadata["sampling"]["temperature"] == schedule(t.sample_index)
    stored = store.load()
    assert sorted(t.key for t in stored) == sorted((t.id, k) for t in tasks for k in range(2))

    # the stored run replays to the same outcome without a model
    library = ReplayLibrary(stored)
    replayed = asyncio.run(run_tasks_async("treqs", tasks, library.agent_factory, samples=2,
                                           concurrency=2, env_kwargs=FAMILY))
    assert len(replayed) == 12 and all(t.success for t in replayed)
    assert all(t.steps[0].model_output == library.get(*t.key).steps[0].model_output
               for t in replayed)
    # a replay that runs out of actions (it diverged) is the agent's failure, not a crash
    cut = stored[0].model_copy(update={"steps": []})
    (diverged,) = asyncio.run(run_tasks_async(
        "treqs", [t for t in tasks if t.id == cut.task_id], lambda: ReplayAgent(cut),
        env_kwargs=FAMILY))
    assert diverged.error.source == "agent" and diverged.error.type == "ReplayExhausted"


def test_multi_turn_request_info_failing_code_debug_then_fix(treqs):
    task = treqs["tasks"][0]
    good = treqs["oracle"][task.goal]
    bad = "import sqlite3\nanswer = undefined_table_rows"
    debugger_note = "NameError: `undefined_table_rows` is not defined; query the database instead."

    def respond(body):
        msgs = body["messages"]
        if msgs[0]["content"].startswith("You are a debugging assistant"):
            assert bad in msgs[1]["content"]
            return Reply.text(debugger_note)
        turn = len(msgs) // 2
        if turn == 1:
            return Reply.action("request_info", data_path="/data/treqs.db",
                                info_type="column_names", keyterm="demographic")
        if turn == 2:
            assert "subject_id" in msgs[-1]["content"].lower()
            return Reply(content="Let me try:\n```python\n" + bad + "\n```")  # a bare code block
        if turn == 3:
            assert "NameError" in msgs[-1]["content"]
            return Reply.action("debug", code=bad, error_msg="NameError: undefined_table_rows")
        assert debugger_note in msgs[-1]["content"]
        return Reply.action("validate_code", code=good)

    async def go(server):
        async with client_for(server) as client:
            return await run_tasks_async("treqs", [task], lambda: LLMAgent(client),
                                         debugger_factory=lambda: LLMDebugger(client),
                                         env_kwargs=FAMILY)

    with TestServer(responder=respond) as server:
        (traj,) = asyncio.run(go(server))
        assert server.responder_errors == []
    assert traj.error is None and traj.success and traj.turns == 4
    assert [s.action["action"] for s in traj.steps] == ["request_info", "validate_code", "debug",
                                                       "validate_code"]
    assert traj.steps[1].exec_status != "ok" and traj.steps[2].observation == debugger_note
    assert traj.steps[2].usage["debugger_calls"] == 1 and traj.steps[2].usage["debugger_prompt_tokens"] > 0
    assert traj.metadata["agent_stats"]["code_fallbacks"] == 1


def test_endpoint_failure_is_infrastructure_not_a_wrong_answer(treqs, tmp_path):
    tasks = treqs["tasks"][:4]
    broken = tasks[1]
    store = TrajectoryStore(tmp_path / "run")

    async def go(server, resume):
        async with client_for(server, max_retries=2) as client:
            return await run_tasks_async("treqs", tasks, lambda: LLMAgent(client), concurrency=2,
                                         store=store, resume=resume, infra_retries=1,
                                         retry_delay=0.01, env_kwargs=FAMILY)

    with TestServer(responder=oracle_responder(treqs["oracle"], fail_goal=broken.goal)) as server:
        trajs = asyncio.run(go(server, False))
    by_id = {t.task_id: t for t in trajs}
    err = by_id[broken.id].error
    assert err is not None and err.source == "model_endpoint" and not by_id[broken.id].success
    assert len(by_id[broken.id].metadata["infra_failures"]) == 1  # retried once, then recorded
    assert all(by_id[t.id].success for t in tasks if t is not broken)
    s = summarize(trajs)["treqs"]
    assert (s["episodes"], s["success"], s["infra_errors"], s["success_rate"]) == (4, 3, 1, 1.0)

    # the endpoint recovers; --resume runs only the failed pair
    with TestServer(responder=oracle_responder(treqs["oracle"])) as server:
        again = asyncio.run(go(server, True))
    assert [t.task_id for t in again] == [broken.id] and again[0].success
    final = latest_by_key(store)
    assert len(final) == 4 and all(t.success for t in final)


def test_episode_wall_clock_limit(treqs):
    async def go(server):
        async with client_for(server) as client:
            return await run_tasks_async("treqs", treqs["tasks"][:1], lambda: LLMAgent(client),
                                         episode_timeout=0.5, env_kwargs=FAMILY)

    with TestServer(delay=1.5, responder=oracle_responder(treqs["oracle"])) as server:
        (traj,) = asyncio.run(go(server))
    assert traj.error.source == "environment" and traj.error.type == "EpisodeTimeout"
    assert summarize([traj])["treqs"]["infra_errors"] == 1


def test_secrets_reach_the_endpoint_only(treqs, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("SOME_SERVICE_TOKEN", SECRET + "-2")
    task = treqs["tasks"][0]
    spy = ("import os, glob\nparts = [repr(dict(os.environ))]\n"
           "for p in ['/proc/self/environ', '/proc/1/environ'] + glob.glob('/proc/*/environ'):\n"
           "    try:\n        parts.append(open(p, 'rb').read().decode(errors='replace'))\n"
           "    except OSError:\n        pass\n"
           "print('\\n'.join(parts))\nanswer = 'x'\n")
    replies = [Reply.action("validate_code", code=spy),
               Reply.action("validate_code", code=treqs["oracle"][task.goal])]
    store = TrajectoryStore(tmp_path / "run")

    async def go(server):
        cfg = LLMConfig(model="scripted", base_url=server.base_url)
        async with ChatClient(cfg) as client:  # the key comes from the environment
            return await run_tasks_async(
                "treqs", [task], lambda: LLMAgent(client), store=store,
                env_kwargs={**FAMILY, "protocol": "paper"})

    with TestServer() as server:
        server.push(*replies)
        (traj,) = asyncio.run(go(server))
        auth = {r.headers.get("authorization") for r in server.chat_requests()}
    assert auth == {f"Bearer {SECRET}"}  # the key was used...
    assert traj.turns == 2 and "PATH" in traj.steps[0].observation  # the spy ran
    assert SECRET not in store.path.read_text()  # ...but is nowhere in the sandbox's output or the stored record


def _cli(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "medagentgym.cli.rollout", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_for_lines(path: Path, n: int, proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"rollout exited early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("rollout made no progress")


def test_cli_ctrl_c_then_kill_9_then_resume_gives_one_record_per_pair(treqs, tmp_path):
    tasks = treqs["first"]  # what --limit 6 selects
    out = tmp_path / "run"
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[rollout]\ndataset = "treqs"\nsamples = 3\nconcurrency = 2\nlimit = 6\n'
                   f'database = "synthetic"\nout = "{out}"\n'
                   f'[model]\nmodel = "scripted"\nbackoff_base = 0.01\n')
    env = {**os.environ, "MEDAGENTGYM_HOME": str(treqs["home"]), "OPENAI_API_KEY": SECRET}
    store = TrajectoryStore(out)
    with TestServer(delay=0.1, responder=oracle_responder(treqs["oracle"])) as server:
        args = ["--config", str(cfg), "--base-url", server.base_url, "--quiet"]
        # 1. Ctrl-C: a clean stop
        proc = _cli(args, env)
        _wait_for_lines(store.path, 2, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and "--resume" in err
        lines = store.path.read_text()
        assert lines.endswith("\n") and all(json.loads(x) for x in lines.splitlines())
        first = len(lines.splitlines())
        run_id = json.loads((out / "run.json").read_text())["run_id"]
        # 2. kill -9 in the middle of a resumed run
        proc = _cli([*args, "--resume"], env)
        _wait_for_lines(store.path, first + 2, proc)
        proc.kill()
        proc.wait(timeout=10)
        # 3. resume to the end
        proc = _cli([*args, "--resume", "--json"], env)
        stdout, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    report = json.loads(stdout)
    records = store.load()
    keys = Counter(t.key for t in records)
    expected = {(t.id, k) for t in tasks for k in range(3)}
    assert set(keys) == expected and set(keys.values()) == {1}  # exactly one per (task, sample)
    assert all(t.success for t in records) and {t.run_id for t in records} == {run_id}
    assert report["stored_pairs"] == 18 and report["summary"]["treqs"]["success"] == 18
    assert SECRET not in store.path.read_text() + (out / "run.json").read_text()



def test_temperature_schedules_and_factories():
    assert [TemperatureSchedule()(k) for k in range(3)] == [0.0, 0.6, 0.6]
    assert [TemperatureSchedule.parse("0.7")(k) for k in range(2)] == [0.7, 0.7]
    assert [TemperatureSchedule.parse("0, 1.0")(k) for k in range(3)] == [0.0, 1.0, 1.0]
    assert [TemperatureSchedule.parse("0,0.3,0.9")(k) for k in range(5)] == [0.0, 0.3, 0.9, 0.9, 0.9]
    from medagentgym.agents.oracle import OracleAgent
    from medagentgym.rollout.runner import takes_sample_index

    assert not takes_sample_index(OracleAgent) and takes_sample_index(lambda k: k)
    assert takes_sample_index(ReplayLibrary([]).agent_factory)


@pytest.mark.parametrize("args, message", [
    (["-d", "treqs"], "--out is required"),
    (["-d", "treqs", "--out", "{out}"], "--model is required"),
    (["-d", "treqs", "--out", "{out}", "--model", "m", "--config", "{cfg}"], "must not hold secrets"),
    (["-d", "treqs", "--out", "{out}", "--model", "m", "--temperature", "hot"], "--temperature"),
    (["-d", "treqs", "--out", "{out}", "--model", "m", "--backend", "spark"], "unknown backend"),
])
def test_cli_configuration_errors_are_one_line(tmp_path, capsys, monkeypatch, args, message):
    from medagentgym.cli.rollout import main

    monkeypatch.setenv("MEDAGENTGYM_CONFIG", str(tmp_path / "none.toml"))
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[model]\napi_key = "sk-oops"\n')
    args = [a.format(out=tmp_path / "run", cfg=cfg) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "sk-oops" not in err
