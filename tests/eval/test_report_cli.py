"""Markdown and HTML reports, and the ``eval | leaderboard | view --static`` commands."""

from __future__ import annotations

import json
import re

import pytest
import typer
from typer.testing import CliRunner

from medagentgym.cli import eval as eval_cli
from medagentgym.eval import metrics, report

from .synth import failure_zoo, traj, write_run

app = typer.Typer()
app.command("eval")(eval_cli.eval_runs)
app.command("leaderboard")(eval_cli.leaderboard)
app.command("view")(eval_cli.view)
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def runs(tmp_path):
    a = write_run(tmp_path / "a", [
        *[traj(f"m{i}", sample=s, success=(i + s) % 3 == 0) for i in range(6) for s in range(4)],
        *failure_zoo("eicu").values()])
    b = write_run(tmp_path / "b", [
        *[traj(f"m{i}", sample=s, success=i % 2 == 0, model="model-b",
               metadata={"verifier_score": 0.9 if i % 2 == 0 else 0.1})
          for i in range(6) for s in range(4)],
        *[traj(f"n{i}", dataset="npowerai", success=i < 3, model="model-b") for i in range(4)]])
    return a, b


def test_leaderboard_markdown_has_the_paper_layout(runs):
    boards = metrics.leaderboard(metrics.load_runs(runs), resamples=100)
    md = report.leaderboard_markdown(boards)
    assert "| Model | MIMIC-III | eICU | TREQS | MedCalcBench | MedAgentBench | BioCoder | " \
           "EHRSHOT | BioDSBench | Avg. |" in md
    assert "| Model | EHR-SeqSQL | EHRCon | MIMIC-Extract | N-PowerAI | Avg. |" in md
    row_b = next(line for line in md.splitlines() if line.startswith("| model-b") and "50.00" in line)
    assert row_b.split("|")[2].strip() == "50.00" and row_b.split("|")[3].strip() == "–"
    assert "not evaluated" in md and "Infrastructure failures" in md


def test_html_report_is_offline_and_has_the_plots(runs, tmp_path):
    boards = metrics.leaderboard(metrics.load_runs(runs), resamples=100)
    page = report.html_report(boards)
    assert page.count("<svg") >= 4
    assert "<script" not in page and "<link" not in page
    urls = set(re.findall(r"https?://[^\"' )]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}
    for text in ("pass@k", "best@k (verifier)", "Action mix", "Failure taxonomy", "stuck in a loop"):
        assert text in page


def test_eval_json_shape(runs):
    out = json.loads(invoke("eval", runs[0], "--json", "--bootstrap", "200").stdout)
    d = out["datasets"]["mimic_iii"]
    assert {"episodes", "success_rate", "ci95", "pass_at_k", "action_mix", "failures"} <= set(d)
    assert d["episodes"] == 24 and d["success_rate"] == pytest.approx(8 / 24)
    assert list(d["pass_at_k"]) == ["1", "2", "3", "4"]
    assert out["datasets"]["eicu"]["infrastructure"]["episodes"] == 1
    assert out["overall"]["in_distribution"]["datasets"] == ["eicu", "mimic_iii"]
    assert out["runs"][0]["label"] == "model-a"


def test_eval_markdown_and_html(runs, tmp_path):
    html = tmp_path / "out" / "r.html"
    md = invoke("eval", runs[1], "--markdown", "--html", html, "--bootstrap", "100").stdout
    assert "| MIMIC-III | 24 | 50.00 |" in md
    assert "OOD average: 75.00%" in md
    assert html.read_text().startswith("<!doctype html>")
    table = invoke("eval", runs[0], "--bootstrap", "100")
    assert "overall" in table.stdout and "cost $" in table.stdout
    # two models are never pooled into one pass@k: the refusal names the way out
    mixed = runner.invoke(app, ["eval", *[str(r) for r in runs]])
    assert "leaderboard" in str(mixed.exception) and "--compare" in str(mixed.exception)


def test_leaderboard_command_and_static_view(runs, tmp_path):
    board = invoke("leaderboard", *runs, "--html", tmp_path / "b.html", "--bootstrap", "100")
    assert "paper Table 3" in board.stdout and "model-a" in board.stdout
    assert "<svg" in (tmp_path / "b.html").read_text()
    page = tmp_path / "v.html"
    invoke("view", *runs, "--static", page)
    text = page.read_text()
    assert "window.__EPISODES__" in text and "z-loop" in text
    # model text never lands in the page as markup
    assert "</script><" not in text.split("window.__EPISODES__", 1)[1].split("</script>", 1)[0]


def test_eval_over_a_real_oracle_run(mag_home, tmp_path):
    from medagentgym.cli import app as main_app

    out = tmp_path / "oracle"
    result = runner.invoke(main_app, ["run", "--dataset", "treqs", "--agent", "oracle", "--out",
                                      str(out), "--limit", "3", "--samples", "2",
                                      "--database", "synthetic"])
    assert result.exit_code == 0, result.output
    rep = json.loads(invoke("eval", out, "--json", "--bootstrap", "100").stdout)
    d = rep["datasets"]["treqs"]
    assert d["episodes"] == 6 and d["success_rate"] == 1.0 and d["ci95"] == [1.0, 1.0]
    assert d["pass_at_k"] == {"1": 1.0, "2": 1.0}
    assert d["action_mix"]["code"] == 1.0
    assert rep["overall"]["models"] == ["oracle"]
    page = tmp_path / "v.html"
    invoke("view", out, "--static", page)
    assert "validate_code" in page.read_text()
