"""``medagentgym serve``: the environment server for external RL trainers (HTTP)."""

from __future__ import annotations

import typer

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(
    host: str = typer.Option("127.0.0.1", help="bind address (0.0.0.0 exposes it; use --token)"),
    port: int = typer.Option(8000, help="TCP port"),
    max_envs: int = typer.Option(None, help="most environments at once (default: 1024 with "
                                            "--sandbox-pool, else 64: one sandbox each)"),
    idle_timeout: float = typer.Option(600.0, help="close envs idle for this many seconds"),
    token: str = typer.Option(None, envvar="MEDAGENTGYM_SERVER_TOKEN", show_envvar=True,
                              help="require 'Authorization: Bearer TOKEN'"),
    admin_token: str = typer.Option(None, envvar="MEDAGENTGYM_SERVER_ADMIN_TOKEN",
                                    show_envvar=True,
                                    help="'X-Admin-Token: TOKEN' lists every env in GET /envs"),
    sandbox: str = typer.Option("auto", help="sandbox provider for every env: auto | bwrap | "
                                             "local (local: loopback only; clients never choose)"),
    sandbox_pool: bool = typer.Option(
        None, "--sandbox-pool/--no-sandbox-pool", help=(
            "envs share a few warm workers (one per CPU): an idle env costs no process "
            "(default: on with bwrap; families with services keep their own sandbox)")),
    max_body: int = typer.Option(1 << 20, help="largest request body in bytes (413 beyond)"),
    max_task_sets: int = typer.Option(32, help="most distinct (dataset, split, options) task "
                                               "sets built"),
    log_level: str = typer.Option("info", help="uvicorn log level"),
) -> None:
    """Serve reset/step over HTTP (see docs/training.md, 'The environment server')."""
    from medagentgym.errors import ConfigurationError

    try:
        import uvicorn

        from medagentgym.server.app import create_app
    except ImportError as exc:
        raise ConfigurationError(
            f"the server needs FastAPI and uvicorn ({exc.name} is missing): "
            "pip install 'medagentgym[server]'") from None
    from medagentgym.sandbox import resolve_provider

    provider = resolve_provider(sandbox)  # once, here: $MEDAGENTGYM_SANDBOX or config included
    if provider == "local" and host not in LOOPBACK:
        raise ConfigurationError(
            f"the sandbox provider is local (no isolation of agent code); refusing to serve it "
            f"on {host}: use --sandbox bwrap, or bind to 127.0.0.1")
    if host not in LOOPBACK and not token:
        typer.secho(f"warning: serving on {host} without --token: anyone who can reach the "
                    "port can run code in your sandboxes", fg="yellow", err=True)
    if sandbox_pool and provider != "bwrap":
        raise ConfigurationError(f"--sandbox-pool needs the bwrap sandbox (this server uses "
                                 f"{provider!r}): pass --sandbox bwrap, or --no-sandbox-pool")
    pooled = provider == "bwrap" if sandbox_pool is None else sandbox_pool
    if max_envs is None:
        max_envs = 1024 if pooled else 64
    app = create_app(max_envs=max_envs, idle_timeout_s=idle_timeout, token=token or None,
                     sandbox=provider, admin_token=admin_token or None, max_body_bytes=max_body,
                     max_task_sets=max_task_sets, sandbox_pool=pooled)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
