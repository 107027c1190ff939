"""MedCalc-Bench: loader, honest grading on every real test row, synthetic notes, oracles,
and cheats (constants, 10x, out of limits, wrong units, many numbers, printing, disk reads)."""

from __future__ import annotations

import datetime as dt
import math
import os
import random
from pathlib import Path

import pytest

from medagentgym.data import home
from medagentgym.data.sources import pull
from medagentgym.errors import ConfigurationError
from medagentgym.tasks import medcalc as M
from medagentgym.tasks import registry
from medagentgym.tasks.calc import calculators as C
from medagentgym.tasks.calc import formulas as F
from medagentgym.tasks.calc import notes as N
from medagentgym.types import GroundTruth

MIRROR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (MIRROR / "medcalc_bench").is_dir(),
                                reason="MedCalc-Bench mirror not available")


@pytest.fixture(scope="module")
def data_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDAGENTGYM_HOME", str(root))
        registry.clear_cache()
        pull("medcalcbench", MIRROR)
        yield root
    registry.clear_cache()


@pytest.fixture(scope="module")
def family(data_home):
    return registry.get_family("medcalcbench")


@pytest.fixture(scope="module")
def test_tasks(family):
    return family.load_tasks("test")


@pytest.fixture(scope="module")
def train_tasks(family):
    return family.load_tasks("train")


def _numeric(tasks):
    return [t for t in tasks if t.truth.kind == "numeric"]


# --------------------------------------------------------------------------- loading


def test_test_split_is_the_real_test_set(test_tasks, data_home):
    rows = M.read_rows(home.raw_dir("medcalcbench") / M.TEST_FILE)
    assert len(test_tasks) == len(rows) == 1047
    assert len({t.id for t in test_tasks}) == 1047
    assert len({t.category for t in test_tasks}) == 55
    by_row = {r.row_number: r for r in rows}
    for task in test_tasks:
        row = by_row[task.truth.extra["row_number"]]
        assert task.category == row.calculator_name
        assert row.note in task.goal and row.question in task.goal  # the note is shown
        assert task.inputs == {M.NOTES_MOUNT: task.inputs[M.NOTES_MOUNT]}


def test_note_files_hold_only_the_note_and_truth_stays_host_only(test_tasks, data_home):
    notes_dir = Path(test_tasks[0].inputs[M.NOTES_MOUNT])
    assert len(list(notes_dir.iterdir())) > 1047  # test + train notes, nothing else
    for task in test_tasks[:50]:
        text = (notes_dir / f"{task.id}.txt").read_text()
        assert text.strip() in task.goal
        assert "Ground Truth" not in text
    assert notes_dir.stat().st_mode & 0o005 == 0o005  # world-readable for the sandbox uid
    dumped = test_tasks[0].model_dump_json()
    assert "explanation" not in dumped and "solution" not in dumped
    cache = next(home.tasks_dir("medcalcbench").glob("tasks-*.jsonl"))
    assert cache.stat().st_mode & 0o077 == 0  # ground truth is host-only
    assert not str(cache).startswith(str(notes_dir))


# --------------------------------------------------------------------------- grading


def test_gold_answer_passes_on_every_test_row(family, test_tasks):
    failures = [t.id for t in test_tasks
                if not family.grade_value(t, t.truth.extra["answer_text"]).correct]
    assert failures == []


def test_constant_zero_passes_only_rows_whose_answer_is_zero(family, test_tasks):
    passed = {t.id for t in test_tasks if family.grade_value(t, 0).correct}
    expected = {t.id for t in _numeric(test_tasks)
                if t.truth.extra["lower"] <= 0 <= t.truth.extra["upper"]}
    assert passed == expected
    assert len(passed) == 35  # the published grader accepted 0 on 987 of 1,047 rows
    for constant in (1, 2, 5, 10, 100, -1):
        passed = {t.id for t in test_tasks if family.grade_value(t, constant).correct}
        assert passed == {t.id for t in _numeric(test_tasks)
                          if t.truth.extra["lower"] <= constant <= t.truth.extra["upper"]}
        assert len(passed) < 0.1 * len(test_tasks)


def test_ten_times_off_fails_on_every_row(family, test_tasks):
    for t in test_tasks:
        if t.truth.kind == "numeric":
            if t.truth.value != 0:
                assert not family.grade_value(t, t.truth.value * 10).correct, t.id
                assert not family.grade_value(t, t.truth.value / 10).correct, t.id
        elif t.truth.kind == "date":
            gold = M.parse_date_answer(t.truth.value)
            assert not family.grade_value(t, (gold + dt.timedelta(days=1)).strftime("%m/%d/%Y")).correct
        else:
            weeks, days = t.truth.value
            assert not family.grade_value(t, [weeks * 10 + 10, days]).correct
            assert not family.grade_value(t, [weeks, days + 1]).correct


def test_just_outside_the_limits_fails_on_every_row(family, test_tasks):
    for t in _numeric(test_tasks):
        lo, hi = t.truth.extra["lower"], t.truth.extra["upper"]
        assert family.grade_value(t, lo).correct and family.grade_value(t, hi).correct  # inclusive
        assert not family.grade_value(t, hi + 1e-6 * max(1.0, abs(hi))).correct, t.id
        assert not family.grade_value(t, lo - 1e-6 * max(1.0, abs(lo))).correct, t.id


def test_negative_answers_with_reversed_bounds():
    truth = GroundTruth(kind="numeric", value=-0.828, extra={"lower": -0.7866, "upper": -0.8694})
    assert M.grade_answer(truth, -0.828).correct
    assert M.grade_answer(truth, "-0.8").correct
    assert not M.grade_answer(truth, 0.828).correct
    assert not M.grade_answer(truth, 0).correct
    assert not M.grade_answer(truth, 5).correct  # `lower or upper` accepted any positive


@pytest.mark.parametrize("answer", ["09/23/2014", "9/23/2014", "2014-09-23", "September 23, 2014",
                                    "Sep 23, 2014", "23 September 2014", "09-23-2014",
                                    "2014-09-23T00:00:00", ["09/23/2014"]])
def test_dates_in_common_formats(answer):
    truth = GroundTruth(kind="date", value="09/23/2014")
    assert M.grade_answer(truth, answer).correct


@pytest.mark.parametrize("answer", ["09/24/2014", "2014-23-09", "sometime in September", 20140923,
                                    ["09/23/2014", "09/24/2014"], None])
def test_wrong_dates(answer):
    assert not M.grade_answer(GroundTruth(kind="date", value="09/23/2014"), answer).correct


@pytest.mark.parametrize("answer", [[14, 1], (14, 1), "(14 weeks, 1 day)", "('14 weeks', '1 days')",
                                    {"weeks": 14, "days": 1}, "14 weeks and 1 day", ["14", "1"],
                                    [14.0, 1.0], "14w 1d"])
def test_gestational_age_formats(answer):
    truth = GroundTruth(kind="weeks_days", value=[14, 1])
    assert M.grade_answer(truth, answer).correct


@pytest.mark.parametrize("answer", [[1, 14], [14, 1, 0], 99, "99 days", [14.5, 1], [True, 1],
                                    [[14, 1], [13, 6]], "14 weeks 1 day or 13 weeks 6 days",
                                    None])
def test_wrong_gestational_ages(answer):
    assert not M.grade_answer(GroundTruth(kind="weeks_days", value=[14, 1]), answer).correct


def test_many_numbers_units_and_non_numbers_fail(family, test_tasks):
    t = next(t for t in test_tasks if t.truth.kind == "numeric" and t.truth.value > 1)
    gold = t.truth.value
    for cheat in ([gold * 0.9, gold, gold * 1.1], list(range(1000)), {"a": gold, "b": 0},
                  f"{gold} mL/min", f"about {gold}", True, None, float("nan"), ""):
        assert not family.grade_value(t, cheat).correct, cheat
    assert family.grade_value(t, [gold]).correct and family.grade_value(t, str(gold)).correct


def test_published_or_grader_would_pass_constants(test_tasks):
    """What the fix is for: with `or` between the bounds any positive number passes."""
    def published(t, x):
        lo, hi = t.truth.extra["lower"], t.truth.extra["upper"]
        return x >= lo or x <= hi
    numeric = _numeric(test_tasks)
    assert sum(published(t, 0.0) for t in numeric) > 900


# --------------------------------------------------------------------------- oracles


def _run_oracle(code: str):
    namespace: dict = {}
    exec(compile(code, "<oracle>", "exec"), namespace)
    value = namespace["answer"]
    return list(value) if isinstance(value, tuple) else value


def test_test_oracles_pass_in_process(family, test_tasks):
    computed = [t for t in test_tasks if t.truth.extra["oracle"] == "computed"]
    assert len(computed) >= 640
    for t in test_tasks:
        assert family.grade_value(t, _run_oracle(family.oracle_code(t))).correct, t.id


def test_relabelled_answer_key(data_home, test_tasks):
    fam = registry.get_family("medcalcbench", answer_key="relabelled")
    tasks = fam.load_tasks("test")
    key = M.read_relabelled(home.raw_dir("medcalcbench") / M.RELABELLED_FILE)
    answered = {k for k, v in key.items() if v["answer"].strip().upper() != "N/A"}
    assert {t.truth.extra["row_number"] for t in tasks} == answered
    assert 800 <= len(tasks) < 887
    assert {t.id for t in tasks} <= {t.id for t in test_tasks}
    for t in tasks:
        assert fam.grade_value(t, t.truth.extra["answer_text"]).correct
        assert fam.grade_value(t, _run_oracle(fam.oracle_code(t))).correct
    changed = [t for t in tasks if t.truth.extra["answer_text"]
               != next(o for o in test_tasks if o.id == t.id).truth.extra["answer_text"]]
    assert changed  # a different key, not a copy
    with pytest.raises(ConfigurationError):
        registry.get_family("medcalcbench", answer_key="bogus")


# --------------------------------------------------------------------------- agreement


def test_reference_calculators_agree_with_the_test_labels(data_home):
    rows = M.read_rows(home.raw_dir("medcalcbench") / M.TEST_FILE)
    agreement = M.calculator_agreement(rows)
    assert len(agreement) == len(C.CALCULATORS)
    total = sum(a["rows"] for a in agreement.values())
    agree = sum(a["agree"] for a in agreement.values())
    assert total == 666 and agree >= 640
    assert agreement["Estimated Due Date"]["rate"] < 0.5  # the labels add |cycle - 28| days
    others = [a["rate"] for k, a in agreement.items() if k != "Estimated Due Date"]
    assert min(others) >= 0.85


# --------------------------------------------------------------------------- synthetic


def test_train_split_covers_trusted_calculators(train_tasks, family):
    cats = {t.category for t in train_tasks}
    assert len(cats) == 34 and len(train_tasks) == 34 * family.train_per_calculator
    assert "Estimated Due Date" not in cats  # excluded: disagrees with the test labels
    assert all(t.provenance.licence == "Apache-2.0" for t in train_tasks)


def test_train_oracles_and_golds(family, train_tasks):
    for t in train_tasks:
        value = _run_oracle(family.oracle_code(t))
        assert family.grade_value(t, value).correct, t.id


def test_synthetic_notes_vary_units_and_carry_distractors(train_tasks):
    goals = " ".join(t.goal for t in train_tasks)
    for unit in (" lb", " kg", " ft ", " cm", "µmol/L", "mg/dL", "°F", "°C", "mEq/L", "g/L"):
        assert unit in goals, unit
    assert all(t.metadata["distractors"] for t in train_tasks)
    assert len({t.goal for t in train_tasks}) == len(train_tasks)


def test_notes_state_the_values_the_truth_uses():
    rng = random.Random(7)
    for calc in C.CALCULATORS:
        for _ in range(20):
            case = N.sample_case(rng, calc)
            for p in calc.params:
                v = case.values[p.name]
                if p.kind == "quantity" and p.name != "age_years":
                    number = f"{int(v[0]):,}" if v[1] == "/µL" else f"{v[0]:g}"
                    if v[1] == "in":
                        number = f"{round(v[0]) // 12} ft {round(v[0]) % 12} in"
                    assert number in case.note, (calc.name, p.name, v, case.note)
                elif p.kind == "date":
                    assert f"{v:%m/%d/%Y}" in case.note
            C.compute(calc, case.values)  # computable


def test_right_number_in_the_wrong_unit_fails(family, train_tasks):
    wrong_units = {
        "Ideal Body Weight": lambda v: v / 0.453592,  # lb instead of kg
        "Adjusted Body Weight": lambda v: v / 0.453592,
        "Target weight": lambda v: v / 0.453592,
        "QTc Bazett Calculator": lambda v: v / 1000,  # seconds instead of msec
        "Free Water Deficit": lambda v: v * 1000,  # mL instead of L
        "Creatinine Clearance (Cockcroft-Gault Equation)": lambda v: v / 60,  # mL/s
        "Body Surface Area Calculator": lambda v: v * 10_000,  # cm²
        "Serum Osmolality": lambda v: v / 1000,  # Osm/kg
    }
    checked = 0
    for t in train_tasks:
        convert = wrong_units.get(t.category)
        if convert is not None:
            assert not family.grade_value(t, convert(t.truth.value)).correct, t.id
            checked += 1
    assert checked == len(wrong_units) * family.train_per_calculator


def test_unit_conversions_match_the_benchmark():
    assert math.isclose(C.QUANTITIES["creatinine"].to_canonical(88.4, "µmol/L"), 1.0, rel_tol=2e-3)
    assert math.isclose(C.QUANTITIES["temperature"].to_canonical(98.6, "degrees fahreinheit"), 37.0)
    assert C.QUANTITIES["height"].to_canonical(70, "in") == pytest.approx(177.8)
    assert F.gestational_age(dt.date(2020, 3, 23), dt.date(2020, 3, 29)) == (0, 6)
    assert F.estimated_due_date(dt.date(2013, 12, 11), 28) == "09/17/2014"


def test_oracle_code_is_self_contained():
    calc = C.BY_ID[2]
    values = {"sex": "female", "age_years": (70.0, "years"), "weight_kg": (176.0, "lb"),
              "height_cm": (65.0, "in"), "creatinine_mg_dl": (97.0, "µmol/L")}
    code = C.oracle_code(calc, values)
    assert "5 ft 5 in" in code and "97 µmol/L" in code
    assert _run_oracle(code) == pytest.approx(C.compute(calc, values))


# --------------------------------------------------------------------------- environment


def _bwrap_ok() -> bool:
    from medagentgym.sandbox import available_providers

    return available_providers()["bwrap"][0]


def test_environment_oracle_and_cheats(data_home, test_tasks, train_tasks):
    import medagentgym as mag
    from medagentgym.agents.oracle import OracleAgent
    from medagentgym.rollout.runner import run_tasks

    sample = test_tasks[::105] + train_tasks[::170]
    trajs = run_tasks("medcalcbench", sample, OracleAgent, split="test", concurrency=2)
    assert all(t.success for t in trajs), [t.task_id for t in trajs if not t.success]

    task = next(t for t in test_tasks if t.truth.kind == "numeric" and t.truth.value > 1)
    gold = task.truth.value
    cache = next(home.tasks_dir("medcalcbench").glob("tasks-*.jsonl"))
    source = home.raw_dir("medcalcbench") / M.TEST_FILE
    env = mag.make("medcalcbench", "test", tasks=[task], protocol="paper")
    try:
        env.reset(options={"task_id": task.id})
        note_path = f"{M.NOTES_MOUNT}/{task.id}.txt"
        obs, reward, done, _, _ = env.step({"action": "validate_code", "params": {
            "code": f"print(open({note_path!r}).read()[:40])"}})
        assert reward == 0 and not done and "[no `answer` variable was set]" in obs
        obs, reward, done, _, info = env.step({"action": "validate_code", "params": {
            "code": f"print({gold!r})"}})  # printing the right number is not answering
        assert reward == 0 and not done and info["grade"] is None
        obs, reward, done, _, _ = env.step({"action": "validate_code", "params": {
            "code": f"answer = [{gold * 0.9!r}, {gold!r}, {gold * 1.1!r}]"}})
        assert reward == 0 and not done
        if _bwrap_ok():
            obs, reward, done, _, _ = env.step({"action": "validate_code", "params": {
                "code": ("import os\n"
                         f"answer = [os.path.exists(p) for p in ({str(cache)!r}, "
                         f"{str(source)!r}, {str(data_home)!r})]\nprint(answer)")}})
            assert "[False, False, False]" in obs and reward == 0
            obs, reward, done, _, _ = env.step({"action": "validate_code", "params": {
                "code": f"answer = open({str(cache)!r}).read()"}})
            assert reward == 0 and ("No such file" in obs or "Error" in obs)
        obs, reward, done, _, _ = env.step({"action": "validate_code", "params": {
            "code": family_oracle(task)}})
        assert reward == 1 and done
    finally:
        env.close()
    assert os.environ["MEDAGENTGYM_HOME"] == str(data_home)


def family_oracle(task):
    return registry.get_family("medcalcbench").oracle_code(task)
