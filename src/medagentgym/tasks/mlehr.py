"""EHRSHOT and MIMIC-Extract: train a model on patient features, predict hidden test labels.

One family serves both datasets (``suite`` in the spec). Each task is one prediction problem
(:mod:`medagentgym.tasks.mlehr_sources`) with its own directory ``/data/ml/<problem>/``; the
split's problems are mounted together, read-only, at ``/data/ml`` (so one sandbox serves every
episode of a split without a restart; problems are independent draws, and no directory holds
test labels). A task directory holds

* ``task.json`` (kind, classes or labels, the prediction columns, the layout) and
  ``README.md``;
* ``train_features.csv`` + ``train_labels.csv`` and ``val_features.csv`` +
  ``val_labels.csv``;
* ``test_features.csv`` only. Test labels exist in the task's ground truth on the host and
  nowhere else. Keys are random (12 hex digits), rows are shuffled, hourly problems have
  exactly 24 rows per stay: neither the key, the position nor the number of rows says
  anything about a label.

The agent writes ``/workspace/predictions.csv``: a header ``key,<prediction columns>`` and one
row per test key (binary: ``p`` = probability of the positive class; multiclass: one
probability per class ``p_<class>``; multilabel: one probability per label ``p_<label>``).

Grading (host-side, :func:`grade_predictions`): the file is read with bounds (size, rows,
columns, cell length); the key set must be exactly the test keys, once each, every value
finite and in [0, 1]. The score is the AUROC (macro one-vs-rest over classes / labels);
accuracy and F1 are reported as secondary. With ``ref`` the AUROC of our reference model
(the best on the validation split of logistic regression at three strengths and, for
binary and hourly problems, gradient boosting; refit on train + validation; trained at
build time; the oracle's code) and ``eps`` its bootstrap margin (ref minus the 5th percentile of 200 bootstrap resamples of the test set):

* reward = clip((AUROC - 0.5) / (ref - 0.5), 0, 1), except that an AUROC inside the chance
  band (below 0.5 + the 99th percentile of random predictions' excess over 0.5 on this test
  set) earns 0, so constant, majority or random predictions earn nothing;
* ``correct`` = AUROC >= max(ref - eps, 0.5 + chance band).

The test set is scored once per episode: the first well-formed ``predictions.csv`` is final
(a malformed one is refused with the reason and does not count). In-episode feedback is
the validation AUROC: write ``val_predictions.csv`` (validation keys, same columns) and call
the ``check_validation`` action, or read the AUROC that each graded run reports while no
``predictions.csv`` exists yet.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from medagentgym.data import home as _home
from medagentgym.errors import ConfigurationError
from medagentgym.sandbox.base import SandboxFileError
from medagentgym.tasks.base import DatasetFamily, DatasetOptions
from medagentgym.tasks.family import option
from medagentgym.types import Grade, GroundTruth, Provenance, Task

if TYPE_CHECKING:
    from medagentgym.tasks.contract import Episode, GradeContext
    from medagentgym.tasks.mlehr_sources import Problem

CACHE_VERSION = 2
GENERATOR_VERSION = 1
MOUNT = "/data/ml"
PREDICTIONS = "predictions.csv"
VAL_PREDICTIONS = "val_predictions.csv"
BOOTSTRAP = 200
EXACT = 1e-6  # an AUROC this close to the reference's is the reference's (float noise)
MAX_CELL = 64
MAX_FILE = 32 * 1024**2
SCORED = "test-scored"  # Grade.detail prefix of the one test scoring of an episode

#: sizes of the synthetic problems
EHRSHOT_SIZES = {"n_train": 800, "n_val": 200, "n_test": 1000, "dim": 32}
MIMIC_EXTRACT_STAYS = 2000

#: the reference model and the oracle's solution (``{data}``, ``{out}`` filled in)
REFERENCE_CODE = '''\
import json
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

DATA, OUT = {data!r}, {out!r}
spec = json.load(open(DATA + "/task.json"))
kind, cols = spec["kind"], spec["prediction_columns"]


def features(split):
    x = pd.read_csv(DATA + "/" + split + "_features.csv")
    if spec["layout"] != "hourly":
        return x.set_index("key")
    g = x.sort_values(["key", "hour"]).drop(columns="hour").groupby("key")
    return pd.concat([g.mean().add_suffix("_mean"), g.min().add_suffix("_min"),
                      g.max().add_suffix("_max"), g.last().add_suffix("_last"),
                      g.count().add_suffix("_n")], axis=1)


def labels(split, index):
    y = pd.read_csv(DATA + "/" + split + "_labels.csv").set_index("key").loc[index]
    if kind == "binary":
        return y["label"].to_numpy()
    if kind == "multiclass":
        return y["label"].map({{c: i for i, c in enumerate(spec["classes"])}}).to_numpy()
    return y[spec["labels"]].to_numpy()


def make(c):
    if c == "hgb":
        return HistGradientBoostingClassifier(max_iter=60, learning_rate=0.1,
                                              max_leaf_nodes=15, l2_regularization=1.0,
                                              early_stopping=False, random_state=0)
    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                         LogisticRegression(C=c, max_iter=3000))


def fit_predict(c, xa, ya, xb):
    if kind == "multilabel":
        out = []
        for j in range(ya.shape[1]):
            if len(set(ya[:, j])) < 2:
                out.append(np.full(len(xb), float(ya[:, j].mean())))
            else:
                out.append(make(c).fit(xa, ya[:, j]).predict_proba(xb)[:, 1])
        return np.column_stack(out)
    m = make(c).fit(xa, ya)
    p = m.predict_proba(xb)
    if kind == "binary":
        return p[:, 1]
    full = np.zeros((len(xb), len(cols)))
    full[:, m.classes_] = p
    return full


def macro_auc(y, p):
    if kind == "binary":
        return roc_auc_score(y, p)
    t = (y[:, None] == np.arange(p.shape[1])) if kind == "multiclass" else y
    return np.mean([roc_auc_score(t[:, j], p[:, j]) for j in range(p.shape[1])
                    if 0 < t[:, j].sum() < len(t)])


with threadpool_limits(1):
    xtr, xva, xte = features("train"), features("val"), features("test")
    xva, xte = xva.reindex(columns=xtr.columns), xte.reindex(columns=xtr.columns)
    ytr, yva = labels("train", xtr.index), labels("val", xva.index)
    boost = kind == "binary" or spec["layout"] == "hourly"
    models = [0.01, 0.1, 1.0] + (["hgb"] if boost else [])
    val = {{c: macro_auc(yva, fit_predict(c, xtr, ytr, xva)) for c in models}}
    best = max(models, key=val.get)
    xall = pd.concat([xtr, xva])
    yall = np.concatenate([ytr, yva])
    p = fit_predict(best, xall, yall, xte)
pred = pd.DataFrame(np.asarray(p).reshape(len(xte), -1), columns=cols, index=xte.index)
pred.reset_index().to_csv(OUT, index=False)
print("reference model:", best, "| validation AUROC", round(val[best], 4))
'''


def reference_code(data: str, out: str = PREDICTIONS) -> str:
    return REFERENCE_CODE.format(data=data, out=out)


# --------------------------------------------------------------------------- parsing


class PredictionError(ValueError):
    """A predictions file that cannot be graded (the message says what to fix)."""


def parse_predictions(raw: bytes, keys: list[str], columns: list[str]) -> np.ndarray:
    """The predictions, as an array aligned with ``keys`` (n, len(columns)); raises
    :class:`PredictionError` with one line on anything but exactly one finite probability per
    (test key, column). Bounded: the caller caps the bytes; rows and cells are checked
    before they are converted."""
    if len(raw) > MAX_FILE:
        raise PredictionError("the file is too large")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PredictionError("the file is not UTF-8 text") from None
    if "\x00" in text:
        raise PredictionError("the file contains NUL bytes")
    lines = text.count("\n")
    if lines > len(keys) + 2:
        raise PredictionError(f"too many lines ({lines}); write a header and exactly "
                              f"{len(keys)} rows")
    want = ["key", *columns]
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise PredictionError("the file is empty") from None
    except csv.Error as exc:
        raise PredictionError(f"unreadable CSV: {exc}") from None
    if len(header) != len(set(header)) or set(header) != set(want):
        shown = ",".join(h[:30] for h in header[:12])
        raise PredictionError(f"the header must be the columns {','.join(want)} (any order; no "
                              f"index column) — got {shown[:300]}")
    pos = {h: i for i, h in enumerate(header)}
    index = {k: i for i, k in enumerate(keys)}
    out = np.full((len(keys), len(columns)), np.nan)
    seen = 0
    try:
        for rowno, row in enumerate(reader, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise PredictionError(f"line {rowno} has {len(row)} fields, not {len(header)}")
            key = row[pos["key"]].strip()[:MAX_CELL]
            i = index.get(key)
            if i is None:
                raise PredictionError(f"line {rowno}: {key[:20]!r} is not a test key (rows must "
                                      "be exactly the keys of test_features.csv)")
            if not math.isnan(out[i, 0]):
                raise PredictionError(f"line {rowno}: key {key!r} appears twice")
            for j, col in enumerate(columns):
                cell = row[pos[col]].strip()
                if len(cell) > MAX_CELL:
                    raise PredictionError(f"line {rowno}: the {col} value is too long")
                try:
                    v = float(cell)
                except ValueError:
                    raise PredictionError(f"line {rowno}: {col} = {cell[:20]!r} is not a "
                                          "number") from None
                if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                    raise PredictionError(f"line {rowno}: {col} = {cell[:20]!r} is not a "
                                          "probability in [0, 1]")
                out[i, j] = v
            seen += 1
    except csv.Error as exc:
        raise PredictionError(f"unreadable CSV: {str(exc)[:200]}") from None
    if seen != len(keys):
        raise PredictionError(f"{len(keys) - seen} of the {len(keys)} test keys have no row")
    return out


# --------------------------------------------------------------------------- metrics


def _labels(truth: dict[str, Any], which: str) -> np.ndarray:
    return np.asarray(truth[f"{which}_y"], dtype=int)


def metrics(kind: str, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUROC (macro one-vs-rest), accuracy and F1 (binary: positive class at 0.5;
    multiclass: argmax, macro F1; multilabel: per label at 0.5, mean accuracy, macro F1)."""
    from medagentgym.tasks.mlehr_sources import macro_auroc

    auc = macro_auroc(kind, y, p)
    if kind == "binary":
        pred, truth = (p[:, 0] >= 0.5)[:, None], y.astype(bool)[:, None]
    elif kind == "multiclass":
        cls = np.argmax(p, axis=1)
        pred = cls[:, None] == np.arange(p.shape[1])
        truth = y[:, None] == np.arange(p.shape[1])
    else:
        pred, truth = p >= 0.5, y.astype(bool)
    f1s = []
    for j in range(truth.shape[1]):
        tp = float(np.sum(pred[:, j] & truth[:, j]))
        denom = float(np.sum(pred[:, j]) + np.sum(truth[:, j]))
        if denom:
            f1s.append(2 * tp / denom)
    if kind == "multiclass":
        acc = float(np.mean(np.argmax(p, axis=1) == y))
    else:
        acc = float(np.mean(pred == truth))
    return {"auroc": auc, "accuracy": acc, "f1": float(np.mean(f1s)) if f1s else 0.0}


def score_of(auc: float, truth: dict[str, Any]) -> tuple[float, bool]:
    """(reward, correct) for a test AUROC (see the module docstring)."""
    ref, chance, threshold = truth["ref_auroc"], truth["chance_margin"], truth["threshold"]
    if not math.isfinite(auc):
        return 0.0, False
    if auc >= ref - EXACT:
        score = 1.0
    elif auc <= 0.5 + chance:
        score = 0.0
    else:
        score = min(1.0, max(0.0, (auc - 0.5) / (ref - 0.5)))
    return score, auc >= threshold - EXACT


def grade_predictions(raw: bytes, truth: dict[str, Any]) -> Grade:
    """The verdict on a test predictions file (hostile bytes) for a task's hidden truth."""
    try:
        p = parse_predictions(raw, truth["test_keys"], truth["columns"])
    except PredictionError as exc:
        return Grade.wrong(f"{PREDICTIONS}: {exc}")
    m = metrics(truth["kind"], _labels(truth, "test"), p)
    score, correct = score_of(m["auroc"], truth)
    reason = (f"test AUROC {m['auroc']:.4f} (reference model {truth['ref_auroc']:.4f}, correct "
              f"from {truth['threshold']:.4f}); accuracy {m['accuracy']:.4f}, F1 "
              f"{m['f1']:.4f}; score {score:.3f}")
    detail = f"{SCORED}: " + json.dumps({k: round(v, 6) for k, v in m.items()})
    return Grade(correct=correct, score=score, reason=reason, detail=detail)


def validation_feedback(raw: bytes, truth: dict[str, Any]) -> str:
    try:
        p = parse_predictions(raw, truth["val_keys"], truth["columns"])
    except PredictionError as exc:
        return f"{VAL_PREDICTIONS}: {exc}"
    m = metrics(truth["kind"], _labels(truth, "val"), p)
    return (f"validation AUROC {m['auroc']:.4f}; accuracy {m['accuracy']:.4f}, "
            f"F1 {m['f1']:.4f}")


# --------------------------------------------------------------------------- the family


class MlEhrOptions(DatasetOptions):
    """Options of the EHRSHOT and MIMIC-Extract datasets."""

    suite: Literal["ehrshot", "mimic_extract"] = option(
        "ehrshot", "which problems (fixed by the dataset)", scope="identity")
    seed: int = option(0, "seed of the synthetic problems", ge=0, le=2**31 - 1)
    assets: Path | None = option(
        None, "real data instead of the synthetic problems: the EHRSHOT_ASSETS directory "
              "(ehrshot) or all_hourly_data.h5 (mimic_extract)", scope="host")


class MlEhrFamily(DatasetFamily):
    """Machine learning on EHR features with hidden test labels (see the module docstring)."""

    allowed_actions = ("validate_code", "debug", "terminal")
    preload = "science"
    needs_answer = False
    score_kind = "continuous"
    Options: ClassVar[type[MlEhrOptions]] = MlEhrOptions
    cache_version = CACHE_VERSION

    options: MlEhrOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exclusions: list[dict[str, str]] = []

    # -- cache --------------------------------------------------------------------------
    def cache_prefix(self) -> str:
        return "mlehr"

    def _assets_key(self) -> Any:
        a = self.options.assets
        if a is None:
            return None
        try:
            st = Path(a).stat()
        except OSError:
            raise ConfigurationError(f"{self.name}: assets {a} do not exist") from None
        return [str(Path(a).resolve()), st.st_size, st.st_mtime_ns]

    def cache_key(self) -> dict[str, Any]:
        ref = hashlib.sha256(REFERENCE_CODE.encode()).hexdigest()[:12]
        return {"gen": GENERATOR_VERSION, "ref": ref, "suite": self.options.suite,
                "seed": self.options.seed,
                "assets": self._assets_key()}

    def data_dir(self) -> Path:
        digest = hashlib.sha256(json.dumps({"v": self.cache_version, **self.cache_key()},
                                           sort_keys=True).encode()).hexdigest()
        return _home.tasks_dir(self.name, self.home) / f"mldata-{digest[:16]}"

    def cache_ready(self) -> bool:
        return self.data_dir().is_dir()

    def cache_manifest(self) -> dict[str, Any]:
        return {"generator_version": GENERATOR_VERSION, "data_dir": str(self.data_dir()),
                "exclusions": self.exclusions}

    # -- building -----------------------------------------------------------------------
    def problems(self) -> dict[str, list[Problem]]:
        """The problems of each split (train, test; ehrshot: open)."""
        from medagentgym.tasks import mlehr_sources as src

        seed = self.options.seed
        out: dict[str, list[Problem]] = {}
        if self.options.suite == "ehrshot":
            if self.options.assets is not None:
                real = src.ehrshot_assets(Path(self.options.assets), seed)
                out["train"], out["test"] = real, real
            else:
                out["test"] = src.ehrshot_synthetic(seed, **EHRSHOT_SIZES)
                out["train"] = src.ehrshot_synthetic(seed + 1, **EHRSHOT_SIZES)
            out["open"] = src.lifelines_problems(seed)
        else:
            if self.options.assets is not None:
                real = src.mimic_extract_h5(Path(self.options.assets), seed)
                out["train"], out["test"] = real, real
            else:
                out["test"] = src.mimic_extract_synthetic(seed, n_stays=MIMIC_EXTRACT_STAYS)
                out["train"] = src.mimic_extract_synthetic(seed + 1,
                                                           n_stays=MIMIC_EXTRACT_STAYS)
        return out

    def build_records(self) -> list[dict[str, Any]]:
        self.exclusions = []
        built: list[tuple[str, Problem, dict[str, Any]]] = []
        final = self.data_dir()
        with _home.file_lock(final), _home.atomic_path(final, directory=True) as tmp:
            os.chmod(tmp, 0o755)
            for split, problems in self.problems().items():
                for prob in problems:
                    task_id = f"{self.name}-{split}-{prob.name}"
                    (tmp / split).mkdir(mode=0o755, exist_ok=True)
                    os.chmod(tmp / split, 0o755)
                    task_dir = tmp / split / prob.name
                    write_problem(prob, task_dir)
                    truth = reference_truth(prob, task_dir)
                    problem = degenerate(truth)
                    if problem:
                        self.exclusions.append({"task": task_id, "reason": problem})
                        _remove_tree(task_dir)
                        continue
                    built.append((split, prob, truth))
        records = []
        for split, prob, truth in built:
            task_id = f"{self.name}-{split}-{prob.name}"
            records.append(self._record(split, task_id, prob, truth, final / split))
        return records

    def _record(self, split: str, task_id: str, prob: Problem, truth: dict[str, Any],
                split_dir: Path) -> dict[str, Any]:
        category = prob.category if self.options.suite == "mimic_extract" else prob.name
        if split == "open":
            category = prob.name
        cols = truth["columns"]
        data = f"{MOUNT}/{prob.name}"
        goal = (
            f"{prob.title}.\n\n{prob.description}\n\nThe data is in {data}/ (read-only): "
            f"task.json (kind, classes/labels, prediction columns), train_features.csv + "
            f"train_labels.csv ({truth['n']['train']} "
            f"{'stays' if prob.layout == 'hourly' else 'rows'}), val_features.csv + "
            f"val_labels.csv ({truth['n']['val']}), test_features.csv "
            f"({truth['n']['test']}; labels hidden). Train a model and write "
            f"/workspace/{PREDICTIONS} with the header `key,{','.join(cols)}` and one row per "
            f"test key ({_kind_text(prob)}). Graded by test AUROC"
            f"{' (macro over ' + ('classes' if prob.kind == 'multiclass' else 'labels') + ')' if prob.kind != 'binary' else ''}"
            f" against a reference model (AUROC {truth['ref_auroc']:.3f}); the first "
            f"well-formed {PREDICTIONS} is final, so check models on the validation split "
            f"first ({VAL_PREDICTIONS}, same columns, validation keys).")
        task = Task(
            id=task_id, dataset=self.name, category=category, split=split, goal=goal,
            inputs={MOUNT: str(split_dir)}, allowed_actions=self.allowed_actions,
            provenance=Provenance(source=prob.source, licence=prob.licence,
                                  original_id=prob.name),
            metadata={"problem": prob.name, "data_dir": data, "group": prob.category,
                      "kind": prob.kind,
                      "layout": prob.layout, "columns": cols, "n": truth["n"],
                      "ref_auroc": truth["ref_auroc"], "score_kind": "continuous"})
        gt = GroundTruth(kind="workspace_file", value=truth, solution=reference_code(data))
        return self.record(task, gt)

    # -- prompting ----------------------------------------------------------------------
    def instructions(self, task: Task) -> str:
        return (
            "You are a clinical machine-learning engineer. Python with numpy, pandas, scipy, "
            "statsmodels and scikit-learn is available (no network, no GPU). The task's data "
            f"is in {task.metadata.get('data_dir', MOUNT)}/ (read-only); work in /workspace. "
            "Nothing needs to be stored "
            f"in `answer`: the grader reads /workspace/{PREDICTIONS}. It is scored once: the "
            f"first well-formed {PREDICTIONS} (exactly the test keys, each once, probabilities "
            f"in [0, 1]) is final. Until then each graded run reports the validation AUROC of "
            f"/workspace/{VAL_PREDICTIONS} if you wrote one (or use check_validation).")

    def actions(self) -> dict[str, Any]:
        async def check_validation(episode: Episode, params: dict[str, Any]) -> tuple[str, None]:
            """Validation AUROC, accuracy and F1 of /workspace/val_predictions.csv (header
            key + the prediction columns, one row per validation key). Params: none."""
            truth = episode.task.truth.value
            try:
                raw = await episode.sandbox.read_file(VAL_PREDICTIONS,
                                                      max_bytes=_max_bytes(truth, "val"))
            except SandboxFileError as exc:
                return f"no readable /workspace/{VAL_PREDICTIONS}: {exc}", None
            return validation_feedback(raw, truth), None

        return {"check_validation": check_validation}

    # -- grading ------------------------------------------------------------------------
    async def grade(self, ctx: GradeContext) -> Grade:
        truth = ctx.task.truth.value
        if not isinstance(truth, dict) or "test_keys" not in truth:
            return Grade.wrong("the task has no hidden labels")
        for step in reversed(list(ctx.history)):
            g = step.grade
            if g is not None and g.detail.startswith(SCORED):
                return Grade(correct=g.correct, score=g.score, detail=g.detail,
                             reason="the test set is scored once per episode; the first "
                                    f"scored {PREDICTIONS} stands ({g.reason})")
        try:
            raw = await ctx.sandbox.read_file(PREDICTIONS, max_bytes=_max_bytes(truth, "test"))
        except SandboxFileError as exc:
            why = f"no readable /workspace/{PREDICTIONS} yet ({str(exc)[:120]})"
            try:
                val = await ctx.sandbox.read_file(VAL_PREDICTIONS,
                                                  max_bytes=_max_bytes(truth, "val"))
            except SandboxFileError:
                return Grade.wrong(why)
            return Grade.wrong(f"{why}; {validation_feedback(val, truth)}")
        return grade_predictions(raw, truth)


def _kind_text(prob: Problem) -> str:
    if prob.kind == "binary":
        return "p = probability of the positive label"
    if prob.kind == "multiclass":
        return f"one probability per class: {', '.join(prob.outputs)}"
    return f"one probability per label: {', '.join(prob.outputs)}"


def _max_bytes(truth: dict[str, Any], which: str) -> int:
    rows = len(truth[f"{which}_keys"])
    return min(MAX_FILE, 4096 + rows * (24 + 40 * len(truth["columns"])))


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- build steps


def write_problem(prob: Problem, task_dir: Path) -> None:
    """The task's sandbox files (no test labels): world-readable, for the sandbox's uid."""
    task_dir.mkdir(parents=True)
    spec: dict[str, Any] = {"task": prob.name, "title": prob.title, "kind": prob.kind,
                            "layout": prob.layout,
                            "prediction_columns": prob.prediction_columns(),
                            "description": prob.description}
    if prob.kind == "multiclass":
        spec["classes"] = prob.outputs
    if prob.kind == "multilabel":
        spec["labels"] = prob.outputs
    files = {"task.json": json.dumps(spec, indent=2) + "\n",
             "README.md": f"# {prob.title}\n\n{prob.description}\n"}
    for name, text in files.items():
        (task_dir / name).write_text(text, encoding="utf-8")
    for split in ("train", "val", "test"):
        prob.features[split].to_csv(task_dir / f"{split}_features.csv", index=False)
        if split != "test":
            prob.label_frame(split).to_csv(task_dir / f"{split}_labels.csv", index=False)
    os.chmod(task_dir, 0o755)
    for f in task_dir.iterdir():
        os.chmod(f, 0o644)


def reference_truth(prob: Problem, task_dir: Path) -> dict[str, Any]:
    """Run the reference model on the task's files (host-side, the oracle's very code),
    score it, and return the hidden truth: test and validation labels, the reference AUROC,
    its bootstrap margin and the chance band."""
    columns = prob.prediction_columns()
    with tempfile.TemporaryDirectory(prefix="mag-ref-") as tmp:
        out = Path(tmp) / PREDICTIONS
        code = reference_code(str(task_dir), str(out))
        with open(os.devnull, "w") as devnull:
            import contextlib

            with contextlib.redirect_stdout(devnull):
                exec(compile(code, "<reference model>", "exec"), {"__name__": "__reference__"})
        raw = out.read_bytes()
    truth: dict[str, Any] = {
        "kind": prob.kind, "columns": columns, "outputs": prob.outputs,
        "test_keys": prob.keys["test"], "val_keys": prob.keys["val"],
        "test_y": _jsonable(prob.labels["test"]), "val_y": _jsonable(prob.labels["val"]),
        "n": {s: len(prob.keys[s]) for s in ("train", "val", "test")}}
    p = parse_predictions(raw, truth["test_keys"], columns)
    y = _labels(truth, "test")
    m = metrics(prob.kind, y, p)
    from medagentgym.tasks.mlehr_sources import macro_auroc

    rng = np.random.default_rng(int(hashlib.sha256(prob.name.encode()).hexdigest()[:8], 16))
    n = len(y)
    boots = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, n, n)
        v = macro_auroc(prob.kind, y[idx], p[idx])
        if v == v:
            boots.append(v)
    null = [macro_auroc(prob.kind, y, rng.random(p.shape)) for _ in range(BOOTSTRAP)]
    ref = float(m["auroc"])
    eps = max(0.0, ref - float(np.percentile(boots, 5)))
    # a smoke task's test set is tiny: its chance band is the 90th percentile, not the 99th
    chance = max(0.0, float(np.percentile(null, 90 if prob.loose else 99)) - 0.5)
    truth.update({
        "ref_auroc": ref, "ref_accuracy": m["accuracy"], "ref_f1": m["f1"], "epsilon": eps,
        "chance_margin": chance, "threshold": max(ref - eps, 0.5 + chance),
        "best_auroc": prob.best_auroc, "best_note": prob.best_note, "loose": prob.loose})
    return truth


def degenerate(truth: dict[str, Any]) -> str | None:
    """Why a task cannot be graded honestly (its reference is no better than chance)."""
    if not truth["ref_auroc"] > 0.5 + truth["chance_margin"] + 0.01:
        return (f"the reference model's test AUROC {truth['ref_auroc']:.3f} is within the "
                f"chance band (0.5 + {truth['chance_margin']:.3f})")
    return None


def _jsonable(y: np.ndarray) -> list[Any]:
    return np.asarray(y).astype(int).tolist()


def summary_table(home: Path | None = None) -> str:
    """The per-task numbers of both datasets as a markdown table (docs/datasets.md)."""
    from medagentgym.tasks import registry

    opts = {"home": home} if home is not None else {}
    rows = ["| dataset | split | task | kind | n train/val/test | best AUROC | ref AUROC | eps "
            "| chance band | correct from |", "|---|---|---|---|---|---|---|---|---|---|"]
    for ds in ("ehrshot", "mimic_extract"):
        for split in registry.get_spec(ds).splits:
            if split == "train":
                continue
            for t in registry.load_tasks(ds, split, **opts):
                v = t.truth.value
                best = f"{v['best_auroc']:.3f}" if v.get("best_auroc") else "–"
                n = v["n"]
                rows.append(f"| {ds} | {split} | {t.metadata['problem']} | {v['kind']} | "
                            f"{n['train']}/{n['val']}/{n['test']} | {best} | "
                            f"{v['ref_auroc']:.3f} | {v['epsilon']:.3f} | "
                            f"{v['chance_margin']:.3f} | {v['threshold']:.3f} |")
    return "\n".join(rows)
