"""``medagentgym export|train|verify``: from stored trajectories to trained models.

    medagentgym export sft RUN_DIR... --out sft.jsonl [--max-turns N] [--licence MIT]
    medagentgym export dpo RUN_DIR... --out dpo.jsonl
    medagentgym export verifier RUN_DIR... --out ver.jsonl --eval-fraction 0.1
    medagentgym export rl RUN_DIR... --out rl.jsonl
    medagentgym train sft --model PATH --data sft.jsonl --out ckpt/sft [--config FILE]
    medagentgym train dpo --model ckpt/sft --data dpo.jsonl --out ckpt/dpo
    medagentgym train verifier --model PATH --data ver.jsonl --eval-data ver.eval.jsonl --out V
    medagentgym train grpo --model ckpt/sft --data rl.jsonl --out ckpt/grpo
    medagentgym verify RUN_DIR --model V

Heavy libraries (torch, transformers, trl) load inside the commands only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

export_app = typer.Typer(help="Training data from stored trajectories (JSONL or Parquet).",
                         no_args_is_help=True)
train_app = typer.Typer(help="Fine-tune models on exported data (TRL recipes).",
                        no_args_is_help=True)

RUNS = typer.Argument(..., help="run directories (or trajectories.jsonl files)")
OUT = typer.Option(..., "--out", "-o", help="output file: .jsonl or .parquet")
DATASET = typer.Option(None, "--dataset", "-d", help="keep only these datasets (repeatable)")
MAX_TURNS = typer.Option(None, help="drop trajectories with more turns")
MAX_TOKENS = typer.Option(None, help="drop rows longer than this (estimated tokens)")
LICENCE = typer.Option(None, "--licence", help="keep datasets whose licence contains this")
EXCLUDE_LICENCE = typer.Option(None, "--exclude-licence",
                               help="drop datasets whose licence contains this (e.g. SA)")


def _filter(dataset: list[str] | None, max_turns: int | None, max_tokens: int | None,
            licence: list[str] | None, exclude_licence: list[str] | None) -> Any:
    from medagentgym.train.export import ExportFilter

    return ExportFilter(datasets=dataset or None, max_turns=max_turns, max_tokens=max_tokens,
                        licences=licence or None, exclude_licences=tuple(exclude_licence or ()))


AS_JSON = typer.Option(False, "--json", help="print the result as JSON")
ALLOW_EMPTY = typer.Option(False, "--allow-empty", help="write the file even when no row "
                           "passes (default: refuse, and say why)")


def _load(runs: list[Path]) -> list[Any]:
    from medagentgym.errors import ConfigurationError
    from medagentgym.rollout.store import FILENAME
    from medagentgym.train.export import load_runs

    for r in runs:
        if not r.exists():
            raise ConfigurationError(f"no run directory {r}")
        if r.is_dir() and not (r / FILENAME).is_file():
            raise ConfigurationError(f"{r}: no {FILENAME} here; pass a run directory written by "
                                     "`medagentgym run` or `medagentgym rollout`")
    warn_corrupt(runs)
    return load_runs(runs)


def warn_corrupt(runs: list[Path]) -> int:
    """Count the lines of the runs' trajectory files that do not parse; warn on stderr."""
    from medagentgym.rollout.store import TrajectoryStore

    total = 0
    for r in runs:
        path = Path(r)
        store = TrajectoryStore(path.parent if path.is_file() else path)
        if path.is_file():
            store.path = path
        n = store.count_corrupt() if store.path.is_file() else 0
        if n:
            typer.secho(f"warning: {store.path}: {n} corrupt line{'s' if n != 1 else ''} "
                        f"skipped (not a readable trajectory)", fg="yellow", err=True)
        total += n
    return total


def _write(rows: list[dict[str, Any]], out: Path, allow_empty: bool, why: str) -> Path:
    """Write the rows; no rows: refuse (nothing is written) with the reason, unless allowed."""
    from medagentgym.errors import ConfigurationError
    from medagentgym.train.export import write_rows

    if not rows:
        if not allow_empty:
            raise ConfigurationError(f"no rows to export ({why}); nothing written to {out}. "
                                     "Loosen the filters, or pass --allow-empty to write an "
                                     "empty file")
        typer.secho(f"warning: writing an empty {out} ({why})", fg="yellow", err=True)
    return write_rows(rows, out)


def _report(as_json: bool = True, **fields: Any) -> None:
    """The command's result on stdout: JSON with ``--json``, else one line of text."""
    if as_json:
        typer.echo(json.dumps(fields, indent=2, default=str))
        return
    out = fields.pop("out", None)
    parts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in fields.items()
                      if isinstance(v, int | float | str) and not isinstance(v, bool))
    typer.echo(f"wrote {out}: {parts}" if out else parts)


@export_app.command("sft")
def export_sft(runs: list[Path] = RUNS, out: Path = OUT,
               include_failures: bool = typer.Option(False, help="keep failed episodes too"),
               dedupe: bool = typer.Option(True), dataset: list[str] | None = DATASET,
               max_turns: int | None = MAX_TURNS, max_tokens: int | None = MAX_TOKENS,
               licence: list[str] | None = LICENCE,
               exclude_licence: list[str] | None = EXCLUDE_LICENCE,
               allow_empty: bool = ALLOW_EMPTY, as_json: bool = AS_JSON) -> None:
    """Successful trajectories as chat conversations (assistant turns are the targets)."""
    from medagentgym.train.export import sft_rows

    trajs = _load(runs)
    rows = sft_rows(trajs, _filter(dataset, max_turns, max_tokens, licence, exclude_licence),
                    success_only=not include_failures, dedupe=dedupe)
    successes = sum(t.success for t in trajs)
    why = (f"{len(trajs)} graded trajectories, {successes} successful"
           + ("" if include_failures else "; --include-failures keeps failed ones")
           + ("; the filters dropped the rest" if trajs else ""))
    _report(as_json, out=str(_write(rows, out, allow_empty, why)), trajectories=len(trajs),
            rows=len(rows), successes=successes)


@export_app.command("dpo")
def export_dpo(runs: list[Path] = RUNS, out: Path = OUT,
               in_trajectory: bool = typer.Option(True, help="earlier failing attempt vs the final success"),
               cross_sample: bool = typer.Option(True, help="a success vs a failure on the same task"),
               max_pairs_per_trajectory: int = typer.Option(4),
               max_cross_pairs_per_task: int = typer.Option(4),
               seed: int = typer.Option(0), dataset: list[str] | None = DATASET,
               max_turns: int | None = MAX_TURNS, max_tokens: int | None = MAX_TOKENS,
               licence: list[str] | None = LICENCE,
               exclude_licence: list[str] | None = EXCLUDE_LICENCE,
               allow_empty: bool = ALLOW_EMPTY, as_json: bool = AS_JSON) -> None:
    """Preference pairs: the paper's in-trajectory pairs and cross-sample pairs."""
    from medagentgym.train.export import dpo_rows

    trajs = _load(runs)
    rows, counts = dpo_rows(trajs, _filter(dataset, max_turns, max_tokens, licence,
                                           exclude_licence),
                            in_trajectory=in_trajectory, cross_sample=cross_sample,
                            max_pairs_per_trajectory=max_pairs_per_trajectory,
                            max_cross_pairs_per_task=max_cross_pairs_per_task, seed=seed)
    why = (f"{len(trajs)} graded trajectories gave no pair: a pair needs a success and a failed "
           "attempt on the same task")
    _report(as_json, out=str(_write(rows, out, allow_empty, why)), **counts.as_dict())


@export_app.command("verifier")
def export_verifier(runs: list[Path] = RUNS, out: Path = OUT,
                    balance: bool = typer.Option(True, help="down-sample the larger class"),
                    max_chars: int = typer.Option(12_000, help="cap on the rendered trajectory"),
                    eval_fraction: float = typer.Option(
                        0.0, help="hold out this fraction of tasks to OUT with .eval before the suffix"),
                    seed: int = typer.Option(0), dataset: list[str] | None = DATASET,
                    max_turns: int | None = MAX_TURNS, licence: list[str] | None = LICENCE,
                    exclude_licence: list[str] | None = EXCLUDE_LICENCE,
                    allow_empty: bool = ALLOW_EMPTY, as_json: bool = AS_JSON) -> None:
    """(trajectory, label) rows for the YES/NO verifier."""
    from medagentgym.train.export import split_by_task, verifier_rows

    trajs = _load(runs)
    rows = verifier_rows(trajs, _filter(dataset, max_turns, None, licence, exclude_licence),
                         balance=balance, max_chars=max_chars, seed=seed)
    why = (f"{len(trajs)} graded trajectories; with --balance both successes and failures "
           "are needed")
    report: dict[str, Any] = {}
    if eval_fraction > 0:
        rows, held = split_by_task(rows, eval_fraction, seed=seed)
        eval_out = out.with_name(out.stem + ".eval" + out.suffix)
        report["eval_out"] = str(_write(held, eval_out, True, "no task was held out; raise "
                                        "--eval-fraction"))
        report["eval_rows"] = len(held)
    _report(as_json, out=str(_write(rows, out, allow_empty, why)), rows=len(rows),
            positives=sum(r["label"] for r in rows), **report)


@export_app.command("rl")
def export_rl(runs: list[Path] = typer.Argument(None, help="run directories (or use --tasks)"),
              out: Path = OUT,
              tasks: str | None = typer.Option(None, help="DATASET[:SPLIT]: rows from the task "
                                               "list itself instead of runs"),
              database: str = typer.Option("auto", help="with --tasks: auto | synthetic | imported | official"),
              limit: int = typer.Option(0, help="with --tasks: first N tasks (0 = all)"),
              protocol: str = typer.Option("paper"), max_turns: int = typer.Option(15),
              min_pass_rate: float = typer.Option(0.0, help="drop tasks solved less often"),
              max_pass_rate: float = typer.Option(1.0, help="drop tasks solved more often "
                                                  "(e.g. 0.99: every sample already succeeds)"),
              dataset: list[str] | None = DATASET,
              allow_empty: bool = ALLOW_EMPTY, as_json: bool = AS_JSON) -> None:
    """One prompt row per task, with what the environment needs to rebuild it."""
    from medagentgym.errors import ConfigurationError
    from medagentgym.train.export import load_run_info, rl_rows, rl_rows_from_tasks

    if tasks:
        import medagentgym as mag

        name, _, split = tasks.partition(":")
        opts = {} if database == "auto" else {"database": database}
        task_list = mag.load_tasks(name, split or "train", **opts)
        if limit:
            task_list = task_list[:limit]
        rows = rl_rows_from_tasks(name, split or "train", task_list, protocol=protocol,
                                  max_turns=max_turns, family_options=opts)
        why = f"{name}:{split or 'train'} has no tasks"
    else:
        if not runs:
            raise ConfigurationError("give run directories or --tasks DATASET[:SPLIT]")
        info = load_run_info(runs[0]) if runs[0].is_dir() else {}
        rows = rl_rows(_load(runs), _filter(dataset, None, None, None, None), run_info=info)
        before = len(rows)
        rows = [r for r in rows if min_pass_rate <= r["pass_rate"] <= max_pass_rate]
        why = (f"{before} tasks in the runs, none with a pass rate in "
               f"[{min_pass_rate:g}, {max_pass_rate:g}] (--min-pass-rate/--max-pass-rate)")
    _report(as_json, out=str(_write(rows, out, allow_empty, why)), tasks=len(rows))


# ------------------------------------------------------------------------------ train

MODEL = typer.Option(..., "--model", "-m", help="a local checkpoint directory or a hub name")
DATA = typer.Option(..., "--data", help="exported file(s) (repeatable)")
CONFIG = typer.Option(None, "--config", "-c", help="TOML overriding the packaged recipe config")
MAX_STEPS = typer.Option(None, help="stop after N optimiser steps (smoke tests)")
TOUT = typer.Option(..., "--out", "-o", help="checkpoint directory")
LORA = typer.Option(None, "--lora/--no-lora", help="override [lora] enabled")
LR = typer.Option(None, "--lr", help="override the learning rate")


def _overrides(lora: bool | None, lr: float | None) -> dict[str, Any]:
    over: dict[str, Any] = {}
    if lora is not None:
        over["lora"] = {"enabled": lora}
    if lr is not None:
        over["training"] = {"learning_rate": lr}
    return over


def check_inputs(model: str | Path, data: list[Path] | None = None, *,
                 eval_data: Path | None = None, config: Path | None = None,
                 run_dir: Path | None = None, local_model: bool = False) -> None:
    """Everything a training or scoring command reads, checked before a model is loaded:
    one line with the fix instead of a traceback minutes later."""
    from medagentgym.errors import ConfigurationError
    from medagentgym.rollout.store import FILENAME

    for f, flag in [*((d, "--data") for d in data or []), (eval_data, "--eval-data"),
                    (config, "--config")]:
        if f is None:
            continue
        f = Path(f)
        if not f.is_file():
            state = "is a directory" if f.is_dir() else "does not exist"
            hint = " (make it with `medagentgym export ...`)" if flag != "--config" else ""
            raise ConfigurationError(f"{flag} {f} {state}{hint}")
        if f.stat().st_size == 0:
            raise ConfigurationError(f"{flag} {f} is empty; export rows into it first")
    if run_dir is not None:
        rd = Path(run_dir)
        if not (rd / FILENAME).is_file() and not (rd.is_file() and rd.suffix == ".jsonl"):
            raise ConfigurationError(f"{rd}: no {FILENAME} here; pass a run directory written "
                                     "by `medagentgym run` or `medagentgym rollout`")
    m = Path(str(model)).expanduser()
    text = str(model)
    looks_local = (local_model or text.startswith(("/", ".", "~")) or text.count("/") > 1
                   or (len(m.parts) > 1 and Path(m.parts[0]).is_dir()))
    if m.exists():
        if m.is_dir() and not any((m / f).is_file() for f in ("config.json",
                                                              "adapter_config.json")):
            raise ConfigurationError(f"--model {m} is a directory without config.json (not a "
                                     "checkpoint); give the checkpoint directory itself")
    elif looks_local:
        raise ConfigurationError(f"--model {m} does not exist (a local checkpoint directory or "
                                 "a Hugging Face hub name such as Qwen/Qwen3-0.6B)")
    else:
        typer.secho(f"note: --model {text} is not a local directory; it is taken as a Hugging "
                    "Face hub name (downloaded unless cached)", err=True)


def _summary(s: dict[str, Any]) -> None:
    s = {k: v for k, v in s.items() if k != "config"}
    _report(**s)


@train_app.command("sft")
def train_sft_cmd(model: str = MODEL, data: list[Path] = DATA, out: Path = TOUT,
                  config: Path | None = CONFIG, max_steps: int | None = MAX_STEPS,
                  lora: bool | None = LORA, lr: float | None = LR) -> None:
    """Supervised fine-tuning on `export sft` conversations (paper: lr 1e-4, batch 8)."""
    from medagentgym.train.recipes import train_sft

    check_inputs(model, list(data), config=config)
    _summary(train_sft(model, list(data), out, config=config, max_steps=max_steps,
                       overrides=_overrides(lora, lr)))


@train_app.command("dpo")
def train_dpo_cmd(model: str = MODEL, data: list[Path] = DATA, out: Path = TOUT,
                  config: Path | None = CONFIG, max_steps: int | None = MAX_STEPS,
                  lora: bool | None = LORA, lr: float | None = LR) -> None:
    """DPO on `export dpo` pairs, from the SFT checkpoint (paper: lr 5e-6, batch 64, beta 0.1)."""
    from medagentgym.train.recipes import train_dpo

    check_inputs(model, list(data), config=config)
    _summary(train_dpo(model, list(data), out, config=config, max_steps=max_steps,
                       overrides=_overrides(lora, lr)))


@train_app.command("verifier")
def train_verifier_cmd(model: str = MODEL, data: list[Path] = DATA, out: Path = TOUT,
                       eval_data: Path | None = typer.Option(None, help="held-out rows: "
                                                             "accuracy and AUROC"),
                       config: Path | None = CONFIG, max_steps: int | None = MAX_STEPS,
                       lora: bool | None = LORA, lr: float | None = LR) -> None:
    """The YES/NO trajectory verifier on `export verifier` rows."""
    from medagentgym.train.verifier import train_verifier

    check_inputs(model, list(data), eval_data=eval_data, config=config)
    _summary(train_verifier(model, list(data), out, eval_data=eval_data, config=config,
                            max_steps=max_steps, overrides=_overrides(lora, lr)))


@train_app.command("grpo")
def train_grpo_cmd(model: str = MODEL, data: list[Path] = DATA, out: Path = TOUT,
                   config: Path | None = CONFIG, max_steps: int | None = MAX_STEPS,
                   lora: bool | None = LORA, lr: float | None = LR,
                   sandbox: str | None = typer.Option(None, help="sandbox provider")) -> None:
    """Online multi-turn GRPO: each rollout is a real episode in the environment."""
    from medagentgym.train.grpo import train_grpo

    check_inputs(model, list(data), config=config)
    _summary(train_grpo(model, list(data), out, config=config, max_steps=max_steps,
                        overrides=_overrides(lora, lr), sandbox=sandbox))


# ----------------------------------------------------------------------------- verify


def verify(run_dir: Path = typer.Argument(..., help="run directory to score"),
           model: Path = typer.Option(..., "--model", "-m", help="a `train verifier` checkpoint"),
           out: Path | None = typer.Option(
               None, help="a .jsonl file (default RUN_DIR/trajectories.verified.jsonl) or a new "
               "run directory that `medagentgym eval` reads"),
           batch_size: int = typer.Option(4)) -> None:
    """Score a run's trajectories with a verifier (a new file; the run is never rewritten) and
    report the verifier's accuracy, AUROC and best@k against the graded outcomes."""
    from medagentgym.train.verifier import score_run

    check_inputs(model, run_dir=run_dir, local_model=True)
    _report(**score_run(run_dir, model, out=out, batch_size=batch_size))
