"""EHRCon: generated notes and verified inconsistencies, an independent checker that agrees
with every label, grading once on the boolean (constants earn half, flipping after feedback
earns nothing), a note-only detector near chance, and the credentialed-release importer."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import random
from collections import Counter
from pathlib import Path

import pytest

import medagentgym as mag
from medagentgym.errors import ConfigurationError
from medagentgym.tasks import ehrcon as E
from medagentgym.tasks import ehrcon_notes as G
from medagentgym.tasks import registry
from medagentgym.tasks.ehrcon_oracle import ehrcon_check
from medagentgym.types import GroundTruth

ROOT = Path(__file__).resolve().parents[2]
MIRROR = ROOT.parent / "shared" / "data"
BENCHMARK = ROOT / "benchmarks" / "ehrcon_leakage.py"
OPTS = {"database": "synthetic"}


@pytest.fixture(scope="module")
def data_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("ehrcon_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDAGENTGYM_HOME", str(root))
        registry.clear_cache()
        yield root
    registry.clear_cache()


@pytest.fixture(scope="module")
def family(data_home):
    return registry.get_family("ehrcon", **OPTS)


@pytest.fixture(scope="module")
def splits(family):
    return {s: family.load_tasks(s) for s in ("train", "test")}


def _host_paths(family, task):
    md = task.metadata
    return str(family.notes_dir() / f"{md['note_id']}.txt"), str(family.db.path)


def _truth(inconsistent: bool, n: int) -> GroundTruth:
    return GroundTruth(kind="consistency", value={"inconsistent": inconsistent, "n_fields": n})


# --------------------------------------------------------------------------- the tasks


def test_sizes_balance_categories_and_patient_split(splits):
    sizes = {s: len(v) for s, v in splits.items()}
    # the paper's 3,229 / 976 (the records of the 100-patient synthetic database allow it)
    assert sizes == {"train": 3229, "test": 976}
    for split, tasks in splits.items():
        share = sum(t.truth.value["inconsistent"] for t in tasks) / len(tasks)
        assert abs(share - 0.5) <= 0.02, (split, share)
        cats = Counter(t.category for t in tasks)
        assert set(cats) <= set(E.CATEGORIES) and cats["numeric"] and cats["existence"]
        for c, n in cats.items():
            pos = sum(t.truth.value["inconsistent"] for t in tasks if t.category == c)
            assert abs(pos - (n - pos)) <= 1, (split, c, pos, n)
    subjects = {s: {t.metadata["subject_id"] for t in v} for s, v in splits.items()}
    assert not subjects["train"] & subjects["test"]
    ids = [t.id for v in splits.values() for t in v]
    assert len(ids) == len(set(ids))


def test_tasks_name_note_line_and_entity_and_mount_data_read_only(family, splits):
    notes = family.notes_dir()
    for t in splits["test"][:200]:
        md = t.metadata
        lines = (notes / f"{md['note_id']}.txt").read_text().splitlines()
        line = lines[md["line"] - 1]
        assert md["entity"] in line and line in t.goal
        assert f"Note {md['note_id']}" in t.goal and f"line {md['line']}" in t.goal
        assert t.inputs == {"/data/mimic_iii.db": str(family.db.path),
                            "/data/notes": str(notes), "/data/mimic_iii": str(family.db.csv_dir)}
        assert "truth" not in t.model_dump() and "changed" not in json.dumps(t.model_dump())
    text = " ".join(p.read_text().lower() for p in notes.glob("*.txt"))
    assert "consistent" not in text and "changed" not in text  # no label in any note


def test_generation_is_deterministic_by_seed(family):
    rec = G.load_records(family.db.path)
    hadms = G.split_subjects(rec, 0, 0.25)["test"]

    def build(seed):
        rng = random.Random(seed)
        return G.render_notes(G.draw_mentions(rec, hadms, 120, rng), rec, rng)[0]

    assert build(1) == build(1) and build(1) != build(2)


def test_independent_checker_agrees_with_every_label(family, splits):
    """The validate oracle re-reads each line and queries the tables; it is given the note,
    the line and the entity, never the label."""
    for t in splits["test"]:
        note, db = _host_paths(family, t)
        got = ehrcon_check(note, t.metadata["line"], t.metadata["entity"], db)
        assert got == t.truth.value, (t.id, t.goal, got, t.truth.value)
    code = family.oracle_code(splits["test"][0])
    assert "ehrcon_check(" in code and '"inconsistent": True' not in code.split("\n\n")[-1]


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize("answer", [
    {"inconsistent": True, "n_fields": 2}, {"inconsistent": True}, {"Inconsistent": "yes",
                                                                     "n fields": "2"},
    {"is_inconsistent": 1, "n_fields": 2.0}, '{"inconsistent": true, "n_fields": 2}',
    "{'inconsistent': True, 'n_fields': 2}", [{"inconsistent": True, "n_fields": 2}],
    (True, 2), [[True, 2]], {"inconsistent": "Inconsistent", "n_fields": 1},
])
def test_equivalent_forms_of_the_gold_are_correct(answer):
    grade = E.grade_answer(_truth(True, 2), answer)
    assert grade.correct and grade.score == 1.0, grade


@pytest.mark.parametrize("answer", [
    True, False, 1, 0, "true", "yes", "inconsistent", None, [], {}, [True, False], [1, 2],
    {"inconsistent": True, "n_fields": 0}, {"inconsistent": False, "n_fields": 2},
    {"inconsistent": True, "consistent": False}, {"inconsistent": [True, False]},
    {"inconsistent": "maybe"}, {"inconsistent": True, "n_fields": -1},
    {"inconsistent": True, "n_fields": True}, "the answer is true", "{" * 5000,
    {"inconsistent": True, "n_fields": 10**400}, {("inconsistent",): True},
])
def test_unreadable_and_self_contradicting_answers_are_wrong_and_not_counted(answer):
    grade = E.grade_answer(_truth(True, 2), answer)
    assert not grade.correct and grade.score == 0.0
    assert not grade.detail.startswith(E.ANSWERED)  # not the episode's final answer
    assert "unreadable" in grade.reason


def test_wrong_answer_feedback_is_short_and_count_is_reported_not_graded():
    gold = _truth(True, 2)
    wrong = E.grade_answer(gold, {"inconsistent": False, "n_fields": 0})
    assert not wrong.correct and wrong.reason == "not correct"
    right = E.grade_answer(gold, {"inconsistent": True, "n_fields": 1})
    assert right.correct and "count differs" in right.reason
    assert "gold=True,2" in right.detail and "pred=True,1" in right.detail


def test_constant_answers_score_half_plain_constants_nothing(family, splits):
    tasks = splits["test"]
    for flag, n in ((True, 1), (False, 0)):
        rate = sum(E.grade_answer(t.truth, {"inconsistent": flag, "n_fields": n}).score
                   for t in tasks) / len(tasks)
        assert abs(rate - 0.5) <= 0.02, (flag, rate)
    for constant in (True, False, 1, 0, "true", "false", "yes", "no", None, "", [], {}):
        assert sum(E.grade_answer(t.truth, constant).score for t in tasks) == 0, constant


def test_hostile_values_never_raise():
    from tests.graders.hostile import HOSTILE, hostile

    for name in HOSTILE:
        grade = E.grade_answer(_truth(False, 0), hostile(name))
        assert not grade.correct and len(grade.reason) <= 1000, name


# --------------------------------------------------------------------------- episodes


def _sandbox_ok() -> bool:
    from medagentgym.sandbox import available_providers

    return available_providers()["bwrap"][0]


def _answer(flag: bool, n: int) -> dict:
    return {"action": "validate_code",
            "params": {"code": f"answer = {{'inconsistent': {flag}, 'n_fields': {n}}}"}}


@pytest.mark.skipif(not _sandbox_ok(), reason="the sandbox cannot run here")
def test_first_readable_answer_is_final_so_flipping_earns_nothing(family, splits):
    task = next(t for t in splits["test"] if t.truth.value["inconsistent"])
    env = mag.make("ehrcon", "test", tasks=[task], **OPTS)
    try:
        # wrong first, then the right answer: the episode earns nothing
        env.reset(options={"task_id": task.id})
        _, r1, term, _, info = env.step(_answer(False, 0))
        assert (r1, term, info["grade"]["correct"]) == (0.0, False, False)
        assert "not correct" in info["grade"]["reason"]
        _, r2, term, _, info = env.step(_answer(True, 1))
        assert r2 == 0.0 and not info["grade"]["correct"] and not info["success"]
        assert "first answer is final" in info["grade"]["reason"]
        # printing "true" is not an answer; an unreadable answer does not use the turn up
        env.reset(options={"task_id": task.id})
        _, r, _, _, info = env.step({"action": "validate_code",
                                     "params": {"code": "print('true')"}})
        assert r == 0.0 and info["grade"] is None
        _, r, _, _, info = env.step({"action": "validate_code",
                                     "params": {"code": "answer = True"}})
        assert r == 0.0 and "unreadable" in info["grade"]["reason"]
        _, r, term, _, info = env.step(_answer(True, 1))
        assert r == 1.0 and term and info["success"]
    finally:
        env.close()
    env = mag.make("ehrcon", "test", tasks=[task], protocol="submit", **OPTS)
    try:
        env.reset(options={"task_id": task.id})
        _, r, term, _, _ = env.step({"action": "submit", "params": {
            "code": "answer = {'inconsistent': False, 'n_fields': 0}"}})
        assert r == 0.0 and term
    finally:
        env.close()


# --------------------------------------------------------------------------- leakage


def test_note_only_detector_is_near_chance(family, splits):
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("ehrcon_leakage", BENCHMARK)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.run(splits["train"], splits["test"], family.notes_dir())
    assert report["auroc_logistic"] <= 0.6 and report["auroc_boosting"] <= 0.6, report
    assert report["train_auroc_logistic"] > 0.6  # the detector can learn; the test is honest


# --------------------------------------------------------------------------- the release


def _fake_release(root: Path) -> Path:
    src = root / "release"
    (src / "notes").mkdir(parents=True)
    (src / "notes" / "1001.txt").write_text(
        "Discharge summary\nAdmission 5001.\nPotassium 4.1 on 2101-01-02.\n"
        "Started vancomycin 1 g IV.\n")
    (src / "notes" / "1002.txt").write_text("Nursing note\nHeparin drip continued.\n")
    records = [
        {"note_id": 1001, "hadm_id": 5001, "entity": "Potassium", "inconsistent": False,
         "line": 3, "category": "numeric", "split": "test"},
        {"note_id": "1001", "hadm_id": 5001, "entity": "vancomycin", "label": "inconsistent",
         "fields": ["dose", "route"], "split": "test"},  # no line: found by the entity
        {"note_id": "1002", "hadm_id": 5002, "entity": "Heparin", "label": "consistent",
         "split": "train"},
        {"note_id": "1002", "hadm_id": 5002, "entity": "insulin", "label": "consistent"},
    ]
    (src / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return src


def test_release_importer_and_its_refusals(tmp_path):
    home = tmp_path / "home"
    src = _fake_release(tmp_path)
    out = E.import_release(src, home)
    manifest = json.loads((out.parent / "release.manifest.json").read_text())
    assert manifest["tasks"] == 3 and manifest["skipped"]["entity not in note"] == 1
    fam = registry.get_family("ehrcon", source="release", database="synthetic", home=home)
    test = fam.load_tasks("test")
    assert [t.metadata["line"] for t in test] == [3, 4]
    assert [t.truth.value for t in test] == [{"inconsistent": False, "n_fields": 0},
                                             {"inconsistent": True, "n_fields": 2}]
    assert test[0].inputs["/data/notes"] == str(out / "notes")
    for t in test:
        oracle = fam.oracle_code(t)
        assert fam.grade_value(t, ast.literal_eval(oracle.split("#")[0].split("=", 1)[1].strip())).correct
    assert len(fam.load_tasks("train")) == 1
    # once imported, the release is the default source (the CLI's `validate ehrcon` uses it)
    assert registry.get_family("ehrcon", home=home).source == "release"
    assert registry.get_family("ehrcon", database="synthetic", home=home).source == "generated"
    assert registry.get_family("ehrcon", home=tmp_path / "other").source == "generated"
    # refusals, one line each
    bad = tmp_path / "bad"
    (bad / "notes").mkdir(parents=True)
    (bad / "records.jsonl").write_text(json.dumps({"entity": "K", "inconsistent": True}) + "\n")
    with pytest.raises(ConfigurationError, match="no note_id"):
        E.import_release(bad, home)
    (bad / "records.jsonl").write_text(json.dumps({"note_id": 7, "entity": "K"}) + "\n")
    with pytest.raises(ConfigurationError, match="note 7 is missing"):
        E.import_release(bad, home)
    with pytest.raises(ConfigurationError, match="no imported EHRCon release"):
        registry.get_family("ehrcon", source="release", database="synthetic",
                            home=tmp_path / "empty").load_tasks("test")


# --------------------------------------------------------------------------- open demo


@pytest.mark.slow
@pytest.mark.skipif(not (MIRROR / "mimic_iii_demo").is_dir(), reason="no MIMIC-III demo mirror")
def test_open_mimic_iii_demo_gives_the_paper_sizes_and_the_checker_agrees(tmp_path):
    from medagentgym.data import home as _home
    from medagentgym.data.importers import import_mimic_iii

    home = tmp_path / "home"
    import_mimic_iii(MIRROR / "mimic_iii_demo", _home.db_path("mimic_iii", home))
    fam = registry.get_family("ehrcon", database="imported", home=home)
    train, test = fam.load_tasks("train"), fam.load_tasks("test")
    assert (len(train), len(test)) == (3229, 976)
    for tasks in (train, test):
        assert abs(sum(t.truth.value["inconsistent"] for t in tasks) / len(tasks) - 0.5) <= 0.02
    assert Counter(t.category for t in test).keys() == set(E.CATEGORIES)
    for t in random.Random(0).sample(test, 250):
        note, db = _host_paths(fam, t)
        assert ehrcon_check(note, t.metadata["line"], t.metadata["entity"], db) == t.truth.value


def test_options_are_checked_in_one_line():
    with pytest.raises(ConfigurationError, match="unknown option 'sizes'"):
        registry.get_family("ehrcon", sizes=3)
    assert asyncio.iscoroutinefunction(E.EhrConFamily.grade)
