"""Results people can read (issue 18): a run with nothing graded says so instead of a 0% with
a [0, 0] interval; durations, parse failures, loop hints and the action mix per dataset are in
every report; 0% bars stay visible; the viewer shows the model's output expanded."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from medagentgym.eval import report, svg
from medagentgym.eval.metrics import evaluate
from medagentgym.rollout.store import TrajectoryStore
from tests.eval.synth import bad_step, code_step, infra, traj


def _stats(calls: int, fails: int, hints: int) -> dict:
    return {"agent_stats": {"model_calls": calls, "parse_failures": fails, "loop_hints": hints}}


def test_nothing_graded_reads_as_such_everywhere(tmp_path):
    rep = evaluate([infra("t1"), infra("t2")], resamples=50)
    d = rep["datasets"]["mimic_iii"]
    assert d["graded"] == 0
    assert report.ci_text(d) == report.NO_GRADED
    md = report.summary_markdown(rep)
    assert report.NO_GRADED in md and "[0.00, 0.00]" not in md
    html = report.html_report({"m": rep})
    assert report.NO_GRADED in html
    store = TrajectoryStore(tmp_path / "run")
    for t in (infra("t1"), infra("t2")):
        store.append(t)
    from medagentgym.cli import app

    res = CliRunner().invoke(app, ["eval", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "no graded episodes" in res.output and "[0.0, 0.0]" not in res.output


def test_behaviour_columns_count_what_the_agent_did():
    a = traj("t1", success=True, metadata=_stats(3, 1, 0),
             steps=[bad_step(1), code_step(2, "answer = 1", correct=True)])
    b = traj("t2", dataset="eicu", metadata=_stats(4, 0, 2),
             steps=[code_step(1, "x"), code_step(2, "x"), code_step(3, "x", correct=False)])
    a.duration_s, b.duration_s = 10.0, 30.0
    rep = evaluate([a, b], resamples=50)
    rows = {r[0]: r for r in report.behaviour_rows(rep)}
    head = report.BEHAVIOUR_HEAD
    mimic = dict(zip(head, rows[report.display("mimic_iii")], strict=True))
    assert mimic["s/episode"] == "10.0" and mimic["model calls"] == "3"
    assert mimic["parse failures"] == "1 (33%)" and mimic["invalid %"] == "50"
    overall = dict(zip(head, rows["overall"], strict=True))
    assert overall["loop hints"] == "2" and overall["s/episode"] == "20.0"
    assert overall["model calls"] == "7"
    md = report.summary_markdown(rep)
    assert "parse failures" in md and "1 (33%)" in md


def test_zero_bars_are_drawn_and_labelled():
    chart = svg.grouped_bars(["a", "b"], [("m", [0.0, 0.5], [None, None])])
    assert 'class="zero"' in chart and ">0%</text>" in chart
    assert chart.count("<rect") >= 2


def test_the_viewer_expands_model_output():
    from medagentgym.eval import viewer

    text = Path(viewer.__file__).read_text(encoding="utf-8")
    line = next(ln for ln in text.splitlines() if "'model output'" in ln)
    assert "open: ''" in line
