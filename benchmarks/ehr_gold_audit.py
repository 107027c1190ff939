"""Audit of the EHR datasets' gold answers and grader on the database in use.

    python benchmarks/ehr_gold_audit.py [--database synthetic|imported] [--split test]
        [--datasets mimic_iii,eicu,treqs,ehr_seqsql] [--out FILE.json]

Uses ``$MEDAGENTGYM_HOME`` (import the open demos there first for ``--database imported``:
``medagentgym data import mimic-iii --from ../shared/data/mimic_iii_demo --treqs`` and
``medagentgym data import eicu --from ../shared/data/eicu_demo``). For every task of the split
(every sub-question of an EHR-SeqSQL chain) it measures, independently of how the tasks were
built (only the public task API, the stored gold SQL and the database are used):

* ``unanswerable`` — tasks whose gold is "abstain";
* ``tie_dependent`` — answerable questions whose gold SQL returns another multiset of rows on
  a copy of the database with every table's rows stored in reverse order (ties broken the
  other way by ``ORDER BY ... LIMIT``, bare columns of ``GROUP BY``...);
* ``duplicate_rows`` — gold results that repeat an identical row;
* ``top_n`` — "top N" questions (``dense_rank() ... <= N``) and those whose gold has more
  than N rows;
* what the grader accepts: the de-duplicated gold (where the question does not ask for a
  count), the gold with its columns reversed, exactly N rows of a tied "top N" set, a single
  timestamp written "January 10, 2104 13:59" / "10 Jan 2104 13:59", and what constant answers
  (None, 0, 1, True, False, 2, [], "") score.

The numbers are recorded in docs/datasets.md ("Gold audit").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

DATASETS = ("mimic_iii", "eicu", "treqs", "ehr_seqsql")
CONSTANTS: dict[str, Any] = {"None": None, "0": 0, "1": 1, "True": True, "False": False,
                             "2": 2, "[]": [], "''": ""}
_TOP_N = re.compile(r"(\bt\d+\.c\d+\s*<=\s*)(\d+)")
_COUNT_HEAD = re.compile(r"\bcount\s*\(")


# --------------------------------------------------------------------------- reversed copy


def reversed_copy(src: Path, dst: Path) -> Path:
    """``src`` with every table's rows stored in reverse order (rowid aliases turned into
    plain keys so that the storage order can change; indexes recreated)."""
    out = sqlite3.connect(f"file:{dst}", uri=True)
    out.execute(f"attach database 'file:{src}?mode=ro' as src")
    rows = out.execute(
        "select type, name, sql from src.sqlite_master where sql is not null "
        "and name not like 'sqlite_%'").fetchall()
    for typ, name, sql in rows:
        if typ == "table":
            out.execute(re.sub(r"\bINTEGER\s+PRIMARY\s+KEY\b", "INT PRIMARY KEY", sql,
                               flags=re.IGNORECASE))
            out.execute(f'insert into main."{name}" select * from src."{name}" '
                        f"order by rowid desc")
    for typ, _name, sql in rows:
        if typ in ("index", "view"):
            out.execute(sql)
    out.commit()
    out.execute("detach database src")
    out.close()
    return dst


# --------------------------------------------------------------------------- helpers


def _rows(conn: sqlite3.Connection, sql: str) -> list[tuple] | None:
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    except sqlite3.Error:
        return None


def _key(rows: list) -> Counter:
    return Counter(json.dumps([_canon(v) for v in r]) for r in rows)


def _canon(v: Any) -> Any:
    """Floats to 10 significant digits: a sum over rows in another order differs in the last
    bits (the grader's tolerance is 1e-6 relative), which is not a tie."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, float):
        return float(f"{v:.10g}")
    return v


def _ranks(conn: sqlite3.Connection, sql: str, n: int) -> dict[str, list[int]] | None:
    """Dense rank of each gold row (by re-running with ``<= k`` for k = 1..N)."""
    prev: Counter = Counter()
    rank_of: dict[str, list[int]] = {}
    for k in range(1, n + 1):
        rows = _rows(conn, _TOP_N.sub(lambda m, k=k: m.group(1) + str(k), sql))
        if rows is None:
            return None
        cur = _key(rows)
        for row, c in (cur - prev).items():
            rank_of.setdefault(row, []).extend([k] * c)
        prev = cur
    return rank_of or None


def _n_rows_tie_consistent(gold: list, rank_of: dict[str, list[int]], n: int) -> list | None:
    """Exactly N rows of the gold, lowest ranks first (None when the gold has <= N rows)."""
    if len(gold) <= n:
        return None
    flat = sorted((r, row) for row, rs in rank_of.items() for r in rs)
    picked = [json.loads(row) for _r, row in flat[:n]]
    return picked


def _fmt_dates(value: str) -> list[str]:
    try:
        t = dt.datetime.strptime(value[:19], "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return []
    clock = f"{t:%H:%M}" + (f":{t:%S}" if t.second else "")  # seconds only when there are
    return [f"{t:%B} {t.day}, {t.year} {clock}", f"{t.day} {t:%b} {t.year} {clock}"] + (
        [f"{t:%B} {t.day}, {t.year}", f"{t.day} {t:%b} {t.year}"]
        if t.hour == t.minute == t.second == 0 else [])


def _units(task: Any) -> list[tuple[int, Any, str, str]]:
    truth = task.truth
    if truth.kind == "sequence":
        return [(i, v, s, q) for i, (v, s, q) in enumerate(zip(
            truth.value, truth.extra.get("sql") or [], task.metadata.get("questions") or [],
            strict=False))]
    return [(0, truth.value, truth.extra.get("sql") or "", task.goal)]


# --------------------------------------------------------------------------- audit


def audit(dataset: str, split: str, database: str) -> dict[str, Any]:
    from medagentgym.tasks.registry import get_family, load_tasks

    t0 = time.perf_counter()
    fam = get_family(dataset, database=database)
    tasks = load_tasks(dataset, split, database=database)
    db_path = Path(fam.db.path)
    out: dict[str, Any] = {"dataset": dataset, "database": database, "split": split,
                           "db": str(db_path), "tasks": len(tasks)}
    c: Counter = Counter()
    examples: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rev = reversed_copy(db_path, Path(tmp) / "reversed.sqlite")
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        rconn = sqlite3.connect(f"file:{rev}?mode=ro", uri=True)
        for task in tasks:
            units = _units(task)
            if any(v is None for _s, v, _q, _x in units) or task.metadata.get("is_impossible"):
                c["unanswerable"] += 1
            flags: set[str] = set()
            for stage, gold, sql, question in units:
                if gold is None or not sql:
                    continue
                c["answerable_questions"] += 1
                a, b = _rows(conn, sql), _rows(rconn, sql)
                if a is not None and b is not None and _key(a) != _key(b):
                    flags.add("tie_dependent")
                    examples.setdefault("tie_dependent", []).append(question)
                head = sql.lower().split(" from ", 1)[0]
                is_count = bool(_COUNT_HEAD.search(head)) or "how many" in question.lower()
                keys = [json.dumps([_canon(v) for v in r]) for r in gold]
                if len(set(keys)) < len(keys):
                    flags.add("duplicate_rows")
                    if not is_count:
                        c["dedup_checked"] += 1
                        dedup = [json.loads(k) for k in dict.fromkeys(keys)]
                        c["dedup_accepted"] += fam.grade_value(task, dedup, stage=stage).correct
                if gold and len(gold[0]) >= 2 and len(gold) <= 200:
                    c["permuted_checked"] += 1
                    perm = [list(reversed(r)) for r in gold]
                    c["permuted_accepted"] += fam.grade_value(task, perm, stage=stage).correct
                m = _TOP_N.search(sql) if "dense_rank" in sql else None
                if m:
                    n = int(m.group(2))
                    flags.add("top_n")
                    if len(gold) > n:
                        flags.add("top_n_gold_gt_n")
                        rank_of = _ranks(conn, sql, n)
                        pick = _n_rows_tie_consistent(gold, rank_of, n) if rank_of else None
                        if pick is not None:
                            c["top_n_exact_checked"] += 1
                            c["top_n_exact_accepted"] += fam.grade_value(
                                task, pick, stage=stage).correct
                if len(gold) == 1 and len(gold[0]) == 1 and isinstance(gold[0][0], str):
                    forms = _fmt_dates(gold[0][0])
                    if forms:
                        c["date_checked"] += len(forms)
                        c["date_accepted"] += sum(
                            fam.grade_value(task, f, stage=stage).correct for f in forms)
            for f in flags:
                c[f] += 1
            for name, value in CONSTANTS.items():
                c[f"const {name}"] += all(
                    fam.grade_value(task, value, stage=s).correct for s, *_ in units)
        conn.close()
        rconn.close()
    n = max(1, len(tasks))
    out.update({k: c[k] for k in ("unanswerable", "answerable_questions", "tie_dependent",
                                  "duplicate_rows", "top_n", "top_n_gold_gt_n")})
    out["shares"] = {
        "unanswerable": round(c["unanswerable"] / n, 4),
        "tie_dependent": round(c["tie_dependent"] / max(1, len(tasks) - c["unanswerable"]), 4),
        "duplicate_rows": round(c["duplicate_rows"] / max(1, len(tasks) - c["unanswerable"]), 4),
        "top_n_gold_gt_n": f"{c['top_n_gold_gt_n']}/{c['top_n']}",
    }
    out["accepted"] = {
        "dedup": f"{c['dedup_accepted']}/{c['dedup_checked']}",
        "columns_reversed": f"{c['permuted_accepted']}/{c['permuted_checked']}",
        "top_n_exactly_n": f"{c['top_n_exact_accepted']}/{c['top_n_exact_checked']}",
        "dates_month_names": f"{c['date_accepted']}/{c['date_checked']}",
    }
    out["constants"] = {k: c[f"const {k}"] for k in CONSTANTS}
    out["max_constant_share"] = round(max(c[f"const {k}"] for k in CONSTANTS) / n, 4)
    out["examples"] = {k: v[:3] for k, v in examples.items()}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database", default="synthetic")
    ap.add_argument("--split", default="test")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    results = []
    for ds in args.datasets.split(","):
        res = audit(ds, args.split, args.database)
        print(json.dumps({k: v for k, v in res.items() if k != "examples"}), flush=True)
        results.append(res)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
