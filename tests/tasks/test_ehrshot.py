"""EHRSHOT (and the shared ML grading): hidden test labels, AUROC against a reference model,
hostile predictions files, cheats, the importer of the real release.

Problems here are small versions of the generators' (a few hundred rows), built in temp
dirs; the full datasets go through tests/tasks/test_conformance_registry.py."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medagentgym.tasks import mlehr, mlehr_sources
from medagentgym.types import Grade

SMALL = {"n_train": 300, "n_val": 100, "n_test": 400, "dim": 8}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(problem, task dir, hidden truth) for a binary, a 4-class and the 14-label task."""
    root = tmp_path_factory.mktemp("ehrshot")
    probs = {p.name: p for p in mlehr_sources.ehrshot_synthetic(3, **SMALL)}
    out = {}
    for name in ("guo_icu", "lab_anemia", "chexpert"):
        d = root / name
        mlehr.write_problem(probs[name], d)
        out[name] = (probs[name], d, mlehr.reference_truth(probs[name], d))
    return out


def csv_bytes(keys, cols, values) -> bytes:
    frame = pd.DataFrame(np.asarray(values, dtype=float).reshape(len(keys), -1), columns=cols)
    frame.insert(0, "key", keys)
    return frame.to_csv(index=False).encode()


def reference_predictions(task_dir: Path, tmp_path: Path) -> bytes:
    out = tmp_path / "pred.csv"
    exec(compile(mlehr.reference_code(str(task_dir), str(out)), "<ref>", "exec"), {})
    return out.read_bytes()


def one_hot(truth) -> np.ndarray:
    y = np.asarray(truth["test_y"])
    if truth["kind"] == "binary":
        return y[:, None].astype(float)
    if truth["kind"] == "multiclass":
        return (y[:, None] == np.arange(len(truth["columns"]))).astype(float)
    return y.astype(float)


# --------------------------------------------------------------------------- metrics


def test_metrics_agree_with_sklearn():
    """Our host-side AUROC / macro AUROC / F1 equal scikit-learn's (an independent
    implementation), ties included."""
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + 0.3 * y, 1)  # many ties
    assert mlehr_sources.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    yc = rng.integers(0, 4, 600)
    p = rng.dirichlet(np.ones(4), 600) + 0.4 * (yc[:, None] == np.arange(4))
    p = p / p.sum(1, keepdims=True)
    ours = mlehr.metrics("multiclass", yc, p)
    assert ours["auroc"] == pytest.approx(roc_auc_score(yc, p, multi_class="ovr"), abs=1e-12)
    assert ours["f1"] == pytest.approx(f1_score(yc, p.argmax(1), average="macro"), abs=1e-12)
    yb = rng.integers(0, 2, (300, 5))
    pb = np.clip(rng.random((300, 5)) * 0.7 + 0.3 * yb, 0, 1)
    ml = mlehr.metrics("multilabel", yb, pb)
    assert ml["auroc"] == pytest.approx(roc_auc_score(yb, pb, average="macro"), abs=1e-12)
    assert ml["f1"] == pytest.approx(f1_score(yb, pb >= 0.5, average="macro"), abs=1e-12)


def test_generators_reach_their_known_best_auroc(built):
    """The reference is below the true posterior's AUROC and well above chance; the true
    posterior is what the generator says it is."""
    for prob, _, truth in built.values():
        assert prob.best_auroc is not None
        assert 0.5 + truth["chance_margin"] < truth["ref_auroc"] < prob.best_auroc + 0.02
        assert 0 < truth["epsilon"] < 0.1
        assert truth["threshold"] == pytest.approx(
            max(truth["ref_auroc"] - truth["epsilon"], 0.5 + truth["chance_margin"]))


# --------------------------------------------------------------------------- grading


@pytest.mark.parametrize("name", ["guo_icu", "lab_anemia", "chexpert"])
def test_reference_scores_one_labels_score_one_inverted_zero(built, name, tmp_path):
    _prob, task_dir, truth = built[name]
    ref = mlehr.grade_predictions(reference_predictions(task_dir, tmp_path), truth)
    assert ref.correct and ref.score == 1.0, ref.reason
    assert "accuracy" in ref.reason and "F1" in ref.reason
    keys, cols = truth["test_keys"], truth["columns"]
    perfect = mlehr.grade_predictions(csv_bytes(keys, cols, one_hot(truth)), truth)
    assert perfect.correct and perfect.score == 1.0
    inverted = mlehr.grade_predictions(csv_bytes(keys, cols, 1 - one_hot(truth)), truth)
    assert not inverted.correct and inverted.score == 0.0
    # a weaker model earns a partial score, below the threshold
    rng = np.random.default_rng(1)
    noisy = 0.12 * one_hot(truth) + rng.random((len(keys), len(cols)))
    half = mlehr.grade_predictions(csv_bytes(keys, cols, noisy / noisy.max()), truth)
    assert 0.0 < half.score < 1.0 and not half.correct, half.reason


@pytest.mark.parametrize("name", ["guo_icu", "lab_anemia", "chexpert"])
def test_constant_majority_random_and_order_cheats_score_zero(built, name):
    prob, task_dir, truth = built[name]
    keys, cols = truth["test_keys"], truth["columns"]
    n, k = len(keys), len(cols)
    train = pd.read_csv(task_dir / "train_labels.csv")
    cheats = {"0.5": np.full((n, k), 0.5), "zeros": np.zeros((n, k)), "ones": np.ones((n, k))}
    if prob.kind == "binary":
        cheats["majority"] = np.full((n, 1), float(train["label"].mean() > 0.5))
        cheats["prior"] = np.full((n, 1), train["label"].mean())
    elif prob.kind == "multiclass":
        freq = train["label"].value_counts(normalize=True).reindex(prob.outputs).fillna(0)
        cheats["prior"] = np.tile(freq.to_numpy(), (n, 1))
        cheats["majority"] = np.tile((freq == freq.max()).to_numpy(float), (n, 1))
    else:
        cheats["prior"] = np.tile(train[prob.outputs].mean().to_numpy(), (n, 1))
    # id-order leakage: the key's value, the row position of the test file
    as_int = np.array([int(x, 16) for x in keys], dtype=float) / 2**48
    cheats["key value"] = np.tile(as_int[:, None], (1, k))
    test_keys = pd.read_csv(task_dir / "test_features.csv")["key"].tolist()
    pos = {x: i / n for i, x in enumerate(test_keys)}
    cheats["file position"] = np.tile(np.array([pos[x] for x in keys])[:, None], (1, k))
    for label, values in cheats.items():
        g = mlehr.grade_predictions(csv_bytes(keys, cols, values), truth)
        assert g.score == 0.0 and not g.correct, (name, label, g.reason)
    scores = []
    for seed in range(20):
        rnd = np.random.default_rng(seed).random((n, k))
        scores.append(mlehr.grade_predictions(csv_bytes(keys, cols, rnd), truth).score)
    assert np.mean(scores) < 0.02 and sum(s > 0 for s in scores) <= 1, scores


def test_hostile_prediction_files_are_refused_with_one_line(built, tmp_path):
    _, task_dir, truth = built["guo_icu"]
    good = reference_predictions(task_dir, tmp_path)
    text = good.decode()
    lines = text.splitlines()
    keys = truth["test_keys"]
    hostile = {
        "empty": b"",
        "header only": b"key,p\n",
        "missing a row": ("\n".join(lines[:-1]) + "\n").encode(),
        "one right row": ("\n".join(lines[:2]) + "\n").encode(),
        "duplicate row": (text + lines[1] + "\n").encode(),
        "extra key": (text + "ffffffffffff,0.5\n").encode(),
        "index column": ("," + lines[0] + "\n" + "\n".join(
            f"{i},{x}" for i, x in enumerate(lines[1:])) + "\n").encode(),
        "wrong column": text.replace("key,p", "key,prob", 1).encode(),
        "extra column": ("key,p,q\n" + "\n".join(x + ",1" for x in lines[1:])).encode(),
        "nan": text.replace(lines[1], lines[1].split(",")[0] + ",nan").encode(),
        "inf": text.replace(lines[1], lines[1].split(",")[0] + ",inf").encode(),
        "above one": text.replace(lines[1], lines[1].split(",")[0] + ",1.5").encode(),
        "negative": text.replace(lines[1], lines[1].split(",")[0] + ",-0.1").encode(),
        "text value": text.replace(lines[1], lines[1].split(",")[0] + ",high").encode(),
        "huge cell": text.replace(lines[1], lines[1].split(",")[0] + ",0." + "1" * 5000).encode(),
        "not utf-8": b"\xff\xfe" + good,
        "NUL": good[:50] + b"\x00" + good[50:],
        "many lines": b"key,p\n" + b"\n" * (len(keys) + 10),
        "short row": (text + "abc\n").encode(),
        "quote bomb": b'key,p\n"' + b"a" * 100_000 + b"\n",
        "binary junk": bytes(range(256)) * 40,
    }
    for label, raw in hostile.items():
        g = mlehr.grade_predictions(raw, truth)
        assert isinstance(g, Grade) and g.score == 0.0 and not g.correct, label
        assert "\n" not in g.reason and g.reason.startswith("predictions.csv"), (label, g.reason)
    # the same rows in another order, with CRLF and spaces: still the reference
    body = lines[1:][::-1]
    shuffled = ("key , p\r\n" + "\r\n".join(x.replace(",", " , ") for x in body) + "\r\n").encode()
    assert mlehr.grade_predictions(shuffled, truth).score == 1.0


def test_sandbox_files_hold_no_test_labels(built):
    """The mounted task directory: labels for train and val only; the test keys appear in
    test_features.csv and nowhere else; keys are random and test rows shuffled."""
    for _prob, task_dir, truth in built.values():
        names = sorted(p.name for p in task_dir.iterdir())
        assert names == ["README.md", "task.json", "test_features.csv", "train_features.csv",
                         "train_labels.csv", "val_features.csv", "val_labels.csv"]
        some = truth["test_keys"][:25]
        for f in task_dir.iterdir():
            text = f.read_text()
            hits = [k for k in some if k in text]
            assert hits == ([] if f.name != "test_features.csv" else some), f.name
        test = pd.read_csv(task_dir / "test_features.csv")
        assert list(test["key"]) != sorted(test["key"])
        assert test["key"].str.fullmatch(r"[0-9a-f]{12}").all()


# --------------------------------------------------------------------------- importer


def fake_ehrshot_assets(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A tiny EHRSHOT_ASSETS tree: CLMBR-like features, three tasks' labels, the splits."""
    n_pat, dim = 240, 6
    pids = np.arange(1000, 1000 + n_pat)
    times = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, n_pat), "D")
    matrix = rng.standard_normal((n_pat, dim))
    (root / "features").mkdir(parents=True)
    with open(root / "features" / "clmbr_features.pkl", "wb") as fh:
        pickle.dump({"data_matrix": matrix, "patient_ids": pids,
                     "labeling_time": times.to_numpy()}, fh)
    (root / "splits").mkdir()
    split = np.array(["train", "val", "test"])[rng.integers(0, 3, n_pat)]
    pd.DataFrame({"omop_person_id": pids, "split": split}).to_csv(
        root / "splits" / "person_id_map.csv", index=False)
    values = {
        "guo_icu": np.where(matrix[:, 0] > 0.5, "True", "False"),
        "lab_anemia": np.digitize(matrix[:, 1], [-0.5, 0.5, 1.2]),
        "chexpert": rng.integers(0, 2**14, n_pat),
    }
    for task, vals in values.items():
        (root / "benchmark" / task).mkdir(parents=True)
        pd.DataFrame({"patient_id": pids, "prediction_time": times, "value": vals,
                      "label_type": "boolean"}).to_csv(
            root / "benchmark" / task / "labeled_patients.csv", index=False)
    return {"matrix": matrix, "pids": pids, "split": split, **values}


def test_ehrshot_importer_reads_the_release_layout(tmp_path):
    rng = np.random.default_rng(5)
    fake = fake_ehrshot_assets(tmp_path / "EHRSHOT_ASSETS", rng)
    probs = {p.name: p for p in mlehr_sources.ehrshot_assets(tmp_path / "EHRSHOT_ASSETS", 0)}
    assert set(probs) == {"guo_icu", "lab_anemia", "chexpert"}
    by_row = {tuple(np.round(r, 9)): i for i, r in enumerate(fake["matrix"])}
    for name, prob in probs.items():
        assert sum(len(prob.keys[s]) for s in ("train", "val", "test")) == len(fake["pids"])
        for split in ("train", "val", "test"):
            x = prob.features[split].drop(columns="key").to_numpy()
            rows = [by_row[tuple(np.round(r, 9))] for r in x]
            assert all(fake["split"][i] == split for i in rows)  # the official split
            y = prob.labels[split]
            if name == "guo_icu":
                assert list(y) == [int(fake["guo_icu"][i] == "True") for i in rows]
            elif name == "lab_anemia":
                assert list(y) == [int(fake["lab_anemia"][i]) for i in rows]
            else:
                bits = [fake["chexpert"][i] for i in rows]
                assert [int(v) for v in y[:, 0]] == [(b >> 13) & 1 for b in bits]
                assert [int(v) for v in y[:, 13]] == [b & 1 for b in bits]
    with pytest.raises(Exception, match="EHRSHOT_ASSETS"):
        mlehr_sources.ehrshot_assets(tmp_path / "nowhere", 0)


# --------------------------------------------------------------------------- open data


def test_lifelines_tasks_are_bundled_and_learnable(tmp_path):
    """GBSG2 and kidney transplant come with lifelines (no download); the horizon labels
    leave out rows censored before 3 years; the reference clears the chance band."""
    from lifelines.datasets import load_gbsg2

    probs = mlehr_sources.lifelines_problems(0)
    g = load_gbsg2()
    kept = ((g["time"] > 1095) | (g["cens"] == 1)).sum()
    assert sum(len(probs[0].keys[s]) for s in ("train", "val", "test")) == kept
    for prob in probs:
        assert "time" not in prob.features["train"].columns
        d = tmp_path / prob.name
        mlehr.write_problem(prob, d)
        truth = mlehr.reference_truth(prob, d)
        assert mlehr.degenerate(truth) is None, truth["ref_auroc"]
