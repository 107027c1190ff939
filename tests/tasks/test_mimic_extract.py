"""MIMIC-Extract (and the ML family through the real environment): hourly data that cannot
leak labels through row counts, ids or order; the importer of all_hourly_data.h5's frames;
the MIMIC-III demo builder; episodes where the test set is scored once, validation feedback
comes first and the agent's filesystem holds no test label."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.conftest import MIRROR

import medagentgym as mag
from medagentgym.tasks import mlehr, mlehr_sources, registry
from medagentgym.tasks.registry import DatasetSpec

N_STAYS = 360


class TinyMlFamily(mlehr.MlEhrFamily):
    """The ML family on one small MIMIC-Extract-like problem (the 4-class ventilation task)."""

    def problems(self):
        probs = mlehr_sources.mimic_extract_synthetic(11, n_stays=N_STAYS)
        return {"test": [p for p in probs if p.name == "vent"]}


TINY = DatasetSpec("tiny_mimic_extract", "tests.tasks.test_mimic_extract:TinyMlFamily",
                   "one small ML task", "tests", options={"suite": "mimic_extract"},
                   splits=("test",))


def _sandbox_ok() -> tuple[bool, str]:
    from medagentgym.sandbox import available_providers

    return available_providers()["bwrap"]


@pytest.fixture(scope="module")
def synthetic():
    return {p.name: p for p in mlehr_sources.mimic_extract_synthetic(2, n_stays=N_STAYS)}


# --------------------------------------------------------------------------- generator


def test_every_stay_has_exactly_24_hourly_rows(synthetic):
    """The number of rows (or which hours exist) says nothing about length of stay or
    death: every stay has hours 0..23, in order, in every split."""
    for prob in synthetic.values():
        for split in ("train", "val", "test"):
            f = prob.features[split]
            assert list(f.columns[:3]) == ["key", "hour", "age"]
            counts = f.groupby("key")["hour"].agg(["count", "min", "max", "nunique"])
            assert (counts["count"] == 24).all() and (counts["nunique"] == 24).all()
            assert (counts["min"] == 0).all() and (counts["max"] == 23).all()
            assert set(f["key"]) == set(prob.keys[split])
            assert len(prob.labels[split]) == len(prob.keys[split])


def test_labels_follow_the_published_definitions(synthetic):
    """mort_icu implies mort_hosp for the same stays; LOS > 7 implies LOS > 3; the
    intervention classes agree with the last observed hour's flag."""
    for name in ("vent", "vaso"):
        prob = synthetic[name]
        f = prob.features["train"]
        last = f[f["hour"] == 23].set_index("key")[name].reindex(prob.keys["train"]).to_numpy()
        y = prob.labels["train"]
        # stay_off / onset start off; wean / stay_on start on
        assert (np.isin(y[last == 0], [0, 1])).all() and (np.isin(y[last == 1], [2, 3])).all()
        assert set(np.unique(y)) == {0, 1, 2, 3}
    for name in ("mort_hosp", "mort_icu", "los_3", "los_7"):
        y = np.concatenate([synthetic[name].labels[s] for s in ("train", "val", "test")])
        assert 0.05 < y.mean() < 0.8, name
        assert synthetic[name].best_auroc > 0.75


def test_reference_on_hourly_data_and_cheats(synthetic, tmp_path):
    prob = synthetic["los_3"]
    d = tmp_path / "los_3"
    mlehr.write_problem(prob, d)
    truth = mlehr.reference_truth(prob, d)
    assert mlehr.degenerate(truth) is None
    keys = truth["test_keys"]
    n = len(keys)
    test = pd.read_csv(d / "test_features.csv")
    observed = test.drop(columns=["key", "hour", "age", "vent", "vaso"]).notna().sum(axis=1)
    per_key = observed.groupby(test["key"]).sum().reindex(keys).to_numpy(float)
    cheats = {"constant": np.full(n, 0.3),
              "row count": test.groupby("key").size().reindex(keys).to_numpy(float) / 24,
              "key value": np.array([int(k, 16) for k in keys], float) / 2**48}
    for label, v in cheats.items():
        raw = pd.DataFrame({"key": keys, "p": v}).to_csv(index=False).encode()
        g = mlehr.grade_predictions(raw, truth)
        assert g.score == 0.0, (label, g.reason)
    # measurement intensity is clinical signal (sicker stays are measured more), not a leak
    raw = pd.DataFrame({"key": keys, "p": per_key / per_key.max()}).to_csv(index=False).encode()
    assert 0.0 <= mlehr.grade_predictions(raw, truth).score < 1.0


# --------------------------------------------------------------------------- importers


def fake_mimic_extract(rng: np.random.Generator, n: int = 120):
    """MIMIC-Extract's three frames, in the layout of all_hourly_data.h5."""
    ids = pd.MultiIndex.from_arrays([np.arange(n) + 1, np.arange(n) + 100, np.arange(n) + 1000],
                                    names=["subject_id", "hadm_id", "icustay_id"])
    los = rng.uniform(0.5, 12, n)
    patients = pd.DataFrame({"mort_hosp": rng.integers(0, 2, n), "mort_icu": 0,
                             "los_icu": los}, index=ids)
    rows, iv = [], []
    for i in range(n):
        for h in range(int(los[i] * 24)):
            rows.append((i + 1, i + 100, i + 1000, h, 80 + rng.normal(), rng.normal() + 7))
            iv.append((i + 1, i + 100, i + 1000, h, int(h > 20 and i % 3 == 0), int(i % 5 == 0)))
    idx_names = ["subject_id", "hadm_id", "icustay_id", "hours_in"]
    v = pd.DataFrame(rows, columns=[*idx_names, "heart rate", "ph"]).set_index(idx_names)
    v.columns = pd.MultiIndex.from_tuples([("heart rate", "mean"), ("ph", "mean")],
                                          names=["LEVEL2", "Aggregation Function"])
    inter = pd.DataFrame(iv, columns=[*idx_names, "vent", "vaso"]).set_index(idx_names)
    return patients, v, inter


def test_mimic_extract_importer_reads_the_frames(tmp_path):
    rng = np.random.default_rng(0)
    patients, vitals, inter = fake_mimic_extract(rng)
    probs = {p.name: p for p in mlehr_sources.mimic_extract_frames(patients, vitals, inter, 0)}
    assert set(probs) == {"mort_hosp", "mort_icu", "los_3", "los_7", "vent", "vaso"}
    cohort = patients[patients["los_icu"] * 24 >= 30]
    mort = probs["mort_hosp"]
    assert sum(len(mort.keys[s]) for s in ("train", "val", "test")) == len(cohort)
    assert sorted(np.concatenate([mort.labels[s] for s in ("train", "val", "test")])) == \
        sorted(cohort["mort_hosp"])
    los7 = np.concatenate([probs["los_7"].labels[s] for s in ("train", "val", "test")])
    assert los7.sum() == (cohort["los_icu"] > 7).sum()
    f = mort.features["train"]
    assert {"heart rate", "ph", "vent", "vaso"} <= set(f.columns)
    assert (f.groupby("key").size() == 24).all()
    # a stay that left the ICU before the window's end has no intervention label
    in_window = (cohort["los_icu"] * 24 > 33).sum()
    assert sum(len(probs["vent"].keys[s]) for s in ("train", "val", "test")) == in_window
    # vent flips on after hour 20 for every third stay: onset never, stay_on for those
    y = np.concatenate([probs["vent"].labels[s] for s in ("train", "val", "test")])
    assert set(np.unique(y)) <= {0, 3}
    with pytest.raises(Exception, match=r"all_hourly_data\.h5"):
        mlehr_sources.mimic_extract_h5(tmp_path / "missing.h5", 0)


@pytest.mark.filterwarnings("ignore:object name is not a valid Python identifier")
def test_mimic_extract_h5_round_trip(tmp_path):
    pytest.importorskip("tables")
    patients, vitals, inter = fake_mimic_extract(np.random.default_rng(1), 40)
    path = tmp_path / "all_hourly_data.h5"
    patients.to_hdf(path, key="patients")
    vitals.to_hdf(path, key="vitals_labs_mean")
    inter.to_hdf(path, key="interventions")
    assert len(mlehr_sources.mimic_extract_h5(path, 0)) == 6


@pytest.mark.skipif(not (MIRROR / "mimic_iii_demo" / "CHARTEVENTS.csv.gz").is_file(),
                    reason="shared data mirror (MIMIC-III demo) not available")
def test_mimic_iii_demo_builder_and_why_it_is_not_a_graded_task(tmp_path):
    """The MIMIC-III demo builds into the same hourly layout, but 97 eligible stays leave a
    43-stay test set on which the reference is indistinguishable from chance."""
    probs = mlehr_sources.mimic_iii_demo_problems(MIRROR / "mimic_iii_demo", 0)
    assert [p.name for p in probs] == ["demo_mort_hosp", "demo_los_3"]
    for prob in probs:
        total = sum(len(prob.keys[s]) for s in ("train", "val", "test"))
        assert total == 97
        f = prob.features["train"]
        assert (f.groupby("key").size() == 24).all()
        assert {"heart_rate", "creatinine", "gcs_total"} <= set(f.columns)
        assert f["heart_rate"].notna().mean() > 0.5
    d = tmp_path / "demo"
    mlehr.write_problem(probs[0], d)
    truth = mlehr.reference_truth(probs[0], d)
    assert mlehr.degenerate(truth) is not None


# --------------------------------------------------------------------------- episodes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    ok, why = _sandbox_ok()
    if not ok:
        pytest.skip(f"the sandbox cannot run here: {why}")
    import os

    from medagentgym.data import home

    root = tmp_path_factory.mktemp("tiny_ml_home")
    saved = os.environ.get(home.ENV_VAR)
    os.environ[home.ENV_VAR] = str(root)
    registry.register(TINY)
    registry.clear_cache()
    try:
        yield registry.load_tasks(TINY.name, "test")
    finally:
        registry._REGISTRY.pop(TINY.name, None)
        registry.clear_cache()
        if saved is None:
            os.environ.pop(home.ENV_VAR, None)
        else:
            os.environ[home.ENV_VAR] = saved


def _step(env, action: str, **params: Any):
    return env.step({"action": action, "params": params})


WALK = r"""
import os
hits, labels_like = [], []
keys = set(open(DATA + '/test_features.csv').read().split('\n')[1].split(',')[:1])
key = next(iter(keys)).encode()
skip = ('/proc', '/sys', '/dev', '/usr', '/lib', '/lib64', '/bin', '/sbin', '/etc')
for root, dirs, files in os.walk('/'):
    if root.startswith(skip) or '/site-packages' in root or '/python3' in root:
        dirs[:] = []
        continue
    for f in files:
        p = os.path.join(root, f)
        if 'label' in f:
            labels_like.append(p)
        try:
            if os.path.getsize(p) < 50_000_000 and key in open(p, 'rb').read():
                hits.append(p)
        except OSError:
            pass
print('HITS', sorted(hits))
print('LABELS', sorted(labels_like))
"""


def test_episode_validation_first_then_test_once(tiny):
    """Paper protocol: runs without predictions.csv are graded 0 and report the validation
    AUROC; a malformed file does not count; the first well-formed file is final (a later
    perfect one changes nothing); check_validation reports without grading."""
    task = tiny[0]
    truth = task.truth.value
    env = mag.make(TINY.name, "test")
    try:
        obs, info = env.reset(options={"task_id": task.id})
        assert "check_validation" in info["allowed_actions"]
        assert "predictions.csv" in obs and "/data/ml" in obs
        data = task.metadata["data_dir"]
        val_code = mlehr.reference_code(data, "val_predictions.csv").replace(
            'features("test")', 'features("val")')
        obs, r, term, _trunc, info = _step(env, "validate_code", code=val_code)
        assert r == 0.0 and not term and "validation AUROC" in obs
        obs, r, term, _, info = _step(env, "check_validation")
        assert r == 0.0 and not term and info["grade"] is None and "validation AUROC" in obs
        bad = "open('predictions.csv', 'w').write('key,p_stay_off\\nabc,0.5\\n')"
        obs, r, term, _, info = _step(env, "validate_code", code=bad)
        assert r == 0.0 and not term and "header" in info["grade"]["reason"]
        cols = truth["columns"]
        const = (f"import pandas as pd\nk = pd.read_csv('{data}/test_features.csv')['key']"
                 f".unique()\npd.DataFrame({{'key': k, **{{c: 0.25 for c in {cols!r}}}}})"
                 ".to_csv('predictions.csv', index=False)")
        obs, r, term, _, info = _step(env, "validate_code", code=const)
        assert r == 0.0 and not term and info["grade"]["score"] == 0.0
        assert "test AUROC 0.5000" in info["grade"]["reason"]
        obs, r, term, _, info = _step(env, "validate_code", code=task.truth.solution)
        assert r == 0.0 and not term and not info["grade"]["correct"]
        assert "scored once" in info["grade"]["reason"]
    finally:
        env.close()


def test_oracle_scores_one_and_the_filesystem_holds_no_test_labels(tiny):
    task = tiny[0]
    truth = task.truth.value
    for protocol in ("paper", "submit"):
        env = mag.make(TINY.name, "test", protocol=protocol)
        try:
            env.reset(options={"task_id": task.id})
            data = task.metadata["data_dir"]
            walk = f"DATA = {data!r}\n" + WALK
            obs, r, term, _, info = _step(env, "validate_code", code=walk)
            hits = json.loads(obs.split("HITS", 1)[1].split("\n", 1)[0].strip().replace("'", '"'))
            labels = json.loads(obs.split("LABELS", 1)[1].split("\n", 1)[0].strip()
                                .replace("'", '"'))
            assert hits == [f"{data}/test_features.csv"], obs
            assert labels == [f"{data}/train_labels.csv", f"{data}/val_labels.csv"], obs
            action = "validate_code" if protocol == "paper" else "submit"
            obs, r, term, _, info = _step(env, action, code=task.truth.solution)
            assert term and r == pytest.approx(1.0) and info["success"], obs
            assert f"{truth['ref_auroc']:.4f}" in info["grade"]["reason"]
        finally:
            env.close()


def test_ml_tasks_describe_the_contract(tiny):
    task = tiny[0]
    fam = registry.get_family(TINY.name)
    assert fam.score_kind == "continuous" and not fam.needs_answer
    assert task.inputs == {mlehr.MOUNT: task.inputs[mlehr.MOUNT]}
    mounted = Path(task.inputs[mlehr.MOUNT]) / task.metadata["problem"]
    assert task.metadata["data_dir"] == f"{mlehr.MOUNT}/vent"
    spec = json.loads((mounted / "task.json").read_text())
    assert spec["prediction_columns"] == [f"p_{c}" for c in mlehr_sources.INTERVENTION_CLASSES]
    assert not any("test_labels" in p.name for p in mounted.iterdir())
    assert "key,p_stay_off,p_onset,p_wean,p_stay_on" in task.goal
    assert task.metadata["score_kind"] == "continuous"


def test_eval_reports_the_mean_score_of_ml_runs(tiny):
    """Trajectories of a continuous-score family say so, and eval shows their mean score."""
    from medagentgym.agents.oracle import OracleAgent
    from medagentgym.eval.metrics import evaluate
    from medagentgym.rollout.runner import run_tasks

    trajs = run_tasks(TINY.name, tiny, OracleAgent, split="test", concurrency=1)
    assert all(t.metadata.get("score_kind") == "continuous" for t in trajs)
    report = evaluate(trajs, resamples=20)["datasets"][TINY.name]
    assert report["continuous"] and report["mean_score"] == pytest.approx(1.0)
