"""``medagentgym tasks``: list datasets and tasks, show one task (never its ground truth)."""

from __future__ import annotations

import json

import typer

from medagentgym.cli.run import _DATABASE_HELP

app = typer.Typer(help="Browse datasets and tasks.", no_args_is_help=True)


@app.command("datasets")
def datasets(as_json: bool = typer.Option(False, "--json")) -> None:
    """The registered datasets."""
    from medagentgym.tasks.registry import get_spec, list_datasets

    rows = [{"name": n, "env_id": get_spec(n).env_id, "scenario": get_spec(n).scenario,
             "in_distribution": get_spec(n).in_distribution, "description": get_spec(n).description}
            for n in list_datasets()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("dataset", "gymnasium id", "scenario", "OOD", "description")
    for r in rows:
        table.add_row(r["name"], r["env_id"], r["scenario"], "" if r["in_distribution"] else "yes",
                      r["description"])
    Console().print(table)


@app.command("list")
def list_tasks(
    dataset_arg: str | None = typer.Argument(None, metavar="[DATASET]",
                                             help="dataset name (or -d/--dataset)"),
    dataset_opt: str | None = typer.Option(None, "--dataset", "-d", help="dataset name"),
    split: str = typer.Option("test"),
    limit: int = typer.Option(20, help="rows to show (0 = all)"),
    category: str | None = typer.Option(None),
    database: str | None = typer.Option(None, help=_DATABASE_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Tasks of a dataset split: id, category and question (and, for the EHR datasets, how
    many of the paper's ids the database in use could instantiate)."""
    from medagentgym.cli.run import _dataset, build_summary, summary_lines
    from medagentgym.tasks.registry import load_tasks

    dataset = _dataset(dataset_arg, dataset_opt)
    options = {} if database is None else {"database": database}
    tasks = load_tasks(dataset, split, **options)
    build = build_summary(dataset, split, options)
    if category:
        tasks = [t for t in tasks if t.category == category]
    shown = tasks if limit == 0 else tasks[:limit]
    if as_json:
        typer.echo(json.dumps({"dataset": dataset, "split": split, "total": len(tasks),
                               **({"build": build} if build else {}),
                               "tasks": [{"id": t.id, "category": t.category, "goal": t.goal}
                                         for t in shown]}, indent=2))
        return
    from collections import Counter

    from rich.console import Console
    from rich.table import Table

    table = Table("id", "category", "goal", title=f"{dataset}/{split}: {len(tasks)} tasks")
    for t in shown:
        table.add_row(t.id, t.category, t.goal)
    console = Console()
    console.print(table)
    cats = Counter(t.category for t in tasks)
    console.print("categories: " + ", ".join(f"{c} {n}" for c, n in cats.most_common()))
    for line in summary_lines(build):
        console.print(line, markup=False)


@app.command("show")
def show(
    first: str = typer.Argument(..., metavar="[DATASET] TASK_ID",
                                help="dataset and task id (or -d DATASET TASK_ID)"),
    second: str | None = typer.Argument(None, hidden=True),
    dataset_opt: str | None = typer.Option(None, "--dataset", "-d", help="dataset name"),
    split: str = typer.Option("test"),
    database: str | None = typer.Option(None, help=_DATABASE_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One task as the agent sees it (system prompt and goal). The answer is not shown."""
    from medagentgym.cli.run import _dataset
    from medagentgym.env.prompts import system_prompt
    from medagentgym.errors import ConfigurationError
    from medagentgym.tasks.registry import get_family, load_tasks

    if second is None and dataset_opt is None:
        raise ConfigurationError(f"give the dataset and a task id: `medagentgym tasks show "
                                 f"{first} TASK_ID` (ids: `medagentgym tasks list {first}`)")
    if second is None:  # `tasks show -d DATASET TASK_ID`
        dataset, task_id = _dataset(None, dataset_opt), first
    else:
        dataset, task_id = _dataset(first, dataset_opt), second
    options = {} if database is None else {"database": database}
    tasks = {t.id: t for t in load_tasks(dataset, split, **options)}
    if task_id not in tasks:
        raise ConfigurationError(f"no task {task_id!r} in {dataset}/{split}; see `medagentgym tasks list {dataset}`")
    task = tasks[task_id]
    fam = get_family(dataset, **options)
    prompt = system_prompt(fam.instructions(task), task.allowed_actions, "paper", 15)
    if as_json:
        typer.echo(json.dumps({"task": task.model_dump(), "system_prompt": prompt}, indent=2))
        return
    typer.echo(f"# {task.id}  ({task.dataset}/{task.split}, category {task.category})")
    typer.echo(f"# provenance: {task.provenance.source}; {task.provenance.database}; {task.provenance.licence}")
    typer.echo("\n## system prompt\n" + prompt)
    typer.echo("## goal\n" + "\n".join(fam.stages(task)))
