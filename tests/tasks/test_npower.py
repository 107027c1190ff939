"""N-PowerAI: the scipy engine against known values and statsmodels, the generator, the
official-format importer, grading (size exact, power ±0.01) and cheats."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import random
import warnings
from pathlib import Path

import pytest

from medagentgym.data import home
from medagentgym.data.sources import pull
from medagentgym.errors import ConfigurationError
from medagentgym.tasks import npower as NP
from medagentgym.tasks import registry
from medagentgym.tasks.power import engine as E
from medagentgym.tasks.power import templates as T

MIRROR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "npower_alt_agreement.py"


@pytest.fixture(scope="module")
def data_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDAGENTGYM_HOME", str(root))
        registry.clear_cache()
        yield root
    registry.clear_cache()


@pytest.fixture(scope="module")
def family(data_home):
    return registry.get_family("npowerai", source="synthetic", train_size=96, test_size=60)


@pytest.fixture(scope="module")
def tasks(family):
    return family.load_tasks("train") + family.load_tasks("test")


# --------------------------------------------------------------------------- engine


@pytest.mark.parametrize(("design", "target", "expected"), [
    (E.TwoSampleT(0.5), 0.80, 64),  # pwr vignette: n = 63.77 per group
    (E.TwoSampleT(0.3, 0.05, "one-sided"), 0.80, 139),
    (E.TwoSampleT(0.8, 0.001), 0.99, 102),  # statsmodels gives NaN near here
    (E.PairedT(0.5), 0.80, 34),
    (E.OneSampleT((120 - 100.38) / 7.3), 0.90, 4),  # N-PowerAI test task 1
    (E.PairedT(14.4 / 38, 0.05, "one-sided"), 0.80, 45),  # an N-PowerAI paired task
    (E.OneWayAnova(0.25, 3), 0.80, 53),
    (E.ChiSquare(0.3, 1), 0.80, 88),
    (E.ChiSquare(E.cohen_w([[.5636, .2682, .1281, .0323, .0078],
                            [.4747, .3543, .1368, .0241, .0101]]), 4), 0.80, 1122),  # N-PowerAI
    (E.CoxSchoenfeld(0.75, 0.40), 0.80, 475),
])
def test_engine_known_sample_sizes(design, target, expected):
    n = E.smallest_n(design.power, target)
    assert n == expected
    assert design.power(n) >= target > design.power(n - 1)


def test_engine_power_is_finite_and_monotone():
    for design in (E.TwoSampleT(0.8, 0.001), E.OneSampleT(0.05), E.OneWayAnova(0.1, 5, 0.01),
                   E.ChiSquare(0.05, 3), E.CoxSchoenfeld(0.9, 0.1)):
        powers = [design.power(n) for n in range(3, 400, 7)]
        assert all(math.isfinite(p) and 0 <= p <= 1 for p in powers)
        assert all(b >= a - 1e-12 for a, b in itertools.pairwise(powers))


def test_schoenfeld_events():
    cox = E.CoxSchoenfeld(0.7, 0.5)
    assert math.ceil(cox.events_required(0.8)) == 247  # 4 (1.96 + 0.84)^2 / log(0.7)^2
    continuous = E.CoxSchoenfeld(1.3, 0.25, covariate_variance=1.0, groups=1)
    assert math.ceil(continuous.events_required(0.8)) == 115


def test_engine_matches_statsmodels():
    from statsmodels.stats.power import FTestAnovaPower, TTestIndPower, TTestPower

    rng = random.Random(3)
    for _ in range(50):
        d, n, alpha = rng.uniform(0.1, 1.2), rng.randint(5, 300), rng.choice((0.01, 0.05))
        reference = TTestIndPower().power(d, n, alpha)
        if math.isnan(reference):  # scipy's nct.cdf far in the left tail; the engine avoids it
            assert E.TwoSampleT(d, alpha).power(n) > 0.999
        else:
            assert E.TwoSampleT(d, alpha).power(n) == pytest.approx(reference, abs=1e-9)
        assert E.OneSampleT(d, alpha, "one-sided").power(n) == pytest.approx(
            TTestPower().power(d, n, alpha, alternative="larger"), abs=1e-9)
        f, k = rng.uniform(0.05, 0.6), rng.randint(3, 6)
        assert E.OneWayAnova(f, k, alpha).power(n) == pytest.approx(
            FTestAnovaPower().power(f, n * k, alpha, k_groups=k), abs=1e-9)


@pytest.mark.skipif(not (MIRROR / "power_analysis_alt").is_dir(), reason="no mirror")
def test_engine_against_the_independent_power_benchmark(tmp_path):
    pull("power_analysis_alt", MIRROR, home=tmp_path)
    spec = importlib.util.spec_from_file_location("npower_alt_agreement", BENCHMARK)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    tasks = json.loads((home.raw_dir("power_analysis_alt", tmp_path) / "all_tasks.json").read_text())
    report = bench.run(tasks)
    assert report["tasks"] == 106 and report["mapped"] == 30
    assert report["agree_within_tolerance"] == 30
    assert report["exact"] >= 26


# --------------------------------------------------------------------------- generator


def test_generator_is_balanced_deterministic_and_self_consistent():
    problems = T.generate(48, seed=5)
    assert problems == T.generate(48, seed=5)
    cells = {(p.task_type, p.estimate_target) for p in problems}
    assert cells == {(t, g) for t in T.TASK_TYPES for g in T.TARGETS}
    for p in problems:
        ns: dict = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(p.oracle, ns)  # statsmodels / scipy, independent of the engine
        if p.estimate_target == "size":
            assert ns["answer"] == p.answer and isinstance(p.answer, int) and p.answer >= 3
        else:
            assert abs(ns["answer"] - p.answer) < 1e-6 and 0.08 <= p.answer <= 0.99
        assert " %" not in p.question and "-0" not in p.question


def test_family_tasks(tasks, family):
    train, test = family.load_tasks("train"), family.load_tasks("test")
    assert len(train) == 96 and len(test) == 60
    assert {t.category for t in tasks} == set(NP.TASK_TYPES)
    assert not {t.metadata["question"] for t in train} & {t.metadata["question"] for t in test}
    assert family.preload == "science"
    for t in tasks:
        assert t.inputs == {}  # nothing mounted: the question is all the agent needs
        assert t.metadata["question"] in t.goal
        assert t.truth.kind in ("sample_size", "power")
    cache = next(home.tasks_dir("npowerai").glob("synthetic-*.jsonl"))
    assert cache.stat().st_mode & 0o077 == 0


# --------------------------------------------------------------------------- grading


def test_gold_passes_and_cheats_fail(tasks, family):
    for t in tasks:
        gold = t.truth.value
        assert family.grade_value(t, gold).correct
        assert family.grade_value(t, [gold]).correct
        assert not family.grade_value(t, None).correct
        assert not family.grade_value(t, True).correct
        assert not family.grade_value(t, [gold, gold + 1, gold - 1]).correct  # many numbers
        assert not family.grade_value(t, list(range(2000))).correct
        assert not family.grade_value(t, f"n = {gold}").correct
        if t.truth.kind == "sample_size":
            assert family.grade_value(t, float(gold)).correct and family.grade_value(t, str(gold)).correct
            for wrong in (gold - 1, gold + 1, gold + 0.5, gold - 0.5, 0, 2 * gold):
                assert not family.grade_value(t, wrong).correct, (t.id, wrong)
        else:
            assert family.grade_value(t, gold + 0.0099).correct
            assert family.grade_value(t, gold - 0.0099).correct
            assert not family.grade_value(t, gold + 0.0101).correct
            assert not family.grade_value(t, gold - 0.0101).correct
            assert not family.grade_value(t, gold * 100).correct  # a percentage, not a probability
            assert not family.grade_value(t, gold * 1.1 + 0.011).correct  # 10% off


def test_constant_answers_rarely_pass(tasks, family):
    for constant in (0, 1, 0.8, 0.9, 100, 64):
        passed = sum(family.grade_value(t, constant).correct for t in tasks)
        assert passed <= 0.1 * len(tasks), (constant, passed)


def test_per_group_versus_total_is_the_wrong_unit(tasks, family):
    per_group = [t for t in tasks if t.truth.kind == "sample_size"
                 and t.category in ("Two independent samples t-test", "One-way ANOVA",
                                    "Cox proportional-hazards model")]
    assert per_group
    for t in per_group:
        assert not family.grade_value(t, 2 * t.truth.value).correct


# --------------------------------------------------------------------------- official format


def _official_file(tmp_path: Path) -> Path:
    records = [
        {"task_type": "One-sample t-test", "task_id": 1, "estimate_target": "size",
         "question": "How large a sample ... power of 90%?", "answer": 4},
        {"task_type": "Paired t-test", "task_id": 3, "estimate_target": "power",
         "question": "What is the power ...?", "answer": 0.784335026108591},
        {"task_type": "Cox proportional-hazards model", "task_id": 6, "estimate_target": "size",
         "question": "What's the required number ...?", "answer": [557]},
    ]
    path = tmp_path / "test_tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_import_official(tmp_path):
    tasks = NP.import_official(_official_file(tmp_path), "test")
    assert [t.truth.value for t in tasks] == [4, 0.784335026108591, 557]
    assert [t.truth.kind for t in tasks] == ["sample_size", "power", "sample_size"]
    assert len({t.id for t in tasks}) == 3
    for t in tasks:
        ns: dict = {}
        exec(t.truth.solution, ns)
        assert NP.grade_answer(t.truth, ns["answer"]).correct
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task_type": "x", "estimate_target": "size", "question": "q",
                               "answer": 4.5}) + "\n")
    with pytest.raises(ConfigurationError, match="not a valid size"):
        NP.import_official(bad)
    bad.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ConfigurationError, match="missing field"):
        NP.import_official(bad)


def test_auto_source_uses_a_registered_release(tmp_path, data_home):
    path = _official_file(tmp_path)
    home.register(NP.OFFICIAL_KEY, {"kind": "medagentgym_release",
                                    "tasks": {"test": {"path": str(path), "tasks": 3}}})
    try:
        fam = registry.get_family("npowerai", seed=99)
        assert fam.resolved_source() == "official"
        assert len(fam.load_tasks("test")) == 3
        with pytest.raises(ConfigurationError, match="no 'train' split"):
            fam.load_tasks("train")
    finally:
        home.unregister(NP.OFFICIAL_KEY)


# --------------------------------------------------------------------------- environment


def test_environment_oracle_and_cheats(tasks, data_home):
    """One sandbox (science preload) for all episodes: the oracle of one task per family and
    target through the real environment, then cheats on one task."""
    import medagentgym as mag
    from medagentgym.sandbox import available_providers

    sample = [next(t for t in tasks if t.category == c and t.metadata["estimate_target"] == g)
              for c in NP.TASK_TYPES for g in ("size", "power")]
    cache = next(home.tasks_dir("npowerai").glob("synthetic-*.jsonl"))
    env = mag.make("npowerai", "test", tasks=sample, source="synthetic", train_size=96,
                   test_size=60)
    try:
        for task in sample:
            env.reset(options={"task_id": task.id})
            _, reward, done, _, _ = env.step({"action": "validate_code", "params": {
                "code": env.core.family.oracle_code(task)}})
            assert reward == 1 and done, task.id
        task = sample[0]
        env.reset(options={"task_id": task.id})
        _, reward, done, _, info = env.step({"action": "validate_code", "params": {
            "code": f"print({task.truth.value!r})"}})
        assert reward == 0 and not done and info["grade"] is None
        if available_providers()["bwrap"][0]:
            obs, reward, _, _, _ = env.step({"action": "validate_code", "params": {
                "code": f"import os\nanswer = os.path.exists({str(cache)!r})\nprint(answer)"}})
            assert "False" in obs and reward == 0
        _, reward, done, _, _ = env.step({"action": "validate_code", "params": {
            "code": "import statsmodels.api\nanswer = -1"}})  # science preload is there
        assert reward == 0 and not done
        _, reward, done, _, _ = env.step({"action": "validate_code", "params": {
            "code": task.truth.solution}})
        assert reward == 1 and done
    finally:
        env.close()
