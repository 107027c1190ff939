"""Where the EHRSHOT and MIMIC-Extract machine-learning problems come from.

A :class:`Problem` is one prediction task with its three splits (train and validation with
labels, test whose labels stay on the host). Sources:

* :func:`ehrshot_synthetic` — EHRSHOT-like patient embeddings (a stand-in for CLMBR features)
  with EHRSHOT's 15 task heads: 9 binary (operational outcomes, new diagnoses), 5 four-class
  lab-value tasks and the 14-label chest X-ray task. Labels are drawn from known logistic
  models of the embedding, so the best achievable AUROC (the true posterior's) is known.
* :func:`mimic_extract_synthetic` — MIMIC-Extract-like ICU stays: hourly vitals, labs and
  intervention flags for the first 24 h (exactly 24 rows per stay), labels 6 h after them
  (mortality in hospital / in ICU, length of stay > 3 / > 7 days, ventilation and vasopressor
  state 4-class). Labels come from a latent severity trajectory; the AUROC of the true
  probabilities given that latent is an upper bound on what the features allow.
* :func:`lifelines_problems` — open survival data bundled with ``lifelines`` (GBSG2 breast
  cancer recurrence, kidney transplant death), turned into fixed-horizon binary tasks.
* :func:`mimic_iii_demo_problems` — in-hospital mortality from the first 24 h of labs of the
  MIMIC-III demo (about 100 stays: a smoke task, judged loosely).
* :func:`ehrshot_assets` / :func:`mimic_extract_h5` — importers for users who have the real
  EHRSHOT release (CLMBR features + label CSVs) or MIMIC-Extract's ``all_hourly_data.h5``.

Every problem gets random keys (12 hex digits) per row and rows in random order, so neither
the key nor the position says anything about the label; hourly problems give every stay the
same 24 rows, so the number of rows says nothing either.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medagentgym.errors import ConfigurationError

SPLITS = ("train", "val", "test")
HOURS = 24  # hours of data given per stay (MIMIC-Extract: first 24 h, then a 6 h gap)
GAP = 6
WINDOW = 4  # intervention prediction window after the gap


@dataclass
class Problem:
    """One ML task: features per split, labels per split, and what it is."""

    name: str
    category: str
    title: str
    kind: str  # binary | multiclass | multilabel
    outputs: list[str]  # class names (multiclass), label names (multilabel), ["p"] (binary)
    layout: str  # tabular | hourly
    description: str
    features: dict[str, pd.DataFrame]  # split -> frame with a `key` column (+ `hour`)
    labels: dict[str, np.ndarray]  # split -> (n,) ints or (n, L) 0/1, in key order below
    keys: dict[str, list[str]]  # split -> keys, aligned with labels
    source: str = "synthetic"
    licence: str = "Apache-2.0 (generated)"
    best_auroc: float | None = None  # on the test split: true posterior (or latent oracle)
    best_note: str = ""
    loose: bool = False  # a smoke task: the threshold is the bootstrap margin, however wide
    extra: dict[str, Any] = field(default_factory=dict)

    def prediction_columns(self) -> list[str]:
        if self.kind == "binary":
            return ["p"]
        return [f"p_{o}" for o in self.outputs]

    def label_frame(self, split: str) -> pd.DataFrame:
        y = self.labels[split]
        frame = pd.DataFrame({"key": self.keys[split]})
        if self.kind == "binary":
            frame["label"] = y.astype(int)
        elif self.kind == "multiclass":
            frame["label"] = [self.outputs[int(i)] for i in y]
        else:
            for j, name in enumerate(self.outputs):
                frame[name] = y[:, j].astype(int)
        return frame


# --------------------------------------------------------------------------- helpers


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN with one class."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=float)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=float)
    sorted_s = s[order]
    # average ranks over ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def macro_auroc(kind: str, y: np.ndarray, p: np.ndarray) -> float:
    """Binary AUROC, or the macro one-vs-rest AUROC (classes / labels with both values)."""
    if kind == "binary":
        return auroc(y, p.reshape(-1))
    cols = p.shape[1]
    truth = (y[:, None] == np.arange(cols)[None, :]) if kind == "multiclass" else y
    vals = [auroc(truth[:, j], p[:, j]) for j in range(cols)]
    vals = [v for v in vals if v == v]
    return float(np.mean(vals)) if vals else float("nan")


def _keys(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        k = f"{int(rng.integers(0, 2**48)):012x}"
        if k not in taken:
            taken.add(k)
            out.append(k)
    return out


def _split_sizes(n: int, frac: tuple[float, float, float]) -> list[int]:
    a = round(n * frac[0])
    b = round(n * frac[1])
    return [a, b, n - a - b]


def assemble(name: str, category: str, title: str, kind: str, outputs: list[str],
             layout: str, description: str, x: np.ndarray | pd.DataFrame,
             y: np.ndarray, sizes: Iterable[int], rng: np.random.Generator, *,
             columns: list[str] | None = None, hourly: pd.DataFrame | None = None,
             truth_p: np.ndarray | None = None, stratify: bool = True,
             **kw: Any) -> Problem:
    """Split rows (stratified on a label column), give random keys, shuffle.

    ``x`` is one row per sample (tabular) or ignored when ``hourly`` (a frame with a ``row``
    column: the sample index, plus ``hour`` and the variables) is given."""
    n = len(y)
    sizes = list(sizes)
    strat = y if y.ndim == 1 else y[:, 0]
    idx = np.arange(n)
    parts: list[list[int]] = [[], [], []]
    groups = [idx[strat == v] for v in np.unique(strat)] if stratify else [idx]
    for g in groups:
        g = rng.permutation(g)
        cut = np.cumsum([round(len(g) * s / n) for s in sizes[:2]])
        for j, chunk in enumerate(np.split(g, cut)):
            parts[j].extend(chunk.tolist())
    taken: set[str] = set()
    features: dict[str, pd.DataFrame] = {}
    labels: dict[str, np.ndarray] = {}
    keys: dict[str, list[str]] = {}
    best = None
    for split, rows in zip(SPLITS, parts, strict=True):
        rows = rng.permutation(np.array(rows, dtype=int))
        k = _keys(rng, len(rows), taken)
        keys[split] = k
        labels[split] = y[rows]
        if hourly is not None:
            key_of = dict(zip(rows.tolist(), k, strict=True))
            sub = hourly[hourly["row"].isin(key_of)].copy()
            sub.insert(0, "key", sub["row"].map(key_of))
            order = {kk: i for i, kk in enumerate(k)}
            sub["_o"] = sub["key"].map(order)
            sub = sub.sort_values(["_o", "hour"]).drop(columns=["row", "_o"])
            features[split] = sub.reset_index(drop=True)
        else:
            arr = x.iloc[rows].reset_index(drop=True) if isinstance(x, pd.DataFrame) else \
                pd.DataFrame(np.asarray(x)[rows], columns=columns)
            arr.insert(0, "key", k)
            features[split] = arr
        if split == "test" and truth_p is not None:
            best = macro_auroc(kind, labels[split], truth_p[rows])
    return Problem(name=name, category=category, title=title, kind=kind, outputs=outputs,
                   layout=layout, description=description, features=features,
                   labels=labels, keys=keys, best_auroc=best, **kw)


# --------------------------------------------------------------------------- EHRSHOT

#: EHRSHOT's 15 tasks: (name, category, title, kind, prevalence or class shares, strength)
EHRSHOT_TASKS: list[tuple[str, str, str, str, Any, float]] = [
    ("guo_los", "operational_outcomes", "Long length of stay (>= 7 days)", "binary", 0.15, 1.6),
    ("guo_readmission", "operational_outcomes", "30-day readmission", "binary", 0.12, 1.8),
    ("guo_icu", "operational_outcomes", "ICU transfer during the admission", "binary", 0.08, 2.0),
    ("lab_thrombocytopenia", "lab_values", "Next platelet count (thrombocytopenia grade)",
     "multiclass", (0.62, 0.2, 0.11, 0.07), 1.8),
    ("lab_hyperkalemia", "lab_values", "Next potassium (hyperkalemia grade)", "multiclass",
     (0.7, 0.16, 0.09, 0.05), 1.5),
    ("lab_hypoglycemia", "lab_values", "Next glucose (hypoglycemia grade)", "multiclass",
     (0.72, 0.15, 0.08, 0.05), 1.4),
    ("lab_hyponatremia", "lab_values", "Next sodium (hyponatremia grade)", "multiclass",
     (0.6, 0.22, 0.12, 0.06), 1.7),
    ("lab_anemia", "lab_values", "Next hemoglobin (anemia grade)", "multiclass",
     (0.45, 0.3, 0.15, 0.1), 2.0),
    ("new_hypertension", "new_diagnoses", "New hypertension diagnosis within a year", "binary",
     0.12, 1.5),
    ("new_hyperlipidemia", "new_diagnoses", "New hyperlipidemia diagnosis within a year",
     "binary", 0.12, 1.4),
    ("new_pancan", "new_diagnoses", "New pancreatic cancer diagnosis within a year", "binary",
     0.06, 2.4),
    ("new_celiac", "new_diagnoses", "New celiac disease diagnosis within a year", "binary",
     0.06, 1.6),
    ("new_lupus", "new_diagnoses", "New lupus diagnosis within a year", "binary", 0.06, 2.0),
    ("new_acutemi", "new_diagnoses", "New acute myocardial infarction within a year", "binary",
     0.07, 2.2),
    ("chexpert", "chest_xray", "Chest X-ray findings (14 CheXpert labels)", "multilabel",
     None, 1.6),
]
LAB_CLASSES = ["normal", "mild", "moderate", "severe"]
CHEXPERT = ["no_finding", "enlarged_cardiomediastinum", "cardiomegaly", "lung_lesion",
            "lung_opacity", "edema", "consolidation", "pneumonia", "atelectasis",
            "pneumothorax", "pleural_effusion", "pleural_other", "fracture", "support_devices"]
CHEXPERT_PREV = [0.18, 0.08, 0.15, 0.05, 0.3, 0.15, 0.06, 0.06, 0.14, 0.05, 0.22, 0.04,
                 0.05, 0.3]


def _intercept(eta: np.ndarray, prevalence: float) -> float:
    """The intercept b with mean sigmoid(eta + b) == prevalence (bisection)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _sigmoid(eta + mid).mean() < prevalence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def ehrshot_synthetic(seed: int, *, n_train: int, n_val: int, n_test: int,
                      dim: int) -> list[Problem]:
    """The 15 EHRSHOT-like problems (independent patients per task, see the module doc)."""
    out = []
    for t, (name, category, title, kind, shares, strength) in enumerate(EHRSHOT_TASKS):
        rng = np.random.default_rng([seed, t, 1511])
        n = n_train + n_val + n_test
        z = rng.standard_normal((n, dim))
        u = rng.standard_normal(dim)
        u /= np.linalg.norm(u)
        # a second, weaker direction enters squared: a little non-linearity
        v = rng.standard_normal(dim)
        v -= u * (u @ v)
        v /= np.linalg.norm(v)
        eta = strength * (z @ u) + 0.5 * ((z @ v) ** 2 - 1)
        if kind == "binary":
            p = _sigmoid(eta + _intercept(eta, float(shares)))
            y = (rng.random(n) < p).astype(int)
            truth_p, outputs = p, ["p"]
        elif kind == "multiclass":
            cum = np.cumsum(shares)[:-1]
            theta = [_intercept(-eta, c) for c in cum]  # P(y <= k) = sigmoid(theta_k - eta)
            cdf = np.column_stack([_sigmoid(th - eta) for th in theta] + [np.ones(n)])
            probs = np.diff(np.column_stack([np.zeros(n), cdf]), axis=1)
            y = (rng.random(n)[:, None] > cdf).sum(axis=1)
            truth_p, outputs = probs, LAB_CLASSES
        else:
            base = rng.standard_normal((len(CHEXPERT), dim)) * 0.6 + u
            base[0] = -u  # no finding: the opposite of disease burden
            base /= np.linalg.norm(base, axis=1, keepdims=True)
            etas = strength * (z @ base.T)
            truth_p = np.column_stack([_sigmoid(etas[:, j] + _intercept(etas[:, j], pr))
                                       for j, pr in enumerate(CHEXPERT_PREV)])
            y = (rng.random(truth_p.shape) < truth_p).astype(int)
            outputs = CHEXPERT
        desc = (f"EHRSHOT-like task `{name}` ({title}). Each row is one patient at a "
                f"prediction time, described by a {dim}-dimensional patient embedding "
                f"(columns e0..e{dim - 1}, a stand-in for CLMBR features).")
        out.append(assemble(name, category, title, kind, outputs, "tabular", desc, z, y,
                            (n_train, n_val, n_test), rng,
                            columns=[f"e{i}" for i in range(dim)], truth_p=truth_p,
                            best_note="AUROC of the true posterior (the generating model)"))
    return out


# --------------------------------------------------------------------------- MIMIC-Extract

#: hourly variables: (name, mean, sd, dependence on severity, hourly measurement probability)
VARIABLES = [
    ("heart_rate", 88, 16, 0.6, 0.9), ("sys_bp", 118, 20, -0.55, 0.85),
    ("mean_bp", 78, 13, -0.6, 0.85), ("resp_rate", 19, 5, 0.5, 0.85),
    ("spo2", 96.5, 2.5, -0.45, 0.9), ("temperature", 37.0, 0.7, 0.25, 0.3),
    ("glucose", 135, 40, 0.2, 0.15), ("lactate", 2.0, 1.2, 0.65, 0.08),
    ("creatinine", 1.3, 0.8, 0.4, 0.07), ("wbc", 11, 5, 0.35, 0.07),
    ("hemoglobin", 10.5, 1.8, -0.3, 0.08), ("sodium", 139, 4, -0.15, 0.08),
]
INTERVENTION_CLASSES = ["stay_off", "onset", "wean", "stay_on"]
MIMIC_EXTRACT_TASKS = [
    ("mort_hosp", "mortality", "In-hospital mortality", "binary"),
    ("mort_icu", "mortality", "In-ICU mortality", "binary"),
    ("los_3", "length_of_stay", "ICU length of stay > 3 days", "binary"),
    ("los_7", "length_of_stay", "ICU length of stay > 7 days", "binary"),
    ("vent", "intervention", "Mechanical ventilation state after the gap", "multiclass"),
    ("vaso", "intervention", "Vasopressor state after the gap", "multiclass"),
]


def _markov(rng: np.random.Generator, sev: np.ndarray, a_on: float, a_stay: float,
            beta: float) -> tuple[np.ndarray, np.ndarray]:
    """An on/off intervention chain driven by severity; also P(on at the last hour | state
    at hour HOURS-1, severity) by forward recursion (the latent oracle)."""
    n, t_all = sev.shape
    state = np.zeros((n, t_all), dtype=int)
    state[:, 0] = rng.random(n) < _sigmoid(a_on + beta * sev[:, 0])
    for t in range(1, t_all):
        p = np.where(state[:, t - 1] == 1, _sigmoid(a_stay + beta * sev[:, t]),
                     _sigmoid(a_on + beta * sev[:, t]))
        state[:, t] = rng.random(n) < p
    q = state[:, HOURS - 1].astype(float)
    for t in range(HOURS, t_all):
        q = q * _sigmoid(a_stay + beta * sev[:, t]) + (1 - q) * _sigmoid(a_on + beta * sev[:, t])
    return state, q


def _four_class(before: np.ndarray, after_on: np.ndarray) -> np.ndarray:
    return np.where(before == 0, np.where(after_on == 1, 1, 0),
                    np.where(after_on == 1, 3, 2))


def mimic_extract_synthetic(seed: int, *, n_stays: int) -> list[Problem]:
    """The six MIMIC-Extract-like problems (independent stays per task)."""
    out = []
    t_all = HOURS + GAP + WINDOW
    for t, (name, category, title, kind) in enumerate(MIMIC_EXTRACT_TASKS):
        rng = np.random.default_rng([seed, t, 2020])
        n = n_stays
        age = np.clip(rng.normal(64, 16, n), 18, 90).round()
        a = rng.standard_normal(n) + 0.01 * (age - 64)
        b = rng.normal(0, 0.6, n)
        hours = np.arange(t_all)
        walk = np.cumsum(rng.normal(0, 0.08, (n, t_all)), axis=1)
        sev = a[:, None] + b[:, None] * hours[None, :] / HOURS + walk
        vent, q_vent = _markov(rng, sev, -3.2, 3.0, 0.9)
        vaso, q_vaso = _markov(rng, sev, -3.6, 2.6, 1.1)
        rows = []
        for _name, mu, sd, rho, pm in VARIABLES:
            noise = rng.standard_normal((n, HOURS))
            val = mu + sd * (rho * sev[:, :HOURS] + np.sqrt(1 - rho ** 2) * noise)
            seen = rng.random((n, HOURS)) < np.clip(pm * (1 + 0.25 * sev[:, :HOURS]), 0.02, 1)
            rows.append(np.where(seen, np.round(val, 2), np.nan))
        frame = pd.DataFrame({"row": np.repeat(np.arange(n), HOURS),
                              "hour": np.tile(np.arange(HOURS), n),
                              "age": np.repeat(age, HOURS)})
        for (name_v, *_), arr in zip(VARIABLES, rows, strict=True):
            frame[name_v] = arr.reshape(-1)
        frame["vent"] = vent[:, :HOURS].reshape(-1)
        frame["vaso"] = vaso[:, :HOURS].reshape(-1)
        end = sev[:, -1]
        u = rng.random(n)
        p_hosp = _sigmoid(-2.3 + 1.3 * end + 0.02 * (age - 64))
        p_icu = 0.7 * p_hosp
        los = np.exp(1.2 + 0.35 * a + 0.3 * b + 0.3 * vent[:, HOURS - 1]
                     + rng.normal(0, 0.45, n))
        los = np.maximum(los, (HOURS + GAP) / 24 + 0.01)
        s_los = 1.2 + 0.35 * a + 0.3 * b + 0.3 * vent[:, HOURS - 1]
        from math import erf, sqrt

        def p_los_over(days: float, s: np.ndarray = s_los) -> np.ndarray:
            z = (np.log(days) - s) / 0.45
            return 1 - 0.5 * (1 + np.vectorize(erf)(z / sqrt(2)))

        if name == "mort_hosp":
            y, tp = (u < p_hosp).astype(int), p_hosp
        elif name == "mort_icu":
            y, tp = (u < p_icu).astype(int), p_icu
        elif name == "los_3":
            y, tp = (los > 3).astype(int), p_los_over(3)
        elif name == "los_7":
            y, tp = (los > 7).astype(int), p_los_over(7)
        else:
            state, q = (vent, q_vent) if name == "vent" else (vaso, q_vaso)
            before = state[:, HOURS - 1]
            y = _four_class(before, state[:, -1])
            tp = np.column_stack([(before == 0) * (1 - q), (before == 0) * q,
                                  (before == 1) * (1 - q), (before == 1) * q])
        outputs = ["p"] if kind == "binary" else INTERVENTION_CLASSES
        desc = (f"MIMIC-Extract-like task `{name}` ({title}). Each stay has exactly {HOURS} "
                f"hourly rows (hour 0..{HOURS - 1} after ICU admission): age, "
                f"{len(VARIABLES)} vitals and labs (empty = not measured that hour) and the "
                f"0/1 intervention flags vent and vaso. Labels refer to the time after a "
                f"{GAP} h gap (interventions: the state at hour {HOURS + GAP + WINDOW - 1} "
                f"relative to hour {HOURS - 1}: {', '.join(INTERVENTION_CLASSES)}).")
        out.append(assemble(name, category, title, kind, outputs, "hourly", desc, None, y,
                            _split_sizes(n, (0.5, 0.15, 0.35)), rng, hourly=frame,
                            truth_p=tp,
                            best_note="AUROC of the true probabilities given the latent "
                                      "severity (an upper bound: the features are noisy)"))
    return out


# --------------------------------------------------------------------------- open data


def lifelines_problems(seed: int) -> list[Problem]:
    """GBSG2 (recurrence-free survival within 3 years) and kidney transplant (death within
    3 years): rows censored before the horizon are left out (their label is unknown)."""
    try:
        from lifelines.datasets import load_gbsg2, load_kidney_transplant
    except ImportError as exc:
        raise ConfigurationError("the open-data ML tasks need lifelines: pip install "
                                 "'medagentgym[science]'") from exc
    out = []
    horizon = 3 * 365
    g = load_gbsg2()
    g = g[(g["time"] > horizon) | (g["cens"] == 1)].reset_index(drop=True)
    yg = ((g["time"] <= horizon) & (g["cens"] == 1)).astype(int).to_numpy()
    xg = pd.DataFrame({
        "hormone_therapy": (g["horTh"] == "yes").astype(int), "age": g["age"],
        "postmenopausal": (g["menostat"] == "Post").astype(int), "tumour_size_mm": g["tsize"],
        "tumour_grade": g["tgrade"].map({"I": 1, "II": 2, "III": 3}).astype(int),
        "positive_nodes": g["pnodes"], "progesterone_receptor": g["progrec"],
        "estrogen_receptor": g["estrec"]})
    rng = np.random.default_rng([seed, 686])
    out.append(assemble(
        "gbsg2_recurrence_3y", "open_survival", "GBSG2: recurrence or death within 3 years",
        "binary", ["p"], "tabular",
        "German Breast Cancer Study Group 2 (Schumacher et al. 1994, via lifelines): predict "
        "recurrence or death within 3 years of surgery from the baseline covariates "
        "(patients censored before 3 years are left out).",
        xg, yg, _split_sizes(len(yg), (0.5, 0.2, 0.3)), rng, source="lifelines gbsg2",
        licence="lifelines (MIT); GBSG2 data from Schumacher et al. 1994"))
    k = load_kidney_transplant()
    k = k[(k["time"] > horizon) | (k["death"] == 1)].reset_index(drop=True)
    yk = ((k["time"] <= horizon) & (k["death"] == 1)).astype(int).to_numpy()
    xk = k[["age", "black_male", "white_male", "black_female"]].reset_index(drop=True)
    rng = np.random.default_rng([seed, 863])
    out.append(assemble(
        "kidney_transplant_death_3y", "open_survival",
        "Kidney transplant: death within 3 years", "binary", ["p"], "tabular",
        "Kidney transplant patients (Klein & Moeschberger, via lifelines): predict death "
        "within 3 years of transplant from age and race/sex indicators (white female is the "
        "reference group; patients censored before 3 years are left out).",
        xk, yk, _split_sizes(len(yk), (0.5, 0.2, 0.3)), rng,
        source="lifelines kidney_transplant",
        licence="lifelines (MIT); data from Klein & Moeschberger (KMsurv)"))
    return out


#: CHARTEVENTS items (CareVue and MetaVision ids) of the demo's hourly vitals
DEMO_VITALS = {211: "heart_rate", 220045: "heart_rate", 51: "sys_bp", 455: "sys_bp",
               220179: "sys_bp", 220050: "sys_bp", 618: "resp_rate", 220210: "resp_rate",
               646: "spo2", 220277: "spo2", 678: "temperature_f", 223761: "temperature_f",
               198: "gcs_total", 220739: "gcs_eye", 223900: "gcs_verbal", 223901: "gcs_motor"}
DEMO_LABS = {50912: "creatinine", 50971: "potassium", 50983: "sodium", 50882: "bicarbonate",
             51006: "bun", 51222: "hemoglobin", 51265: "platelets", 51301: "wbc",
             50931: "glucose", 50813: "lactate", 50902: "chloride", 50868: "anion_gap"}


def _read_gz(path: Path, **kw: Any) -> pd.DataFrame:
    with gzip.open(path, "rt") as fh:
        return pd.read_csv(fh, **kw)


def mimic_iii_demo_problems(src: Path, seed: int) -> list[Problem]:
    """In-hospital mortality and ICU stay > 3 days from the first 24 h of vitals and labs of
    each first ICU stay (>= 30 h) of an admission in the MIMIC-III clinical database demo."""
    stays = _read_gz(src / "ICUSTAYS.csv.gz", parse_dates=["intime", "outtime"])
    stays.columns = [c.lower() for c in stays.columns]
    adm = _read_gz(src / "ADMISSIONS.csv.gz")
    adm.columns = [c.lower() for c in adm.columns]
    pats = _read_gz(src / "PATIENTS.csv.gz", parse_dates=["dob"])
    pats.columns = [c.lower() for c in pats.columns]
    labs = _read_gz(src / "LABEVENTS.csv.gz", parse_dates=["charttime"])
    labs.columns = [c.lower() for c in labs.columns]
    stays = stays.sort_values("intime").drop_duplicates("hadm_id")
    stays = stays[(stays["outtime"] - stays["intime"]) >= pd.Timedelta(hours=HOURS + GAP)]
    stays = stays.merge(adm[["hadm_id", "hospital_expire_flag"]], on="hadm_id")
    stays = stays.merge(pats[["subject_id", "dob"]], on="subject_id").reset_index(drop=True)
    age = (stays["intime"].dt.year - stays["dob"].dt.year).clip(upper=90)
    stays = stays.assign(row=np.arange(len(stays)))
    labs = labs[labs["itemid"].isin(DEMO_LABS)].merge(
        stays[["subject_id", "intime", "row"]], on="subject_id")
    labs = labs.assign(var=labs["itemid"].map(DEMO_LABS))
    chart = _read_gz(src / "CHARTEVENTS.csv.gz", usecols=lambda c: c.lower() in (
        "icustay_id", "itemid", "charttime", "valuenum"), parse_dates=["charttime"])
    chart.columns = [c.lower() for c in chart.columns]
    chart = chart[chart["itemid"].isin(DEMO_VITALS)].merge(
        stays[["icustay_id", "intime", "row"]], on="icustay_id")
    chart = chart.assign(var=chart["itemid"].map(DEMO_VITALS))
    events = pd.concat([labs[["row", "intime", "charttime", "var", "valuenum"]],
                        chart[["row", "intime", "charttime", "var", "valuenum"]]])
    hour = (events["charttime"] - events["intime"]).dt.total_seconds() // 3600
    events = events.assign(hour=hour)[(hour >= 0) & (hour < HOURS)]
    wide = events.pivot_table(index=["row", "hour"], columns="var", values="valuenum",
                              aggfunc="mean")
    names = sorted(set(DEMO_LABS.values()) | set(DEMO_VITALS.values()))
    grid = pd.MultiIndex.from_product([range(len(stays)), range(HOURS)], names=["row", "hour"])
    wide = wide.reindex(grid).reindex(columns=names).reset_index()
    wide.insert(2, "age", np.repeat(age.to_numpy(), HOURS))
    wide.columns.name = None
    base = (f"MIMIC-III clinical database demo (100 patients, ODbL): each first ICU stay of "
            f"an admission lasting >= {HOURS + GAP} h has exactly {HOURS} hourly rows of age, "
            f"vitals (CHARTEVENTS) and labs (LABEVENTS): hourly means, empty = not "
            f"measured.")
    labels = [
        ("demo_mort_hosp", "mortality", "MIMIC-III demo: in-hospital mortality (smoke test)",
         stays["hospital_expire_flag"].astype(int).to_numpy(), "Predict in-hospital death."),
        ("demo_los_3", "length_of_stay", "MIMIC-III demo: ICU stay > 3 days (smoke test)",
         (stays["los"] > 3).astype(int).to_numpy(), "Predict an ICU stay longer than 3 days."),
    ]
    out = []
    for i, (name, category, title, y, what) in enumerate(labels):
        out.append(assemble(
            name, category, title, "binary", ["p"], "hourly",
            f"{base} {what} Very few stays: a smoke test, judged loosely.", None, y,
            _split_sizes(len(y), (0.45, 0.1, 0.45)), np.random.default_rng([seed, 100, i]),
            hourly=wide, source="MIMIC-III demo v1.4", licence="ODbL 1.0 (MIMIC-III demo)",
            loose=True))
    return out


# --------------------------------------------------------------------------- importers


def ehrshot_assets(root: Path, seed: int, *, max_rows: int = 20000) -> list[Problem]:
    """Problems from the EHRSHOT release (``EHRSHOT_ASSETS``) for users who have it.

    Expected layout (as released): ``benchmark/<task>/labeled_patients.csv`` (patient_id,
    prediction_time, value, label_type), ``features/clmbr_features.pkl`` (a dict with
    ``data_matrix``, ``patient_ids``, ``labeling_time``) and ``splits/person_id_map.csv``
    (``omop_person_id``, ``split`` in train/val/test). CheXpert labels are 14-bit integers
    (bit 13 - i is label i, as in EHRSHOT). Rows beyond ``max_rows`` per split are sampled.
    """
    import pickle

    root = Path(root)
    feat_path = root / "features" / "clmbr_features.pkl"
    split_path = root / "splits" / "person_id_map.csv"
    for p in (feat_path, split_path, root / "benchmark"):
        if not p.exists():
            raise ConfigurationError(f"EHRSHOT assets: {p} is missing; pass the EHRSHOT_ASSETS "
                                     "directory of the EHRSHOT release")
    with open(feat_path, "rb") as fh:
        feats = pickle.load(fh)  # the user's own release file
    matrix = np.asarray(feats["data_matrix"], dtype=float)
    index = pd.DataFrame({"patient_id": np.asarray(feats["patient_ids"]).astype(np.int64),
                          "prediction_time": pd.to_datetime(feats["labeling_time"]),
                          "row": np.arange(len(matrix))})
    splits = pd.read_csv(split_path)
    split_of = dict(zip(splits["omop_person_id"].astype(np.int64), splits["split"], strict=True))
    known = {t[0]: t for t in EHRSHOT_TASKS}
    out = []
    for task_dir in sorted(p for p in (root / "benchmark").iterdir() if p.is_dir()):
        name = task_dir.name
        if name not in known or not (task_dir / "labeled_patients.csv").is_file():
            continue
        _, category, title, kind, _, _ = known[name]
        lab = pd.read_csv(task_dir / "labeled_patients.csv", parse_dates=["prediction_time"])
        lab = lab.merge(index, on=["patient_id", "prediction_time"], how="inner")
        lab = lab.assign(split=lab["patient_id"].map(split_of)).dropna(subset=["split"])
        if kind == "binary":
            y_all = lab["value"].map(lambda v: str(v).strip().lower() in ("true", "1")).astype(int)
            y_all = y_all.to_numpy()
            outputs = ["p"]
        elif kind == "multiclass":
            y_all = lab["value"].astype(int).to_numpy()
            outputs = LAB_CLASSES
        else:
            bits = lab["value"].astype(np.int64).to_numpy()
            y_all = np.column_stack([(bits >> (13 - i)) & 1 for i in range(14)])
            outputs = CHEXPERT
        rng = np.random.default_rng([seed, len(out), 7])
        features, labels, keys = {}, {}, {}
        taken: set[str] = set()
        for split in SPLITS:
            rows = np.flatnonzero(lab["split"].to_numpy() == split)
            if len(rows) > max_rows:
                rows = rng.choice(rows, max_rows, replace=False)
            rows = rng.permutation(rows)
            k = _keys(rng, len(rows), taken)
            frame = pd.DataFrame(matrix[lab["row"].to_numpy()[rows]],
                                 columns=[f"e{i}" for i in range(matrix.shape[1])])
            frame.insert(0, "key", k)
            features[split], labels[split], keys[split] = frame, y_all[rows], k
        out.append(Problem(name=name, category=category, title=title, kind=kind,
                           outputs=outputs, layout="tabular",
                           description=f"EHRSHOT task `{name}` ({title}) on CLMBR features "
                                       f"(columns e0..e{matrix.shape[1] - 1}).",
                           features=features, labels=labels, keys=keys,
                           source="EHRSHOT (user-supplied)",
                           licence="EHRSHOT research data use agreement"))
    if not out:
        raise ConfigurationError(f"EHRSHOT assets: no known task under {root / 'benchmark'}")
    return out


def mimic_extract_h5(path: Path, seed: int, *, max_stays: int = 20000) -> list[Problem]:
    """Problems from MIMIC-Extract's ``all_hourly_data.h5`` for users who have it.

    Read: ``patients`` (index ``subject_id, hadm_id, icustay_id``; columns ``mort_hosp``,
    ``mort_icu``, ``los_icu`` in days), ``vitals_labs_mean`` (index ``... , hours_in``; one
    column per variable, or a (variable, aggregation) column index whose first level is
    kept) and ``interventions`` (index ``..., hours_in``; columns ``vent``, ``vaso``, ...).
    Cohort: stays of at least 30 h; features: hours 0..23; labels after a 6 h gap, as in
    MIMIC-Extract's benchmarks. Reading HDF5 needs PyTables (``pip install tables``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"MIMIC-Extract: {path} is not a file; pass the path of "
                                 "all_hourly_data.h5")
    try:
        patients = pd.read_hdf(path, "patients")
        vitals = pd.read_hdf(path, "vitals_labs_mean")
        interventions = pd.read_hdf(path, "interventions")
    except ImportError as exc:
        raise ConfigurationError("reading all_hourly_data.h5 needs PyTables: "
                                 "pip install tables") from exc
    return mimic_extract_frames(patients, vitals, interventions, seed, max_stays=max_stays)


def mimic_extract_frames(patients: pd.DataFrame, vitals: pd.DataFrame,
                         interventions: pd.DataFrame, seed: int, *,
                         max_stays: int = 20000) -> list[Problem]:
    """The six MIMIC-Extract problems from its three frames (see :func:`mimic_extract_h5`)."""
    if isinstance(vitals.columns, pd.MultiIndex):
        vitals = vitals.copy()
        vitals.columns = [str(c[0]) for c in vitals.columns]
        vitals = vitals.T.groupby(level=0).first().T
    pats = patients.reset_index()
    pats = pats[pats["los_icu"] * 24 >= HOURS + GAP].reset_index(drop=True)
    rng = np.random.default_rng([seed, 4])
    if len(pats) > max_stays:
        pats = pats.iloc[np.sort(rng.choice(len(pats), max_stays, replace=False))]
        pats = pats.reset_index(drop=True)
    stay_row = dict(zip(pats["icustay_id"], range(len(pats)), strict=True))
    v = vitals.reset_index()
    v = v[v["icustay_id"].isin(stay_row) & (v["hours_in"] < HOURS)]
    names = [c for c in vitals.columns]
    v = v.assign(row=v["icustay_id"].map(stay_row), hour=v["hours_in"].astype(int))
    v = v.groupby(["row", "hour"])[names].mean()
    grid = pd.MultiIndex.from_product([range(len(pats)), range(HOURS)], names=["row", "hour"])
    frame = v.reindex(grid).reset_index()
    iv = interventions.reset_index()
    iv = iv[iv["icustay_id"].isin(stay_row)]
    iv = iv.assign(row=iv["icustay_id"].map(stay_row), hour=iv["hours_in"].astype(int))
    flags = iv.groupby(["row", "hour"])[["vent", "vaso"]].max()
    obs = flags.reindex(grid).fillna(0).astype(int).reset_index(drop=True)
    frame["vent"], frame["vaso"] = obs["vent"].to_numpy(), obs["vaso"].to_numpy()
    last = HOURS + GAP + WINDOW - 1
    after = flags.reset_index()
    after = after[after["hour"] == last].set_index("row")
    out = []
    for t, (name, category, title, kind) in enumerate(MIMIC_EXTRACT_TASKS):
        keep = np.ones(len(pats), dtype=bool)
        if name in ("mort_hosp", "mort_icu"):
            y = pats[name].astype(int).to_numpy()
        elif name.startswith("los_"):
            y = (pats["los_icu"] > int(name[4:])).astype(int).to_numpy()
        else:
            before = frame.loc[frame["hour"] == HOURS - 1, name].to_numpy().astype(int)
            now = after[name].reindex(range(len(pats))).to_numpy()
            keep = ~np.isnan(now)  # the stay must still be in the ICU at the window's end
            y = _four_class(before, np.nan_to_num(now).astype(int))
        rows = np.flatnonzero(keep)
        sub = frame[frame["row"].isin(rows)].copy()
        remap = {int(r): i for i, r in enumerate(rows)}
        sub["row"] = sub["row"].map(remap)
        out.append(assemble(
            name, category, title, kind,
            ["p"] if kind == "binary" else INTERVENTION_CLASSES, "hourly",
            f"MIMIC-Extract task `{name}` ({title}): {HOURS} hourly rows per stay "
            f"(MIMIC-Extract's vitals_labs_mean and the vent/vaso flags); labels after a "
            f"{GAP} h gap.", None, y[rows], _split_sizes(len(rows), (0.7, 0.1, 0.2)),
            np.random.default_rng([seed, t, 5]), hourly=sub, source="MIMIC-Extract "
            "(user-supplied)", licence="PhysioNet credentialed (MIMIC-III)"))
    return out
