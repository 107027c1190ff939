"""Issue 16 (part 2): eval compares two runs per task, shows cost, never pools two models
into one pass@k, and counts (and warns about) corrupt trajectory lines in eval, view and
export."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from medagentgym.cli import eval as eval_cli
from medagentgym.cli import train as train_cli
from medagentgym.errors import ConfigurationError
from medagentgym.eval import metrics

from .synth import infra, traj, write_run

app = typer.Typer()
app.command("eval")(eval_cli.eval_runs)
app.command("view")(eval_cli.view)
app.add_typer(train_cli.export_app, name="export")
runner = CliRunner()


def run_cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def two_models(tmp_path):
    # A solves t0 and t1 (t1 on one of two samples); B solves t1 and t2; t3 only in A; t4 only in B
    a = write_run(tmp_path / "a", [
        traj("t0", sample=0, success=True), traj("t0", sample=1, success=True),
        traj("t1", sample=0, success=True), traj("t1", sample=1, success=False),
        traj("t2", sample=0, success=False), traj("t2", sample=1, success=False),
        traj("t3", success=True), infra("t2", sample=2)])
    b = write_run(tmp_path / "b", [
        traj(f"t{i}", sample=k, success=ok, model="model-b")
        for i, oks in ((0, (False, False)), (1, (True, True)), (2, (True, False)), (4, (True,)))
        for k, ok in enumerate(oks)])
    return a, b


def test_compare_runs_side_by_side_per_task(two_models):
    ra, rb = metrics.load_runs(two_models)
    cmp = metrics.compare_runs(ra, rb)
    rows = {r["task_id"]: r for r in cmp["tasks"]}
    assert set(rows) == {"t0", "t1", "t2"}  # only the shared tasks are compared
    assert (rows["t0"]["a"]["success"], rows["t0"]["b"]["success"]) == (2, 0)
    assert rows["t1"]["delta"] == pytest.approx(0.5) and rows["t2"]["delta"] == pytest.approx(0.5)
    assert rows["t2"]["a"]["graded"] == 2  # the infrastructure failure is not a sample
    s = cmp["summary"]
    assert (s["both"], s["only_a"], s["only_b"], s["neither"]) == (1, 1, 1, 0)
    assert (s["a_better"], s["b_better"], s["same"]) == (1, 2, 0)
    assert cmp["only_in_a"] == ["mimic_iii/t3"] and cmp["only_in_b"] == ["mimic_iii/t4"]


def test_eval_compare_command(two_models):
    res = run_cli("eval", *two_models, "--compare")
    assert res.exit_code == 0, res.output
    assert "model-a" in res.stdout and "model-b" in res.stdout and "t0" in res.stdout
    assert "only A 1, only B 1" in res.stdout and "only in A" in res.stdout
    js = json.loads(run_cli("eval", *two_models, "--compare", "--json").stdout)
    assert js["summary"]["tasks"] == 3
    one = run_cli("eval", two_models[0], "--compare")
    assert isinstance(one.exception, ConfigurationError) and "two run directories" in str(one.exception)


def test_eval_refuses_to_pool_two_models(two_models):
    res = run_cli("eval", *two_models)
    assert isinstance(res.exception, ConfigurationError)
    msg = str(res.exception)
    assert "2 models" in msg and "model-a" in msg and "leaderboard" in msg and "--compare" in msg
    assert res.stdout == ""  # nothing pooled was printed
    # one model in two runs is pooled as before
    ok = run_cli("eval", two_models[0], two_models[0], "--json", "--bootstrap", "50")
    assert ok.exit_code == 0, ok.output


def test_cost_is_in_the_terminal_table(tmp_path):
    usage = {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
             "cost_usd": 0.0125}
    run = write_run(tmp_path / "c", [traj(f"t{i}", success=i == 0, metadata={"usage": usage})
                                     for i in range(4)])
    res = run_cli("eval", run, "--bootstrap", "50")
    assert res.exit_code == 0, res.output
    assert "cost $" in res.stdout and "0.0500" in res.stdout and "4,800" in res.stdout
    plain = write_run(tmp_path / "d", [traj("t0", success=True)])
    out = run_cli("eval", plain, "--bootstrap", "50").stdout
    assert "cost: unknown" in out  # no price configured: said, not shown as $0


def _corrupt(run_dir, lines):
    path = run_dir / "trajectories.jsonl"
    path.write_bytes(path.read_bytes() + b"".join(lines))


def test_corrupt_lines_are_counted_and_warned_about(tmp_path):
    run = write_run(tmp_path / "r", [traj(f"t{i}", success=True) for i in range(3)])
    _corrupt(run, [b'{"task_id": "half\n', b"\xff\xfe not json\n", b'{"no": "fields"}\n'])
    (loaded,) = metrics.load_runs([run])
    assert loaded.corrupt_lines == 3 and len(loaded.trajectories) == 3

    ev = run_cli("eval", run, "--json", "--bootstrap", "50")
    assert ev.exit_code == 0
    assert "3 corrupt lines skipped" in ev.stderr
    assert json.loads(ev.stdout)["overall"]["episodes"] == 3  # stdout stays clean JSON

    page = tmp_path / "v.html"
    view = run_cli("view", run, "--static", page)
    assert view.exit_code == 0 and "3 corrupt lines skipped" in view.stderr

    ex = run_cli("export", "sft", run, "--out", tmp_path / "sft.jsonl", "--json")
    assert ex.exit_code == 0, ex.output
    assert "3 corrupt lines skipped" in ex.stderr and json.loads(ex.stdout)["trajectories"] == 3

    clean = write_run(tmp_path / "clean", [traj("t0", success=True)])
    assert "corrupt" not in run_cli("eval", clean, "--bootstrap", "50").stderr


def test_export_refuses_to_write_an_empty_file(tmp_path):
    run = write_run(tmp_path / "r", [traj(f"t{i}", success=False) for i in range(3)])
    out = tmp_path / "sft.jsonl"
    res = run_cli("export", "sft", run, "--out", out)
    assert isinstance(res.exception, ConfigurationError)
    assert "no rows" in str(res.exception) and "--include-failures" in str(res.exception)
    assert not out.exists()
    ok = run_cli("export", "sft", run, "--out", out, "--allow-empty", "--json")
    assert ok.exit_code == 0 and out.read_text() == "" and "empty" in ok.stderr
    text = run_cli("export", "sft", run, "--out", out, "--include-failures")
    assert text.exit_code == 0 and text.stdout.startswith(f"wrote {out}")
