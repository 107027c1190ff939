"""inspect_ai runs MedAgentGym tasks through its own entry points: ``inspect eval
medagentgym/treqs`` (the CLI, our tasks found through the ``inspect_ai`` entry point) and
``inspect_ai.eval``, against a scripted OpenAI-compatible model (our test server); and
inspect's own ``bash``/``python`` tools run in the ``medagentgym`` sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medagentgym.llm.testserver import Reply, TestServer
from tests.integrations.conftest import FAMILY, need


@pytest.fixture(scope="module")
def inspect_ai():
    return need("inspect_ai", "inspect")


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")  # the test server takes any key


CHAT = {"responses_api": False}  # our test server speaks chat completions


def _scripted(final_calls: list[Reply]):
    """A responder: the scripted tool calls one after another, then a closing message."""

    def respond(body):
        done = sum(1 for m in body.get("messages", []) if m.get("role") == "tool")
        return final_calls[done] if done < len(final_calls) else Reply.text("Done.")

    return respond


def _log_scores(log_dir: Path) -> list[dict]:
    from inspect_ai.log import list_eval_logs, read_eval_log

    out = []
    for info in list_eval_logs(str(log_dir)):
        log = read_eval_log(info)
        assert log.status == "success", log.error
        for s in log.samples:
            (score,) = s.scores.values()
            out.append({"id": s.id, "value": score.value, "meta": score.metadata,
                        "messages": [m.role for m in s.messages]})
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_inspect_cli_evaluates_a_dataset_with_our_scorer(inspect_ai, gold, tmp_path,
                                                          mag_home):
    task_id = gold["task"].id
    responder = _scripted([Reply.tool_call("validate_code", {"code": "print(1)"}),
                           Reply.tool_call("submit", {"code": gold["code"]})])
    with TestServer(responder=responder) as server:
        env = {**os.environ, "OPENAI_API_KEY": "k", "OPENAI_BASE_URL": server.base_url,
               "INSPECT_DISPLAY": "none", "MEDAGENTGYM_HOME": str(mag_home)}
        cmd = [str(Path(sys.executable).parent / "inspect"), "eval", "medagentgym/treqs",
               "--model", "openai/scripted", "-M", "responses_api=false", "-T", "database=synthetic",
               "-T", f"task_ids={task_id}", "--log-dir", str(tmp_path / "logs"),
               "--no-log-realtime"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                              check=False)
        assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
        requests = server.chat_requests()
    (sample,) = _log_scores(tmp_path / "logs")
    assert sample["id"] == task_id and sample["value"] == 1.0
    assert sample["meta"]["success"] is True and sample["meta"]["tool_calls"] == 2
    tools = {t["function"]["name"] for t in requests[0].body["tools"]}
    assert {"validate_code", "submit", "request_info", "terminal"} <= tools
    # the gold answer never reached the model: only the question and the sandbox's output
    sent = json.dumps([r.body for r in requests])
    assert gold["task"].goal.split()[0] in sent
    assert repr(gold["task"].truth.value) not in sent


def test_eval_api_scores_wrong_and_unsubmitted_answers_zero(inspect_ai, gold, tmp_path):
    from inspect_ai import eval as inspect_eval

    from medagentgym.integrations.inspect_ai import medagentgym_task

    responder = _scripted([Reply.tool_call("submit", {"answer": "-12345"})])
    with TestServer(responder=responder) as server:
        task = medagentgym_task("treqs", "test", task_ids=[gold["task"].id], **FAMILY)
        (log,) = inspect_eval(task, model="openai/scripted", log_dir=str(tmp_path / "a"),
                              model_base_url=server.base_url, display="none", model_args=CHAT)
    assert log.status == "success" and log.samples[0].scores
    (score,) = log.samples[0].scores.values()
    assert score.value == 0.0

    # a solver without our submit: the final message is graded as the answer
    from inspect_ai.solver import generate

    with TestServer(responder=lambda body: Reply.text("I think it is 42.")) as server:
        task = medagentgym_task("treqs", "test", task_ids=[gold["task"].id],
                                solver=generate(), **FAMILY)
        (log,) = inspect_eval(task, model="openai/scripted", log_dir=str(tmp_path / "b"),
                              model_base_url=server.base_url, display="none", model_args=CHAT)
    (score,) = log.samples[0].scores.values()
    assert score.value == 0.0 and "final message" in score.explanation


def test_inspect_tools_run_in_our_sandbox(inspect_ai, tmp_path):
    from inspect_ai import Task
    from inspect_ai import eval as inspect_eval
    from inspect_ai.agent import as_solver, react
    from inspect_ai.dataset import Sample
    from inspect_ai.scorer import includes
    from inspect_ai.tool import bash, python

    import medagentgym.integrations.inspect_ai  # noqa: F401  (registers the sandbox)

    calls = [Reply.tool_call("python", {"code": "import os; print(os.getuid(), 6 * 7)"}),
             Reply.tool_call("bash", {"command": "echo hi > note.txt; cat note.txt; "
                                             "ls /root /home 2>&1 | head -3; "
                                             "python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 53), 2)' "
                                             "2>&1 | tail -1"})]
    with TestServer(responder=_scripted(calls)) as server:
        task = Task(dataset=[Sample(input="compute", target="Done")],
                    solver=as_solver(react(prompt=None, tools=[bash(), python()], submit=False)),
                    scorer=includes(), sandbox="medagentgym")
        (log,) = inspect_eval(task, model="openai/scripted", log_dir=str(tmp_path / "c"),
                              model_base_url=server.base_url, display="none", model_args=CHAT)
    assert log.status == "success", log.error
    tool_out = [m.content if isinstance(m.content, str) else str(m.content)
                for m in log.samples[0].messages if m.role == "tool"]
    assert "42" in tool_out[0] and not tool_out[0].startswith("0 ")  # not root
    assert "hi" in tool_out[1]
    assert "unreachable" in tool_out[1].lower() or "error" in tool_out[1].lower()
