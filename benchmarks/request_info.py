"""Benchmark ``request_info(term)``: the InfoIndex against a naive scan of every cell.

Builds (once, cached at ``--db``) a SQLite database of 17 MIMIC-III-like tables with about
9.1 million cells of realistic-looking random values (ids, codes, timestamps, measurements,
drug names, titles), then measures in separate processes (so peak memory is per method):

* ``index``: build time and memory of :class:`medagentgym.data.info.InfoIndex`, save/load of
  its ``.npz`` file, and ``term`` latency over ~50 queries (exact and fuzzy, text, codes,
  numbers, timestamps, misses);
* ``naive``: what the published code does per call — read every table and compare the term
  with every cell (exact, case-insensitive; else normalised edit distance via rapidfuzz, which
  is already far faster than a Python loop) — on a few queries, since each takes seconds.

Usage::

    .venv/bin/python benchmarks/request_info.py            # full size, prints JSON
    .venv/bin/python benchmarks/request_info.py --scale 0.1 --naive-queries 2
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_SYLLABLES_TEXT = (
    "am ox ic il lin pro pra zol met fen tan ol ide ine ate cil dro hy chlo ro thi az ep "
    "in ser tra mab vir cef tri ax one pam dol cor ton gen sul fa meth yl pred ni so "
    "lone hep ar war rin ins u lis no pril lo sar ator va sta tin cyc clo mor phi ne ket "
    "ac fur se mide"
)
SYLLABLES = _SYLLABLES_TEXT.split()
_WORDS_TEXT = (
    "acute chronic disease disorder syndrome infection of the with without mention "
    "complication unspecified other heart failure renal kidney pulmonary embolism "
    "pneumonia sepsis shock cardiac arrest hypertension diabetes mellitus type ii "
    "uncontrolled hemorrhage fracture closed open injury artery coronary atherosclerosis "
    "native vessel respiratory insufficiency abscess malignant neoplasm benign liver "
    "cirrhosis alcoholic stage end anemia deficiency iron blood loss secondary primary "
    "obstruction intestine ulcer stomach duodenum valve mitral aortic stenosis insertion "
    "catheter venous central ventilation mechanical hours consecutive less than more "
    "transfusion packed cells"
)
WORDS = _WORDS_TEXT.split()
_UNITS_TEXT = (
    "mg/dL mmol/L mEq/L g/dL % K/uL IU/L U/L mmHg bpm ml kg cm insp/min deg. F mg mcg units"
)
UNITS = _UNITS_TEXT.split()


def _join_rows(parts: np.ndarray, lengths: np.ndarray, sep: str) -> list[str]:
    return [sep.join(row[:k]) for row, k in zip(parts.tolist(), lengths.tolist(), strict=True)]


def pool_words(rng: np.random.Generator, n: int, lo: int = 2, hi: int = 4) -> list[str]:
    parts = np.asarray(SYLLABLES)[rng.integers(0, len(SYLLABLES), (n, hi))]
    return sorted({w.capitalize() for w in _join_rows(parts, rng.integers(lo, hi + 1, n), "")})


def pool_titles(rng: np.random.Generator, n: int, lo: int = 2, hi: int = 7) -> list[str]:
    parts = np.asarray(WORDS)[rng.integers(0, len(WORDS), (n, hi))]
    titles = _join_rows(parts, rng.integers(lo, hi + 1, n), " ")
    return sorted({t[0].upper() + t[1:] for t in titles})


def sample(rng: np.random.Generator, pool: list, n: int, skew: float = 1.1) -> np.ndarray:
    """Zipf-like draw from ``pool`` (frequent values first)."""
    weights = 1.0 / np.arange(1, len(pool) + 1) ** skew
    return np.asarray(pool, dtype=object)[rng.choice(len(pool), n, p=weights / weights.sum())]


def timestamps(rng: np.random.Generator, n: int, date_only: bool = False) -> np.ndarray:
    start = np.datetime64("2100-01-01T00:00")
    minutes = rng.integers(0, 6 * 365 * 24 * 60, n)
    stamps = np.datetime_as_string(start + minutes.astype("timedelta64[m]"), unit="s")
    if date_only:
        return np.char.add(np.char.partition(stamps, "T")[:, 0], " 00:00:00")
    return np.char.replace(stamps, "T", " ")


def with_nulls(rng: np.random.Generator, values: np.ndarray, fraction: float) -> list:
    out = values.astype(object)
    out[rng.random(len(values)) < fraction] = None
    return out.tolist()


def icd_codes(rng: np.random.Generator, n: int) -> list[str]:
    numbers = rng.integers(1, 99999, n)
    codes = np.char.zfill(numbers.astype(str), 5)
    prefix = rng.random(n)
    codes = np.where(
        prefix < 0.08, np.char.add("V", np.char.zfill((numbers % 1000).astype(str), 4)), codes
    )
    codes = np.where(
        prefix > 0.96, np.char.add("E", np.char.zfill((numbers % 1000).astype(str), 4)), codes
    )
    return sorted(set(codes.tolist()))


def generate(db: Path, scale: float = 1.0, seed: int = 0) -> dict:
    """Write the synthetic database; return its table sizes."""
    rng = np.random.default_rng(seed)

    def n_of(rows: int) -> int:
        return max(10, int(rows * scale))

    n_pat, n_adm = n_of(4000), n_of(6000)
    subjects = np.arange(10000, 10000 + n_pat)
    hadms = np.arange(100000, 100000 + n_adm)
    n_icu = n_of(7000)
    icustays = np.arange(200000, 200000 + n_icu)
    drugs = pool_words(rng, 4000)
    item_labels = pool_titles(rng, 16000, 1, 3)
    lab_labels = pool_words(rng, 900, 2, 3)
    diag_codes, proc_codes = icd_codes(rng, 16000), icd_codes(rng, 5000)
    diag_titles, proc_titles = pool_titles(rng, 30000), pool_titles(rng, 8000)
    organisms = [
        f"{g.upper()} {s.lower()}"
        for g, s in zip(pool_words(rng, 400), pool_words(rng, 400), strict=False)
    ]
    specimens = [t.upper() for t in pool_titles(rng, 120, 1, 3)]
    careunits = ["MICU", "SICU", "CCU", "CSRU", "TSICU", "NICU", "NWARD"]

    tables: dict[str, dict[str, list]] = {}

    def add(name: str, **columns) -> None:
        tables[name] = {
            k: (v.tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in columns.items()
        }

    add("patients", row_id=np.arange(1, n_pat + 1), subject_id=subjects,
        gender=rng.choice(["F", "M"], n_pat), dob=timestamps(rng, n_pat, date_only=True),
        dod=with_nulls(rng, timestamps(rng, n_pat, date_only=True), 0.7))  # fmt: skip
    add("admissions", row_id=np.arange(1, n_adm + 1), subject_id=rng.choice(subjects, n_adm),
        hadm_id=hadms, admittime=timestamps(rng, n_adm), dischtime=timestamps(rng, n_adm),
        admission_type=sample(rng, ["EMERGENCY", "ELECTIVE", "URGENT", "NEWBORN"], n_adm),
        admission_location=sample(rng, ["EMERGENCY ROOM ADMIT", "PHYS REFERRAL/NORMAL DELI",
                                        "TRANSFER FROM HOSP/EXTRAM", "CLINIC REFERRAL/PREMATURE"], n_adm),
        discharge_location=sample(rng, ["HOME", "HOME HEALTH CARE", "SNF", "REHAB/DISTINCT PART HOSP",
                                        "DEAD/EXPIRED", "LONG TERM CARE HOSPITAL"], n_adm),
        insurance=sample(rng, ["Medicare", "Private", "Medicaid", "Government", "Self Pay"], n_adm),
        language=with_nulls(rng, sample(rng, ["ENGL", "SPAN", "RUSS", "PTUN", "CANT", "PORT"], n_adm), 0.3),
        marital_status=with_nulls(rng, sample(rng, ["MARRIED", "SINGLE", "WIDOWED", "DIVORCED"], n_adm), 0.1),
        ethnicity=sample(rng, ["WHITE", "BLACK/AFRICAN AMERICAN", "UNKNOWN/NOT SPECIFIED",
                               "HISPANIC OR LATINO", "ASIAN", "OTHER"], n_adm),
        age=rng.integers(18, 90, n_adm))  # fmt: skip
    add("icustays", row_id=np.arange(1, n_icu + 1), subject_id=rng.choice(subjects, n_icu),
        hadm_id=rng.choice(hadms, n_icu), icustay_id=icustays,
        first_careunit=sample(rng, careunits, n_icu), last_careunit=sample(rng, careunits, n_icu),
        first_wardid=rng.integers(1, 60, n_icu), last_wardid=rng.integers(1, 60, n_icu),
        intime=timestamps(rng, n_icu), outtime=timestamps(rng, n_icu))  # fmt: skip
    n = n_of(20000)
    add("transfers", row_id=np.arange(1, n + 1), subject_id=rng.choice(subjects, n),
        hadm_id=rng.choice(hadms, n), icustay_id=with_nulls(rng, rng.choice(icustays, n), 0.4),
        eventtype=sample(rng, ["transfer", "admit", "discharge"], n),
        careunit=with_nulls(rng, sample(rng, careunits, n), 0.3), wardid=rng.integers(1, 60, n),
        intime=timestamps(rng, n), outtime=timestamps(rng, n))  # fmt: skip
    add("d_icd_diagnoses", row_id=np.arange(1, len(diag_codes) + 1), icd9_code=diag_codes,
        short_title=[t[:24] for t in diag_titles[: len(diag_codes)]],
        long_title=diag_titles[: len(diag_codes)])  # fmt: skip
    add("d_icd_procedures", row_id=np.arange(1, len(proc_codes) + 1), icd9_code=proc_codes,
        short_title=[t[:24] for t in proc_titles[: len(proc_codes)]],
        long_title=proc_titles[: len(proc_codes)])  # fmt: skip
    items = np.arange(1, len(item_labels) + 1) + 220000
    add("d_items", row_id=np.arange(1, len(items) + 1), itemid=items, label=item_labels,
        linksto=sample(rng, ["chartevents", "inputevents_cv", "outputevents", "datetimeevents"], len(items)))  # fmt: skip
    labitems = np.arange(50800, 50800 + len(lab_labels))
    add("d_labitems", row_id=np.arange(1, len(labitems) + 1), itemid=labitems, label=lab_labels)
    for name, codes, rows in (
        ("diagnoses_icd", diag_codes, 50000),
        ("procedures_icd", proc_codes, 20000),
    ):
        n = n_of(rows)
        add(name, row_id=np.arange(1, n + 1), subject_id=rng.choice(subjects, n),
            hadm_id=rng.choice(hadms, n), icd9_code=sample(rng, codes, n, 0.9),
            charttime=timestamps(rng, n))  # fmt: skip
    n = n_of(330000)
    add("labevents", row_id=np.arange(1, n + 1), subject_id=rng.choice(subjects, n),
        hadm_id=with_nulls(rng, rng.choice(hadms, n), 0.2), itemid=sample(rng, labitems.tolist(), n),
        charttime=timestamps(rng, n),
        valuenum=with_nulls(rng, np.round(rng.lognormal(3, 1.2, n), 2), 0.1),
        valueuom=sample(rng, UNITS, n))  # fmt: skip
    n = n_of(470000)
    add("chartevents", row_id=np.arange(1, n + 1), subject_id=rng.choice(subjects, n),
        hadm_id=rng.choice(hadms, n), icustay_id=rng.choice(icustays, n),
        itemid=sample(rng, items.tolist(), n, 1.3), charttime=timestamps(rng, n),
        valuenum=with_nulls(rng, np.round(rng.normal(80, 25, n), 1), 0.05),
        valueuom=sample(rng, UNITS, n))  # fmt: skip
    for name, rows, col in (("inputevents_cv", 100000, "amount"), ("outputevents", 60000, "value")):
        n = n_of(rows)
        add(name, row_id=np.arange(1, n + 1), subject_id=rng.choice(subjects, n),
            hadm_id=rng.choice(hadms, n), icustay_id=rng.choice(icustays, n),
            charttime=timestamps(rng, n), itemid=sample(rng, items.tolist(), n),
            **{col: np.round(rng.gamma(2.0, 60.0, n), 2)},
            **{f"{col}uom" if col == "amount" else "valueuom": sample(rng, ["ml", "mg", "units", "mcg"], n)})  # fmt: skip
    n = n_of(60000)
    add("prescriptions", row_id=np.arange(1, n + 1), subject_id=rng.choice(subjects, n),
        hadm_id=rng.choice(hadms, n), icustay_id=with_nulls(rng, rng.choice(icustays, n), 0.5),
        startdate=timestamps(rng, n, date_only=True), enddate=timestamps(rng, n, date_only=True),
        drug=sample(rng, drugs, n), dose_val_rx=sample(rng, ["1", "2", "5", "10", "20", "25", "40", "0.5", "100", "500", "1000"], n),
        dose_unit_rx=sample(rng, ["mg", "mcg", "g", "ml", "units", "tab", "puff"], n),
        route=sample(rng, ["PO", "IV", "SC", "IH", "PR", "NG", "IV DRIP", "TP"], n))  # fmt: skip
    n = n_of(20000)
    add("microbiologyevents", row_id=np.arange(1, n + 1), subject_id=rng.choice(subjects, n),
        hadm_id=rng.choice(hadms, n), charttime=timestamps(rng, n),
        spec_type_desc=sample(rng, specimens, n), org_name=with_nulls(rng, sample(rng, organisms, n), 0.5))  # fmt: skip
    n = n_of(40000)
    add("cost", row_id=np.arange(1, n + 1), subject_id=rng.choice(subjects, n),
        hadm_id=rng.choice(hadms, n),
        event_type=sample(rng, ["diagnoses_icd", "procedures_icd", "labevents", "prescriptions"], n),
        event_id=rng.integers(1, 300000, n), chargetime=timestamps(rng, n),
        cost=np.round(rng.gamma(1.5, 4.0, n), 2))  # fmt: skip

    tmp = db.with_name(db.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    sizes = {}
    for name, columns in tables.items():
        names = list(columns)
        con.execute(f"CREATE TABLE {name} ({', '.join(names)})")
        rows = list(zip(*columns.values(), strict=True))
        con.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * len(names))})", rows)
        sizes[name] = {"rows": len(rows), "columns": len(names)}
    con.commit()
    con.close()
    os.replace(tmp, db)
    return sizes


# --------------------------------------------------------------------------- queries


def _typo(rng: random.Random, text: str, edits: int) -> str:
    chars = list(text)
    for _ in range(edits):
        i = rng.randrange(len(chars))
        op = rng.choice(["sub", "del", "ins", "swap"])
        if op == "sub":
            chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz0123456789")
        elif op == "del" and len(chars) > 3:
            del chars[i]
        elif op == "ins":
            chars.insert(i, rng.choice("abcdefghijklmnopqrstuvwxyz"))
        elif i + 1 < len(chars):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return "".join(chars)


def make_queries(db: Path, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    con = sqlite3.connect(db)

    def pick(sql: str, k: int) -> list[str]:
        values = [str(r[0]) for r in con.execute(sql) if r[0] is not None]
        return rng.sample(values, min(k, len(values)))

    text_cols = [
        ("prescriptions", "drug"), ("d_items", "label"), ("d_labitems", "label"),
        ("d_icd_diagnoses", "short_title"), ("microbiologyevents", "org_name"),
        ("admissions", "discharge_location"),
    ]  # fmt: skip
    queries: list[dict] = []
    for table, col in text_cols:
        for v in pick(f"SELECT DISTINCT {col} FROM {table}", 3):
            queries.append({"kind": "text_exact", "term": rng.choice([v, v.lower(), v.upper()])})
        for v in pick(f"SELECT DISTINCT {col} FROM {table}", 3):
            queries.append(
                {"kind": "text_fuzzy", "term": _typo(rng, v.lower(), rng.choice([1, 2]))}
            )
    for sql in (
        "SELECT DISTINCT icd9_code FROM diagnoses_icd",
        "SELECT DISTINCT itemid FROM labevents",
        "SELECT charttime FROM chartevents LIMIT 20000",
        "SELECT valuenum FROM labevents LIMIT 20000",
    ):
        for v in pick(sql, 2):
            queries.append({"kind": "code_number_time_exact", "term": v})
    for v in pick("SELECT charttime FROM chartevents LIMIT 20000", 2):
        queries.append({"kind": "time_fuzzy", "term": _typo(rng, v, 1)[:16]})
    for v in pick("SELECT DISTINCT icd9_code FROM diagnoses_icd", 2):
        queries.append({"kind": "code_fuzzy", "term": _typo(rng, v, 1)})
    for _ in range(4):
        gibberish = "".join(rng.choice("qwxzjkvy") for _ in range(rng.randint(5, 12)))
        queries.append({"kind": "miss", "term": gibberish})
    con.close()
    return queries


# --------------------------------------------------------------------------- phases


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def phase_index(db: Path, queries: list[dict]) -> dict:
    import pandas  # noqa: F401  (imported by the build; keep it out of the index's memory)

    from medagentgym.data.info import InfoIndex

    gc.collect()
    before = _rss_mb()
    t0 = time.perf_counter()
    index = InfoIndex.build(db)
    build_s = time.perf_counter() - t0
    gc.collect()
    retained = _rss_mb() - before
    peak = _peak_rss_mb() - before
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "index.npz"
        t0 = time.perf_counter()
        index.save(file)
        save_s = time.perf_counter() - t0
        size_mb = file.stat().st_size / 2**20
        t0 = time.perf_counter()
        loaded = InfoIndex.load(file)
        load_s = time.perf_counter() - t0
    del loaded
    times: dict[str, list[float]] = {}
    results = []
    for q in queries:
        index.term(q["term"])  # warm
        t0 = time.perf_counter()
        matches = index.term(q["term"])
        ms = (time.perf_counter() - t0) * 1000
        times.setdefault(q["kind"], []).append(ms)
        results.append((q["term"], [(m.table, m.column, m.value) for m in matches[:5]]))
    all_ms = [t for ts in times.values() for t in ts]
    non_exact = [t for kind, ts in times.items() if not kind.endswith("exact") for t in ts]
    t0 = time.perf_counter()
    text = index.answer("term", "", queries[0]["term"])
    answer_ms = (time.perf_counter() - t0) * 1000
    return {
        "distinct_values": index.n_values,
        "distinct_keys": index.n_keys,
        "build_s": round(build_s, 2),
        "build_peak_rss_mb": round(peak, 1),
        "retained_rss_mb": round(retained, 1),
        "npz_mb": round(size_mb, 1),
        "save_s": round(save_s, 2),
        "load_s": round(load_s, 2),
        "term_ms": {
            "n": len(all_ms),
            "p50": round(_pct(all_ms, 0.5), 2),
            "p90": round(_pct(all_ms, 0.9), 2),
            "max": round(max(all_ms), 2),
            "non_exact_n": len(non_exact),
            "non_exact_p50": round(_pct(non_exact, 0.5), 2),
            "non_exact_p90": round(_pct(non_exact, 0.9), 2),
            "by_kind_p50": {k: round(statistics.median(v), 2) for k, v in times.items()},
            "by_kind_max": {k: round(max(v), 2) for k, v in times.items()},
        },
        "answer_ms": round(answer_ms, 2),
        "answer_example": text[:300],
        "results": results,
    }


def naive_term(db: Path, term: str) -> list[tuple[str, str, str, float]]:
    """Per call: read every table, compare with every cell (the published approach)."""
    import pandas as pd
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    con = sqlite3.connect(db)
    names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    needle = term.strip().lower()
    exact, fuzzy = [], []
    for name in names:
        frame = pd.read_sql(f"SELECT * FROM {name}", con)
        for col in frame.columns:
            cells = frame[col].dropna().astype(str).tolist()
            exact += [(name, col, c, 0.0) for c in cells if c.lower() == needle]
            if not exact:
                lowered = [c.lower() for c in cells]
                for _, dist, i in process.extract(
                    needle,
                    lowered,
                    scorer=Levenshtein.normalized_distance,
                    score_cutoff=0.5,
                    limit=5,
                ):
                    if dist < 0.5:
                        fuzzy.append((name, col, cells[i], dist))
    con.close()
    return exact or sorted(fuzzy, key=lambda m: m[3])[:5]


def phase_naive(db: Path, queries: list[dict], n: int) -> dict:
    import pandas  # noqa: F401
    import rapidfuzz  # noqa: F401

    gc.collect()
    before = _rss_mb()
    chosen = [q for q in queries if q["kind"] == "text_exact"][:1]
    chosen += [q for q in queries if q["kind"] == "text_fuzzy"][: max(0, n - 1)]
    times = []
    for q in chosen:
        t0 = time.perf_counter()
        naive_term(db, q["term"])
        times.append(time.perf_counter() - t0)
    return {
        "queries": [q["term"] for q in chosen],
        "seconds": [round(t, 2) for t in times],
        "median_s": round(statistics.median(times), 2),
        "peak_rss_mb": round(_peak_rss_mb() - before, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--db", type=Path, default=Path(tempfile.gettempdir()) / "mag-bench-request-info.db"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the ~9.1 M cells")
    parser.add_argument("--naive-queries", type=int, default=3)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    parser.add_argument("--phase", choices=["index", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--queries", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        queries = json.loads(args.queries.read_text())
        if args.phase == "index":
            out = phase_index(args.db, queries)
        else:
            out = phase_naive(args.db, queries, args.naive_queries)
        print(json.dumps(out))
        return

    db = args.db
    if args.scale != 1.0:
        db = db.with_name(f"{db.stem}-{args.scale:g}{db.suffix}")
    generated_s = None
    if args.regenerate or not db.exists():
        t0 = time.perf_counter()
        generate(db, args.scale)
        generated_s = round(time.perf_counter() - t0, 1)
    con = sqlite3.connect(db)
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    cells = 0
    for t in tables:
        n_rows = con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
        cells += n_rows * len(con.execute(f"SELECT * FROM {t} LIMIT 0").description)
    con.close()
    queries = make_queries(db)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(queries, fh)
        qfile = fh.name
    try:
        runs = {}
        for phase in ("index", "naive"):
            proc = subprocess.run(
                [sys.executable, __file__, "--db", str(db), "--phase", phase, "--queries", qfile,
                 "--naive-queries", str(args.naive_queries)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            runs[phase] = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        os.unlink(qfile)
    index, naive = runs["index"], runs["naive"]
    results = index.pop("results")
    report = {
        "db": str(db),
        "tables": len(tables),
        "cells": cells,
        "db_mb": round(db.stat().st_size / 2**20, 1),
        "generate_s": generated_s,
        "index": index,
        "naive": naive,
        "speedup_naive_median_over_index_p50": round(
            naive["median_s"] * 1000 / max(index["term_ms"]["p50"], 1e-3)
        ),
        "speedup_naive_median_over_index_p90": round(
            naive["median_s"] * 1000 / max(index["term_ms"]["p90"], 1e-3)
        ),
        "speedup_naive_fuzzy_over_index_fuzzy_text_p50": round(
            statistics.median(naive["seconds"][1:] or naive["seconds"])
            * 1000
            / max(index["term_ms"]["by_kind_p50"].get("text_fuzzy", 1e-3), 1e-3)
        ),
        "target_p50_ms": 50,
        "target_met": index["term_ms"]["p50"] <= 50,
        "sample_results": results[:6],
    }
    print(json.dumps(report, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
