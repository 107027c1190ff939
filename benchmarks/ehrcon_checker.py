"""EHRCon: the independent checker against every label, and what constant answers score.

    python benchmarks/ehrcon_checker.py [--database synthetic|imported] [--out FILE.json]

Uses ``$MEDAGENTGYM_HOME`` (``--database imported``: import the open MIMIC-III demo first,
``medagentgym data import mimic-iii --from ../shared/data/mimic_iii_demo``). For every task
of both splits, host-side: ``ehrcon_check`` (the validate oracle: note line + tables, never
the label) against the stored flag and field count, the label balance per category, and the
score of always-inconsistent / always-consistent / bare-boolean answers. Results go to
``benchmarks/results/ehrcon_checker.json`` and docs/datasets.md (EHRCon).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

CONSTANTS = {"always inconsistent": {"inconsistent": True, "n_fields": 1},
             "always consistent": {"inconsistent": False, "n_fields": 0},
             "True": True, "False": False}


def main() -> None:
    from medagentgym.tasks import ehrcon as E
    from medagentgym.tasks.ehrcon_oracle import ehrcon_check
    from medagentgym.tasks.registry import get_family

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database", default="synthetic")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "ehrcon_checker.json")
    args = ap.parse_args()
    fam = get_family("ehrcon", database=args.database)
    report: dict = {"database": args.database, "db": fam.db.description}
    for split in ("train", "test"):
        tasks = fam.load_tasks(split)
        t0 = time.perf_counter()
        agree = flags = 0
        for t in tasks:
            md = t.metadata
            got = ehrcon_check(str(fam.notes_dir() / f"{md['note_id']}.txt"), md["line"],
                               md["entity"], str(fam.db.path))
            agree += got == t.truth.value
            flags += got["inconsistent"] == t.truth.value["inconsistent"]
        cats: dict[str, list[int]] = {}
        for t in tasks:
            c = cats.setdefault(t.category, [0, 0])
            c[0] += 1
            c[1] += t.truth.value["inconsistent"]
        report[split] = {
            "tasks": len(tasks), "checker_agrees": agree, "checker_flag_agrees": flags,
            "inconsistent": sum(t.truth.value["inconsistent"] for t in tasks),
            "categories (tasks, inconsistent)": cats,
            "kinds": dict(Counter(t.metadata["kind"] for t in tasks)),
            "n_fields": dict(Counter(t.truth.value["n_fields"] for t in tasks)),
            "constants": {name: round(sum(E.grade_answer(t.truth, c).score for t in tasks)
                                      / len(tasks), 4) for name, c in CONSTANTS.items()},
            "checker_seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(report, indent=2))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[args.database] = report
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
