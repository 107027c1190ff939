"""BioDSBench (issue 14): the published asserts become probes compared on the host with the
reference's values on the same tables; the tables are synthetic and seeded per episode; gold
scores 1 through the real environment, and exits, overloaded operators, patched pandas,
memorised real-data constants, NaN, empty results and forged output score 0."""

from __future__ import annotations

import json
import os
import random

import pytest

import medagentgym as mag
from medagentgym.tasks import biodsbench as bds
from medagentgym.tasks import biodsbench_probes as bp
from medagentgym.tasks import biodsbench_synth as syn
from medagentgym.tasks import registry
from medagentgym.types import Task

DATA = "/workspace/data"


def _sandbox_ok() -> bool:
    from medagentgym.sandbox import available_providers

    return available_providers()["bwrap"][0]


# --------------------------------------------------------------------------- probes (host)


def _one(test: str) -> bp.Probe:
    probes, problems = bp.parse_tests(test, DATA)
    assert not problems and len(probes) == 1, (problems, probes)
    return probes[0]


def test_assert_forms_become_probes_with_their_comparators():
    p = _one("assert abs(p_value-0.9922734307145751) < 1e-8")
    assert (p.expr, p.cmp, p.tol, p.literal) == ("p_value", "close", 1e-8, 0.9922734307145751)
    p = _one("assert abs(coefficients+0.5454816294446085) < 1e-8")
    assert p.cmp == "close" and p.literal == -0.5454816294446085
    p = _one("assert len(set(x['G'].unique().tolist()) - set(['A', 'B'])) == 0")
    assert p.cmp == "set" and p.expr == "set(x['G'].unique().tolist())"
    assert p.literal == ["A", "B"]
    p = _one("assert df.shape == (5,2)")
    assert (p.cmp, p.literal) == ("equal", [5, 2])
    p = _one("assert a.nunique() in [37,35]")
    assert p.cmp == "in_list" and p.alts == [37, 35]
    p = _one("assert t.shape == (1002, 141) or t.shape == (1001, 141)")
    assert p.cmp == "in_list" and p.alts == [[1002, 141], [1001, 141]]
    p = _one("import lifelines\nassert isinstance(kmf, lifelines.KaplanMeierFitter)")
    assert p.cmp == "type" and p.type_name == "lifelines.KaplanMeierFitter"
    p = _one("assert pvalue < .0001")
    assert (p.cmp, p.member, p.literal) == ("approx", "<", 0.0001)
    p = _one("import pandas as pd\nd = pd.read_csv('/workdir/x.csv')\n"
             "assert counts.equals(d['SEX'].value_counts())")
    assert (p.cmp, p.expr) == ("equal", "counts")
    # set-up names derived from the agent's variables are inlined; /workdir is the data dir
    p = _one("cols = out.reset_index().columns.tolist()\nassert 'PATIENT_ID' in cols")
    assert p.cmp == "contains" and p.member == "PATIENT_ID"
    assert p.expr == "out.reset_index().columns.tolist()"
    p = _one("import pandas as pd\ng = pd.read_csv('/workdir/c.csv')['H'].tolist()\n"
             "assert all(x in out.columns for x in g)")
    assert p.weak and DATA + "/c.csv" in p.expr and "__import__('pandas'" in p.expr


def test_an_oncoprint_type_check_also_reads_the_plot():
    probes, problems = bp.parse_tests(
        "import PyComplexHeatmap\nassert isinstance(fig, PyComplexHeatmap.oncoPrint."
        "oncoPrintPlotter)", DATA)
    assert not problems and [p.cmp for p in probes] == ["type", "equal"]
    assert probes[1].expr == "(fig).row_vc.sort_index().to_dict('index')"
    # an empty plotter object (oncoPrintPlotter.__new__) passes the type, not the counts
    assert not bp.matches(probes[1], {"TP53": {"Missense_Mutation": 2}}, None)


def test_comparators_judge_values_on_the_host():
    close = bp.Probe("p", "x", "close", tol=1e-8)
    assert bp.matches(close, 0.5, 0.5 + 1e-10) and not bp.matches(close, 0.5, 0.51)
    assert not bp.matches(close, 0.5, float("nan")) and not bp.matches(close, 0.5, "0.5")
    assert not bp.matches(close, 0.5, None) and not bp.matches(close, 0.5, [0.5])
    eq = bp.Probe("p", "x", "equal")
    assert bp.matches(eq, [5, 2], [5, 2]) and not bp.matches(eq, [5, 2], [2, 5])
    assert bp.matches(eq, {"0.0": 3, "1.0": 2}, {"0": 3, "1": 2})  # key spelling
    assert not bp.matches(eq, 3, float("nan")) and not bp.matches(eq, 3, "3")
    # an object overloading __eq__ comes back as its repr (text): never equal to a number
    assert not bp.matches(eq, 3, "<__main__.Anything object>")
    st = bp.Probe("p", "x", "set")
    assert bp.matches(st, ["A", "B"], ["B", "A"])
    assert not bp.matches(st, ["A", "B"], [])  # an empty result fails a subset test
    assert not bp.matches(st, ["A", "B"], ["A"])
    il = bp.Probe("p", "x", "in_list", alts=[37, 35])
    assert bp.matches(il, 20, 20) and bp.matches(il, 20, 18) and bp.matches(il, 20, 22)
    assert not bp.matches(il, 20, 19)
    ty = bp.Probe("p", "x", "type", type_name="lifelines.KaplanMeierFitter")
    mro = ["lifelines.fitters.kaplan_meier_fitter.KaplanMeierFitter", "builtins.object"]
    assert bp.matches(ty, None, mro)
    assert not bp.matches(ty, None, ["__main__.KaplanMeierFitter", "builtins.object"])
    contains = bp.Probe("p", "x", "contains", member="PATIENT_ID")
    assert bp.matches(contains, None, ["PATIENT_ID", "A"])
    assert not bp.matches(contains, None, "PATIENT_ID")
    huge = "x" * (bp.MAX_VALUE_CHARS + 10)
    assert not bp.matches(eq, huge, huge)


def test_published_constants_check_real_data_values():
    close = bp.Probe("p", "x", "close", tol=1e-8, literal=0.25, has_literal=True)
    assert bp.check_published(close, 0.25) and not bp.check_published(close, 0.3)
    st = bp.Probe("p", "x", "set", literal=["A", "B"], has_literal=True)
    assert bp.check_published(st, ["A"]) and not bp.check_published(st, ["C"])
    th = bp.Probe("p", "x", "approx", literal=1e-4, has_literal=True, member="<")
    assert bp.check_published(th, 1e-5) and not bp.check_published(th, 0.2)
    assert bp.check_published(bp.Probe("p", "x", "equal"), 1) is None


# --------------------------------------------------------------------------- synthetic tables


@pytest.fixture(scope="module")
def published(mirror):
    root = mirror / "biodsbench"
    if not root.is_dir():
        pytest.skip("the BioDSBench mirror is not available")
    return {"rows": bds.read_published(root), "schemas": syn.load_schemas(root)}


def test_split_and_probes_of_the_published_tasks(published):
    rows = published["rows"]
    assert len(rows) == 99
    assert sum(r["split"] == "train" for r in rows) == 50
    assert sum(r["split"] == "test" for r in rows) == 49
    for r in rows:
        probes, problems = bp.parse_tests(r["test_cases"] or "", DATA)
        assert probes and not problems, (r["unique_question_ids"], problems)
        assert any(not p.weak for p in probes), r["unique_question_ids"]
        for p in probes:  # nothing expected is in a probe's text
            if p.has_literal and isinstance(p.literal, float):
                assert repr(p.literal) not in p.expr


def test_tables_are_linked_and_differ_per_seed(published):
    schemas = published["schemas"]["32437664"]
    a = syn.generate_study(schemas, {}, 1)
    b = syn.generate_study(schemas, {}, 2)
    again = syn.generate_study(schemas, {}, 1)
    assert a["data_mutations"].equals(again["data_mutations"])  # a seed is reproducible
    pat, samp = a["data_clinical_patient"], a["data_clinical_sample"]
    assert pat["PATIENT_ID"].is_unique and samp["SAMPLE_ID"].is_unique
    assert set(samp["PATIENT_ID"]) <= set(pat["PATIENT_ID"])
    assert set(a["data_mutations"]["Tumor_Sample_Barcode"]) <= set(samp["SAMPLE_ID"])
    cna = a["data_cna"]
    assert cna.columns[0] == "Hugo_Symbol" and set(cna.columns[1:]) <= set(samp["SAMPLE_ID"])
    for col in ("OS_MONTHS", "OS_STATUS", "PFS_MONTHS", "PFS_STATUS"):
        if col in pat:
            assert pat[col].notna().all(), col  # survival columns have no gaps
    assert a["data_clinical_patient"].shape != b["data_clinical_patient"].shape or \
        not a["data_clinical_patient"].equals(b["data_clinical_patient"])
    assert set(a["data_clinical_patient"]["PATIENT_ID"]).isdisjoint(
        b["data_clinical_patient"]["PATIENT_ID"]) or len(pat) < 5


def test_reference_literals_occur_in_the_tables(published):
    row = next(r for r in published["rows"] if r["unique_question_ids"] == "30742119_3")
    code = bds.reference_code(row)
    schemas = published["schemas"]["30742119"]
    lits = syn.code_literals(code, schemas)
    assert {"BRAF", "PTPN11", "TP53"} <= lits["Hugo_Symbol"]
    assert "Yes" in lits["RESPONSE"]
    t = syn.generate_study(schemas, lits, 5)
    assert {"BRAF", "TP53"} <= set(t["data_mutations"]["Hugo_Symbol"])
    assert "Yes" in set(t["data_clinical_patient"]["RESPONSE"])


def test_fixes_apply_and_paths_point_at_the_data(published):
    for r in published["rows"]:
        code = bds.reference_code(r)
        assert "/workdir" not in code
    fixed = {r["unique_question_ids"]: bds.reference_code(r) for r in published["rows"]
             if r["unique_question_ids"] in bds.FIXES}
    assert set(fixed) == set(bds.FIXES)
    assert "from lifelines import KaplanMeierFitter" in fixed["28472509_4"]
    assert "write_image" not in fixed["37699004_1"]


# --------------------------------------------------------------------------- the environment


@pytest.fixture(scope="module")
def tasks(mirror, tmp_path_factory):
    if not (mirror / "biodsbench").is_dir():
        pytest.skip("the BioDSBench mirror is not available")
    if not _sandbox_ok():
        pytest.skip("bubblewrap cannot run here (expectations come from a sandboxed run)")
    from medagentgym.data import home
    from medagentgym.data.sources import pull

    saved = os.environ.get(home.ENV_VAR)
    os.environ[home.ENV_VAR] = str(tmp_path_factory.mktemp("biodsbench_home"))
    registry.clear_cache()
    try:
        pull("biodsbench", mirror)
        fam = registry.get_family("biodsbench")
        yield {"test": fam.load_tasks("test"), "train": fam.load_tasks("train"), "family": fam}
    finally:
        registry.clear_cache()
        if saved is None:
            os.environ.pop(home.ENV_VAR, None)
        else:
            os.environ[home.ENV_VAR] = saved


def test_tasks_are_built_with_probes_and_no_expectation(tasks):
    test, train = tasks["test"], tasks["train"]
    assert len(test) + len(train) >= 90
    assert len(test) + len(train) + len(tasks["family"].excluded()) == 99
    for t in [*test, *train]:
        assert t.id.startswith(f"biodsbench-{t.split}-")
        spec = t.truth.value
        assert spec["mode"] == "synthetic" and "expected" not in spec
        assert t.inputs == {bds.MOUNT: t.inputs[bds.MOUNT]}
        assert DATA in t.goal


def _by_uid(tasks, uid: str) -> Task:
    return next(t for t in [*tasks["test"], *tasks["train"]] if t.provenance.original_id == uid)


def _code(source: str) -> str:
    return json.dumps({"action": "validate_code", "params": {"code": source}})


@pytest.fixture(scope="module")
def env(tasks):
    e = mag.make("biodsbench", "test", tasks=[*tasks["test"], *tasks["train"]])
    yield e
    e.close()


def _episode(env, task: Task, code: str) -> tuple[float, str]:
    env.reset(options={"task_id": task.id})
    obs, reward, _done, _, _info = env.step(_code(code))
    return reward, obs


#: a fast sample: KM survival, a published float constant, counts, a set
SAMPLE = ("32437664_3", "25303977_7", "29713087_4", "25303977_3")


def test_gold_scores_one_through_the_environment(env, tasks):
    for uid in SAMPLE:
        task = _by_uid(tasks, uid)
        reward, obs = _episode(env, task, task.truth.solution)
        assert reward == 1.0, (uid, obs[-800:])
        assert "mounted" not in obs


def test_cheats_score_zero(env, tasks):
    task = _by_uid(tasks, "25303977_7")  # assert abs(p_value - 0.99227...) < 1e-8
    gold = task.truth.solution
    cheats = {
        "exit 0 instead of the analysis": "import os\nos._exit(0)\n",
        "exit 0 after the analysis (the tests never run)": gold + "\nimport os\nos._exit(0)\n",
        "sys.exit": "import sys\nsys.exit(0)\n",
        "memorised real-data constant": "p_value = 0.9922734307145751\n",
        "NaN": "p_value = float('nan')\n",
        "nothing": "pass\n",
        "an object that equals everything":
            "class A:\n    __eq__ = lambda s, o: True\n    __abs__ = lambda s: 0\n"
            "    __sub__ = lambda s, o: s\n    __lt__ = lambda s, o: True\n"
            "    def __float__(self): return 0.0\np_value = A()\n",
        "forged probe output": "print(json.dumps({'probes': {'p0': {'value': 0.5, 'type': "
                               "'float'}}}))\nimport json\np_value = 0.123\n",
        "patched pandas": "import pandas as pd\npd.Series.__eq__ = lambda s, o: True\n"
                          "pd.DataFrame.equals = lambda s, o: True\np_value = 0.5\n",
    }
    env.reset(options={"task_id": task.id})  # one episode: every failed step goes on
    for name, code in cheats.items():
        obs, reward, done, _, _ = env.step(_code(code))
        assert reward == 0.0 and not done, (name, obs[-600:])
        assert "0.99227" not in obs.replace(code, "")  # the verdict never quotes a constant
    # the gold still scores after the cheats (no execution changed what the next one sees)
    obs, reward, done, _, _ = env.step(_code(gold))
    assert reward == 1.0 and done, obs[-600:]


def test_empty_results_and_published_constants_fail_elsewhere(env, tasks):
    task = _by_uid(tasks, "25303977_3")  # set of genes, ratio sum, count sum
    empty = ("import pandas as pd\nmutated_genes = pd.DataFrame({'Hugo_Symbol': [], "
             "'Ratio': [], 'Count': []})\n")
    assert _episode(env, task, empty)[0] == 0.0
    published = ("import pandas as pd\nmutated_genes = pd.DataFrame({'Hugo_Symbol': "
                 "['TTN'], 'Ratio': [8.564102564102564], 'Count': [334]})\n")
    assert _episode(env, task, published)[0] == 0.0
    task = _by_uid(tasks, "29713087_4")  # mutation_per_patient: Count sum and shape
    assert _episode(env, task, "mutation_per_patient = None\n")[0] == 0.0


def test_each_episode_serves_other_tables(env, tasks):
    task = _by_uid(tasks, "28472509_0")  # assert n == <number of patients>; published: 19
    seen = []
    for _ in range(3):
        env.reset(options={"task_id": task.id})
        obs, *_ = env.step(_code(
            f"import pandas as pd\nd = pd.read_csv('{DATA}/data_clinical_patient.csv')\n"
            "print(len(d), sorted(d['PATIENT_ID'])[:3])"))
        seen.append(obs.strip().splitlines()[0])
    assert len(set(seen)) == 3, seen  # other patients every episode
    assert not any(s.startswith("19 ") for s in seen)  # never the published count


def test_nothing_expected_is_readable_in_the_sandbox(env, tasks):
    task = _by_uid(tasks, "32437664_3")
    env.reset(options={"task_id": task.id})
    obs, *_ = env.step(_code(
        "import os\nout = []\nfor root in ('/workspace', '/tmp', '/data/biodsbench'):\n"
        "    for d, _, fs in os.walk(root):\n        out += [os.path.join(d, f) for f in fs]\n"
        "print(sorted(out))"))
    listed = obs.split("\n")[0]
    assert ".png" not in listed and "_ref" not in listed  # the reference's outputs are gone
    assert "jsonl" not in listed


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 99 episodes, each running the reference twice
def test_gold_scores_one_on_every_kept_task(env, tasks):
    every = [*tasks["test"], *tasks["train"]]
    random.Random(14).shuffle(every)
    failures = []
    for task in every:
        reward, obs = _episode(env, task, task.truth.solution)
        if reward != 1.0:
            failures.append((task.provenance.original_id, obs[-300:]))
    assert not failures, failures


# --------------------------------------------------------------------------- real-data mode


@pytest.mark.slow
def test_real_data_mode_uses_the_published_constants(mirror, tmp_path, monkeypatch):
    """A user's studies folder (datahub ``.txt`` with ``#`` headers): expectations are computed
    once at build time on those tables and the published constants must hold; tasks whose
    tables are missing or whose reference disagrees with the published test are excluded."""
    if not (mirror / "biodsbench").is_dir() or not _sandbox_ok():
        pytest.skip("needs the BioDSBench mirror and the sandbox")
    from medagentgym.data import home
    from medagentgym.data.sources import pull

    monkeypatch.setenv(home.ENV_VAR, str(tmp_path / "home"))
    registry.clear_cache()
    pull("biodsbench", mirror)
    study = tmp_path / "studies" / "odg_msk_2017"  # PMID 28472509 in the published metadata
    study.mkdir(parents=True)
    rows = ["#Patient Identifier\tAge", "#comment\tcomment", "PATIENT_ID\tAGE"]
    rows += [f"P-{i:04d}\t{40 + i}" for i in range(19)]  # the published `n == 19`
    (study / "data_clinical_patient.txt").write_text("\n".join(rows) + "\n")
    fam = registry.get_family("biodsbench", studies=tmp_path / "studies")
    tasks = [*fam.load_tasks("test"), *fam.load_tasks("train")]
    reasons = {e["task"]: e["reason"] for e in fam.excluded()}
    assert "28472509_0" in {t.provenance.original_id for t in tasks}, reasons.get("28472509_0")
    assert "is not in" in reasons["32437664_3"]  # a study the folder does not hold
    assert "reference fails" in reasons["28472509_5"]  # needs data_cna.csv
    task = next(t for t in tasks if t.provenance.original_id == "28472509_0")
    assert task.truth.value["mode"] == "real" and task.truth.value["expected"]["p0"] == 19
    env = mag.make("biodsbench", task.split, tasks=[task], studies=tmp_path / "studies")
    try:
        assert _episode(env, task, task.truth.solution)[0] == 1.0
        assert _episode(env, task, "n = 18")[0] == 0.0
        assert _episode(env, task, "n = 19")[0] == 1.0  # the published constant is the truth
    finally:
        env.close()
        registry.clear_cache()
