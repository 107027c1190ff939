"""The ``medagentgym`` command line: thin typer commands over the public API.

Command modules import their heavy dependencies inside the command functions, so that
``medagentgym --help`` answers fast.
"""

from __future__ import annotations

import sys

import typer

from medagentgym.cli import bench, data, rollout, run, sandbox, serve, tasks
from medagentgym.cli import eval as eval_cmds
from medagentgym.cli import train as train_cli
from medagentgym.cli.examples import attach as attach_examples

app = typer.Typer(
    name="medagentgym",
    help="Executable, verifiable, multi-turn environments for biomedical coding agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog="Results go to stdout (--json for JSON); progress, warnings and errors to stderr.\n\n"
           "Examples:\n\n  medagentgym tasks datasets\n\n  medagentgym validate treqs --limit 5"
           "\n\n  medagentgym rollout treqs --model MODEL --base-url URL --out runs/x",
)
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(bench.app, name="bench")
app.add_typer(data.app, name="data")
app.add_typer(tasks.app, name="tasks")
app.command("validate")(run.validate)
app.command("run")(run.run)
app.command("rollout")(rollout.rollout)
app.command("eval")(eval_cmds.eval_runs)
app.command("leaderboard")(eval_cmds.leaderboard)
app.command("view")(eval_cmds.view)
app.add_typer(train_cli.export_app, name="export")
app.add_typer(train_cli.train_app, name="train")
app.command("verify")(train_cli.verify)
app.command("serve")(serve.serve)
app.command("demo")(run.demo)


@app.command()
def version() -> None:
    """Print the package version."""
    from medagentgym import __version__

    typer.echo(__version__)


def _print_version(value: bool) -> None:
    if value:
        version()
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(False, "--version", "-V", callback=_print_version,
                                      is_eager=True, help="print the version and exit"),
) -> None:
    """Executable, verifiable, multi-turn environments for biomedical coding agents."""


attach_examples(app)


def run_app(typer_app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run a typer app the way the console script does: a configuration error prints one
    line and exits 2; an infrastructure error, or a full disk anywhere, one line and exit 1."""
    import errno

    from medagentgym.errors import ConfigurationError, InfrastructureError

    try:
        typer_app(args=argv, standalone_mode=True)
    except ConfigurationError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except InfrastructureError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        typer.secho(f"error: no space left on the device{where}; free space, then run the same "
                    "command again (runs: with --resume)", fg="red", err=True)
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: configuration errors print one line and exit 2."""
    run_app(app, argv)
