"""``medagentgym validate | run | tasks`` through typer's CliRunner (and ``main`` in a
subprocess, for the exit code of configuration errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from medagentgym.cli import app

runner = CliRunner()
MAIN = "from medagentgym.cli import main; main()"


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_validate_json(mag_home):
    report = _json(invoke("validate", "mimic_iii", "--limit", "5", "--json",
                          "--database", "synthetic"))
    assert report["dataset"] == "mimic_iii" and report["split"] == "test"
    assert report["solved"] == report["tasks"] == 5
    assert report["failures"] == []


def test_run_writes_trajectories_and_refuses_to_overwrite(mag_home, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--dataset", "treqs", "--agent", "oracle", "--out", str(out),
            "--limit", "3", "--database", "synthetic"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    lines = (out / "trajectories.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert all(json.loads(x)["success"] for x in lines)
    assert json.loads((out / "run.json").read_text())["tasks"] == 3

    again = subprocess.run([sys.executable, "-c", MAIN, *args], capture_output=True, text=True,
                           env={**os.environ, "NO_COLOR": "1"}, timeout=120, check=False)
    assert again.returncode == 2, again.stderr
    assert "--resume" in again.stderr and "Traceback" not in again.stderr
    assert len((out / "trajectories.jsonl").read_text().splitlines()) == 3

    resumed = invoke(*args, "--resume", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["new_episodes"] == 0
    assert len((out / "trajectories.jsonl").read_text().splitlines()) == 3


def test_unknown_dataset_exits_2_with_a_hint(mag_home):
    proc = subprocess.run([sys.executable, "-c", MAIN, "tasks", "list", "mimic_ii"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "Did you mean 'mimic_iii'" in proc.stderr and "Traceback" not in proc.stderr


def test_tasks_list_json(mag_home):
    listing = _json(invoke("tasks", "list", "eicu", "--json", "--limit", "3"))
    assert listing["dataset"] == "eicu" and listing["total"] > 3
    assert len(listing["tasks"]) == 3
    for t in listing["tasks"]:
        assert t["id"].startswith("eicu-") and t["goal"] and t["category"]
    assert "select " not in json.dumps(listing).lower()  # no gold SQL in the listing


@pytest.mark.parametrize("as_json", [False, True])
def test_tasks_show_hides_the_gold_sql(mag_home, as_json):
    import medagentgym as mag

    task = next(t for t in mag.load_tasks("mimic_iii", "test") if t.truth.value)
    result = invoke("tasks", "show", "mimic_iii", task.id, *(["--json"] if as_json else []))
    assert result.exit_code == 0, result.output
    assert task.goal in result.stdout
    assert task.truth.extra["sql"] not in result.stdout
    assert "sql_rows" not in result.stdout and repr(task.truth.value) not in result.stdout
