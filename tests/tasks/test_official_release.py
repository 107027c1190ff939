"""Paper-fidelity mode: the official MedAgentGym release's task files and stored answers.

The real release needs credentialed data, so the test writes a release in its layout
(``data/<dataset>/<split>_tasks.jsonl`` + the database) from a synthetic database, with
answers stored the way the release stores them, imports it and solves it end to end.
"""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from medagentgym.data import databases
from medagentgym.data.importers import import_medagentgym
from medagentgym.errors import ConfigurationError
from medagentgym.tasks.registry import clear_cache, get_family


@pytest.fixture
def release(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MEDAGENTGYM_HOME", str(home))
    clear_cache()
    db = databases.build_synthetic("mimic_iii", patients=20, seed=3)
    ds = tmp_path / "release" / "data" / "mimic_iii"
    ds.mkdir(parents=True)
    shutil.copy(db, ds / "mimic_iii.db")
    (ds / "mimic_iii.db").chmod(0o644)
    con = sqlite3.connect(ds / "mimic_iii.db")
    rows = con.execute("select subject_id from patients order by subject_id limit 6").fetchall()
    records = []
    for i, (sid,) in enumerate(rows):
        query = f"select count(*) from admissions where admissions.subject_id = {sid}"
        answer = con.execute(query).fetchall()
        records.append({"id": f"q{i}", "db_id": "mimic_iii", "question":
                        f"how many times did patient {sid} visit the hospital?", "query": query,
                        "value": {"patient_id": str(sid)}, "is_impossible": False,
                        "answer": [list(r) for r in answer]})
    con.close()
    for split, recs in (("train", records[:3]), ("valid", records[3:])):
        with open(ds / f"{split}_tasks.jsonl", "w") as fh:
            for r in recs:
                fh.write(json.dumps(r) + "\n")
    import_medagentgym(tmp_path / "release")
    yield records
    clear_cache()


def test_official_tasks_use_stored_answers_and_solve(release):
    fam = get_family("mimic_iii", database="official")
    test = fam.load_tasks("test")
    train = fam.load_tasks("train")
    assert len(test) == 3 and len(train) == 3
    by_q = {r["question"]: r for r in release}
    for task in test:
        stored = by_q[task.goal]["answer"]
        assert task.truth.value == stored
        assert fam.grade_value(task, stored).correct
        assert not fam.grade_value(task, [[10**6]]).correct
        assert "official" in task.provenance.source.lower()

    from medagentgym.agents.oracle import OracleAgent
    from medagentgym.rollout.runner import run_tasks

    trajs = run_tasks("mimic_iii", test, OracleAgent, env_kwargs={"database": "official"})
    assert [t.success for t in trajs] == [True, True, True]


def test_official_without_import_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAGENTGYM_HOME", str(tmp_path))
    clear_cache()
    with pytest.raises(ConfigurationError, match="data import medagentgym"):
        get_family("eicu", database="official").load_tasks("test")



def test_import_refuses_task_files_without_answers(tmp_path, monkeypatch):
    """A questions-only file would grade every task as "must abstain" (a constant None would
    score 100 %): the import refuses it with one line, and registers nothing."""
    monkeypatch.setenv("MEDAGENTGYM_HOME", str(tmp_path / "home"))
    clear_cache()
    ds = tmp_path / "release" / "data" / "mimic_iii"
    ds.mkdir(parents=True)
    recs = [{"id": "q0", "db_id": "mimic_iii", "question": "how many patients?",
             "query": "select count(*) from patients", "is_impossible": False},
            {"id": "q1", "db_id": "mimic_iii", "question": "what is the weather?",
             "query": "", "is_impossible": True}]
    (ds / "valid_tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(ConfigurationError) as err:
        import_medagentgym(tmp_path / "release")
    message = str(err.value)
    assert "\n" not in message and "1 of 2 tasks have no stored 'answer'" in message
    assert "valid_tasks.jsonl" in message
    with pytest.raises(ConfigurationError, match="data import medagentgym"):
        databases.official_record("mimic_iii")


def test_load_official_refuses_missing_answers_and_skips_unanswerable(tmp_path):
    from medagentgym.tasks import ehrsql_instances as ei

    path = tmp_path / "mimic_iii_valid_tasks.jsonl"
    recs = [{"id": "a", "db_id": "mimic_iii", "question": "how many times did patient 1 "
             "visit the hospital?", "query": "select count(*) from admissions",
             "is_impossible": False, "answer": [[2]]},
            {"id": "b", "db_id": "mimic_iii", "question": "what is the weather?", "query": "",
             "is_impossible": True}]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    got = ei.load_official(path)  # answerable only by default (the paper's setting)
    assert [i.id for i in got] == ["a"] and got[0].grading == {"count": True}
    assert [i.id for i in ei.load_official(path, include_impossible=True)] == ["a", "b"]
    recs[0].pop("answer")
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(ConfigurationError, match="1 of 1 answerable tasks have no stored"):
        ei.load_official(path)
    assert ei.load_official(path, require_answers=False)[0].answer is None
