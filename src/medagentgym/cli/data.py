"""``medagentgym data``: build, import, pull, list and verify what the environments run on.

Everything lands in the data home (``$MEDAGENTGYM_HOME``, ``~/.cache/medagentgym``, or
``--home PATH``). Heavy modules are imported inside the commands so that ``medagentgym --help``
stays fast. Problems the user can fix raise :class:`~medagentgym.errors.ConfigurationError`
(the entry point prints one line and exits 2); failures outside the user's control
(verification, downloads) print one line and exit 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    help="Build, import, pull and inspect the data (databases, sources, tasks).",
    no_args_is_help=True,
)
import_app = typer.Typer(
    help="Import data you already have (PhysioNet CSVs, the MedAgentGym release).",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")

_HOME_HELP = "data home (default: $MEDAGENTGYM_HOME or ~/.cache/medagentgym)"


def _home_option() -> Any:
    return typer.Option(None, "--home", help=_HOME_HELP, show_default=False)


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _failures() -> Iterator[None]:
    """Infrastructure failures (verification, download) as one line and exit status 1."""
    from medagentgym.errors import InfrastructureError

    try:
        yield
    except InfrastructureError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None


def _existing_dir(path: Path, what: str) -> Path:
    from medagentgym.errors import ConfigurationError

    p = Path(path).expanduser()
    if not p.is_dir():
        state = "is not a directory" if p.exists() else "does not exist"
        raise ConfigurationError(f"--from {p} {state} (expected {what})")
    return p


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _display(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    try:
        return "~/" + str(p.relative_to(Path.home()))
    except ValueError:
        return str(p)


def _relative(path: str | os.PathLike[str], root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return _display(path)


def _world_readable(path: Path) -> None:
    """A sandbox's unprivileged user mounts imported data; nothing secret lives here."""
    from medagentgym.data import home as _home

    for p in (path, _home.manifest_path(path)):
        if p.is_file():
            _home.make_world_readable(p)
    if path.parent.is_dir():
        with contextlib.suppress(PermissionError):
            os.chmod(path.parent, path.parent.stat().st_mode | 0o555)


def _sqlite_rows(path: Path) -> tuple[int, int]:
    """(tables, rows) of a SQLite database, opened read-only."""
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        rows = sum(int(conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]) for n in names)
    finally:
        conn.close()
    return len(names), rows


@contextlib.contextmanager
def _progress(unit: str) -> Iterator[Callable[[str, int, int | None], None]]:
    """A ``progress(stage, done, total)`` callback: a rich progress bar on a terminal, one
    line per stage on stderr otherwise (silent for ``files``: those commands print a summary
    line per item). ``unit`` is ``bytes`` or ``files``."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal and unit != "bytes":

        def quiet(stage: str, done: int, total: int | None) -> None:
            pass

        yield quiet  # the command prints its own summary lines
        return
    if not console.is_terminal:
        last: list[str] = []

        def plain(stage: str, done: int, total: int | None) -> None:
            if stage != "done" and (not last or last[-1] != stage):
                last.append(stage)
                typer.echo(f"  {stage} ...", err=True)

        yield plain
        return

    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<28}"),
        BarColumn(),
        amount,
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("starting", total=None)
        current: list[str] = [""]

        def update(stage: str, done: int, total: int | None) -> None:
            if stage != current[0]:
                current[0] = stage
                bar.reset(task, total=total, completed=done, description=stage)
            else:
                bar.update(task, total=total, completed=done)

        yield update


def _print_import(report: Any, label: str) -> None:
    typer.echo(
        f"{label}: {_display(report.path)}  {len(report.tables)} tables, "
        f"{report.rows:,} rows  ({report.seconds:.1f} s)"
    )
    if report.missing_tables:
        typer.echo("  absent from the input (created empty): " + ", ".join(report.missing_tables))
    for note in report.notes:
        if not note.startswith("source tables absent"):
            typer.echo(f"  note: {note}")


# --------------------------------------------------------------------------- build


@app.command("build-synthetic")
def build_synthetic(
    patients: int = typer.Option(100, "--patients", min=1, help="patients per database"),
    seed: int = typer.Option(0, "--seed", help="generator seed"),
    db: str = typer.Option(
        "all", "--db", help="comma-separated database ids (see `medagentgym data list`), or all"
    ),
    force: bool = typer.Option(False, "--force", help="rebuild even when already built"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    home: Path | None = _home_option(),
) -> None:
    """Build the synthetic databases (and their CSV views); already-built ones are kept."""
    from medagentgym.data import databases
    from medagentgym.data import home as _home
    from medagentgym.errors import ConfigurationError

    buildable = [d for d in databases.db_ids() if databases.get_database(d).synthetic]
    wanted = [d.strip().lower().replace("-", "_") for d in db.split(",") if d.strip()]
    if wanted == ["all"]:
        wanted = buildable
    unknown = [d for d in wanted if d not in buildable]
    if unknown or not wanted:
        raise ConfigurationError(
            f"unknown database {', '.join(unknown) or '(none)'} for --db; "
            f"choose from {', '.join(buildable)}"
        )
    results = []
    with _progress("files") as progress:
        for i, db_id in enumerate(dict.fromkeys(wanted)):
            progress(f"{db_id} ({patients} patients)", i, len(wanted))
            target = _home.db_path(databases.get_database(db_id).synthetic_name(patients, seed), home)
            present = (
                not force
                and _home.is_finished(target)
                and _home.is_finished(target.with_suffix(".csv"))
            )
            started = time.monotonic()
            path = databases.build_synthetic(
                db_id, patients=patients, seed=seed, force=force, home=home
            )
            seconds = time.monotonic() - started
            tables, rows = _sqlite_rows(path)
            results.append(
                {
                    "db": db_id,
                    "path": str(path),
                    "csv_dir": str(path.with_suffix(".csv")),
                    "built": not present,
                    "tables": tables,
                    "rows": rows,
                    "bytes": path.stat().st_size,
                    "seconds": round(seconds, 3),
                }
            )
        progress("done", len(wanted), len(wanted))
    if as_json:
        typer.echo(json.dumps({"patients": patients, "seed": seed, "databases": results}, indent=2))
        return
    for r in results:
        state = "built" if r["built"] else "present"
        typer.echo(
            f"{r['db']:10} {state:8} {_display(r['path'])}  {r['tables']} tables, "
            f"{r['rows']:,} rows  ({r['seconds']:.2f} s)"
        )


@app.command("build-treqs")
def build_treqs(
    from_dir: Path | None = typer.Option(
        None,
        "--from",
        help="PhysioNet MIMIC-III CSV directory (full fidelity); default: the imported "
        "mimic_iii database of the data home",
        show_default=False,
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the fake patient names"),
    lowercase: bool = typer.Option(True, "--lowercase/--keep-case", help="lower-case values"),
    home: Path | None = _home_option(),
) -> None:
    """Build the TREQS (MIMICSQL) database from MIMIC-III."""
    from medagentgym.data import databases
    from medagentgym.data import home as _home
    from medagentgym.data.importers import build_treqs_from_mimic

    treqs = databases.get_database("treqs")  # this command is the TREQS database's builder
    assert treqs.derived_from is not None
    parent = databases.get_database(treqs.derived_from)
    if from_dir is not None:
        src = _existing_dir(from_dir, parent.import_from)
    else:
        src = _home.require_db(parent.id, home)
    out = treqs.imported_path(home)
    with _failures(), _progress("bytes") as progress:
        report = build_treqs_from_mimic(
            src, out_path=out, progress=progress, lowercase=lowercase, seed=seed
        )
    _world_readable(report.path)
    _print_import(report, treqs.id)


# --------------------------------------------------------------------------- import


def _import_database(db_id: str, from_dir: Path, seed: int, home: Path | None) -> Any:
    """``data import <db>``: the database's registered importer over ``--from``."""
    from medagentgym.data import databases

    spec = databases.get_database(db_id)
    src = _existing_dir(from_dir, spec.import_from)
    importer = spec.import_function()
    out = spec.imported_path(home)
    with _failures(), _progress("bytes") as progress:
        report = importer(src, out, progress=progress, seed=seed)
    _world_readable(report.path)
    _print_import(report, spec.id)
    return report


def _import_command(db_id: str) -> None:
    """Register ``data import <cli name>`` for a registered database with an importer; a
    database others are derived from gets a flag that builds them from the same files."""
    from medagentgym.data import databases

    spec = databases.get_database(db_id)
    derived = [d for d in databases.db_ids() if databases.get_database(d).derived_from == db_id]
    from_opt = typer.Option(
        ..., "--from", help=f"{spec.import_from} (full or demo)", show_default=False
    )
    seed_opt = typer.Option(0, "--seed", help="seed of the time shift and costs")
    doc = f"Import {spec.title} into its schema (db/{spec.id}.sqlite)."

    if not derived:

        def command(
            from_dir: Path = from_opt, seed: int = seed_opt, home: Path | None = _home_option()
        ) -> None:
            _import_database(db_id, from_dir, seed, home)

    else:
        child = databases.get_database(derived[0])

        def command(  # type: ignore[misc]
            from_dir: Path = from_opt,
            seed: int = seed_opt,
            also: bool = typer.Option(
                False, f"--{child.cli_name}", help=f"also build {child.title} from the same files"
            ),
            home: Path | None = _home_option(),
        ) -> None:
            _import_database(db_id, from_dir, seed, home)
            if also:
                _DERIVED_BUILDERS[child.id](from_dir=from_dir, seed=seed, home=home)
            else:
                home_arg = f" --home {home}" if home is not None else ""
                typer.echo(
                    f"next: `medagentgym data build-{child.cli_name} --from {from_dir}{home_arg}` "
                    f"builds {child.title} from these CSVs"
                )

    command.__doc__ = doc
    command.__name__ = f"import_{db_id}"
    import_app.command(spec.cli_name)(command)


#: ``data build-<id>`` of databases derived from another (their own command and options)
_DERIVED_BUILDERS: dict[str, Callable[..., None]] = {
    "treqs": lambda **kw: build_treqs(lowercase=True, **kw),
}


def _register_import_commands() -> None:
    from medagentgym.data import databases

    for db_id in databases.db_ids():
        if databases.get_database(db_id).importer:
            _import_command(db_id)


_register_import_commands()


@import_app.command("medagentgym")
def import_medagentgym(
    from_dir: Path = typer.Option(
        ..., "--from", help="the MedAgentGym release (or its data/ folder)", show_default=False
    ),
    home: Path | None = _home_option(),
) -> None:
    """Validate and register the official MedAgentGym release (used in place, not copied)."""
    from medagentgym.data import importers

    src = _existing_dir(from_dir, "the MedAgentGym release directory")
    with _failures():
        records = importers.import_medagentgym(src, home=home)
    for name, rec in records.items():
        typer.echo(f"medagentgym/{name}: {rec['summary']}  ({_display(rec['path'])})")


# --------------------------------------------------------------------------- pull / verify


@app.command("pull")
def pull(
    name: str | None = typer.Argument(None, help="source name (see `medagentgym data list`)"),
    from_dir: Path | None = typer.Option(
        None, "--from", help="local mirror directory (default: download)", show_default=False
    ),
    all_sources: bool = typer.Option(False, "--all", help="pull every registered source"),
    force: bool = typer.Option(False, "--force", help="re-fetch files already verified"),
    home: Path | None = _home_option(),
) -> None:
    """Fetch an open source into raw/<name>/ and verify every file's checksum."""
    from medagentgym.data import home as _home
    from medagentgym.data import sources
    from medagentgym.errors import ConfigurationError, MedAgentGymError

    if all_sources == (name is not None):
        raise ConfigurationError(
            "give a source NAME or --all (not both); see `medagentgym data list`"
        )
    mirror = _existing_dir(from_dir, "a mirror directory") if from_dir is not None else None
    names = sources.source_names() if all_sources else [sources.get_source(name or "").name]
    failed: list[str] = []
    for n in names:
        try:
            with _failures(), _progress("files") as progress:
                res = sources.pull(n, mirror, home=home, progress=progress, force=force)
        except (MedAgentGymError, typer.Exit) as exc:
            if not all_sources:
                raise
            if not isinstance(exc, typer.Exit):
                typer.secho(f"error: {n}: {exc}", fg="red", err=True)
            failed.append(n)
            continue
        _home.make_world_readable(res.path)
        extra = ""
        if res.missing_optional:
            extra += f"; {len(res.missing_optional)} optional files absent"
        if res.rejected:
            extra += f"; {len(res.rejected)} optional files rejected"
        typer.echo(
            f"{n}: {len(res.fetched)} fetched, {len(res.skipped)} already verified"
            f"{extra}  ({_display(res.path)})"
        )
    if failed:
        raise ConfigurationError(
            f"pull failed for {len(failed)} of {len(names)} sources ({', '.join(failed)}); "
            f"see the messages above"
        )


@app.command("verify")
def verify(
    name: str = typer.Argument(..., help="a pulled source"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    home: Path | None = _home_option(),
) -> None:
    """Re-hash every file of a pulled source against the registry's checksums."""
    from medagentgym.data import home as _home
    from medagentgym.data import sources

    src = sources.get_source(name)
    root = _home.require_source(src.name, home)
    problems = sources.verify(src.name, home=home)
    present = sum(1 for f in src.files if (root / f.path).exists())
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "source": src.name,
                    "path": str(root),
                    "ok": not problems,
                    "files": present,
                    "problems": problems,
                },
                indent=2,
            )
        )
    elif not problems:
        typer.echo(f"{src.name}: ok, {present} files verified ({_display(root)})")
    else:
        for path, why in sorted(problems.items()):
            typer.secho(f"{src.name}/{path}: {why}", fg="red", err=True)
        typer.echo(f"{src.name}: {len(problems)} of {len(src.files)} files failed verification")
    if problems:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- list / status


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    home: Path | None = _home_option(),
) -> None:
    """Available open sources and databases, and which of them are present."""
    from medagentgym.data import databases, sources
    from medagentgym.data import home as _home

    root = _home.db_dir(home).parent
    srcs = []
    for s in sources.list_sources():
        path = _home.raw_dir(s.name, home)
        srcs.append({**s.to_dict(), "present": _home.is_finished(path), "path": str(path)})
    dbs = []
    db_dir = _home.db_dir(home)
    from medagentgym.tasks.registry import datasets_using

    for db_id in databases.db_ids():
        spec = databases.get_database(db_id)
        imported = spec.imported_path(home)
        synthetic = (
            sorted(
                p.name[: -len(".sqlite")]
                for p in db_dir.glob(f"synthetic_{db_id}_p*_s*.sqlite")
                if _home.is_finished(p)
            )
            if db_dir.is_dir()
            else []
        )
        dbs.append(
            {
                "name": db_id,
                "title": spec.title,
                "imported": _home.is_finished(imported),
                "path": str(imported),
                "synthetic": synthetic,
                "datasets": datasets_using(db_id),
                "how_to_get": spec.how_to_get(),
            }
        )
    if as_json:
        typer.echo(json.dumps({"home": str(root), "sources": srcs, "databases": dbs}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"open sources (`medagentgym data pull NAME`) — {_display(root)}")
    for col in ("name", "title", "licence", "size", "present"):
        table.add_column(col, overflow="fold")
    for s in srcs:
        table.add_row(
            s["name"], s["title"], s["licence"], _size(s["bytes"]), "yes" if s["present"] else "no"
        )
    console.print(table)
    dtable = Table(title="databases")
    for col in ("name", "datasets", "imported", "synthetic builds"):
        dtable.add_column(col, overflow="fold")
    for d in dbs:
        dtable.add_row(
            d["name"],
            ", ".join(d["datasets"]) or "-",
            "yes" if d["imported"] else "no",
            ", ".join(d["synthetic"]) or "-",
        )
    console.print(dtable)


def _provenance(a: dict[str, Any]) -> str:
    parts = []
    if a.get("builder"):
        parts.append(str(a["builder"]).rsplit(".", 1)[-1])
    if a.get("created_at"):
        parts.append(str(a["created_at"]).replace("T", " ")[:16])
    if a.get("summary"):
        parts.append(str(a["summary"]))
    return "; ".join(parts)


@app.command("status")
def status(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    home: Path | None = _home_option(),
) -> None:
    """What is in the data home: databases, sources, task sets, registered releases."""
    from medagentgym.data import home as _home

    data = _home.status_dict(home)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not data["artefacts"]:
        console.print(
            f"nothing in {_display(data['home'])} yet; try `medagentgym data build-synthetic` "
            f"or `medagentgym data pull NAME`",
            highlight=False,
        )
        return
    root = Path(data["home"])
    table = Table(title=f"data home {_display(root)} (paths relative to it)")
    for col in ("kind", "name", "path", "size", "provenance"):
        table.add_column(col, overflow="fold")
    for a in data["artefacts"]:
        style = None if a["finished"] else "yellow"
        table.add_row(
            a["kind"],
            a["name"],
            _relative(a["path"], root),
            _size(a["bytes"]),
            _provenance(a),
            style=style,
        )
    console.print(table)
