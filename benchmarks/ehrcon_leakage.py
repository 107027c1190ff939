"""Can EHRCon's label be read from the note alone? A note-only detector's test AUROC.

    python benchmarks/ehrcon_leakage.py [--database synthetic|imported] [--out FILE.json]

Uses ``$MEDAGENTGYM_HOME`` (``--database imported``: import the open MIMIC-III demo first,
``medagentgym data import mimic-iii --from ../shared/data/mimic_iii_demo``). Trained on the
train split, scored on the test split, never looking at the database: per mention, the entity
(as written, lower case), its kind and category, the words of the line (dates and numbers
masked), entity x word pairs (a drug with a route, a culture with an organism), the value and
how plausible it is for the entity (z-score and percentile among the values the training
notes give that entity; how often the training notes pair the entity with the line's route or
organism words), the date's offset from the note's other dates, and the note's size. Two
detectors: logistic regression on all of it and gradient boosting on the numeric part.

Results go to ``benchmarks/results/ehrcon_leakage.json`` and docs/datasets.md (EHRCon). The
generator's claim is AUROC <= 0.6 for both.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

_WORD = re.compile(r"[a-z][a-z+\-./]*")


def _parse(text: str, entity: str) -> tuple[str | None, float | None, list[str]]:
    """(ISO date, first number, words) of a line with the entity cut out (text only)."""
    from medagentgym.tasks import ehrcon_oracle as reader

    found = reader._find(entity, text)
    rest = reader._cut(text, found) if found else text
    day, rest = reader._date(rest)
    number = re.search(r"(?<![\w.])-?\d+(?:\.\d+)?", rest)
    value = float(number.group(0)) if number else None
    words = _WORD.findall(re.sub(r"\d+(?:\.\d+)?", " ", rest.lower()))
    return day, value, words


def mention_rows(tasks: list[Any], notes_dir: Path) -> list[dict[str, Any]]:
    """What a note-only reader sees of each task (no database, no label)."""
    cache: dict[str, list[str]] = {}
    rows = []
    for t in tasks:
        md = t.metadata
        note = md["note_id"]
        if note not in cache:
            cache[note] = (notes_dir / f"{note}.txt").read_text().splitlines()
        text = cache[note][md["line"] - 1]
        day, value, words = _parse(text, md["entity"])
        rows.append({"note": note, "entity": md["entity"].lower(), "kind": md.get("kind", ""),
                     "category": t.category, "date": day, "value": value, "words": words,
                     "label": int(t.truth.value["inconsistent"])})
    by_note: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r["date"]:
            by_note[r["note"]].append(r["date"])
    sizes = Counter(r["note"] for r in rows)
    for r in rows:
        dates = sorted(by_note[r["note"]])
        if r["date"] and dates:
            mid = dates[len(dates) // 2]
            r["date_offset"] = (_ordinal(r["date"]) - _ordinal(mid))
            r["date_edge"] = int(r["date"] in (dates[0], dates[-1]))
        r["note_size"] = sizes[r["note"]]
    return rows


def _ordinal(day: str) -> int:
    import datetime as dt

    return dt.date.fromisoformat(day).toordinal()


class Plausibility:
    """Value and pairing statistics from the training notes' text."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.values: dict[str, list[float]] = defaultdict(list)
        self.pairs: Counter[tuple[str, str]] = Counter()
        self.entities: Counter[str] = Counter()
        for r in rows:
            self.entities[r["entity"]] += 1
            if r["value"] is not None:
                self.values[r["entity"]].append(r["value"])
            for w in set(r["words"]):
                self.pairs[(r["entity"], w)] += 1
        self.sorted = {k: sorted(v) for k, v in self.values.items()}

    def numeric(self, r: dict[str, Any]) -> list[float]:
        vals = self.sorted.get(r["entity"], [])
        v = r["value"]
        if v is None or len(vals) < 2:
            z, pct = 0.0, 0.5
        else:
            sd = statistics.pstdev(vals) or 1.0
            z = (v - statistics.fmean(vals)) / sd
            pct = sum(x <= v for x in vals) / len(vals)
        n = self.entities[r["entity"]]
        pair = [self.pairs[(r["entity"], w)] / n for w in set(r["words"])] if n else [0.0]
        return [
            z, abs(z), pct, abs(pct - 0.5), math.log1p(abs(v)) if v is not None else 0.0,
            math.log1p(n), min(pair or [0.0]), statistics.fmean(pair or [0.0]),
            r.get("date_offset", 0), abs(r.get("date_offset", 0)), r.get("date_edge", 0),
            r["note_size"],
        ]

    def sparse(self, r: dict[str, Any]) -> dict[str, float]:
        feats = {f"ent={r['entity']}": 1.0, f"kind={r['kind']}": 1.0,
                 f"cat={r['category']}": 1.0}
        for w in set(r["words"]):
            feats[f"w={w}"] = 1.0
            feats[f"ew={r['entity']}|{w}"] = 1.0
        return feats


def run(train_tasks: list[Any], test_tasks: list[Any], notes_dir: Path) -> dict[str, Any]:
    """Test AUROC of the two note-only detectors (and the label balance)."""
    import numpy as np
    from scipy.sparse import csr_matrix, hstack
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    train = mention_rows(train_tasks, notes_dir)
    test = mention_rows(test_tasks, notes_dir)
    plaus = Plausibility(train)
    y_tr = np.array([r["label"] for r in train])
    y_te = np.array([r["label"] for r in test])
    num_tr = np.array([plaus.numeric(r) for r in train], dtype=float)
    num_te = np.array([plaus.numeric(r) for r in test], dtype=float)
    scaler = StandardScaler().fit(num_tr)
    vec = DictVectorizer().fit([plaus.sparse(r) for r in train])
    x_tr = hstack([vec.transform([plaus.sparse(r) for r in train]),
                   csr_matrix(scaler.transform(num_tr))]).tocsr()
    x_te = hstack([vec.transform([plaus.sparse(r) for r in test]),
                   csr_matrix(scaler.transform(num_te))]).tocsr()
    with threadpool_limits(1):  # one thread: OpenMP on a shared machine only spins
        lr = LogisticRegression(C=1.0, max_iter=2000).fit(x_tr, y_tr)
        gb = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(num_tr, y_tr)
    auc_lr = float(roc_auc_score(y_te, lr.predict_proba(x_te)[:, 1]))
    auc_gb = float(roc_auc_score(y_te, gb.predict_proba(num_te)[:, 1]))
    by_cat = {}
    for c in sorted({r["category"] for r in test}):
        idx = [i for i, r in enumerate(test) if r["category"] == c]
        if len(idx) >= 20 and len(set(y_te[idx])) == 2:
            by_cat[c] = round(float(roc_auc_score(y_te[idx], lr.predict_proba(x_te[idx])[:, 1])), 4)
    return {"train": len(train), "test": len(test),
            "test_inconsistent_share": round(float(y_te.mean()), 4),
            "auroc_logistic": round(auc_lr, 4), "auroc_boosting": round(auc_gb, 4),
            "auroc_logistic_by_category": by_cat,
            "train_auroc_logistic": round(float(roc_auc_score(
                y_tr, lr.predict_proba(x_tr)[:, 1])), 4)}


def main() -> None:
    import medagentgym as mag
    from medagentgym.tasks.registry import get_family

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database", default="synthetic")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "ehrcon_leakage.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    train = mag.load_tasks("ehrcon", "train", database=args.database)
    test = mag.load_tasks("ehrcon", "test", database=args.database)
    fam = get_family("ehrcon", database=args.database)
    report = {"database": args.database, "db": fam.db.description,
              **run(train, test, fam.notes_dir()),
              "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(report, indent=2))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[args.database] = report
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
