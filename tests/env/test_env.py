"""MedAgentEnv end to end: public API, both protocols, malformed actions, request_info,
debug, the ground-truth boundary and multi-stage (EHR-SeqSQL) episodes.

Every episode runs in the real sandbox against a synthetic database (see ``tests/conftest.py``).
"""

from __future__ import annotations

import binascii
import json
import re
import sqlite3
import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import medagentgym as mag
from medagentgym.data import home
from medagentgym.errors import ConfigurationError
from medagentgym.sandbox import resolve_provider

EHR_DATASETS = ("mimic_iii", "eicu", "treqs", "ehr_seqsql")
FAMILY = {"database": "synthetic"}  # the CLI's `--database synthetic` (see tests/conftest.py)
CHECKED = "[answer checked: not correct"


def code(source: str, name: str = "validate_code") -> dict:
    return {"action": name, "params": {"code": source}}


def oracle(env, task) -> str:
    return env.core.family.oracle_code(task, stage=env.core.stage)


def answerable(tasks, *, numeric: bool = False):
    """The first task whose gold result is non-empty (a single integer when ``numeric``)."""
    for t in tasks:
        gold = t.truth.value
        if not gold:
            continue
        if not numeric:
            return t
        if len(gold) == 1 and len(gold[0]) == 1 and type(gold[0][0]) is int:
            return t
    raise AssertionError("no suitable task")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tasks(mag_home):
    return mag.load_tasks("mimic_iii", "test", **FAMILY)


@pytest.fixture(scope="module")
def env(mag_home):
    e = mag.make("mimic_iii", "test", **FAMILY)
    yield e
    e.close()


@pytest.fixture(scope="module")
def submit_env(mag_home):
    e = mag.make("mimic_iii", "test", protocol="submit", **FAMILY)
    yield e
    e.close()


@pytest.fixture
def task(tasks):
    return answerable(tasks)


# --------------------------------------------------------------------------- public API


def test_list_datasets_has_the_ehr_datasets():
    assert set(EHR_DATASETS) <= set(mag.list_datasets())


@pytest.mark.parametrize("call", [mag.make, mag.load_tasks])
def test_unknown_dataset_suggests_a_name(call):
    with pytest.raises(ConfigurationError, match="Did you mean 'mimic_iii'"):
        call("mimic_ii", "test")


def test_gymnasium_make(mag_home, tasks):
    env = gymnasium.make("medagentgym/mimic_iii-v1", split="test", **FAMILY)
    try:
        obs, info = env.reset(seed=0, options={"task_id": tasks[0].id})
        assert obs == tasks[0].goal
        assert info["task_id"] == tasks[0].id and info["dataset"] == "mimic_iii"
        assert "validate_code" in info["system_prompt"]
    finally:
        env.close()


def _load_pulling_sources(env, mirror) -> None:
    """Load the env's tasks, pulling from the mirror any source a family says is missing."""
    from medagentgym.data.sources import pull

    for _ in range(4):
        try:
            assert env.tasks
            return
        except ConfigurationError as exc:
            wanted = re.search(r"medagentgym data pull ([\w-]+)", str(exc))
            if wanted is None:
                raise
            try:
                pull(wanted.group(1), mirror)
            except Exception as pull_exc:  # not in the mirror: nothing to check here
                pytest.skip(f"data for this dataset is unavailable: {exc} ({pull_exc})")
    raise AssertionError("tasks still missing after pulling their sources")


@pytest.mark.parametrize("dataset", mag.list_datasets())
def test_check_env_passes_for_every_dataset(mag_home, mirror, dataset):
    from medagentgym.tasks.registry import options_model

    # the synthetic database for the datasets that run on one (others take no `database`)
    options = FAMILY if "database" in options_model(dataset).model_fields else {}
    env = gymnasium.make(f"medagentgym/{dataset}-v1", split="test", **options)
    try:
        _load_pulling_sources(env.unwrapped, mirror)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped)
        # render_fps is meaningless for a text environment; anything else is a finding
        other = [str(w.message) for w in caught if "render fps" not in str(w.message)]
        assert other == []
    finally:
        env.close()


# --------------------------------------------------------------------------- paper protocol


def test_oracle_solves_and_terminates(env, task):
    obs, info = env.reset(options={"task_id": task.id})
    assert obs == task.goal and info["turn"] == 0 and not info["success"]
    obs, reward, terminated, truncated, info = env.step(code(oracle(env, task)))
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["success"] and info["grade"]["correct"]
    assert CHECKED not in obs


def test_wrong_answer_is_checked_and_the_episode_goes_on(env, task):
    env.reset(options={"task_id": task.id})
    obs, reward, terminated, truncated, info = env.step(code("answer = [['no such thing']]"))
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert CHECKED in obs and not info["success"]
    obs, reward, terminated, _, _ = env.step(code(oracle(env, task)))
    assert reward == 1.0 and terminated


def test_printing_the_gold_answer_is_not_an_answer(env, task):
    env.reset(options={"task_id": task.id})
    obs, reward, terminated, _, info = env.step(code(f"print({task.truth.value!r})"))
    assert reward == 0.0 and not terminated and not info["success"]
    assert info["grade"] is None
    assert "[no `answer` variable was set]" in obs


def test_many_candidates_earn_nothing(env, tasks):
    task = answerable(tasks, numeric=True)
    gold = task.truth.value
    env.reset(options={"task_id": task.id})
    for cheat in ("answer = list(range(1000))",
                  f"answer = {gold!r} + [[{gold[0][0] + 1}], ['x']]",
                  f"answer = [{gold[0][0]}, {gold[0][0] + 1}]",
                  "class Any:\n    def __eq__(self, other):\n        return True\n"
                  "    __hash__ = object.__hash__\nanswer = Any()"):
        obs, reward, terminated, _, _ = env.step(code(cheat))
        assert (reward, terminated) == (0.0, False), cheat
        assert CHECKED in obs


def test_info_never_carries_the_gold_answer(env, tasks):
    """Regression: info["grade"]["detail"] (host-only, per types.Grade) quoted the gold rows,
    and run_episode hands info to Agent.act."""
    task = answerable(tasks)
    env.reset(options={"task_id": task.id})
    _, _, _, _, info = env.step(code("answer = [['no such thing']]"))
    assert info["grade"] is not None and not info["grade"]["correct"]
    text = json.dumps(info, default=str)
    assert "gold=" not in text
    assert repr(task.truth.value) not in text
    # the host-side record keeps the detail for failure analysis
    assert "gold=" in env.core.history[-1].grade.detail


def test_turn_limit_truncates_on_the_15th_step(env, task):
    env.reset(options={"task_id": task.id})
    for turn in range(1, 16):
        _, reward, terminated, truncated, info = env.step(code("answer = [['wrong']]"))
        assert reward == 0.0 and not terminated and info["turn"] == turn
        assert truncated == (turn == 15)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(code(oracle(env, task)))


def test_step_after_success_raises(env, task):
    env.reset(options={"task_id": task.id})
    _, _, terminated, _, _ = env.step(code(oracle(env, task)))
    assert terminated
    with pytest.raises(RuntimeError):
        env.step(code("answer = 1"))


def test_step_before_reset_raises(mag_home):
    env = mag.make("mimic_iii", "test", **FAMILY)
    try:
        with pytest.raises(RuntimeError, match="reset"):
            env.step(code("answer = 1"))
    finally:
        env.close()


def test_reset_twice_starts_clean_episodes(env, tasks):
    first, second = answerable(tasks), answerable(tasks[1:])
    assert first.id != second.id
    env.reset(options={"task_id": first.id})
    env.step(code("open('/workspace/left_over.txt', 'w').write('x')\nanswer = [['wrong']]"))
    obs, info = env.reset(options={"task_id": second.id})
    assert obs == second.goal and info["turn"] == 0 and info["task_id"] == second.id
    obs, *_ = env.step(code("import os\nprint(sorted(os.listdir('/workspace')))"))
    assert "left_over" not in obs
    assert "[]" in obs
    for t in (second, first):
        env.reset(options={"task_id": t.id})
        _, reward, terminated, _, info = env.step(code(oracle(env, t)))
        assert reward == 1.0 and terminated and info["success"]


def test_reset_clears_tmp_between_episodes(env, task):
    """BUG: /workspace is cleared on reset but the sandbox's private /tmp is not, so one
    episode (or sample) can leave notes or answers for the next one on the same env."""
    if resolve_provider() == "local":
        pytest.skip("the local provider shares the host's /tmp")
    env.reset(options={"task_id": task.id})
    env.step(code("open('/tmp/from_last_episode.txt', 'w').write('the answer is ...')"))
    env.reset(options={"task_id": task.id})
    obs, *_ = env.step(code("import os\nprint(sorted(os.listdir('/tmp')))"))
    assert "from_last_episode" not in obs


# --------------------------------------------------------------------------- submit protocol


def test_submit_validate_code_gives_no_verdict(submit_env, task):
    _, info = submit_env.reset(options={"task_id": task.id})
    assert "submit" in info["allowed_actions"]
    obs, reward, terminated, truncated, info = submit_env.step(code(oracle(submit_env, task)))
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert "answer checked" not in obs and info["grade"] is None and not info["success"]


def test_submit_oracle_code(submit_env, task):
    submit_env.reset(options={"task_id": task.id})
    obs, reward, terminated, _, info = submit_env.step(code(oracle(submit_env, task), "submit"))
    assert (reward, terminated) == (1.0, True) and info["success"]
    assert "submitted" in obs.lower()


def test_submit_wrong_answer_ends_the_episode(submit_env, task):
    submit_env.reset(options={"task_id": task.id})
    _, reward, terminated, _, info = submit_env.step(code("answer = [['wrong']]", "submit"))
    assert (reward, terminated) == (0.0, True) and not info["success"]
    with pytest.raises(RuntimeError):
        submit_env.step(code("answer = 1", "submit"))


def test_submit_value(submit_env, task):
    submit_env.reset(options={"task_id": task.id})
    _, reward, terminated, _, info = submit_env.step(
        {"action": "submit", "params": {"answer": task.truth.value}})
    assert (reward, terminated) == (1.0, True) and info["success"]


def test_submit_is_not_allowed_in_the_paper_protocol(env, task):
    _, info = env.reset(options={"task_id": task.id})
    assert "submit" not in info["allowed_actions"]
    obs, reward, terminated, _, _ = env.step(code(oracle(env, task), "submit"))
    assert obs.startswith("Error:") and "not available" in obs
    assert (reward, terminated) == (0.0, False)


# --------------------------------------------------------------------------- malformed actions


@pytest.mark.parametrize(("action", "message"), [
    ("I think the answer is 42.", "Could not find a JSON action"),
    ('{"params": {"code": "answer = 1"}}', 'needs an "action" field'),
    ('{"action": "fly", "params": {}}', "Unknown action 'fly'"),
    ('{"action": "validate_code", "params": {}}', "code: Field required"),
    ({"action": "validate_code"}, "code: Field required"),
    ('{"action": "validate_code", "params": "answer = 1"}', '"params" must be a JSON object'),
    ('[1, 2]', "must be a JSON object"),
    ('{"action": "terminal", "params": {"cmd": "ls /data"}}',
     "Use one of: request_info, validate_code, debug"),
])
def test_malformed_action_is_an_error_observation(env, task, action, message):
    env.reset(options={"task_id": task.id})
    obs, reward, terminated, truncated, info = env.step(action)
    assert obs.startswith("Error:") and message in obs
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info["parse_error"]
    _, reward, terminated, _, _ = env.step(code(oracle(env, task)))  # the episode goes on
    assert reward == 1.0 and terminated


def test_fenced_json_with_prose_is_accepted(env, task):
    env.reset(options={"task_id": task.id})
    payload = json.dumps(code(oracle(env, task)), indent=1)
    text = f"Let me query the database.\n```json\n{payload}\n```\nThis should work."
    obs, reward, terminated, _, _ = env.step(text)
    assert not obs.startswith("Error:")
    assert (reward, terminated) == (1.0, True)


def test_dict_and_string_actions_are_equivalent(env, task):
    for action in (code("print(6 * 7)"), json.dumps(code("print(6 * 7)"))):
        env.reset(options={"task_id": task.id})
        obs, *_ = env.step(action)
        assert obs.startswith("42")


# --------------------------------------------------------------------------- request_info


def _request(env, task, info_type, data_path="", keyterm=""):
    env.reset(options={"task_id": task.id})
    obs, reward, terminated, _, _ = env.step({"action": "request_info", "params": {
        "info_type": info_type, "data_path": data_path, "keyterm": keyterm}})
    assert not obs.startswith("Error:") and reward == 0.0 and not terminated
    return obs


def _db(env) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{env.core.family.db.path}?mode=ro", uri=True)


def test_request_info_column_names(env, task):
    obs = _request(env, task, "column_names", "patients")
    assert "subject_id" in obs and "gender" in obs


def test_request_info_term_finds_an_exact_value(env, task):
    con = _db(env)
    drug = con.execute("SELECT drug FROM prescriptions WHERE drug IS NOT NULL "
                       "ORDER BY row_id LIMIT 1").fetchone()[0]
    con.close()
    obs = _request(env, task, "term", keyterm=drug)
    assert "Exact" in obs and "prescriptions.drug" in obs and drug.lower() in obs.lower()


def test_request_info_column_values(env, task):
    con = _db(env)
    values = {r[0] for r in con.execute("SELECT DISTINCT admission_type FROM admissions")}
    con.close()
    obs = _request(env, task, "column_values", "admissions", "admission_type")
    assert values and all(f"'{v}'" in obs for v in values)


# --------------------------------------------------------------------------- debug


def test_debug_without_a_debugger(env, task):
    env.reset(options={"task_id": task.id})
    obs, reward, terminated, _, _ = env.step(
        {"action": "debug", "params": {"code": "1/0", "error_msg": "ZeroDivisionError"}})
    assert "not configured" in obs and reward == 0.0 and not terminated


def test_debug_with_a_debugger(mag_home, task):
    seen = []

    def debugger(source: str, error: str) -> str:
        seen.append((source, error))
        return "try X"

    env = mag.make("mimic_iii", "test", debugger=debugger, **FAMILY)
    try:
        env.reset(options={"task_id": task.id})
        obs, *_ = env.step({"action": "debug", "params": {"code": "1/0", "error_msg": "boom"}})
        assert obs == "try X" and seen == [("1/0", "boom")]
    finally:
        env.close()


# --------------------------------------------------------------------------- ground truth

_SCAN = r"""
import binascii, json, os, sys
needles = [binascii.unhexlify(h) for h in NEEDLES]
control = b"subject_id"
skip = {"/proc", "/sys", "/dev", "/usr", "/bin", "/sbin", "/etc",
        "/lib", "/lib32", "/lib64", "/libx32"}
skip |= {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                         sys.base_exec_prefix)}
roots = ("/data", "/workspace", "/tmp", "/opt", "/root", "/home", "/work")
hits, scanned, denied, control_hits = [], [], [], []
for dirpath, dirs, files in os.walk("/", onerror=lambda e: denied.append(e.filename)):
    dirs[:] = [d for d in dirs if os.path.join(dirpath, d) not in skip]
    for name in dirs + files:
        path = os.path.join(dirpath, name)
        hits += [(path, "name", n.decode()) for n in needles if n in path.encode()]
    if not dirpath.startswith(roots):
        continue
    for name in files:
        path = os.path.join(dirpath, name)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            denied.append(path)
            continue
        scanned.append(path)
        hits += [(path, "content", n.decode()[:60]) for n in needles if n in data]
        if control in data:
            control_hits.append(path)
print("SCAN" + json.dumps({"hits": hits, "scanned": scanned, "denied": denied,
                           "control": control_hits, "top": sorted(os.listdir("/")),
                           "home": os.path.exists(HOME), "tasks": os.path.exists(TASKS)}))
"""


def test_ground_truth_is_not_reachable_from_the_sandbox(env, tasks, mag_home):
    if resolve_provider() == "local":
        pytest.skip("the local provider does not isolate agent code")
    task = answerable(tasks)
    tasks_dir = home.tasks_dir("mimic_iii")
    cache_names = [p.name for p in tasks_dir.glob("*.jsonl")]
    assert cache_names, "the task cache should exist on the host"
    gold_sql = [t.truth.extra["sql"] for t in tasks[:25]]
    assert task.truth.extra["sql"] in gold_sql
    needles = [*gold_sql, *cache_names, "sql_rows", str(mag_home), str(tasks_dir)]
    # hex-encoded so the needles never appear verbatim in anything the sandbox holds
    source = (f"NEEDLES = {[binascii.hexlify(n.encode()).decode() for n in needles]!r}\n"
              f"HOME = {str(mag_home)!r}\nTASKS = {str(tasks_dir)!r}\n" + _SCAN)
    observations, infos = [], []
    obs, info = env.reset(options={"task_id": task.id})
    observations.append(obs)
    infos.append(info)
    for action in (code(source), code("answer = [['wrong']]"),
                   {"action": "request_info", "params": {"info_type": "term", "keyterm": "sql"}},
                   code(oracle(env, task))):
        obs, _, terminated, _, info = env.step(action)
        observations.append(obs)
        infos.append(info)
    assert terminated and info["success"]
    line = next(x for x in observations[1].splitlines() if x.startswith("SCAN"))
    scan = json.loads(line[4:])
    assert scan["hits"] == []
    assert not scan["home"] and not scan["tasks"], "the data home must not exist in the sandbox"
    # the scan did read the data it was meant to read
    assert "/data/mimic_iii.db" in scan["scanned"]
    assert any(p.startswith("/data/mimic_iii/") for p in scan["control"])
    assert "data" in scan["top"] and "workspace" in scan["top"]
    text = json.dumps([observations, infos], default=str)
    for sql in gold_sql:
        assert sql not in text
    assert "sql_rows" not in text


# --------------------------------------------------------------------------- EHR-SeqSQL


@pytest.fixture(scope="module")
def seq_env(mag_home):
    e = mag.make("ehr_seqsql", "test", **FAMILY)
    yield e
    e.close()


def test_sequence_stages_are_shown_one_after_another(seq_env):
    task = seq_env.tasks[0]
    questions = task.metadata["questions"]
    n = len(questions)
    assert n > 1 and task.truth.kind == "sequence"
    obs, info = seq_env.reset(options={"task_id": task.id})
    assert info["stages"] == n and info["stage"] == 0
    assert obs == f"Question 1 of {n}: {questions[0]}"
    # a wrong answer does not advance
    obs, reward, terminated, _, info = seq_env.step(code("answer = [['wrong']]"))
    assert (reward, terminated, info["stage"]) == (0.0, False, 0)
    total = 0.0
    for stage in range(n):
        obs, reward, terminated, truncated, info = seq_env.step(code(oracle(seq_env, task)))
        total += reward
        assert reward == pytest.approx(1 / n) and not truncated
        if stage + 1 < n:
            assert not terminated and not info["success"] and info["stage"] == stage + 1
            assert "Next question" in obs and f"Question {stage + 2} of {n}" in obs
            assert questions[stage + 1] in obs
        else:
            assert terminated and info["success"]
    assert total == pytest.approx(1.0)


def test_a_crashing_grader_is_an_infrastructure_error_not_a_wrong_answer(mag_home, monkeypatch):
    from medagentgym.agents.oracle import OracleAgent
    from medagentgym.rollout.runner import run_tasks
    from medagentgym.tasks.registry import get_family

    tasks = mag.load_tasks("treqs", "test", database="synthetic")[:2]
    family = get_family("treqs", database="synthetic")

    def broken(task, answer, *, stage=0):
        raise KeyError("bug in the grader")

    monkeypatch.setattr(family, "grade_value", broken)
    trajs = run_tasks("treqs", tasks, OracleAgent, env_kwargs={"database": "synthetic"})
    assert [t.error.source for t in trajs] == ["grader", "grader"]
    assert all(not t.success for t in trajs)
    assert "bug in the grader" in trajs[0].error.message
