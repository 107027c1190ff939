"""Examples shown at the end of every command's ``--help`` (one place, so none is missed).

:func:`attach` adds them to the registered typer commands before the app runs; the test
``tests/cli/test_truthful_cli.py`` checks that every command has some.
"""

from __future__ import annotations

from typing import Any

EXAMPLES: dict[str, list[str]] = {
    "validate": ["medagentgym validate treqs --limit 20",
                 "medagentgym validate -d mimic_iii --database synthetic --json > report.json"],
    "run": ["medagentgym run treqs --agent oracle --limit 10 --out runs/oracle",
            "medagentgym run -d eicu --out runs/oracle-eicu --resume --json"],
    "rollout": ["medagentgym rollout treqs --model Qwen/Qwen3-8B --base-url "
                "http://localhost:8000/v1 --limit 20 --samples 4 --out runs/qwen-treqs",
                "medagentgym rollout -d mimic_iii --config run.toml --out runs/a --resume "
                "--json > report.json"],
    "eval": ["medagentgym eval runs/qwen-treqs",
             "medagentgym eval runs/A runs/B --compare",
             "medagentgym eval runs/A --json > metrics.json"],
    "leaderboard": ["medagentgym leaderboard runs/* --html board.html"],
    "view": ["medagentgym view runs/A --port 8765",
             "medagentgym view runs/A runs/B --static episodes.html"],
    "verify": ["medagentgym verify runs/A --model ckpt/verifier --out runs/A-scored"],
    "serve": ["medagentgym serve --port 8000",
              "medagentgym serve --host 0.0.0.0 --token $TOKEN --sandbox bwrap"],
    "demo": ["medagentgym demo --limit 5"],
    "version": ["medagentgym version", "medagentgym --version"],
    "sandbox check": ["medagentgym sandbox check", "medagentgym sandbox check --json"],
    "sandbox exec": ["medagentgym sandbox exec 'answer = 1 + 1'"],
    "bench sandbox": ["medagentgym bench sandbox --repeats 50 --out bench.json"],
    "data build-synthetic": ["medagentgym data build-synthetic",
                             "medagentgym data build-synthetic --patients 500 --db mimic_iii"],
    "data build-treqs": ["medagentgym data build-treqs --from ~/physionet/mimic-iii-1.4"],
    "data pull": ["medagentgym data pull ehrsql", "medagentgym data pull --all --from /mirror"],
    "data verify": ["medagentgym data verify ehrsql"],
    "data list": ["medagentgym data list", "medagentgym data list --json"],
    "data status": ["medagentgym data status", "medagentgym data status --home /data/mag --json"],
    "data import medagentgym": ["medagentgym data import medagentgym --from ~/MedAgentGym"],
    "tasks datasets": ["medagentgym tasks datasets", "medagentgym tasks datasets --json"],
    "tasks list": ["medagentgym tasks list treqs --limit 5",
                   "medagentgym tasks list -d eicu --json"],
    "tasks show": ["medagentgym tasks show treqs TASK_ID   (ids: medagentgym tasks list treqs)",
                   "medagentgym tasks show -d treqs TASK_ID --json"],
    "export sft": ["medagentgym export sft runs/A --out sft.jsonl",
                   "medagentgym export sft runs/A runs/B -d treqs --out sft.parquet --json"],
    "export dpo": ["medagentgym export dpo runs/A --out dpo.jsonl"],
    "export verifier": ["medagentgym export verifier runs/A --out ver.jsonl --eval-fraction 0.1"],
    "export rl": ["medagentgym export rl runs/A --out rl.jsonl",
                  "medagentgym export rl --tasks treqs:train --out rl.jsonl"],
    "train sft": ["medagentgym train sft --model Qwen/Qwen3-0.6B --data sft.jsonl --out ckpt/sft"],
    "train dpo": ["medagentgym train dpo --model ckpt/sft --data dpo.jsonl --out ckpt/dpo"],
    "train verifier": ["medagentgym train verifier --model Qwen/Qwen3-0.6B --data ver.jsonl "
                       "--eval-data ver.eval.jsonl --out ckpt/verifier"],
    "train grpo": ["medagentgym train grpo --model ckpt/sft --data rl.jsonl --out ckpt/grpo"],
}


def epilog(path: str) -> str:
    """The ``Examples:`` block of the command at ``path`` (e.g. ``"data pull"``)."""
    lines = EXAMPLES.get(path)
    if not lines and path.startswith("data import "):
        name = path.rsplit(" ", 1)[-1]
        lines = [f"medagentgym data import {name} --from ~/physionet/{name}"]
    if not lines:
        lines = [f"medagentgym {path} --help"]
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)


def attach(app: Any, prefix: str = "") -> None:
    """Set the epilog of every command registered on ``app`` (and its sub-apps)."""
    for info in app.registered_commands:
        name = info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
        if not info.epilog:
            info.epilog = epilog(f"{prefix}{name}")
    for group in app.registered_groups:
        sub = group.typer_instance
        if sub is not None and group.name:
            attach(sub, f"{prefix}{group.name} ")
