"""``medagentgym validate | run | demo``: run agents through the real environment."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

AGENTS = ("oracle",)
_DATABASE_HELP = "auto | synthetic | imported | official (datasets on a database; default: auto)"


def _family_options(**flags: Any) -> dict[str, Any]:
    """The family options the user set (flags left unset are the family's default; a flag
    the dataset's family does not take is its one-line error)."""
    return {k: v for k, v in flags.items() if v is not None}


def build_summary(dataset: str, split: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """How the split's tasks were built, for families that report it (``audit_summary``:
    the EHR datasets' paper ids instantiated / left out and their gold audit)."""
    from medagentgym.tasks.registry import get_family

    summary = getattr(get_family(dataset, **options), "audit_summary", None)
    return summary(split) if callable(summary) else None


def summary_lines(summary: dict[str, Any] | None) -> list[str]:
    """``build_summary`` as short text lines (one per group)."""
    lines = []
    for key, value in (summary or {}).items():
        if isinstance(value, dict):
            value = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in value.items())
        lines.append(f"{key.replace('_', ' ')}: {value}")
    return lines


def _agent_factory(name: str) -> Any:
    from medagentgym.errors import ConfigurationError

    if name == "oracle":
        from medagentgym.agents.oracle import OracleAgent

        return OracleAgent
    raise ConfigurationError(f"unknown agent {name!r}; available: {', '.join(AGENTS)} "
                             "(for LLM agents use `medagentgym rollout --model NAME --base-url URL`)")


def _run_with_progress(dataset: str, split: str, tasks: list[Any], factory: Any, *, quiet: bool,
                       **kwargs: Any) -> list[Any]:
    """Run the episodes with progress on stderr (a bar on a terminal, plain lines elsewhere)."""
    from medagentgym.cli._progress import Progress
    from medagentgym.rollout.runner import pending_pairs, run_tasks

    samples = kwargs.get("samples", 1)
    todo = len(pending_pairs(tasks, samples, kwargs.get("store"), kwargs.get("resume", False)))
    with Progress(f"{dataset}/{split}", todo, quiet=quiet) as progress:
        stats = {"done": 0, "ok": 0, "infra": 0}

        def on_done(traj: Any) -> None:
            stats["done"] += 1
            stats["ok"] += int(traj.success)
            stats["infra"] += int(traj.error is not None and traj.error.source != "agent")
            graded = stats["done"] - stats["infra"]
            rate = f"{stats['ok'] / graded:.1%}" if graded else "-"
            progress.update(stats["done"], f"success {rate}  infra {stats['infra']}")

        return run_tasks(dataset, tasks, factory, split=split, on_done=on_done, **kwargs)


def validate(
    dataset_arg: str | None = typer.Argument(None, metavar="[DATASET]",
                                             help="dataset name (see `medagentgym tasks datasets`)"),
    dataset_opt: str | None = typer.Option(None, "--dataset", "-d", help="dataset name"),
    split: str = typer.Option("test"),
    limit: int = typer.Option(0, help="validate only the first N tasks (0 = all)"),
    concurrency: int = typer.Option(2, help="environments (sandboxes) in parallel"),
    database: str | None = typer.Option(None, help=_DATABASE_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run every task's reference solution through the real environment and sandbox."""
    from medagentgym.agents.oracle import OracleAgent
    from medagentgym.tasks.registry import load_tasks

    dataset = _dataset(dataset_arg, dataset_opt)
    options = _family_options(database=database)
    tasks = load_tasks(dataset, split, **options)
    if limit:
        tasks = tasks[:limit]
    t0 = time.perf_counter()
    trajs = _run_with_progress(dataset, split, tasks, OracleAgent, quiet=as_json,
                               concurrency=concurrency, env_kwargs=options)
    failures = []
    for t in trajs:
        if not t.success:
            last = t.steps[-1].observation[-500:] if t.steps else ""
            failures.append({"task_id": t.task_id, "category": t.category,
                             "error": t.error.model_dump() if t.error else None,
                             "reason": (t.steps[-1].grade.reason if t.steps and t.steps[-1].grade else last)})
    report = {"dataset": dataset, "split": split, "tasks": len(trajs),
              "solved": sum(t.success for t in trajs), "failures": failures,
              "seconds": round(time.perf_counter() - t0, 2)}
    audit = build_summary(dataset, split, options)
    if audit:
        report["build"] = audit
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(f"{dataset}/{split}: solved {report['solved']}/{report['tasks']} "
                   f"in {report['seconds']} s")
        for line in summary_lines(audit):
            typer.echo("  " + line)
        for f in failures[:20]:
            typer.echo(f"  FAIL {f['task_id']} ({f['category']}): {f['error'] or f['reason']}")
    if failures:
        raise typer.Exit(1)


def _dataset(positional: str | None, option: str | None) -> str:
    """The dataset, positionally or with -d/--dataset (one of them is required)."""
    from medagentgym.cli.rollout import dataset_of
    from medagentgym.errors import ConfigurationError

    name = dataset_of(positional, option)
    if not name:
        raise ConfigurationError("give a dataset (positionally or with -d/--dataset); see "
                                 "`medagentgym tasks datasets`")
    return name


#: run.json settings that must match for --resume
RUN_RESUME_KEYS = ("dataset", "split", "agent", "protocol", "max_turns", "family_options")


def run(
    dataset_arg: str | None = typer.Argument(None, metavar="[DATASET]",
                                             help="dataset name (or -d/--dataset)"),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="dataset name"),
    agent: str = typer.Option("oracle", help=f"one of: {', '.join(AGENTS)}"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory (trajectories.jsonl)"),
    split: str = typer.Option("test"),
    limit: int = typer.Option(0, help="first N tasks only (0 = all)"),
    samples: int = typer.Option(1, help="episodes per task"),
    concurrency: int = typer.Option(2),
    protocol: str = typer.Option("paper", help="paper | submit"),
    max_turns: int = typer.Option(15),
    resume: bool = typer.Option(False, help="skip (task, sample) pairs already in --out"),
    database: str | None = typer.Option(None, help=_DATABASE_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress on stderr"),
) -> None:
    """Run an agent on a dataset split and store one trajectory per episode.

    Progress goes to stderr; stdout carries only the result (``--json`` for JSON).
    """
    import uuid

    from medagentgym.cli.rollout import exit_on_infrastructure, result_line
    from medagentgym.errors import ConfigurationError
    from medagentgym.rollout.runner import summarize
    from medagentgym.rollout.store import (
        TrajectoryStore,
        latest_by_key,
        refuse_mismatch,
        settings_mismatch,
    )
    from medagentgym.tasks.registry import load_tasks

    name = _dataset(dataset_arg, dataset)
    factory = _agent_factory(agent)
    store = TrajectoryStore(out)
    options = _family_options(database=database)
    settings = {"dataset": name, "split": split, "agent": agent, "samples": samples,
                "protocol": protocol, "max_turns": max_turns, "family_options": options}
    with store.locked("run"):
        info_path = store.dir / "run.json"
        if store.path.exists() and not resume:
            raise ConfigurationError(f"{store.path} exists; pass --resume to continue it or "
                                     "choose another --out")
        info: dict[str, Any] = {}
        if resume and info_path.is_file():
            try:
                info = json.loads(info_path.read_text())
            except ValueError:
                info = {}
            refuse_mismatch(store.dir, settings_mismatch(info, settings, RUN_RESUME_KEYS))
        tasks = load_tasks(name, split, **options)
        if limit:
            tasks = tasks[:limit]
        run_id = str(info.get("run_id") or uuid.uuid4().hex[:12])
        store.write_run_info({**info, "run_id": run_id, **settings, "tasks": len(tasks),
                              "started_at": info.get("started_at", time.time())})
        t0 = time.perf_counter()
        trajs = _run_with_progress(name, split, tasks, factory, quiet=quiet or as_json,
                                   samples=samples, concurrency=concurrency, store=store,
                                   resume=resume, run_id=run_id,
                                   env_kwargs={"protocol": protocol, "max_turns": max_turns,
                                               **options})
    report = {"new_episodes": len(trajs), "store": str(store.path),
              "seconds": round(time.perf_counter() - t0, 2),
              "summary": summarize(latest_by_key(store))}
    typer.echo(json.dumps(report, indent=2) if as_json else result_line(report))
    exit_on_infrastructure(trajs, store)


def demo(
    limit: int = typer.Option(20, help="tasks per dataset"),
    mirror: Path | None = typer.Option(None, "--from", envvar="MEDAGENTGYM_MIRROR",
                                       help="local mirror of the open question files"),
) -> None:
    """Run reference solutions on every dataset (synthetic data) and print a score table.

    Builds the synthetic databases and fetches the open question files when missing, then
    runs a sample of each dataset's tasks through the real environment and sandbox.
    """
    from rich.console import Console
    from rich.table import Table

    from medagentgym.agents.oracle import OracleAgent
    from medagentgym.data import home
    from medagentgym.data.sources import ensure_source
    from medagentgym.rollout.runner import summarize
    from medagentgym.tasks.registry import (
        get_family,
        get_spec,
        list_datasets,
        load_tasks,
        options_model,
    )

    console = Console()  # the result (the table)
    log = Console(stderr=True)  # what happens meanwhile
    t_start = time.perf_counter()
    needed = dict.fromkeys(src for name in list_datasets() for src in get_spec(name).sources)
    for source in needed:
        if not home.is_finished(home.raw_dir(source)):
            log.print(f"fetching question source {source!r}"
                          + (f" from {mirror}" if mirror else " from its official location"))
            ensure_source(source, mirror=mirror)
    table = Table("dataset", "split", "tasks", "solved", "success", "turns", "seconds",
                  title="MedAgentGym demo: reference solutions through the real environment")
    for name in list_datasets():
        t0 = time.perf_counter()
        # synthetic databases for the datasets that run on one
        options = {"database": "synthetic"} if "database" in options_model(name).model_fields else {}
        tasks = load_tasks(name, "test", **options)
        # a family whose episodes are costly (a reference run per episode) asks for fewer
        n = min(limit, getattr(get_family(name, **options), "demo_tasks", None) or limit)
        step = max(1, len(tasks) // n)
        sample = tasks[::step][:n]
        trajs = _run_with_progress(name, "test", sample, OracleAgent, quiet=False, concurrency=2,
                                   env_kwargs=options)
        s = summarize(trajs).get(name, {})
        table.add_row(name, "test", str(s.get("episodes", 0)), str(s.get("success", 0)),
                      f"{s.get('success_rate', 0.0):.0%}", f"{s.get('mean_turns', 0.0):.1f}",
                      f"{time.perf_counter() - t0:.1f}")
    console.print(table)
    log.print(f"done in {time.perf_counter() - t_start:.1f} s; data home: {home.data_home()}")
