"""The task contract end to end through ``MedAgentEnv`` with a toy family: probes, files,
a service, a continuous score, episode hooks and an extra action."""

from __future__ import annotations

import json

import pytest

import medagentgym as mag
from medagentgym.sandbox import available_providers
from medagentgym.tasks import registry

pytestmark = pytest.mark.skipif(not available_providers()["bwrap"][0],
                                reason="bubblewrap cannot run here")


@pytest.fixture(scope="module")
def env():
    registry.register(registry.DatasetSpec(
        "toy_contract", "tests.tasks.toy_family:ToyFamily", "toy family for the contract",
        "tests", splits=("test",)))
    e = mag.make("toy_contract", "test")
    yield e
    e.close()
    registry._REGISTRY.pop("toy_contract", None)
    registry.clear_cache()


def code(source: str) -> str:
    return json.dumps({"action": "validate_code", "params": {"code": source}})


def test_probes_grade_the_agents_function_on_hidden_inputs(env):
    env.reset(options={"task_id": "toy-probe"})
    obs, reward, done, _, info = env.step(code("def triple(x):\n    return x + x + x if x < 100 else 0"))
    assert reward == 0.0 and not done and "not correct" in obs
    # printing inside the function never shows the hidden inputs
    obs, reward, done, _, info = env.step(code("def triple(x):\n    print('ARG', x)\n    return 3 * x"))
    assert reward == 1.0 and done and info["success"] and "1000" not in obs


def test_a_file_the_agent_wrote_gives_a_continuous_score(env):
    env.reset(options={"task_id": "toy-file"})
    _, reward, done, _, _ = env.step(code("open('predictions.csv', 'w').write('p\\n' + '0.5\\n' * 8)"))
    assert reward == pytest.approx(0.5) and not done  # AUROC 0.5: rewarded, not yet correct
    _, reward, done, _, _ = env.step(code("open('predictions.csv', 'w').write('p\\n' + '0.5\\n' * 8)"))
    assert reward == 0.0  # no gain over the best score so far
    sol = env.core.family.load_tasks("test")[1].truth.solution
    _obs, reward, done, _, info = env.step(code(sol))
    assert reward == pytest.approx(0.5) and done and info["success"]  # best 1.0 in total


def test_missing_file_is_graded_not_raised(env):
    env.reset(options={"task_id": "toy-file"})
    obs, reward, _done, _, info = env.step(code("x = 1"))
    assert reward == 0.0 and "no predictions" in obs and info["grade"]["correct"] is False


def test_a_service_is_reset_per_episode_and_graded_on_its_state(env):
    svc_code = env.core.family.load_tasks("test")[2].truth.solution
    env.reset(options={"task_id": "toy-service"})
    obs, reward, done, _, _info = env.step(code(svc_code))
    assert reward == 1.0 and done
    env.reset(options={"task_id": "toy-service"})
    assert env.core._services["counter"].values == []  # reset for the new episode
    obs, *_ = env.step(json.dumps({"action": "count_values", "params": {}}))
    assert obs == "the counter holds 0 value(s)"
    env.step(code(svc_code))  # one value: correct already, the episode ends
    env.reset(options={"task_id": "toy-service"})
    env.step(code(svc_code.replace("answer =", "urllib.request.urlopen(req, timeout=5)\nanswer =")))
    assert env.core._services["counter"].values == [5, 5]


def test_setup_hook_stages_files_and_unknown_actions_list_the_extra_one(env):
    env.reset(options={"task_id": "toy-file"})
    obs, *_ = env.step(code("answer = open('data.csv').read().splitlines()[0]"))
    assert "predictions" in obs or "AUROC" in obs or "not correct" in obs
    obs, *_ = env.step(json.dumps({"action": "fly", "params": {}}))
    assert "count_values" in obs


def test_submit_protocol_grades_once_with_probes():
    registry.register(registry.DatasetSpec(
        "toy_contract", "tests.tasks.toy_family:ToyFamily", "toy family for the contract",
        "tests", splits=("test",)))
    e = mag.make("toy_contract", "test", protocol="submit")
    try:
        e.reset(options={"task_id": "toy-probe"})
        _, reward, done, _, info = e.step(code("def triple(x):\n    return 3 * x"))
        assert reward == 0.0 and not done and info["grade"] is None
        _obs, reward, done, _, info = e.step(json.dumps(
            {"action": "submit", "params": {"code": "def triple(x):\n    return 3 * x"}}))
        assert reward == 1.0 and done
    finally:
        e.close()
