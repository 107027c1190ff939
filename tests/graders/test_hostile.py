"""Every registered dataset family's grader, given hostile answers: graded wrong with a reason,
never an exception (an exception is booked as an infrastructure error, which is excused)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from tests.graders.hostile import (
    HOSTILE,
    ProbeAnswer,
    StandInFiles,
    file_gold,
    hostile,
    probe_gold,
    stand_in_services,
    synthetic_tasks,
)

from medagentgym.tasks import registry
from medagentgym.types import Grade

DATASETS = registry.list_datasets()
# real golds include 1/0 (yes/no questions) and empty results: a boolean equals 1/0 and NaN is
# null by design, so these are left out on real tasks (the synthetic golds avoid 0, 1 and empty)
LEGITIMATE_ON_REAL = {"bool_true", "bool_false", "bool_list", "nan", "nan_in_list"}
REAL_OPTIONS = {"npowerai": {"source": "synthetic", "train_size": 12, "test_size": 12},
                "medcalcbench": {}, "biocoder": {},
                "medagentbench": {}, "ehrshot": {},
                "mimic_extract": {}}  # no database: no `database` option


def grade_via_contract(family, task, value, stage=0) -> Grade:
    """The grader as the environment calls it: ``await family.grade(GradeContext)``."""
    import asyncio

    from medagentgym.tasks.contract import GradeContext, SandboxView

    ctx = GradeContext(task=task, stage=stage, answer=value, has_answer=True,
                       result=_probe_result(family, task, value, stage),
                       sandbox=SandboxView(StandInFiles(value)),  # type: ignore[arg-type]
                       services=stand_in_services(family))
    return asyncio.run(family.grade(ctx))


def _probe_result(family, task, value, stage):
    """For families graded by probes: an execution whose probes all returned ``value`` (or,
    for a :class:`ProbeAnswer`, the values it holds); None for the others."""
    probes = family.probes(task, stage)
    if not probes:
        return None
    from medagentgym.sandbox.base import ExecResult, ProbeValue

    if isinstance(value, ProbeAnswer):
        got = {k: ProbeValue(value=v, type=t) for k, (v, t) in value.values.items()}
    else:
        got = {k: ProbeValue(value=value, type=type(value).__name__) for k in probes}
    return ExecResult(status="ok", probes=got)


def assert_graded_wrong(grade: Grade, seconds: float) -> None:
    assert isinstance(grade, Grade)
    assert grade.correct is False and grade.score == 0.0
    assert grade.reason.strip()
    assert len(grade.reason) <= 1000 and len(grade.detail) <= 2000
    grade.model_dump_json()  # storable: no lone surrogates, no huge text
    assert seconds < 10, f"grading took {seconds:.1f} s"


def test_there_are_enough_hostile_answers():
    assert len(HOSTILE) >= 25


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("dataset", DATASETS)
def test_hostile_answer_is_graded_wrong(dataset, name):
    family = registry.get_family(dataset)
    value = hostile(name)
    for task, stage, _ in synthetic_tasks(dataset):
        t0 = time.perf_counter()
        grade = grade_via_contract(family, task, value, stage)
        assert_graded_wrong(grade, time.perf_counter() - t0)


@pytest.mark.parametrize("dataset", DATASETS)
def test_gold_answers_still_score_one(dataset):
    family = registry.get_family(dataset)
    for task, stage, gold in synthetic_tasks(dataset):
        grade = grade_via_contract(family, task, gold, stage)
        assert grade.correct and grade.score == 1.0, (task.truth, grade)


def _real_tasks(dataset: str, mirror: Path) -> list:
    from medagentgym.data.sources import pull
    from medagentgym.errors import ConfigurationError

    options = REAL_OPTIONS.get(dataset, {"database": "synthetic"})
    for _ in range(3):
        try:
            return registry.load_tasks(dataset, "test", **options)
        except ConfigurationError as exc:
            wanted = re.search(r"medagentgym data pull ([\w-]+)", str(exc))
            if wanted is None:
                raise
            try:
                pull(wanted.group(1), mirror)
            except Exception as pull_exc:  # not in the mirror: nothing to check here
                pytest.skip(f"data for {dataset} is unavailable: {pull_exc}")
    pytest.skip(f"data for {dataset} is unavailable")


def _answer_only(task) -> bool:
    """A service task whose gold needs no write (an MRN lookup, a value read)."""
    case = task.truth.extra.get("case") if task.truth.kind == "numeric" else task.truth.value
    return isinstance(case, dict) and case.get("type") in (1, 2, 4, 6, 7) and "answer" in case


def _gold(task, stage: int, family=None):
    """The gold answer as an agent would store it (rows as lists; probe values for families
    graded by probes)."""
    truth = task.truth
    if family is not None and (probed := probe_gold(family, task, stage)) is not None:
        return probed
    if family is not None and (files := file_gold(family, task)) is not None:
        return files
    value = truth.value[stage] if truth.kind == "sequence" else truth.value
    if truth.kind == "service_state" and isinstance(value, dict) and "answer" in value:
        return value["answer"]  # an answer-only service task: the answer is in the case
    if truth.kind in ("sql_rows", "sequence") and value is not None:
        return [list(row) for row in value]
    return value


@pytest.mark.parametrize("dataset", DATASETS)
def test_real_tasks_grade_hostile_answers_wrong(mag_home, mirror, dataset):
    """The same on tasks built as the datasets build them (synthetic databases and notes)."""
    if dataset == "biodsbench":
        pytest.skip("biodsbench grades against expectations computed at each episode's setup "
                    "(a sandbox run of the reference); its hostile values are graded through "
                    "the real-data mode in the synthetic suite, cheats in test_biodsbench.py")
    options = REAL_OPTIONS.get(dataset, {"database": "synthetic"})
    family = registry.get_family(dataset, **options)
    tasks = _real_tasks(dataset, mirror)
    picked = tasks[:4] + [t for t in tasks if t.metadata.get("is_impossible")][:1]
    if stand_in_services(family):  # graded on a service's state: answer-only tasks here
        picked = [t for t in tasks if _answer_only(t)][:4]
    for task in picked:
        for stage in range(len(family.stages(task))):
            assert grade_via_contract(family, task, _gold(task, stage, family), stage).correct
            for name in HOSTILE.keys() - LEGITIMATE_ON_REAL:
                t0 = time.perf_counter()
                grade = grade_via_contract(family, task, hostile(name), stage)
                assert_graded_wrong(grade, time.perf_counter() - t0)
