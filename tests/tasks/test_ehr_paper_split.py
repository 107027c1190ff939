"""The EHR datasets' default split is the MedAgentGym paper's: its task ids (published without
answers in ``medagentgym_split/``), each instantiated on the database in use, every id that
could not be accounted for by a reason; a valid split carved from train; and answers in every
equivalent form accepted through the real environment, near misses rejected."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest
from typer.testing import CliRunner

import medagentgym as mag
from medagentgym.errors import ConfigurationError
from medagentgym.tasks import ehrsql_instances as ei
from medagentgym.tasks.registry import get_family

FAMILY = {"database": "synthetic"}  # see tests/conftest.py
#: the paper's test sizes (the published files: 581 / 611 / 996 ids; the paper's table says
#: 581 / 610 / 995)
PAPER_TEST = {"mimic_iii": 581, "eicu": 611, "treqs": 996}
REASONS = {"no_template", "unknown_slot", "no_candidate_rows", "no_instance",
           "too_few_distinct", "answer_cap"}


def _published(fam) -> dict[str, list[dict]]:
    paths = ei.paper_split_paths(fam.source_dir(), fam.db_id)
    assert paths is not None, "the mirror's medagentgym_split files were not pulled"
    out = {}
    for split, path in paths.items():
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            out[split] = [json.loads(line) for line in fh if line.strip()]
    return out


@pytest.mark.parametrize("dataset", sorted(PAPER_TEST))
def test_test_split_is_the_papers_ids_with_every_id_accounted_for(mag_home, dataset):
    fam = get_family(dataset, **FAMILY)
    assert fam.selection == "paper"
    published = _published(fam)
    assert len(published["test"]) == PAPER_TEST[dataset]
    by_id = {r["id"]: r for r in published["test"]}
    tasks = fam.load_tasks("test")
    ids = [t.metadata["paper_id"] for t in tasks]
    assert len(set(ids)) == len(ids) and set(ids) <= set(by_id)
    assert all(t.id == f"{dataset}-{t.metadata['paper_id']}" for t in tasks)
    assert all(t.provenance.original_id == t.metadata["paper_id"] for t in tasks)
    summary = fam.audit_summary("test")
    paper = summary["paper_ids"]
    reasons = {k.removeprefix("not_instantiated_"): n for k, n in paper.items()
               if k.startswith("not_instantiated_")}
    print(f"\n{dataset}/test (synthetic): {paper}")
    assert paper["ids"] == len(by_id) and paper["instantiated"] == len(tasks)
    assert paper["not_instantiated"] == len(by_id) - len(tasks) == sum(reasons.values())
    assert set(reasons) <= REASONS
    assert len(tasks) >= 0.5 * len(by_id)  # a 100-patient database answers most of them
    # an id that kept its published values asks the published question (TREQS: or
    # MIMICSQL's template wording of the same item, where the paraphrase dropped a value)
    def norm(q: str) -> str:
        return " ".join(q.lower().split())

    same = sum(norm(t.goal) == norm(by_id[t.metadata["paper_id"]]["question"]) for t in tasks)
    assert same >= 0.8 * paper["published_values_kept"] > 0, (same, paper)
    # the audit of the whole build rides along
    assert summary["gold_audit"]["tie_check"] == "reversed-copy"


@pytest.mark.parametrize("dataset", sorted(PAPER_TEST))
def test_valid_is_carved_from_the_papers_train_ids(mag_home, dataset):
    fam = get_family(dataset, **FAMILY)
    train_ids = [r["id"] for r in _published(fam)["train"]]
    rest, valid = ei.carve_valid(train_ids, seed=fam.options.seed,
                                 fraction=fam.options.valid_fraction)
    assert len(valid) == round(fam.options.valid_fraction * len(train_ids)) > 0
    assert not set(rest) & set(valid) and set(rest) | set(valid) == set(train_ids)
    # by a hash of each id: the same ids whatever the order they come in
    assert set(ei.carve_valid(train_ids[::-1], seed=fam.options.seed,
                              fraction=fam.options.valid_fraction)[1]) == set(valid)
    assert set(ei.carve_valid(train_ids, seed=1, fraction=0.15)[1]) != set(valid)
    got = {s: {t.metadata["paper_id"] for t in fam.load_tasks(s)} for s in ("train", "valid")}
    assert got["train"] <= set(rest) and got["valid"] <= set(valid) and got["valid"]
    assert fam.audit_summary("valid")["paper_ids"]["ids"] == len(valid)


@pytest.mark.parametrize("dataset", sorted(PAPER_TEST))
def test_splits_never_share_an_instance(mag_home, dataset):
    """One template's instances are distinct across train, valid and test (a question with
    slots is never asked with the same values in two splits)."""
    seen: dict[str, str] = {}
    for split in ("train", "valid", "test"):
        for t in mag.load_tasks(dataset, split, **FAMILY):
            if not t.truth.extra.get("values"):
                continue  # no slots: the published ids themselves repeat the question
            sql = t.truth.extra["sql"]
            assert seen.setdefault(sql, split) == split, (t.id, split, seen[sql])


def test_constant_answers_earn_at_most_2_percent_of_any_split(mag_home):
    """Item 6 of issue 12, over every EHR dataset and split (the test split is also covered
    by tests/tasks/test_ehrsql_instances.py and the registry conformance suite)."""
    constants = (None, 0, 1, 2, 3, 10, True, False, "yes", "no", "", [], [[]], [[0]],
                 [[1]], "0", "1", 0.0, "none", "unknown", "f", "m", "2104-01-01")
    for dataset in ("mimic_iii", "eicu", "treqs", "ehr_seqsql"):
        fam = get_family(dataset, **FAMILY)
        for split in ("train", "valid", "test"):
            tasks = fam.load_tasks(split)
            assert tasks, (dataset, split)
            wins = Counter()
            for value in constants:
                wins[repr(value)] = sum(
                    all(fam.grade_value(t, value, stage=s).correct
                        for s in range(len(fam.stages(t))))
                    for t in tasks)
            worst = wins.most_common(1)[0]
            print(f"\n{dataset}/{split}: {len(tasks)} tasks, best constant {worst}")
            assert worst[1] <= 0.02 * len(tasks), (dataset, split, wins)


def test_paper_selection_needs_single_questions(mag_home):
    fam = get_family("ehr_seqsql", **FAMILY, selection="paper")
    with pytest.raises(ConfigurationError, match="selection='templates'"):
        fam.load_tasks("test")
    assert get_family("ehr_seqsql", **FAMILY).selection == "templates"


def test_cli_reports_the_paper_ids_and_lists_official(mag_home):
    from medagentgym.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["tasks", "list", "mimic_iii", "--database", "synthetic",
                              "--json", "--limit", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["build"]["selection"] == "paper"
    assert out["build"]["paper_ids"]["ids"] == PAPER_TEST["mimic_iii"]
    assert out["total"] == out["build"]["paper_ids"]["instantiated"]
    text = runner.invoke(app, ["tasks", "list", "treqs", "--database", "synthetic",
                               "--limit", "1"]).output
    assert "paper ids: ids 996" in text and "ties dropped" in text
    for command in (["validate"], ["run"], ["rollout"], ["tasks", "list"], ["tasks", "show"],
                    ["export", "rl"]):
        help_text = runner.invoke(app, [*command, "--help"], terminal_width=200).output
        assert "--database" in help_text and "official" in help_text, command


# --------------------------------------------------------------------------- through the env

#: (name, code turning the gold SQL's ``rows`` into an answer); ``rows`` is a list of tuples
EQUIVALENT = {
    "rows": "answer = [list(r) for r in rows]",
    "tuples": "answer = rows",
    "dataframe_other_names": (
        "answer = pd.DataFrame(rows, columns=[f'col_{i}' for i in range(len(rows[0]))])"),
    "dataframe_reversed_columns": (
        "df = pd.DataFrame(rows, columns=[f'c{i}' for i in range(len(rows[0]))])\n"
        "answer = df[df.columns[::-1]]"),
    "columns_permuted": "answer = [list(r)[::-1] for r in rows]",
}
SCALAR_FORMS = {
    "bare": "answer = rows[0][0]",
    "text": "answer = str(rows[0][0])",
    "one_list": "answer = [rows[0][0]]",
    "series": "answer = pd.Series([rows[0][0]], name='whatever')",
}
DATE_FORMS = {
    "month_name": "answer = pd.Timestamp(rows[0][0]).strftime('%B %d, %Y %H:%M:%S')",
    "day_month": "answer = pd.Timestamp(rows[0][0]).strftime('%d %b %Y %H:%M:%S')",
    "us": "answer = pd.Timestamp(rows[0][0]).strftime('%m/%d/%Y %H:%M:%S')",
    "iso_t": "answer = pd.Timestamp(rows[0][0]).isoformat()",
    "datetime": "answer = pd.Timestamp(rows[0][0]).to_pydatetime()",
}
NEAR_MISSES = {
    "one_row_short": "answer = [list(r) for r in rows[:-1]]",
    "extra_row": "answer = [list(r) for r in rows] + [list(rows[0])[:-1] + ['zz-not-there']]",
    "one_column": "answer = [list(r)[:1] for r in rows]",
}
SCALAR_MISSES = {
    "plus_one": "answer = rows[0][0] + 1",
    "text_around": "answer = f'the answer is {rows[0][0]}'",
    "spray": "answer = [rows[0][0] + k for k in range(-3, 4)]",
}
DEDUP_FORMS = {
    "deduplicated": "answer = [list(r) for r in dict.fromkeys(rows)]",
    "dedup_dataframe": "answer = pd.DataFrame(rows).drop_duplicates().set_axis("
                       "[f'x{i}' for i in range(len(rows[0]))], axis=1)",
    "as_given": "answer = rows",
}
DEDUP_MISSES = {
    "dedup_less_one": "answer = [list(r) for r in dict.fromkeys(rows)][:-1]",
}
DATE_MISSES = {
    "minute_off": "answer = (pd.Timestamp(rows[0][0]) + pd.Timedelta(minutes=1)).isoformat()",
    "day_only_other_day": "answer = (pd.Timestamp(rows[0][0]) + pd.Timedelta(days=1)).date()"
                          ".isoformat()",
}


def _code(task, body: str) -> str:
    fam = get_family(task.dataset, **FAMILY)
    return ("import sqlite3\nimport pandas as pd\n"
            f"con = sqlite3.connect('file:{fam.db_file}?mode=ro', uri=True)\n"
            f"rows = con.execute({task.truth.extra['sql']!r}).fetchall()\n" + body + "\n")


def _pick(tasks):
    """Tasks by the shape of their gold: one number, one timestamp, several distinct rows
    of two or more columns (a question that does not ask for a count)."""
    out = {}
    for t in tasks:
        gold, grading = t.truth.value, t.truth.extra.get("grading") or {}
        if not gold or "top_n" in grading:
            continue
        if len(gold) == 1 and len(gold[0]) == 1:
            v = gold[0][0]
            if isinstance(v, int | float) and not isinstance(v, bool) and v not in (0, 1):
                out.setdefault("number", t)
            elif isinstance(v, str) and len(v) == 19 and v[4] == "-" and v[13] == ":":
                out.setdefault("timestamp", t)
        elif len(gold) >= 2 and len(gold[0]) >= 2 and not grading.get("count"):
            distinct = len({json.dumps(r) for r in gold})
            if distinct == len(gold):
                out.setdefault("rows", t)
            elif distinct >= 2:
                out.setdefault("duplicates", t)
    return out


def _reward(env, task, code: str) -> float:
    env.reset(options={"task_id": task.id})
    _, reward, *_ = env.step({"action": "validate_code", "params": {"code": code}})
    return reward


def test_equivalent_forms_pass_and_near_misses_fail_through_the_env(mag_home):
    picks = {}
    for dataset in ("mimic_iii", "treqs", "eicu"):
        for kind, task in _pick(mag.load_tasks(dataset, "test", **FAMILY)).items():
            picks.setdefault(kind, task)
    assert {"number", "timestamp", "rows", "duplicates"} <= set(picks), sorted(picks)
    cases = [(picks["duplicates"], DEDUP_FORMS, 1.0), (picks["duplicates"], DEDUP_MISSES, 0.0),
             (picks["rows"], EQUIVALENT, 1.0), (picks["rows"], NEAR_MISSES, 0.0),
             (picks["number"], SCALAR_FORMS, 1.0), (picks["number"], SCALAR_MISSES, 0.0),
             (picks["timestamp"], DATE_FORMS, 1.0), (picks["timestamp"], DATE_MISSES, 0.0)]
    envs = {}
    try:
        for task, forms, expected in cases:
            if task.dataset not in envs:
                envs[task.dataset] = mag.make(task.dataset, "test", **FAMILY)
            for name, body in forms.items():
                got = _reward(envs[task.dataset], task, _code(task, body))
                assert got == expected, (task.id, name, got)
    finally:
        for env in envs.values():
            env.close()


def test_release_ehr_seqsql_records_are_read_as_whole_tasks(tmp_path):
    """MedAgentGym's EHR-SeqSQL task files (``seed_question`` + ``question``, answer ``ans``)
    load as one question each, with the answer as rows; a file without answers is refused."""
    path = tmp_path / "test_tasks.jsonl"
    recs = [{"seed_question": "what was patient 10's first drug?", "question": "and its route?",
             "ans": ["po"]},
            {"seed_question": "list the drugs of patient 11.", "question": "with their doses?",
             "ans": [["aspirin", 81], ["heparin", 5000]], "id": "s2"}]
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    insts = ei.load_official(path)
    assert [i.question for i in insts] == [
        "what was patient 10's first drug? and its route?",
        "list the drugs of patient 11. with their doses?"]
    assert insts[0].answer == [["po"]] and insts[1].answer == [["aspirin", 81], ["heparin", 5000]]
    assert {i.category for i in insts} == {"sequential"} and not any(i.is_impossible for i in insts)
    path.write_text(json.dumps({**recs[0], "ans": None}) + "\n")
    with pytest.raises(ConfigurationError, match="no stored 'answer'"):
        ei.load_official(path)
