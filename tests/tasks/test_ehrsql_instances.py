"""EHRSQL / MIMICSQL template extraction and re-instantiation on the database in use.

Coverage measured with ``per_template=3``, seed 0 (answerable templates → templates with at
least one instance → templates kept after the answer cap → instances):

=========  ====================================  ====================================
dataset    synthetic, 100 patients                open demo (imported, 100 patients)
=========  ====================================  ====================================
mimic_iii  1322 → 1281 → 1113 (84 %) → 2793        1322 → 1233 → 1084 (82 %) → 2693
eicu       1343 → 1330 → 1181 (88 %) → 3006        1343 → 1061 → 976 (73 %) → 2446 (the
                                                   demo mirror has no ``lab``/``vitalperiodic``)
treqs       721 →  721 →  720 (100 %) → 1796        721 →  721 →  721 (100 %) → 1938
=========  ====================================  ====================================

The answer cap (no single value the whole answer of more than 1.25 % of the instances, so
that a constant answer earns nothing) leaves out most yes/no templates: they can only answer
0/1. Tie-dependent candidates dropped (and resampled): synthetic mimic_iii 120, eicu 2; demo
mimic_iii 415, eicu 307; treqs none. Synthetic numbers move with the generator version.
Templates: EHRSQL v2024-04-27 valid+test (1958 / 1959 answerable items, 894 unanswerable
question templates each); MIMICSQL dev+test of the three variants + MedAgentGym's TREQS
files. Missing templates on the demo are mostly "current ICU stay" / "today" questions (no
such rows). ``test_demo_coverage`` recomputes the demo column when
``MEDAGENTGYM_SLOW_TESTS=1``.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from medagentgym.errors import ConfigurationError
from medagentgym.tasks import ehrsql_instances as E

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
EHRSQL = DATA / "ehrsql"
TREQS = DATA / "treqs_mimicsql"

pytestmark = pytest.mark.skipif(
    not (EHRSQL.is_dir() and TREQS.is_dir()), reason="shared data mirror not available"
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def synth_dbs(tmp_path_factory) -> dict[str, Path]:
    from medagentgym.data.synth import build_eicu, build_mimic_iii, build_treqs

    root = tmp_path_factory.mktemp("ehrsql_synth")
    return {
        "mimic_iii": build_mimic_iii(root / "mimic_iii.sqlite", patients=100, seed=0),
        "eicu": build_eicu(root / "eicu.sqlite", patients=100, seed=0),
        "treqs": build_treqs(root / "treqs.sqlite", patients=100, seed=0),
    }


@pytest.fixture(scope="module")
def items() -> dict[str, list[dict]]:
    return {db: E.load_ehrsql_items(EHRSQL, db) for db in ("mimic_iii", "eicu")}


@pytest.fixture(scope="module")
def templates(items) -> dict[str, list[E.Template]]:
    out = {db: E.load_templates(EHRSQL, db) for db in ("mimic_iii", "eicu")}
    out["treqs"] = E.load_treqs(TREQS)
    return out


def _answerable(tpls: list[E.Template]) -> list[E.Template]:
    return [t for t in tpls if not t.is_impossible]


@pytest.fixture(scope="module")
def instantiated(templates, synth_dbs):
    out = {}
    for db in ("mimic_iii", "eicu", "treqs"):
        out[db] = E.instantiate_with_report(
            _answerable(templates[db]), synth_dbs[db], seed=0, per_template=3
        )
    return out


# --------------------------------------------------------------------------- templates


@pytest.mark.parametrize("db", ["mimic_iii", "eicu"])
def test_template_roundtrip_reproduces_original_sql_and_question(db, items, templates):
    by_id = {it["id"]: it for it in items[db]}
    tpls = _answerable(templates[db])
    answerable = [it for it in items[db] if not it["is_impossible"]]
    assert len(tpls) > 1000
    sql_ok = q_ok = total = 0
    for t in tpls:
        assert t.questions and t.sql
        for q in t.questions:  # every question skeleton names every slot
            assert all("{" + s + "}" in q for s in t.slots), (t.id, q)
        for iid, vals in zip(t.item_ids, t.item_values, strict=True):
            total += 1
            item = by_id[iid]
            try:
                filled = E.fill_sql(t.sql, vals)
                questions = {E.fill_question(q, vals).lower() for q in t.questions}
            except KeyError:
                continue
            sql_ok += filled == E.normalize_sql(item["query"])
            q_ok += bool(questions & {item["question"].lower(), item["template"].lower()})
    print(
        f"\n{db}: {len(tpls)} templates, SQL round trip {sql_ok}/{total}, question {q_ok}/{total}"
    )
    assert total >= 0.99 * len(answerable)
    assert sql_ok >= 0.98 * total
    assert q_ok >= 0.98 * total


def test_template_ids_stable_and_categories(templates):
    again = E.load_templates(EHRSQL, "mimic_iii")
    assert [t.id for t in again] == [t.id for t in templates["mimic_iii"]]
    for db in ("mimic_iii", "eicu"):
        cats = Counter(t.category for t in _answerable(templates[db]))
        assert set(cats) == {
            "admission",
            "diagnosis",
            "procedure",
            "medication",
            "lab",
            "vital",
            "intake_output",
            "microbiology",
            "cost",
        }
        impossible = [t for t in templates[db] if t.is_impossible]
        assert impossible and all(not t.sql and t.category == "unanswerable" for t in impossible)
    assert set(Counter(t.category for t in templates["treqs"])) == {
        "count",
        "average",
        "min_max",
        "retrieval",
    }


def test_time_and_derived_slots():
    item = {
        "id": "x",
        "q_tag": "has_verb the {vital_name} of patient {patient_id} been normal [time_filter_global1]?",
        "t_tag": ["rel-month-since", "", "", "", ""],
        "o_tag": [""] * 9,
        "value": {"patient_id": 30733, "vital_name": "arterial bp mean"},
        "template": "has the arterial bp mean of patient 30733 been normal since 135 month ago?",
        "question": "had since 135 months ago patient 30733's arterial bp mean been normal?",
        "query": "select count(*)>0 from chartevents where chartevents.icustay_id in ( select "
        "icustays.icustay_id from icustays where icustays.hadm_id in ( select admissions.hadm_id "
        "from admissions where admissions.subject_id = 30733 ) ) and chartevents.itemid in ( "
        "select d_items.itemid from d_items where d_items.label = 'arterial bp mean' and "
        "d_items.linksto = 'chartevents' ) and chartevents.valuenum between mean_bp_lower and "
        "mean_bp_upper and datetime(chartevents.charttime) >= datetime(current_time,'-135 month')",
        "is_impossible": False,
    }
    (t,) = E.templates_from_items([item], "mimic_iii")
    assert t.slots == ["n_month", "patient_id", "vital_name"]
    assert "{vital_lower} and {vital_upper}" in t.sql
    assert t.questions == [
        "had since {n_month} months ago patient {patient_id}'s {vital_name} been normal?"
    ]
    vals = {"patient_id": "7", "vital_name": "heart rate", "n_month": "3"}
    sql = E.fill_sql(t.sql, vals, now="2105-12-31 23:59:00")
    assert "between 60.0 and 100.0" in sql and "'-3 month'" in sql and "subject_id = 7 " in sql
    assert "'2105-12-31 23:59:00'" in sql and "current_time" not in sql
    assert E.normalize_sql(item["query"]) == E.fill_sql(t.sql, t.example_values)
    assert E.fill_question(t.questions[0], vals).startswith(
        "had since 3 months ago patient 7's heart rate"
    )


def test_treqs_templates_roundtrip(templates):
    import gzip
    import json

    tpls = templates["treqs"]
    assert len(tpls) > 600
    by_key = {}
    for t in tpls:
        for key, vals in zip(t.item_ids, t.item_values, strict=True):
            by_key[key] = (t, vals)
    path = TREQS / "medagentgym_split" / "treqs_test_tasks_noanswer.jsonl.gz"
    with gzip.open(path, "rt") as fh:
        recs = [json.loads(line) for line in fh]
    ok = 0
    for rec in recs:
        if rec["id"] not in by_key:
            continue
        t, vals = by_key[rec["id"]]
        ok += E.fill_sql(t.sql, vals) == re.sub(r"\s+", " ", rec["query"].strip().lower())
    print(f"\ntreqs: {len(tpls)} templates, SQL round trip {ok}/{len(recs)} MedAgentGym test items")
    assert ok >= 0.97 * len(recs)


# --------------------------------------------------------------------------- instantiation


@pytest.mark.parametrize("db", ["mimic_iii", "eicu", "treqs"])
def test_instances_answers_match_reexecution(db, instantiated, synth_dbs, tmp_path):
    insts, report = instantiated[db]
    print(
        f"\n{db} synthetic: {report.templates} templates -> {report.templates_sampled} "
        f"sampled -> {report.templates_instantiated} kept, {report.instances} instances "
        f"({report.dropped_empty} empty, {report.dropped_tie} tie-dependent dropped, "
        f"{report.answer_capped} left out by the answer cap {report.answer_capped_values}, "
        f"{report.zero_answers} zero answers, unknown slots {report.unknown_slots}, "
        f"{report.seconds:.1f}s)"
    )
    assert report.templates_sampled >= 0.9 * report.templates
    # the answer cap (no value the whole answer of > 1.25 % of instances) leaves out most
    # yes/no templates: they can only answer 0/1
    assert report.templates_instantiated >= 0.8 * report.templates
    assert report.instances == len(insts) >= 1.8 * report.templates
    assert report.unknown_slots == {}
    assert report.tie_check == "reversed-copy"
    assert len({i.id for i in insts}) == len(insts)
    conn = sqlite3.connect(synth_dbs[db])
    rev = sqlite3.connect(E.reversed_copy(synth_dbs[db], tmp_path / "reversed.sqlite"))
    try:
        for inst in insts:
            assert inst.answer, inst
            assert not all(v is None for row in inst.answer for v in row), inst
            assert E.execute_sql(conn, inst.sql) == inst.answer, inst.id
            # tie-safe: the same rows whichever way the database breaks ties
            assert E.rows_key(E.execute_sql(rev, inst.sql)) == E.rows_key(inst.answer), inst.id
            assert inst.grading["count"] == E.asks_count(inst.sql, inst.question)
            assert "{" not in inst.question and "{" not in inst.sql
            for slot, value in inst.values.items():
                shown = E.display_value(slot, value) if db != "treqs" else value
                assert shown.lower() in inst.question.lower() or (
                    db == "treqs" and value.removesuffix(".0") in inst.question
                ), (slot, value, inst.question)
    finally:
        conn.close()
        rev.close()


@pytest.mark.parametrize("db", ["mimic_iii", "eicu", "treqs"])
def test_no_single_value_answers_many_questions(db, instantiated):
    """A constant answer (0, 1, True, "yes", "f"...) matches at most the answer cap's share."""
    insts, report = instantiated[db]
    keys = Counter(k for k in map(E.constant_key, insts) if k is not None)
    top = keys.most_common(3)
    print(f"\n{db}: most common single-value answers {top} of {len(insts)}")
    assert top[0][1] <= E.MAX_ANSWER_SHARE * len(insts) + 1
    yes_no = [i for i in insts if E.is_yes_no(i.sql)]
    assert report.yes_no_instances == len(yes_no)
    if yes_no:  # "yes" and "no" both asked
        assert 0.25 <= report.yes_no_yes / len(yes_no) <= 0.75


def test_top_n_golds_carry_their_ranks(instantiated):
    from medagentgym.graders import ehr_answer_match

    checked = 0
    for db in ("mimic_iii", "eicu"):
        insts, report = instantiated[db]
        tops = [i for i in insts if "top_n" in i.grading]
        assert report.top_n_instances == len(tops) > 100
        wide = [i for i in tops if len(i.answer) > i.grading["top_n"]]
        assert report.top_n_gold_gt_n == len(wide) > 50
        for inst in wide:
            n, ranks = inst.grading["top_n"], inst.grading["ranks"]
            assert len(ranks) == len(inst.answer) and min(ranks) == 1 and max(ranks) <= n
            first_n = [row for _r, row in sorted(zip(ranks, inst.answer, strict=True))][:n]
            assert ehr_answer_match(first_n, inst.answer, inst.grading).correct, inst.id
            assert ehr_answer_match(inst.answer, inst.answer, inst.grading).correct
            assert not ehr_answer_match(first_n[:-1], inst.answer, inst.grading).correct
            checked += 1
    assert checked > 100


def test_tie_dependent_gold_is_dropped(templates, synth_dbs, tmp_path):
    """A constructed tie: every procedure of an admission at the same time, so "the last
    procedure of patient X" depends on how the database orders rows."""
    import shutil

    db = tmp_path / "ties.sqlite"
    shutil.copy(synth_dbs["mimic_iii"], db)
    con = sqlite3.connect(db)
    con.execute(
        "update procedures_icd set charttime = (select min(p.charttime) from procedures_icd p "
        "where p.hadm_id = procedures_icd.hadm_id)"
    )
    con.commit()
    con.close()
    last = [
        t for t in _answerable(templates["mimic_iii"])
        if t.sql.startswith("select d_icd_procedures.short_title")
        and re.search(r"procedures_icd\.charttime (desc|asc) limit 1", t.sql)
    ]
    assert len(last) >= 4
    rev = sqlite3.connect(E.reversed_copy(db, tmp_path / "ties_reversed.sqlite"))

    def tie_dependent(insts):
        return [i for i in insts
                if E.rows_key(E.execute_sql(rev, i.sql)) != E.rows_key(i.answer)]

    unchecked = E.instantiate(last, db, seed=0, tie_check=False, max_answer_share=None)
    assert len(tie_dependent(unchecked)) >= len(unchecked) // 2 > 0  # the ties are real
    checked, report = E.instantiate_with_report(last, db, seed=0, max_answer_share=None)
    assert report.tie_check == "reversed-copy" and report.dropped_tie > 0
    assert tie_dependent(checked) == []
    print(f"\nconstructed ties: {len(tie_dependent(unchecked))}/{len(unchecked)} tie-dependent "
          f"without the check; with it {report.dropped_tie} candidates dropped, "
          f"{len(checked)} kept")
    rev.close()


def test_reversed_copy_reverses_row_order(synth_dbs, tmp_path):
    rev = E.reversed_copy(synth_dbs["treqs"], tmp_path / "r.sqlite")
    a, b = sqlite3.connect(synth_dbs["treqs"]), sqlite3.connect(rev)
    for (table,) in a.execute("select name from sqlite_master where type = 'table' "
                              "and name not like 'sqlite_%'"):
        rows_a = a.execute(f"select * from {table}").fetchall()
        rows_b = b.execute(f"select * from {table}").fetchall()
        assert E.rows_key(rows_a) == E.rows_key(rows_b)
        if len(rows_a) > 1:
            assert rows_b == rows_a[::-1]
    indexes = "select count(*) from sqlite_master where type = 'index'"
    assert b.execute(indexes).fetchone() >= a.execute(indexes).fetchone()
    a.close()
    b.close()


def test_grading_spec():
    spec = E.grading_spec("select count(*) from admissions", "how many visits?")
    assert spec == {"count": True}
    assert E.grading_spec("select drug from prescriptions", "which drugs?") == {"count": False}
    assert E.grading_spec("select gender, days_stay from demographic",
                          "what is the number of days of stay?") == {"count": False}
    assert E.grading_spec("select x from t", "how many times was x given?")["count"]
    top = ("select t1.drug from ( select drug, dense_rank() over ( order by count(*) desc ) "
           "as c1 from prescriptions group by drug ) as t1 where t1.c1 <= 4")
    assert E.grading_spec(top, "top four drugs?") == {"count": False, "top_n": 4}
    assert E.is_yes_no("select count(*)>0 from x") and not E.is_yes_no("select count(*) from x")


def test_correlated_sampling_makes_patient_questions_answerable(instantiated):
    insts, _ = instantiated["mimic_iii"]
    counts = [i for i in insts if i.sql.startswith("select count(") and "patient_id" in i.values
              and not E.is_yes_no(i.sql)]
    nonzero = sum(1 for i in counts if i.answer != [[0]])
    assert counts and nonzero >= 0.9 * len(counts)


def test_instantiation_is_deterministic(templates, synth_dbs):
    tpls = _answerable(templates["eicu"])[::10]
    a = E.instantiate(tpls, synth_dbs["eicu"], seed=0, per_template=2)
    b = E.instantiate(tpls, synth_dbs["eicu"], seed=0, per_template=2)
    c = E.instantiate(tpls, synth_dbs["eicu"], seed=1, per_template=2)
    assert [i.model_dump() for i in a] == [i.model_dump() for i in b]
    assert {i.id for i in a} != {i.id for i in c}
    # without the dataset-wide answer cap, a template's instances do not depend on which other
    # templates are instantiated
    every = E.instantiate(tpls, synth_dbs["eicu"], seed=0, per_template=2, max_answer_share=None)
    alone = E.instantiate(tpls[:3], synth_dbs["eicu"], seed=0, per_template=2,
                          max_answer_share=None)
    assert [i.id for i in alone] == [
        i.id for i in every if i.template_id in {t.id for t in tpls[:3]}]
    assert {i.id for i in a} <= {i.id for i in every}  # the cap only leaves instances out


def test_impossible_and_unknown_slots(templates, synth_dbs):
    imp = [t for t in templates["mimic_iii"] if t.is_impossible][:20]
    assert E.instantiate(imp, synth_dbs["mimic_iii"], seed=0) == []  # answerable only by default
    out = E.instantiate(imp, synth_dbs["mimic_iii"], seed=0, include_impossible=True)
    assert out and all(i.is_impossible and i.answer is None and i.sql == "" for i in out)
    assert all(i.category == "unanswerable" for i in out)
    bogus = _answerable(templates["mimic_iii"])[0].model_copy(
        update={"id": "mimic_iii-bogus", "slots": ["frobnication_name"]}
    )
    insts, report = E.instantiate_with_report([bogus], synth_dbs["mimic_iii"])
    assert insts == [] and report.unknown_slots == {"frobnication_name": 1}
    assert report.skipped == {"unknown_slot": 1}


def test_execute_sql_timeout(synth_dbs):
    conn = sqlite3.connect(synth_dbs["treqs"])
    slow = "with recursive c(x) as (select 1 union all select x + 1 from c) select max(x) from c"
    with pytest.raises(sqlite3.OperationalError):
        E.execute_sql(conn, slow, timeout_s=0.2)
    conn.close()


# --------------------------------------------------------------------------- splits, sequences


def test_split_has_no_template_instance_overlap(instantiated):
    insts = instantiated["mimic_iii"][0] + instantiated["treqs"][0]
    parts = E.split_instances(insts, seed=0, test_fraction=0.25)
    key = lambda i: (i.template_id, tuple(sorted(i.values.items())))  # noqa: E731
    train, test = {key(i) for i in parts["train"]}, {key(i) for i in parts["test"]}
    assert not train & test
    assert len(parts["train"]) + len(parts["test"]) == len(insts)
    assert abs(len(parts["test"]) / len(insts) - 0.25) < 0.03
    # stratified by template: the test split covers most templates, like the full set
    assert len({i.template_id for i in parts["test"]}) >= 0.5 * len({i.template_id for i in insts})
    again = E.split_instances(insts, seed=0, test_fraction=0.25)
    assert [i.id for i in again["test"]] == [i.id for i in parts["test"]]


@pytest.mark.parametrize("db", ["mimic_iii", "eicu"])
def test_sequences_share_the_patient(db, instantiated):
    insts = instantiated[db][0]
    seqs = E.build_sequences(insts, seed=0, length=3)
    assert len(seqs) > 100
    used = Counter()
    for seq in seqs:
        assert len(seq.sub_questions) == 3
        assert len({q.template_id for q in seq.sub_questions}) == 3
        for q in seq.sub_questions:
            assert q.values["patient_id"] == seq.patient_id
            assert seq.patient_id in q.question
            used[q.id] += 1
    assert max(used.values()) == 1
    assert [s.id for s in E.build_sequences(insts, seed=0, length=3)] == [s.id for s in seqs]


# --------------------------------------------------------------------------- official files


def test_load_official_task_files(templates):
    path = EHRSQL / "medagentgym_split" / "mimic_iii_valid_tasks_noanswer.jsonl.gz"
    with pytest.raises(ConfigurationError, match="have no stored 'answer'"):
        E.load_official(path)  # questions only: grading would read every task as "abstain"
    off = E.load_official(path, require_answers=False)
    assert len(off) == 581
    assert all(i.answer is None and i.db_id == "mimic_iii" for i in off)
    assert all("current_time" not in i.sql and "%y" not in i.sql for i in off)
    known = {t.id for t in templates["mimic_iii"]}
    assert sum(i.template_id in known for i in off) >= 0.95 * len(off)
    treqs = E.load_official(TREQS / "medagentgym_split" / "treqs_test_tasks_noanswer.jsonl.gz",
                            require_answers=False)
    assert len(treqs) == 996
    tknown = {t.id for t in templates["treqs"]}
    assert sum(i.template_id in tknown for i in treqs) >= 0.95 * len(treqs)


# --------------------------------------------------------------------------- the datasets

EHR_DATASETS = ("mimic_iii", "eicu", "treqs", "ehr_seqsql")
CONSTANTS = (None, 0, 1, 2, 3, True, False, "yes", "no", [], "", 0.0, "f", "m")


def _wins(fam, tasks, value) -> int:
    return sum(
        all(fam.grade_value(t, value, stage=s).correct for s in range(len(fam.stages(t))))
        for t in tasks
    )


@pytest.mark.parametrize("dataset", EHR_DATASETS)
def test_datasets_answerable_only_and_constants_earn_at_most_2_percent(mag_home, dataset):
    import medagentgym as mag
    from medagentgym.data import home
    from medagentgym.tasks.registry import get_family

    fam = get_family(dataset, database="synthetic")
    for split in ("train", "test"):
        tasks = mag.load_tasks(dataset, split, database="synthetic")
        assert len(tasks) > 200
        assert not any(t.metadata.get("is_impossible") or t.category == "unanswerable"
                       for t in tasks)  # the paper's setting: answerable questions only
        wins = {repr(c): _wins(fam, tasks, c) for c in CONSTANTS}
        print(f"\n{dataset}/{split}: {len(tasks)} tasks, constant answers {wins}")
        assert max(wins.values()) <= 0.02 * len(tasks), wins
    audits = [m.get("gold_audit") for m in map(
        home.read_manifest, home.tasks_dir(dataset).glob("*.jsonl")) if m]
    audit = next(a for a in audits if a)
    assert audit["tie_check"] == "reversed-copy" and audit["instances"] > 0
    assert {"dropped_tie", "answer_capped", "top_n_gold_gt_n", "duplicate_row_golds"} <= set(audit)


def test_abstention_option_adds_unanswerable_questions(mag_home):
    import medagentgym as mag
    from medagentgym.tasks.registry import get_family

    fam = get_family("mimic_iii", database="synthetic", abstention=True)
    tasks = fam.load_tasks("test")
    unanswerable = [t for t in tasks if t.metadata["is_impossible"]]
    answerable = [t for t in tasks if not t.metadata["is_impossible"]]
    assert unanswerable and all(t.category == "unanswerable" for t in unanswerable)
    assert {t.category for t in answerable}.isdisjoint({"unanswerable"})
    # the answerable questions are those of the default (answerable-only) build
    default = mag.load_tasks("mimic_iii", "test", database="synthetic")
    assert {t.id for t in answerable} == {t.id for t in default}
    print(f"\nabstention=True: {len(unanswerable)} of {len(tasks)} test tasks unanswerable")
    for task in unanswerable[:30]:
        assert fam.grade_value(task, None).correct  # a correct abstention is rewarded
        assert fam.grade_value(task, []).correct
        for value in ([[1]], 0, "unknown", list(range(1000))):
            assert not fam.grade_value(task, value).correct
    for task in answerable[:30]:
        assert not fam.grade_value(task, None).correct
    legacy = get_family("mimic_iii", database="synthetic", include_impossible=True)
    assert legacy.include_impossible and not get_family("mimic_iii").include_impossible


# --------------------------------------------------------------------------- demo (slow)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MEDAGENTGYM_SLOW_TESTS") != "1", reason="set MEDAGENTGYM_SLOW_TESTS=1"
)
def test_demo_coverage(templates, tmp_path):
    from medagentgym.data.importers import build_treqs_from_mimic, import_eicu, import_mimic_iii

    mimic_src, eicu_src = DATA / "mimic_iii_demo", DATA / "eicu_demo"
    if not (mimic_src.is_dir() and eicu_src.is_dir()):
        pytest.skip("demo mirror not available")
    dbs = {
        "mimic_iii": import_mimic_iii(mimic_src, tmp_path / "mimic.sqlite").path,
        "eicu": import_eicu(eicu_src, tmp_path / "eicu.sqlite").path,
        "treqs": build_treqs_from_mimic(mimic_src, tmp_path / "treqs.sqlite").path,
    }
    for db, path in dbs.items():
        insts, report = E.instantiate_with_report(_answerable(templates[db]), path, seed=0)
        keys = Counter(k for k in map(E.constant_key, insts) if k is not None)
        print(
            f"\n{db} demo: {report.templates} templates -> {report.templates_sampled} sampled "
            f"-> {report.templates_instantiated} kept, {report.instances} instances "
            f"({report.dropped_tie} tie-dependent candidates dropped, {report.answer_capped} "
            f"left out by the answer cap; most common single values {keys.most_common(3)})"
        )
        assert report.templates_sampled >= 0.75 * report.templates
        assert report.templates_instantiated >= 0.6 * report.templates
        assert report.tie_check == "reversed-copy"
        # constant answers: no single value answers more than the cap's share
        assert keys.most_common(1)[0][1] <= E.MAX_ANSWER_SHARE * len(insts) + 1
