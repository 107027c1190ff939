"""Build the synthetic EHR databases at several sizes; print rows and seconds as JSON.

    python benchmarks/synth_scale.py                       # 100, 1000, 5000 patients
    python benchmarks/synth_scale.py --sizes 100 1000 --schemas mimic_iii --out result.json

Each build is a full ``medagentgym.data.synth.build`` (generation, SQLite write, indexes,
ANALYZE, atomic rename) into a temporary directory, timed with ``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from medagentgym.bench.procs import emit
from medagentgym.data import synth

EVENT_TABLES = {
    "mimic_iii": (
        "labevents",
        "chartevents",
        "inputevents_cv",
        "outputevents",
        "prescriptions",
        "diagnoses_icd",
        "procedures_icd",
        "microbiologyevents",
        "cost",
    ),
    "eicu": (
        "lab",
        "vitalperiodic",
        "intakeoutput",
        "medication",
        "treatment",
        "diagnosis",
        "microlab",
        "allergy",
        "cost",
    ),
    "treqs": ("lab", "prescriptions", "diagnoses", "procedures"),
}


def run(schemas: list[str], sizes: list[int], seed: int, indexes: bool) -> dict:
    results = []
    with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
        for name in schemas:
            for n in sizes:
                path = Path(tmp) / f"{name}-{n}.db"
                t0 = time.perf_counter()
                _, counts = synth.build_with_counts(name, path, n, seed, indexes=indexes)
                dt = time.perf_counter() - t0
                total = sum(counts.values())
                events = sum(counts.get(t, 0) for t in EVENT_TABLES[name])
                results.append(
                    {
                        "schema": name,
                        "patients": n,
                        "seconds": round(dt, 3),
                        "rows_total": total,
                        "rows_event_tables": events,
                        "rows_per_second": round(total / dt),
                        "db_mib": round(path.stat().st_size / 2**20, 1),
                        "rows": counts,
                    }
                )
                print(
                    f"{name:10s} {n:>7d} patients  {total:>10,d} rows  {dt:7.2f} s",
                    file=sys.stderr,
                )
                path.unlink()
    return {
        "benchmark": "synth_scale",
        "seed": seed,
        "indexes": indexes,
        "generator_version": synth.GENERATOR_VERSION,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(),
        },
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--schemas", nargs="+", default=list(synth.BUILDERS), choices=synth.BUILDERS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-indexes", action="store_true", help="skip look-up index creation")
    ap.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = ap.parse_args(argv)
    report = run(args.schemas, args.sizes, args.seed, not args.no_indexes)
    emit(report, args.out)


if __name__ == "__main__":
    main()
