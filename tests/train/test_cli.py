"""The export / train / verify commands, end to end through typer."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from medagentgym.cli import train as cli


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(cli.export_app, name="export")
    app.add_typer(cli.train_app, name="train")
    app.command("verify")(cli.verify)
    return app


def _run(*args: str) -> dict:
    if args[0] == "export":  # export prints one line of text without --json
        args = (*args, "--json")
    res = CliRunner().invoke(_app(), [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = res.output  # trainers print their logs first; the report is the last document
    return json.loads(out[out.rindex('{\n  "'):])


def test_export_commands(run_dir, tmp_path):
    sft = _run("export", "sft", run_dir, "--out", tmp_path / "sft.jsonl", "--max-turns", "1")
    assert sft["rows"] == 6 and sft["trajectories"] == 18
    dpo = _run("export", "dpo", run_dir, "--out", tmp_path / "dpo.parquet", "--no-cross-sample")
    assert dpo["in_trajectory"] == 12 and dpo["cross_sample"] == 0
    ver = _run("export", "verifier", run_dir, "--out", tmp_path / "v.jsonl",
               "--eval-fraction", "0.34")
    assert ver["eval_rows"] > 0 and (tmp_path / "v.eval.jsonl").is_file()
    rl = _run("export", "rl", run_dir, "--out", tmp_path / "rl.jsonl", "--max-pass-rate", "0.5",
              "--allow-empty")
    assert rl["tasks"] == 0  # every task was solved by 2 of 3 samples
    rl = _run("export", "rl", run_dir, "--out", tmp_path / "rl.jsonl")
    assert rl["tasks"] == 6
    rows = [json.loads(x) for x in (tmp_path / "rl.jsonl").read_text().splitlines()]
    assert json.loads(rows[0]["env_kwargs"])["database"] == "synthetic"


def test_train_and_verify_commands(run_dir, tiny_model_dir, tmp_path):
    pytest.importorskip("trl")
    _run("export", "sft", run_dir, "--out", tmp_path / "sft.jsonl")
    cfg = tmp_path / "small.toml"
    cfg.write_text("[training]\nper_device_train_batch_size = 2\ngradient_accumulation_steps = 1\n"
                   "max_length = 4096\nactivation_checkpointing = false\nsave_strategy = 'no'\n")
    s = _run("train", "sft", "--model", tiny_model_dir, "--data", tmp_path / "sft.jsonl",
             "--config", cfg, "--max-steps", "1", "--out", tmp_path / "sft")
    assert s["steps"] == 1 and s["steps_per_s"] > 0
    _run("export", "verifier", run_dir, "--out", tmp_path / "v.jsonl", "--max-chars", "2000")
    vcfg = tmp_path / "v.toml"
    vcfg.write_text("[training]\nper_device_train_batch_size = 2\nactivation_checkpointing = false\n"
                    "gradient_accumulation_steps = 1\nsave_strategy = 'no'\n"
                    "[verifier]\nmax_length = 512\n")
    _run("train", "verifier", "--model", tmp_path / "sft", "--data", tmp_path / "v.jsonl",
         "--config", vcfg, "--max-steps", "1", "--out", tmp_path / "ver")
    rep = _run("verify", run_dir, "--model", tmp_path / "ver", "--out", tmp_path / "scored.jsonl")
    assert rep["n"] == 18 and rep["out"] == str(tmp_path / "scored.jsonl")
    # a new run directory, read by the evaluation with the scores on every trajectory
    rep = _run("verify", run_dir, "--model", tmp_path / "ver", "--out", tmp_path / "scored_run")
    _run("export", "rl", run_dir, "--out", tmp_path / "rl.jsonl")
    gcfg = tmp_path / "g.toml"
    gcfg.write_text("[rollout]\nmax_turns = 1\nmax_new_tokens = 8\n[training]\n"
                    "num_generations = 2\nper_device_train_batch_size = 2\n"
                    "gradient_accumulation_steps = 1\nactivation_checkpointing = false\n"
                    "save_strategy = 'no'\n")
    g = _run("train", "grpo", "--model", tmp_path / "sft", "--data", tmp_path / "rl.jsonl",
             "--config", gcfg, "--max-steps", "1", "--out", tmp_path / "grpo")
    assert g["steps"] == 1 and g["episodes"] == 2 and g["mean_turns"] == 1
    metrics = pytest.importorskip("medagentgym.eval.metrics")
    (run,) = metrics.load_runs([tmp_path / "scored_run"])
    assert len(run.trajectories) == 18
    assert all("verifier_score" in t.metadata for t in run.trajectories)
    assert (tmp_path / "scored_run" / "run.json").is_file()


def test_rl_rows_from_the_task_list(mag_home, tmp_path):
    rl = _run("export", "rl", "--tasks", "treqs:test", "--database", "synthetic", "--limit", "3",
              "--max-turns", "5", "--out", tmp_path / "rl.jsonl")
    assert rl["tasks"] == 3
    row = json.loads((tmp_path / "rl.jsonl").read_text().splitlines()[0])
    assert json.loads(row["env_kwargs"]) == {"database": "synthetic", "max_turns": 5,
                                             "protocol": "paper"}


def test_the_commands_import_no_training_library():
    import subprocess
    import sys

    code = ("import sys, medagentgym.cli.train, medagentgym.train.export; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'datasets') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
