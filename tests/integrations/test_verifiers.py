"""verifiers' own ``vf-eval`` evaluates a MedAgentGym taskset against a scripted
OpenAI-compatible model (our test server): the model's replies are run as actions in our
sandbox and the reward is our grader's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medagentgym.llm.testserver import Reply, TestServer
from tests.integrations.conftest import FAMILY, need
from tests.integrations.sse import SSEFront

#: verifiers 0.4.0 pins mcp==2.0.0 while openenv's fastmcp wants mcp<2: where both extras
#: share an environment, `make install` puts mcp 2 in this overlay, used by vf-eval only
OVERLAY = Path(os.environ.get("MEDAGENTGYM_VERIFIERS_OVERLAY")
               or Path(sys.prefix) / "verifiers-overlay")


def _vf_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    if OVERLAY.is_dir():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(OVERLAY),
                                                         env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="module")
def verifiers():
    need("verifiers", "verifiers")
    probe = subprocess.run([sys.executable, "-c", "import verifiers.v1.cli.eval.main, "
                            "medagentgym.integrations.verifiers"], env=_vf_env(),
                           capture_output=True, text=True, timeout=120, check=False)
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"vf-eval cannot start here ({why}); install the verifiers extra in an "
                    f"environment of its own, or put mcp==2.0.0 in {OVERLAY} (make install)")


def _code(source: str) -> str:
    return json.dumps({"action": "validate_code", "params": {"code": source}})


def _submit(source: str) -> str:
    return json.dumps({"action": "submit", "params": {"code": source}})


def _vf_eval(server: SSEFront, task_id: str, out: Path, home: Path) -> list[dict]:
    env = _vf_env(OPENAI_API_KEY="k", MEDAGENTGYM_HOME=str(home))
    cmd = [str(Path(sys.executable).parent / "vf-eval"), "medagentgym-verifiers",
           "--env.taskset.dataset", "treqs", "--env.taskset.options", json.dumps(FAMILY),
           "--env.taskset.task-ids", json.dumps([task_id]), "-m", "scripted",
           "--client.base-url", server.base_url, "--client.api-key-var", "OPENAI_API_KEY",
           "--no-push", "-o", str(out), "-c", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    traces = list(out.rglob("traces.jsonl"))
    assert traces, proc.stdout[-2000:]
    return [json.loads(line) for line in traces[0].read_text().splitlines() if line.strip()]


def _reward(episode: dict) -> float:
    (trace,) = episode["traces"]
    return trace["rewards"]["medagentgym_reward"]["score"]


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two vf-eval runs, each preparing its chat harness with uv
def test_vf_eval_runs_an_episode_graded_by_us(verifiers, gold, tmp_path, mag_home):
    def respond(body):  # a validate_code first, then the gold code submitted
        turns = sum(1 for m in body.get("messages", []) if m.get("role") == "user")
        return Reply.text(_code("print(1)") if turns <= 1 else _submit(gold["code"]))

    with TestServer(responder=respond) as server, SSEFront(server) as front:
        (episode,) = _vf_eval(front, gold["task"].id, tmp_path / "right", mag_home)
        asked = server.chat_requests()
    assert episode["ok"] and _reward(episode) == 1.0
    assert len(asked) == 2 and gold["task"].goal in json.dumps(asked[0].body)
    assert repr(gold["task"].truth.value) not in json.dumps([r.body for r in asked])

    with TestServer(responder=lambda body: Reply.text(_submit("answer = -12345"))) as server, \
            SSEFront(server) as front:
        (episode,) = _vf_eval(front, gold["task"].id, tmp_path / "wrong", mag_home)
    assert episode["ok"] and _reward(episode) == 0.0
