"""Agreement of our MIMIC-IV import with EHRSQL-2024's published answers.

    python benchmarks/mimic_iv_agreement.py [--demo DIR] [--release DIR] [--db FILE]
        [--out benchmarks/results/mimic_iv_agreement.json]

Imports the open MIMIC-IV demo (``--demo``, default ``../shared/data/mimic_iv_demo``) with
:func:`medagentgym.data.importers_mimic_iv.import_mimic_iv` (or uses ``--db``, an imported
database), runs every answerable item's SQL of the EHRSQL-2024 release (``--release``, default
``../shared/data/ehrsql2024_mimic_iv_demo``) on it and compares the result with the authors'
answer the way their answer file is written (values as text, floats to 3 places, rows
sorted, the first 100). Reports, per split and overall:

* ``agree`` — our gold equals the authors' answer;
* reasons for the rest: ``needs a table absent from the input`` (``chartevents`` when the
  demo's ``icu/chartevents.csv.gz`` is missing, as in the reference mirror), ``sql error``,
  ``disagrees`` (with up to 10 examples);
* ``agree_of_computable`` (items whose tables are all present) and ``agree_of_all``.

The numbers are recorded in docs/datasets.md ("MIMIC-IV (EHRSQL-2024)").
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def agreement(db: Path, release: Path) -> dict[str, Any]:
    from medagentgym.tasks.ehrsql2024 import (
        authors_form,
        empty_tables,
        load_release,
        normalize,
        tables_of,
    )
    from medagentgym.tasks.ehrsql_instances import execute_sql

    items = [i for i in load_release(release) if i.sql is not None]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    empty = empty_tables(conn)
    by_split: dict[str, Counter] = {}
    examples: list[dict[str, str]] = []
    for it in items:
        c = by_split.setdefault(it.split, Counter())
        c["answerable"] += 1
        sql = normalize(it.sql or "")
        absent = sorted(tables_of(sql) & empty)
        if absent:
            c[f"needs a table absent from the input ({', '.join(absent)})"] += 1
            continue
        try:
            ours = authors_form(execute_sql(conn, sql, timeout_s=30.0))
        except (sqlite3.Error, ValueError) as exc:
            c["sql error"] += 1
            examples.append({"id": it.id, "error": str(exc)[:200]})
            continue
        if ours == it.answer:
            c["agree"] += 1
        else:
            c["disagrees"] += 1
            if len(examples) < 10:
                examples.append({"id": it.id, "sql": it.sql or "", "ours": ours[:300],
                                 "theirs": (it.answer or "")[:300]})
    conn.close()
    total = sum(by_split.values(), Counter())
    absent = sum(v for k, v in total.items() if k.startswith("needs a table"))
    computable = total["answerable"] - absent
    return {
        "database": str(db),
        "by_split": {s: dict(c) for s, c in by_split.items()},
        "total": dict(total),
        "agree_of_computable": round(total["agree"] / computable, 4) if computable else None,
        "agree_of_all": round(total["agree"] / total["answerable"], 4),
        "examples": examples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, default=SHARED / "mimic_iv_demo")
    ap.add_argument("--release", type=Path, default=SHARED / "ehrsql2024_mimic_iv_demo")
    ap.add_argument("--db", type=Path, default=None, help="an imported database (skip import)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                    "mimic_iv_agreement.json")
    args = ap.parse_args()
    from medagentgym.data.importers_mimic_iv import import_mimic_iv

    with tempfile.TemporaryDirectory() as tmp:
        db = args.db
        seconds = None
        if db is None:
            t0 = time.monotonic()
            db = import_mimic_iv(args.demo, Path(tmp) / "mimic_iv.sqlite").path
            seconds = round(time.monotonic() - t0, 1)
        result = agreement(db, args.release)
    result["import_seconds"] = seconds
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    t = result["total"]
    print(f"agree {t.get('agree', 0)}/{t['answerable']} answerable items "
          f"({result['agree_of_all']:.1%}); of the computable ones "
          f"{result['agree_of_computable']:.1%}")
    for k, v in sorted(t.items(), key=lambda kv: -kv[1]):
        if k not in ("answerable", "agree"):
            print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
