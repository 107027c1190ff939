"""``medagentgym eval | leaderboard | view``: numbers, tables and a browser over stored runs.

    medagentgym eval runs/A runs/B [--json] [--markdown] [--html report.html]
    medagentgym eval runs/A runs/B --compare [--json]
    medagentgym leaderboard runs/* [--html board.html] [--json]
    medagentgym view runs/A [--port 8765] [--static episodes.html]
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

_K = typer.Option(None, "--max-k", help="largest k for pass@k / best@k (default: samples per task)")
_BOOT = typer.Option(2000, "--bootstrap", help="bootstrap resamples for the 95% intervals")
_SEED = typer.Option(0, help="seed of the bootstrap")
_LOOP = typer.Option(3, "--loop-threshold", help="same action this many times in a row = stuck in a loop")
_VKEY = typer.Option("verifier_score", "--verifier-key",
                     help="trajectory.metadata key holding a verifier's score (best@k)")


def _options(max_k: int | None, bootstrap: int, seed: int, loop_threshold: int,
             verifier_key: str) -> dict:
    return {"max_k": max_k, "resamples": bootstrap, "seed": seed,
            "loop_threshold": loop_threshold, "verifier_key": verifier_key}


def _load(run_dirs: list[Path]) -> list:
    """The runs, with a warning on stderr for each one holding lines that do not parse."""
    from medagentgym.eval import metrics

    runs = metrics.load_runs(run_dirs)
    for r in runs:
        if r.corrupt_lines:
            n = r.corrupt_lines
            typer.secho(f"warning: {r.path / 'trajectories.jsonl'}: {n} corrupt "
                        f"line{'s' if n != 1 else ''} skipped (not a readable trajectory)",
                        fg="yellow", err=True)
    return runs


def eval_runs(
    run_dirs: list[Path] = typer.Argument(..., help="run directories (trajectories.jsonl)"),
    as_json: bool = typer.Option(False, "--json", help="print the full report as JSON"),
    markdown: bool = typer.Option(False, "--markdown", help="print markdown tables"),
    html: Path | None = typer.Option(None, "--html", help="also write an offline HTML report"),
    categories: bool = typer.Option(False, "--categories", help="table: a row per category too"),
    compare: bool = typer.Option(False, "--compare", help="two runs side by side, task by task"),
    max_k: int | None = _K, bootstrap: int = _BOOT, seed: int = _SEED,
    loop_threshold: int = _LOOP, verifier_key: str = _VKEY,
) -> None:
    """Success rates (95% CI), pass@k, best@k, action mix, failures and cost of one model's
    runs (pooled); ``--compare A B`` puts two runs side by side per task.

    Runs of different models are never pooled into one pass@k: compare them with
    ``--compare`` or ``medagentgym leaderboard``.
    """
    from medagentgym.errors import ConfigurationError
    from medagentgym.eval import metrics, report

    runs = _load(run_dirs)
    if compare:
        if len(runs) != 2:
            raise ConfigurationError(f"--compare takes two run directories, not {len(runs)}")
        result = metrics.compare_runs(*runs)
        if not result["tasks"]:
            raise ConfigurationError(f"{runs[0].path} and {runs[1].path} share no graded task; "
                                     "--compare needs runs on the same tasks")
        if as_json:
            typer.echo(json.dumps(result, indent=2, default=str))
        else:
            _print_comparison(result)
        return
    opts = _options(max_k, bootstrap, seed, loop_threshold, verifier_key)
    models = sorted({metrics.model_label(t, r.info) for r in runs for t in r.trajectories})
    if len(models) > 1:
        paths = " ".join(str(r.path) for r in runs)
        raise ConfigurationError(
            f"these runs hold {len(models)} models ({', '.join(models)}); one pass@k over "
            f"them would mix policies. Compare them: `medagentgym leaderboard {paths}`"
            + (f" or `medagentgym eval {paths} --compare`" if len(runs) == 2 else "")
            + "; or evaluate each model's runs alone")
    result = metrics.evaluate_runs(runs, **opts)
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        label = models[0] if len(models) == 1 else "pooled runs"
        html.write_text(report.html_report({label: result}, runs=result["runs"]), encoding="utf-8")
        typer.secho(f"wrote {html}", err=True)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    elif markdown:
        typer.echo(report.summary_markdown(result))
    else:
        _print_table(result, categories=categories)


def _print_comparison(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    a, b = result["a"], result["b"]
    table = Table("dataset", "task", f"A: {a}", f"B: {b}", "B - A",
                  title=f"A = {result['a_path']}   B = {result['b_path']}")

    def cell(r: dict) -> str:
        return f"{r['success']}/{r['graded']}"

    for row in result["tasks"]:
        d = row["delta"]
        mark = "" if d == 0 else ("[green]" if d > 0 else "[red]") + f"{d:+.2f}"
        table.add_row(row["dataset"], row["task_id"], cell(row["a"]), cell(row["b"]), mark or "0")
    console = Console()
    if console.width < 132:
        console = Console(width=132)
    console.print(table)
    s = result["summary"]
    console.print(f"{s['tasks']} shared tasks: solved by both {s['both']}, only A {s['only_a']}, "
                  f"only B {s['only_b']}, neither {s['neither']}; B better on {s['b_better']}, "
                  f"A better on {s['a_better']}, same on {s['same']}; mean B - A "
                  f"{s['mean_delta']:+.3f}", highlight=False)
    for side in ("a", "b"):
        only = result[f"only_in_{side}"]
        if only:
            console.print(f"only in {side.upper()} (not compared): {len(only)} tasks, e.g. "
                          f"{', '.join(only[:5])}", highlight=False)


def _print_table(result: dict, *, categories: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    from medagentgym.eval.metrics import FAILURE_CATEGORIES, FAILURE_LABELS
    from medagentgym.eval.report import BEHAVIOUR_HEAD, behaviour_rows, ci_text, display, pct

    ks = [k for k in ("1", "2", "4", "8", "16") if k in result["overall"].get("pass_at_k", {})]
    scored = any(d.get("continuous") for d in result["datasets"].values())
    table = Table("dataset", "episodes", "success %", *(["score %"] if scored else []), "95% CI",
                  *[f"pass@{k}" for k in ks], "turns", "infra", "tokens", "cost $",
                  "top failure", title="MedAgentGym evaluation")
    rows = []
    for n, d in result["datasets"].items():
        rows.append((display(n), d))
        if categories:
            rows += [(f"  {c}", cd) for c, cd in d["categories"].items()]
    rows.append(("overall", result["overall"]))
    for name, d in rows:
        top = max(FAILURE_CATEGORIES, key=lambda c: d["failures"].get(c, 0))
        table.add_row(name, str(d["episodes"]), pct(d["success_rate"] if d["graded"] else None),
                      *([pct(d.get("mean_score") if d["graded"] else None)] if scored else []),
                      ci_text(d),
                      *[pct(d.get("pass_at_k", {}).get(k)) for k in ks],
                      f"{d['mean_turns']:.2f}", str(d["infrastructure"]["episodes"]),
                      f"{d['tokens']['total_tokens']:,}",
                      "–" if d.get("cost_usd") is None else f"{d['cost_usd']:.4f}",
                      f"{FAILURE_LABELS[top]} ({d['failures'][top]})" if d["failures"][top] else "–")
    console = Console()
    if console.width < 160:  # pipes and test runners report 80 columns: keep numbers whole
        console = Console(width=160)
    console.print(table)
    behaviour = Table(*BEHAVIOUR_HEAD, title="what the agent did")
    for row in behaviour_rows(result):
        behaviour.add_row(*row)
    console.print(behaviour)
    if result["overall"].get("cost_usd") is None:
        console.print("cost: unknown (set input_cost_per_mtok / output_cost_per_mtok in [model] "
                      "of the rollout config to record it)", highlight=False)
    for group, title in (("in_distribution", "in-distribution average"), ("ood", "OOD average")):
        agg = result["overall"][group]
        if agg["datasets"]:
            missing = f" (missing: {', '.join(agg['missing'])})" if agg["missing"] else ""
            console.print(f"{title}: {pct(agg['average'])}% over {len(agg['datasets'])}/"
                          f"{agg['paper_datasets']} datasets{missing}")


def leaderboard(
    run_dirs: list[Path] = typer.Argument(..., help="run directories, any number of models"),
    html: Path | None = typer.Option(None, "--html", help="write an offline HTML report"),
    as_json: bool = typer.Option(False, "--json", help="print {model: report} as JSON"),
    max_k: int | None = _K, bootstrap: int = _BOOT, seed: int = _SEED,
    loop_threshold: int = _LOOP, verifier_key: str = _VKEY,
) -> None:
    """A leaderboard across models in the paper's Table 3 / Table 5 layout (markdown)."""
    from medagentgym.eval import metrics, report

    runs = _load(run_dirs)
    boards = metrics.leaderboard(runs, **_options(max_k, bootstrap, seed, loop_threshold,
                                                  verifier_key))
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        run_list = [{"path": str(r.path), "label": r.label, "episodes": len(r.trajectories)}
                    for r in runs]
        html.write_text(report.html_report(boards, title="MedAgentGym leaderboard", runs=run_list),
                        encoding="utf-8")
        typer.secho(f"wrote {html}", err=True)
    if as_json:
        typer.echo(json.dumps(boards, indent=2, default=str))
    else:
        typer.echo(report.leaderboard_markdown(boards))


def view(
    run_dirs: list[Path] = typer.Argument(..., help="run directories to browse"),
    port: int = typer.Option(8765, help="port on 127.0.0.1 (0 = any free port)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    static: Path | None = typer.Option(None, "--static", help="write one offline HTML file instead"),
) -> None:
    """Browse episodes: filter by dataset, category, model and outcome; read every turn."""
    from medagentgym.cli.train import warn_corrupt
    from medagentgym.eval import viewer

    warn_corrupt(run_dirs)
    if static is not None:
        path = viewer.write_static(run_dirs, static)
        typer.echo(f"wrote {path}")
        return
    server = viewer.make_server(run_dirs, host=host, port=port)
    addr, real_port = server.server_address[:2]
    typer.echo(f"viewer on http://{addr}:{real_port}/  ({len(server.RequestHandlerClass.episodes)} "
               "episodes; Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
