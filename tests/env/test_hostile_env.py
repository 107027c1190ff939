"""Every agent-reachable path through ``AsyncMedAgentEnv.astep`` turns hostile input into a
grade or an observation — never an exception, which the rollout would book as an
infrastructure error and leave out of every denominator.

Most tests stand a fake sandbox in for the real one (it returns the hostile ``answer`` or
output directly), so they exercise the host side alone and need no data; the last ones go
through the real sandbox.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import pytest
from tests.graders.hostile import (
    HOSTILE,
    FileAnswer,
    ProbeAnswer,
    StandInFiles,
    hostile,
    synthetic_tasks,
)

from medagentgym.agents.base import Agent
from medagentgym.env import env as env_module
from medagentgym.env.env import FEEDBACK_CHARS, AsyncMedAgentEnv
from medagentgym.env.info import InfoIndex
from medagentgym.rollout.episode import run_episode
from medagentgym.sandbox import run_sync
from medagentgym.sandbox.base import ExecResult
from medagentgym.tasks import registry

DATASETS = registry.list_datasets()
CHECKED = "[answer checked: not correct"
N = 100_000

# replies a model (or a client of the server) could send; none is a valid action
HOSTILE_REPLIES = {
    "deep_list": "[" * N + "]" * N,
    "deep_object": '{"a":' * N + "1" + "}" * N,
    "deep_unclosed": '{"a":' * N,
    "deep_submit": '{"action": "submit", "params": {"answer": ' + "[" * N + "]" * N + "}}",
    "deep_validate": '{"action": "validate_code", "params": {"code": ' + "[" * 500 + "]" * 500
                     + "}}",
    "braces": "{" * N,
    "fences": "```{" * N,
    "apostrophes": "{'" * N,
    "quote_bracket": '["]", ' * N,
    "parens": "(" * N + ")" * N,
    "too_long": "x" * 2_000_000,
    "digits": "1" * 5000,
    "long_action_name": json.dumps({"action": "x" * 1_000_000, "params": {}}),
    "surrogate_action_name": '{"action": "\\ud800", "params": {}}',
    "nul": "\x00" * 1000,
    "int_params": '{"action": "validate_code", "params": {"code": ' + "1" * 5000 + "}}",
    "list_params": '{"action": "request_info", "params": [1, 2]}',
    "keyterm_int": '{"action": "request_info", "params": {"info_type": "term", "keyterm": '
                   + "9" * 5000 + "}}",
}

HOSTILE_KEYTERMS = {
    "digits_5000": "9" * 5000,
    "megabyte": "a" * 900_000,  # a longer reply is refused before it is read
    "digits_900k": "1" * 900_000,
    "surrogate": "\ud800abc",
    "nul": "a\x00b",
    "regex": ".*(a+)+$[\\",
    "1e400": "1e400",
    "-1e400": "-1e400",
    "dashes": "-" * 100_000 + "1",
    "plus_zeros": "+" + "0" * 5000,
    "dots": "." * 5000,
    "emoji": "\U0001f48a" * 1000,
    "whitespace": " \t\n" * 1000,
}


class FakeSandbox:
    """Stands in for the sandbox: every execution returns ``result``; the code is not run."""

    def __init__(self) -> None:
        self.result = ExecResult(status="ok")
        self.value: Any = None

    async def start(self) -> None:
        pass

    async def reset(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def execute(self, code: str, *, timeout: float = 30.0, probes: Any = None,
                      **_: Any) -> ExecResult:
        if probes:  # a family graded by probes: every probe returns the stored value
            from medagentgym.sandbox.base import ProbeValue

            if isinstance(self.value, ProbeAnswer):
                got = {k: ProbeValue(value=v, type=t) for k, (v, t) in self.value.values.items()}
            else:
                got = {k: ProbeValue(value=self.value, type=type(self.value).__name__)
                       for k in probes}
            return self.result.model_copy(update={"probes": got})
        return self.result

    async def run(self, argv: Any, *, timeout: float = 30.0) -> ExecResult:
        return self.result

    async def read_file(self, path: str, *, max_bytes: int = 1024**2) -> bytes:
        """Files graders read: a FileAnswer's, else the stored (hostile) value as content."""
        return await StandInFiles(self.value).read_file(path, max_bytes=max_bytes)

    def answer(self, value: Any) -> None:
        self.value = value
        if isinstance(value, ProbeAnswer | FileAnswer):  # no `answer`: probes or files
            self.result = ExecResult(status="ok")
            return
        self.result = ExecResult(status="ok", answer=value, answer_type=type(value).__name__)


@pytest.fixture
def sandbox(monkeypatch) -> FakeSandbox:
    fake = FakeSandbox()
    monkeypatch.setattr(env_module, "create_sandbox", lambda *args, **kwargs: fake)
    return fake


@pytest.fixture
def make_env(sandbox, monkeypatch, tmp_path):
    """An env over the dataset's synthetic tasks, on the fake sandbox, with request_info over
    a tiny database."""
    index = InfoIndex.build(_tiny_db(tmp_path))

    def make(dataset: str, protocol: str = "paper") -> tuple[AsyncMedAgentEnv, list]:
        family = registry.get_family(dataset)
        monkeypatch.setattr(family, "instructions", lambda task: "Answer the question.")
        monkeypatch.setattr(family, "info_index", lambda task: index)
        tasks = synthetic_tasks(dataset)
        env = AsyncMedAgentEnv(dataset, tasks=[t for t, _, _ in tasks], protocol=protocol,
                               max_turns=10_000)
        return env, tasks

    return make


def _tiny_db(tmp_path) -> str:
    path = tmp_path / "tiny.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE patients (subject_id INTEGER, gender TEXT, note TEXT)")
    con.executemany("INSERT INTO patients VALUES (?, ?, ?)",
                    [(i, "FM"[i % 2], "x" * (i * 30)) for i in range(50)])
    con.commit()
    con.close()
    return str(path)


def step(env: AsyncMedAgentEnv, action: Any) -> tuple[str, float, bool, bool, dict]:
    """One step, checked for what every step must give: a bounded, storable observation."""
    t0 = time.perf_counter()
    obs, reward, terminated, truncated, info = run_sync(env.astep(action))
    assert time.perf_counter() - t0 < 15
    assert isinstance(obs, str) and obs
    assert len(obs) < 20_000
    json.dumps([obs, info], ensure_ascii=False).encode("utf-8")  # no lone surrogates
    return obs, reward, terminated, truncated, info


def start(env: AsyncMedAgentEnv, task) -> None:
    run_sync(env.areset(task))


def validate(code: str = "answer = ...") -> dict:
    return {"action": "validate_code", "params": {"code": code}}


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize("dataset", DATASETS)
def test_hostile_answers_from_validate_code_are_graded(make_env, sandbox, dataset):
    env, tasks = make_env(dataset)
    for task, stage, _ in tasks:
        if stage:
            continue
        start(env, task)
        for name in HOSTILE:
            sandbox.answer(hostile(name))
            obs, reward, terminated, _, info = step(env, validate())
            assert info["grade"] is not None and not info["grade"]["correct"], name
            assert info["grade"]["reason"], name
            assert (reward, terminated) == (0.0, False), name
            assert CHECKED in obs and info["parse_error"] is None, name


@pytest.mark.parametrize("dataset", DATASETS)
def test_gold_answers_still_solve_the_task(make_env, sandbox, dataset):
    """Control: the bounds never cost a right answer."""
    env, tasks = make_env(dataset)
    for task, stage, gold in tasks:
        if stage:
            continue
        start(env, task)
        sandbox.answer(gold)
        _, reward, _, _, info = step(env, validate())
        assert info["grade"]["correct"] and reward > 0


@pytest.mark.parametrize("how", ["value", "code"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_hostile_submissions_are_graded_or_refused(make_env, sandbox, dataset, how):
    env, tasks = make_env(dataset, protocol="submit")
    task = tasks[0][0]
    for name in HOSTILE:
        start(env, task)
        if how == "value":
            action = {"action": "submit", "params": {"answer": hostile(name)}}
        else:
            sandbox.answer(hostile(name))
            action = {"action": "submit", "params": {"code": "answer = ..."}}
        obs, reward, terminated, _, info = step(env, action)
        assert reward == 0.0, name
        if info["parse_error"]:  # too large or too deep even to read: an error observation
            assert how == "value" and obs.startswith("Error:") and not terminated, name
        else:
            assert info["grade"] is not None and not info["grade"]["correct"], name
            assert terminated or info["stage"] == 1, name  # submitted: the stage is over


def test_hostile_submissions_as_json_text(make_env):
    env, tasks = make_env("mimic_iii", protocol="submit")
    for answer in ("1" * 5000, "1e400", "-1e400", "NaN", "[Infinity, 3]", '"\\ud800"',
                   "[" * 99 + "]" * 99, "[" * 101 + "]" * 101, "[" * 5000 + "]" * 5000,
                   "-" * 10_000 + "1",
                   json.dumps(["x" * 100_000] * 5)):
        start(env, tasks[0][0])
        _, reward, _, _, info = step(env, '{"action": "submit", "params": {"answer": '
                                       + answer + "}}")
        assert reward == 0.0
        assert info["parse_error"] or (info["grade"] and not info["grade"]["correct"])


# --------------------------------------------------------------------------- replies


@pytest.mark.parametrize("name", list(HOSTILE_REPLIES))
def test_unparsable_replies_are_error_observations(make_env, name):
    env, tasks = make_env("mimic_iii")
    start(env, tasks[0][0])
    obs, reward, terminated, truncated, info = step(env, HOSTILE_REPLIES[name])
    assert obs.startswith("Error:") and info["parse_error"]
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert len(obs) < 2000


@pytest.mark.parametrize("action", [
    [1, 2], 5, None, {"action": {"action": {"action": None}}},
    {"action": "submit", "params": {"answer": HOSTILE["deep_list_100k"]()}},
    {"action": "submit", "params": {"answer": HOSTILE["cycle"]()}},
    {"action": "validate_code", "params": {"code": "x" * 2_000_000}},
    {"action": "x" * 1_000_000},
    {"action": "validate_code", "params": {"code": 10**5000}},
    {1: 2, (3, 4): 5},
], ids=lambda a: type(a).__name__)
def test_hostile_action_objects_are_error_observations(make_env, action):
    env, tasks = make_env("treqs")
    start(env, tasks[0][0])
    obs, reward, terminated, _, info = step(env, action)
    assert obs.startswith("Error:") and info["parse_error"]
    assert (reward, terminated) == (0.0, False)


# --------------------------------------------------------------------------- request_info


@pytest.mark.parametrize("info_type", ["term", "column_values", "column_names"])
@pytest.mark.parametrize("field", ["keyterm", "data_path"])
def test_request_info_with_hostile_text_is_an_observation(make_env, info_type, field):
    env, tasks = make_env("mimic_iii")
    start(env, tasks[0][0])
    for name, text in HOSTILE_KEYTERMS.items():
        params = {"info_type": info_type, "data_path": "patients", "keyterm": "gender",
                  field: text}
        obs, reward, _, _, info = step(env, {"action": "request_info", "params": params})
        assert not obs.startswith("Error:") and info["parse_error"] is None, name
        assert reward == 0.0 and len(obs) < 5000, name


@pytest.mark.parametrize("keyterm", [10**5000, 10**400, float("nan"), float("inf"), None,
                                     [1, 2], {"a": HOSTILE["deep_list_100k"]()}, b"\xff",
                                     object()], ids=lambda k: type(k).__name__)
def test_info_index_answers_any_keyterm(tmp_path, keyterm):
    index = InfoIndex.build(_tiny_db(tmp_path))
    for info_type in ("term", "column_values", "column_names", "bogus"):
        for data_path in ("", "patients", keyterm):
            text = index.answer(info_type, data_path, keyterm)
            assert isinstance(text, str) and len(text) < 5000


def test_long_keyterm_is_refused_with_a_reason(tmp_path):
    index = InfoIndex.build(_tiny_db(tmp_path))
    text = index.answer("term", "", "9" * 5000)
    assert "characters long" in text
    assert index.term("9" * 5000) == []
    assert "Exact" in index.answer("term", "patients", "FM"[1])


# --------------------------------------------------------------------------- terminal


@pytest.mark.parametrize("status", ["ok", "error"])
def test_terminal_output_is_trimmed_like_validate_code(make_env, sandbox, status):
    env, tasks = make_env("npowerai")
    start(env, tasks[0][0])
    sandbox.result = ExecResult(status=status, stdout="y\n" * 450_000, stderr="e" * 100_000,
                                exit_code=0 if status == "ok" else 1, error="x" * 50_000)
    obs, reward, _, _, info = step(env, {"action": "terminal", "params": {"cmd": "yes"}})
    assert len(obs) <= FEEDBACK_CHARS + 700
    assert "characters omitted" in obs and obs.startswith("y\ny\n")
    assert reward == 0.0 and info["exec_status"] == status
    if status == "error":
        assert "[exit status 1; error: xxx" in obs


def test_short_terminal_output_is_unchanged(make_env, sandbox):
    """Control: what fits is shown as before."""
    env, tasks = make_env("npowerai")
    start(env, tasks[0][0])
    sandbox.result = ExecResult(status="ok", stdout="a.csv\nb.csv\n")
    assert step(env, {"action": "terminal", "params": {"cmd": "ls"}})[0] == "a.csv\nb.csv"
    sandbox.result = ExecResult(status="error", exit_code=2, error="process exited with status 2")
    obs = step(env, {"action": "terminal", "params": {"cmd": "false"}})[0]
    assert obs == "(no output)\n[exit status 2; error: process exited with status 2]"


# --------------------------------------------------------------------------- whole episodes


class ScriptedAgent(Agent):
    """Plays a fixed list of actions (with the fake sandbox's answer for each)."""

    def __init__(self, script: list[tuple[Any, Any]], sandbox: FakeSandbox) -> None:
        self.script = list(script)
        self.sandbox = sandbox

    async def begin(self, task, system_prompt, goal, env) -> None:
        pass

    async def act(self, observation, info):
        action, answer = self.script.pop(0)
        self.sandbox.answer(answer)
        return action


@pytest.mark.parametrize("dataset", DATASETS)
def test_no_hostile_episode_is_booked_as_infrastructure(make_env, sandbox, dataset):
    """Through the rollout's episode runner: every hostile step is the agent's failure."""
    env, tasks = make_env(dataset)
    task = tasks[0][0]
    script = [(validate(), hostile(name)) for name in HOSTILE]
    script += [(reply, None) for reply in HOSTILE_REPLIES.values()]
    script += [({"action": "request_info", "params": {"info_type": "term", "keyterm": k}}, None)
               for k in HOSTILE_KEYTERMS.values()]
    script += [({"action": "terminal", "params": {"cmd": "yes"}}, None)]
    env.max_turns = len(script)
    traj = run_sync(run_episode(env, ScriptedAgent(script, sandbox), task))
    assert traj.error is None, traj.error
    assert traj.turns == len(script) and traj.truncated and not traj.success
    assert traj.reward == 0.0


# --------------------------------------------------------------------------- real sandbox

REAL_CODE = {
    "digits": "answer = '1' * 5000",
    "big_int": "answer = 10 ** 400",
    "inf_list": "answer = [float('inf'), 3]",
    "dashes": "answer = '-' * 100000 + '1'",
    "nan": "answer = float('nan')",
    "deep": "a = []\nfor _ in range(60):\n    a = [a]\nanswer = a",
    "too_deep": "a = []\nfor _ in range(5000):\n    a = [a]\nanswer = a",
    "wide": "answer = list(range(300000))",
    "odd_keys": "answer = {(1, 2): 3, None: 4, 5: 'x'}",
    "bool": "answer = True",
    "surrogate_str": "answer = chr(0xd800)",
    "numpy": "import numpy as np\nanswer = np.array([np.inf, np.nan, 1e308 * 10])",
}


def test_hostile_answers_through_the_real_sandbox():
    task = synthetic_tasks("npowerai")[0][0]
    env = AsyncMedAgentEnv("npowerai", tasks=[task], max_turns=100)
    try:
        start(env, task)
        for name, code in REAL_CODE.items():
            obs, reward, terminated, _, info = step(env, validate(code))
            assert (reward, terminated) == (0.0, False), name
            assert info["grade"] is None or not info["grade"]["correct"], name
        obs, *_ = step(env, {"action": "terminal", "params": {"cmd": "yes | head -c 900000"}})
        assert len(obs) <= FEEDBACK_CHARS + 200 and "characters omitted" in obs
    finally:
        run_sync(env.aclose())
