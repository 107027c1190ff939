"""The EHR SQL family: its grader proves itself (gold scores 1, empty and known cheats score 0)
and its tasks keep the ground truth on the host."""

from __future__ import annotations

import json
import stat

import pytest

import medagentgym as mag
from medagentgym.data import home
from medagentgym.tasks.registry import get_family

FAMILY = {"database": "synthetic"}  # see tests/conftest.py
EHR_DATASETS = ("mimic_iii", "eicu", "treqs", "ehr_seqsql")


def _sample(tasks, n=40):
    step = max(1, len(tasks) // n)
    return tasks[::step][:n]


@pytest.fixture(scope="module")
def mimic(mag_home):
    return mag.load_tasks("mimic_iii", "test", **FAMILY)


@pytest.fixture(scope="module")
def numeric_task(mimic):
    """A task whose gold answer is one integer N."""
    for t in mimic:
        gold = t.truth.value
        if gold and len(gold) == 1 and len(gold[0]) == 1 and type(gold[0][0]) is int:
            return t
    raise AssertionError("no single-number task")


@pytest.mark.parametrize("dataset", EHR_DATASETS)
def test_gold_scores_one_and_empty_scores_zero(mag_home, dataset):
    fam = get_family(dataset)
    tasks = _sample(mag.load_tasks(dataset, "test", **FAMILY))
    assert tasks
    for t in tasks:
        golds = t.truth.value if t.truth.kind == "sequence" else [t.truth.value]
        for stage, gold in enumerate(golds):
            assert fam.grade_value(t, gold, stage=stage).correct, (t.id, stage)
            if gold:  # answerable: abstaining is wrong
                assert not fam.grade_value(t, None, stage=stage).correct, (t.id, stage)
                assert not fam.grade_value(t, [], stage=stage).correct, (t.id, stage)


def test_gold_number_and_its_plain_forms_are_correct(numeric_task):
    fam = get_family("mimic_iii")
    n = numeric_task.truth.value[0][0]
    for value in (numeric_task.truth.value, n, [n], str(n), float(n)):
        assert fam.grade_value(numeric_task, value).correct, value


@pytest.mark.parametrize("cheat", [
    lambda n: f"the answer is {n}",
    lambda n: [n, n + 1],
    lambda n: [[n], [n + 1]],
    lambda n: str(n) + "5",
    lambda n: list(range(max(1000, n + 1))),
    lambda n: f"{n} or {n + 1}",
])
def test_known_cheats_score_zero(numeric_task, cheat):
    value = cheat(numeric_task.truth.value[0][0])
    grade = get_family("mimic_iii").grade_value(numeric_task, value)
    assert not grade.correct and grade.score == 0.0
    assert str(numeric_task.truth.value) not in grade.reason  # the reason never quotes the gold


def test_unanswerable_questions_need_an_abstention(mimic):
    assert all(t.truth.value is not None for t in mimic)  # answerable only by default
    fam = get_family("mimic_iii", **FAMILY, abstention=True)
    task = next(t for t in fam.load_tasks("test") if t.truth.value is None)
    assert task.metadata["is_impossible"]
    assert fam.grade_value(task, None).correct
    for value in ([[1]], 0, "unknown", list(range(1000))):
        assert not fam.grade_value(task, value).correct, value


def test_sequence_stages_are_graded_separately(mag_home):
    fam = get_family("ehr_seqsql")
    task = next(t for t in mag.load_tasks("ehr_seqsql", "test", **FAMILY)
                if len({json.dumps(v) for v in t.truth.value}) == len(t.truth.value))
    golds = task.truth.value
    assert len(golds) == len(fam.stages(task)) > 1
    assert fam.grade_value(task, golds[1], stage=1).correct
    assert not fam.grade_value(task, golds[1], stage=0).correct


def test_tasks_serialise_without_their_ground_truth(mimic):
    task = next(t for t in mimic if t.truth.value)
    text = task.model_dump_json()
    assert task.truth.extra["sql"] not in text
    assert "sql_rows" not in text and "truth" not in json.loads(text)
    tasks_dir = home.tasks_dir("mimic_iii")
    for target, source in task.inputs.items():
        assert target.startswith("/data/")
        assert not source.startswith(str(tasks_dir))


def test_task_cache_is_private(mimic):
    caches = list(home.tasks_dir("mimic_iii").glob("*.jsonl"))
    assert caches
    for path in caches:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_patients_option_builds_a_smaller_database(mag_home):
    tasks = mag.load_tasks("treqs", "test", database="synthetic", patients=20)
    assert tasks
    assert "patients=20" in tasks[0].provenance.database
    assert any("_p20_" in source for source in tasks[0].inputs.values())
