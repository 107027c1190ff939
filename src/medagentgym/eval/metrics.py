"""Metrics over stored trajectories: success with intervals, pass@k, best@k, failures.

Everything is a pure function of :class:`~medagentgym.types.Trajectory` lists.

* **Infrastructure failures** (an episode error whose source is not ``agent``: sandbox,
  model endpoint, grader, environment) are counted apart and leave every denominator: they
  are neither successes nor wrong answers.
* **mean_score** = mean reward (``Grade.score``) over graded episodes: the success rate for
  binary datasets, a continuous score (AUROC, accuracy) where a dataset grades that way;
  ``continuous`` marks those, and reports show the score next to success for them.
* **success_rate** = successes / graded episodes, with a 95% percentile-bootstrap interval
  that resamples *tasks* (all samples of a task together), so several samples per task do
  not fake precision.
* **pass@k** is the unbiased estimator ``1 - C(n-c, k) / C(n, k)`` (n graded samples of a
  task, c of them correct), averaged over the tasks with n >= k, for k = 1..max n.
* **best@k** is the expected success of the sample a scorer ranks first among k samples
  drawn at random from a task's n (ties broken at random), computed exactly: a perfect
  scorer gives pass@k, a constant scorer gives pass@1. Scorers: ``verifier`` (a score stored
  in ``trajectory.metadata["verifier_score"]``) and ``majority`` (how many of the task's
  samples reached the same final answer).
* **failure taxonomy** (the paper's error analysis): every failed episode gets one cause,
  see :func:`classify_failure`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medagentgym.types import Trajectory

#: The paper's 8 in-distribution and 4 out-of-distribution datasets (Tables 3 and 5).
PAPER_IN_DISTRIBUTION = ("mimic_iii", "eicu", "treqs", "medcalcbench", "medagentbench",
                         "biocoder", "ehrshot", "biodsbench")
PAPER_OOD = ("ehr_seqsql", "ehrcon", "mimic_extract", "npowerai")
DISPLAY_NAMES = {
    "mimic_iii": "MIMIC-III", "eicu": "eICU", "treqs": "TREQS", "medcalcbench": "MedCalcBench",
    "medagentbench": "MedAgentBench", "biocoder": "BioCoder", "ehrshot": "EHRSHOT",
    "biodsbench": "BioDSBench", "ehr_seqsql": "EHR-SeqSQL", "ehrcon": "EHRCon",
    "mimic_extract": "MIMIC-Extract", "npowerai": "N-PowerAI",
}

#: What :func:`evaluate` returns (JSON-ready).
EvalReport = dict[str, Any]

INFRASTRUCTURE = "infrastructure"
#: Causes of a failed (graded) episode, in the order reports show them.
FAILURE_CATEGORIES = (
    "stuck_in_loop",   # the same action repeated loop_threshold times in a row
    "syntax_error",    # the last execution did not compile
    "runtime_error",   # the last execution raised (or ran out of memory / output room)
    "io_error",        # the last execution could not read or write a file or database
    "timeout",         # the last execution hit its time limit
    "format_error",    # no readable action, or code that never set a readable `answer`
    "wrong_answer",    # an answer was graded and was wrong
    "no_answer",       # the episode ended without ever running code (e.g. only lookups)
    "agent_error",     # the agent itself crashed (its own exception)
)
FAILURE_LABELS = {
    "stuck_in_loop": "stuck in a loop", "syntax_error": "syntax/compile error",
    "runtime_error": "runtime error", "io_error": "I/O error", "timeout": "timeout",
    "format_error": "format error", "wrong_answer": "wrong answer", "no_answer": "no answer",
    "agent_error": "agent crash", INFRASTRUCTURE: "infrastructure",
}
#: Action groups of the action mix; ``code`` is ``validate_code``, ``invalid`` an unreadable one.
ACTION_GROUPS = ("request_info", "code", "debug", "terminal", "submit", "invalid")

_SYNTAX = {"SyntaxError", "IndentationError", "TabError"}
_IO = {"FileNotFoundError", "PermissionError", "IsADirectoryError", "NotADirectoryError",
       "OSError", "IOError", "EmptyDataError", "UnicodeDecodeError", "BlockingIOError",
       "FileExistsError"}
_IO_MESSAGES = ("unable to open database", "no such file", "file is not a database",
                "permission denied", "read-only file system")
_EXC_RE = re.compile(r"^\s*((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt))"
                     r"(?::\s*(.*))?$", re.MULTILINE)
_EXEC_ACTIONS = ("validate_code", "submit")


# ------------------------------------------------------------------------------ loading


@dataclass
class Run:
    """One run directory: its settings (``run.json``) and de-duplicated trajectories."""

    path: Path
    info: dict[str, Any]
    trajectories: list[Trajectory]
    label: str = ""
    #: lines of trajectories.jsonl that did not parse (skipped; readers warn about them)
    corrupt_lines: int = 0

    @property
    def models(self) -> list[str]:
        return sorted({model_label(t, self.info) for t in self.trajectories})


def model_label(traj: Trajectory, info: Mapping[str, Any] | None = None) -> str:
    """What a leaderboard row is called: the model, else the run's model, else the agent."""
    if traj.model:
        return traj.model
    model = (info or {}).get("model")
    if isinstance(model, Mapping) and model.get("model"):
        return str(model["model"])
    if isinstance(model, str) and model:
        return model
    return traj.agent or "unknown"


def load_run(path: str | Path) -> Run:
    """Read a run directory (or its ``trajectories.jsonl``).

    A (task, sample) pair stored twice (an infrastructure failure retried by ``--resume``)
    counts once (:func:`medagentgym.rollout.store.latest_by_key`).
    """
    from medagentgym.errors import ConfigurationError
    from medagentgym.rollout.store import FILENAME, TrajectoryStore, latest_by_key

    p = Path(path)
    run_dir = p.parent if p.is_file() else p
    if not (run_dir / FILENAME).is_file():
        raise ConfigurationError(f"{path}: no {FILENAME} here; pass a run directory written by "
                                 "`medagentgym run` or `medagentgym rollout`")
    info: dict[str, Any] = {}
    info_path = run_dir / "run.json"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except ValueError:
            info = {}
    store = TrajectoryStore(run_dir)
    trajs = latest_by_key(store)
    run = Run(path=run_dir, info=info, trajectories=trajs, corrupt_lines=store.corrupt_lines)
    models = run.models
    run.label = models[0] if len(models) == 1 else (", ".join(models) or run_dir.name)
    return run


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    return [load_run(p) for p in paths]


# ---------------------------------------------------------------------------- estimators


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one task: ``1 - C(n-c, k) / C(n, k)`` (n samples, c correct)."""
    if k <= 0 or k > n:
        raise ValueError(f"pass@k needs 1 <= k <= n (k={k}, n={n})")
    if c < 0 or c > n:
        raise ValueError(f"c={c} is outside 0..n={n}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i), numerically stable
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def best_at_k(scores: Sequence[float], successes: Sequence[bool | float], k: int) -> float:
    """Expected success of the top-scored sample among k drawn without replacement.

    Exact: the i-th best of n samples is the top of a random k-subset with probability
    ``C(n-1-i, k-1) / C(n, k)``; samples with equal scores share their positions' mass
    (random tie-breaking). ``successes`` may be 0/1 or a graded score in [0, 1].
    """
    n = len(scores)
    if len(successes) != n:
        raise ValueError("scores and successes differ in length")
    if k <= 0 or k > n:
        raise ValueError(f"best@k needs 1 <= k <= n (k={k}, n={n})")
    order = sorted(range(n), key=lambda i: -float(scores[i]))
    total = math.comb(n, k)
    weight = [math.comb(n - 1 - pos, k - 1) / total for pos in range(n)]
    value = 0.0
    pos = 0
    while pos < n:
        end = pos
        while end + 1 < n and float(scores[order[end + 1]]) == float(scores[order[pos]]):
            end += 1
        group = order[pos:end + 1]
        mass = sum(weight[pos:end + 1])
        value += mass * sum(float(successes[i]) for i in group) / len(group)
        pos = end + 1
    return value


def bootstrap_ci(correct: Sequence[float], graded: Sequence[float], *, resamples: int = 2000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float, np.ndarray]:
    """Percentile-bootstrap interval of ``sum(correct) / sum(graded)`` resampling tasks.

    ``correct[i]`` and ``graded[i]`` are task i's successes and graded samples. Returns
    ``(lo, hi, replicates)``; the replicates let callers build intervals of averages.
    """
    c = np.asarray(correct, dtype=float)
    n = np.asarray(graded, dtype=float)
    t = len(c)
    if t == 0 or n.sum() == 0:
        return 0.0, 0.0, np.zeros(resamples)
    rng = np.random.default_rng(seed)
    reps = np.empty(resamples)
    chunk = max(1, min(resamples, 4_000_000 // max(t, 1)))
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        idx = rng.integers(0, t, size=(b, t))
        nn = n[idx].sum(axis=1)
        reps[start:start + b] = np.divide(c[idx].sum(axis=1), nn, out=np.zeros(b), where=nn > 0)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return float(lo), float(hi), reps


# ------------------------------------------------------------------------ per trajectory


def is_infrastructure(traj: Trajectory) -> bool:
    """Whether the episode failed outside the agent's control (not a wrong answer)."""
    return traj.error is not None and traj.error.source != "agent"


def _action_key(step: Any) -> str:
    if step.action is not None:
        return json.dumps(step.action, sort_keys=True, default=str)
    return "raw:" + (step.raw_action or step.model_output or "")


def longest_repeat(traj: Trajectory) -> int:
    """The longest run of identical consecutive actions (unreadable replies compared raw)."""
    best = run = 0
    prev: str | None = None
    for step in traj.steps:
        key = _action_key(step)
        run = run + 1 if key == prev else 1
        best = max(best, run)
        prev = key
    return best


def exception_type(text: str) -> tuple[str | None, str]:
    """The last exception named in a traceback-like text, and its message."""
    found = None
    for m in _EXC_RE.finditer(text or ""):
        found = m
    if found is None:
        return None, ""
    return found.group(1), (found.group(2) or "")


def _classify_error(text: str) -> str:
    name, message = exception_type(text)
    if name is None:
        low = (text or "").lower()
        return "io_error" if any(m in low for m in _IO_MESSAGES) else "runtime_error"
    short = name.rsplit(".", 1)[-1]
    if short in _SYNTAX:
        return "syntax_error"
    if short in _IO or any(m in message.lower() for m in _IO_MESSAGES):
        return "io_error"
    return "runtime_error"


def classify_failure(traj: Trajectory, *, loop_threshold: int = 3) -> str:
    """The cause of a failed episode (one of :data:`FAILURE_CATEGORIES`).

    In order: an agent crash; the same action ``loop_threshold`` times in a row (the paper's
    "stuck in a loop"); otherwise the *last* code execution decides: a time limit, an
    exception (syntax, I/O or other runtime error), code that set no readable ``answer``
    (format), or a graded wrong answer. Without any execution: unreadable replies are a
    format error, anything else is "no answer".
    """
    if traj.error is not None and traj.error.source == "agent":
        return "agent_error"
    if traj.steps and longest_repeat(traj) >= loop_threshold:
        return "stuck_in_loop"
    last = None
    for step in reversed(traj.steps):
        name = (step.action or {}).get("action")
        if name in _EXEC_ACTIONS and (step.exec_status is not None or step.grade is not None):
            last = step
            break
    if last is None:
        if any(s.parse_error for s in traj.steps):
            return "format_error"
        return "no_answer"
    status = last.exec_status
    if status == "timeout":
        return "timeout"
    if status in ("error", "memory", "killed", "output_limit"):
        if status == "error":
            return _classify_error(last.observation)
        return "runtime_error"
    if last.grade is not None and last.grade.reason != "no answer":
        return "wrong_answer"
    return "format_error"


def outcome(traj: Trajectory, *, loop_threshold: int = 3) -> str:
    """``success``, ``infrastructure`` or a failure category."""
    if is_infrastructure(traj):
        return INFRASTRUCTURE
    if traj.success:
        return "success"
    return classify_failure(traj, loop_threshold=loop_threshold)


def action_group(step: Any) -> str:
    name = (step.action or {}).get("action")
    if name is None:
        return "invalid"
    if name == "validate_code":
        return "code"
    return name if name in ACTION_GROUPS else "invalid"


def final_answer(traj: Trajectory) -> str | None:
    """A comparable key for the episode's final answer, for majority voting.

    ``metadata["answer"]`` or the last graded step's ``answer`` when the producer stored
    the captured value; otherwise the prediction the last grade recorded (``pred=...`` in
    its detail), else that step's output text (a rough proxy).
    """
    if "answer" in traj.metadata:
        return json.dumps(traj.metadata["answer"], sort_keys=True, default=str)
    for step in reversed(traj.steps):
        if step.grade is None:
            continue
        value = getattr(step, "answer", None)  # when steps record the captured value
        if value is not None:
            return json.dumps(value, sort_keys=True, default=str)
        m = re.search(r"pred=(.*?)(?:\s+gold=|$)", step.grade.detail or "", re.DOTALL)
        if m:
            return m.group(1).strip()
        text = " ".join((step.observation or "").split())
        return text or None
    return None


def usage_of(traj: Trajectory) -> dict[str, float]:
    """Tokens (and cost) of one episode: the agent's totals, plus the debugger's."""
    out: dict[str, float] = defaultdict(float)
    meta = traj.metadata.get("usage")
    if isinstance(meta, Mapping):
        for key in ("prompt_tokens", "completion_tokens", "total_tokens", "reasoning_tokens",
                    "cost_usd"):
            if isinstance(meta.get(key), int | float):
                out[key] += meta[key]
    for step in traj.steps:
        usage = step.usage or {}
        if not isinstance(meta, Mapping):
            for key in ("prompt_tokens", "completion_tokens", "total_tokens",
                        "reasoning_tokens"):
                out[key] += usage.get(key, 0)
        for key in ("debugger_prompt_tokens", "debugger_completion_tokens"):
            out[key] += usage.get(key, 0)
    return dict(out)


# --------------------------------------------------------------------------- aggregation


Scorer = Callable[[Sequence[Trajectory]], list[float] | None]


def verifier_scorer(key: str = "verifier_score") -> Scorer:
    """Scores stored on the trajectories (None unless every sample has one)."""

    def score(samples: Sequence[Trajectory]) -> list[float] | None:
        values = [t.metadata.get(key) for t in samples]
        if any(not isinstance(v, int | float) for v in values):
            return None
        return [float(v) for v in values]  # type: ignore[arg-type]

    return score


def majority_scorer(samples: Sequence[Trajectory]) -> list[float] | None:
    """How many of the task's samples share each sample's final answer (none: 0)."""
    answers = [final_answer(t) for t in samples]
    if all(a is None for a in answers):
        return None
    counts = Counter(a for a in answers if a is not None)
    return [float(counts[a]) if a is not None else 0.0 for a in answers]


def _task_samples(trajs: Sequence[Trajectory]) -> dict[tuple[str, str], list[Trajectory]]:
    tasks: dict[tuple[str, str], list[Trajectory]] = defaultdict(list)
    for t in trajs:
        if not is_infrastructure(t):
            tasks[(t.dataset, t.task_id)].append(t)
    return tasks


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


class _Options:
    def __init__(self, *, max_k: int | None, resamples: int, seed: int, loop_threshold: int,
                 scorers: Mapping[str, Scorer]) -> None:
        self.max_k = max_k
        self.resamples = resamples
        self.seed = seed
        self.loop_threshold = loop_threshold
        self.scorers = scorers


def _block(trajs: Sequence[Trajectory], opt: _Options, *, curves: bool = True
           ) -> tuple[dict[str, Any], np.ndarray]:
    """The metrics of one group of trajectories, and its bootstrap replicates."""
    outcomes = [outcome(t, loop_threshold=opt.loop_threshold) for t in trajs]
    graded = [(t, o) for t, o in zip(trajs, outcomes, strict=True) if o != INFRASTRUCTURE]
    infra = [t for t, o in zip(trajs, outcomes, strict=True) if o == INFRASTRUCTURE]
    successes = sum(o == "success" for _, o in graded)
    tasks = _task_samples(trajs)
    per_task_c = [sum(t.success for t in s) for s in tasks.values()]
    per_task_n = [len(s) for s in tasks.values()]
    lo, hi, reps = bootstrap_ci(per_task_c, per_task_n, resamples=opt.resamples, seed=opt.seed)
    rate = successes / len(graded) if graded else 0.0

    failures = Counter(o for _, o in graded if o != "success")
    failed = sum(failures.values())
    steps = [s for t, _ in graded for s in t.steps]
    mix = Counter(action_group(s) for s in steps)
    usage: dict[str, float] = defaultdict(float)
    has_cost = False
    stats: dict[str, float] = defaultdict(float)
    for t in trajs:
        u = usage_of(t)
        has_cost = has_cost or "cost_usd" in u
        for key, value in u.items():
            usage[key] += value
        for key, value in (t.metadata.get("agent_stats") or {}).items():
            if isinstance(value, int | float):
                stats[key] += value

    block: dict[str, Any] = {
        "episodes": len(trajs),
        "graded": len(graded),
        "successes": successes,
        "success_rate": rate,
        # the mean reward (Grade.score): equal to success for binary datasets, a continuous
        # score (e.g. AUROC) where the dataset has one; ``continuous`` says which
        "mean_score": _mean([float(t.reward) for t, _ in graded]),
        "continuous": any(float(t.reward) not in (0.0, 1.0) or t.metadata.get("score_kind") == "continuous"
                          for t, _ in graded),
        "ci95": [lo, hi],
        "tasks": len(tasks),
        "samples_per_task": {"min": min(per_task_n, default=0), "max": max(per_task_n, default=0)},
        "mean_turns": _mean([t.turns for t, _ in graded]),
        "mean_turns_success": _mean([t.turns for t, o in graded if o == "success"]),
        "action_counts": {g: mix.get(g, 0) for g in ACTION_GROUPS},
        "action_mix": {g: (mix.get(g, 0) / len(steps) if steps else 0.0) for g in ACTION_GROUPS},
        "failures": {c: failures.get(c, 0) for c in FAILURE_CATEGORIES},
        "failure_share": {c: (failures.get(c, 0) / failed if failed else 0.0)
                          for c in FAILURE_CATEGORIES},
        "infrastructure": {"episodes": len(infra),
                           "by_source": dict(Counter(t.error.source for t in infra if t.error))},
        "tokens": {key: int(usage.get(key, 0)) for key in
                   ("prompt_tokens", "completion_tokens", "total_tokens", "reasoning_tokens",
                    "debugger_prompt_tokens", "debugger_completion_tokens")},
        "mean_tokens_per_episode": (usage.get("total_tokens", 0.0) / len(trajs)) if trajs else 0.0,
        "cost_usd": round(usage["cost_usd"], 6) if has_cost else None,
        "mean_duration_s": _mean([t.duration_s for t in trajs]),
    }
    if stats:
        block["agent_stats"] = {k: int(v) for k, v in sorted(stats.items())}
    if curves:
        block.update(_curves(tasks, opt))
    return block, reps


def _curves(tasks: Mapping[tuple[str, str], list[Trajectory]], opt: _Options) -> dict[str, Any]:
    """pass@k and best@k for k = 1..(most samples of any task); each k averages over the
    tasks with at least k graded samples (``pass_at_k_tasks`` says how many), so one
    infrastructure failure does not cut a whole dataset's curve short."""
    samples = [sorted(s, key=lambda t: t.sample_index) for s in tasks.values() if s]
    if not samples:
        return {"pass_at_k": {}, "pass_at_k_tasks": {}, "best_at_k": {}}
    k_max = max(len(s) for s in samples)
    if opt.max_k:
        k_max = min(k_max, opt.max_k)
    ks = range(1, k_max + 1)
    pass_k = {str(k): _mean([pass_at_k(len(s), sum(t.success for t in s), k)
                             for s in samples if len(s) >= k]) for k in ks}
    covered = {str(k): sum(len(s) >= k for s in samples) for k in ks}
    best: dict[str, dict[str, float]] = {}
    best_tasks: dict[str, int] = {}
    for name, scorer in opt.scorers.items():
        # a scorer covers the tasks it can score (e.g. a verifier run on one dataset only)
        scored = [(sc, s) for s in samples if (sc := scorer(s)) is not None]
        if not scored:
            continue
        best_tasks[name] = len(scored)
        best[name] = {str(k): _mean([best_at_k(sc, [t.success for t in s], k)
                                     for sc, s in scored if len(s) >= k]) for k in ks}
    return {"pass_at_k": pass_k, "pass_at_k_tasks": covered, "best_at_k": best,
            "best_at_k_tasks": best_tasks}


def _membership(name: str) -> str | None:
    """``in_distribution``, ``ood`` or None (a plugin dataset the paper does not have)."""
    if name in PAPER_IN_DISTRIBUTION:
        return "in_distribution"
    if name in PAPER_OOD:
        return "ood"
    try:
        from medagentgym.tasks.registry import get_spec

        return "in_distribution" if get_spec(name).in_distribution else "ood"
    except Exception:
        return None


def _membership_registered(name: str) -> bool | None:
    try:
        from medagentgym.tasks.registry import get_spec

        return get_spec(name).in_distribution
    except Exception:
        return None


def evaluate(trajs: Sequence[Trajectory], *, max_k: int | None = None, resamples: int = 2000,
             seed: int = 0, loop_threshold: int = 3, verifier_key: str = "verifier_score",
             scorers: Mapping[str, Scorer] | None = None) -> dict[str, Any]:
    """All metrics of a set of trajectories, as a JSON-ready dict.

    ``{"datasets": {NAME: block + "categories" + "splits"}, "overall": block +
    "in_distribution" + "ood"}``, where a block has ``episodes``, ``success_rate``, ``ci95``,
    ``pass_at_k``, ``best_at_k``, ``action_mix``, ``failures``, ``infrastructure``,
    ``tokens``, ``cost_usd`` and more (see :func:`_block`).
    """
    opt = _Options(max_k=max_k, resamples=resamples, seed=seed, loop_threshold=loop_threshold,
                   scorers=scorers if scorers is not None else
                   {"verifier": verifier_scorer(verifier_key), "majority": majority_scorer})
    by_dataset: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajs:
        by_dataset[t.dataset].append(t)
    datasets: dict[str, Any] = {}
    replicates: dict[str, np.ndarray] = {}
    for name in sorted(by_dataset):
        items = by_dataset[name]
        block, reps = _block(items, opt)
        replicates[name] = reps
        cats: dict[str, list[Trajectory]] = defaultdict(list)
        splits: dict[str, list[Trajectory]] = defaultdict(list)
        for t in items:
            cats[t.category].append(t)
            splits[t.split].append(t)
        block["categories"] = {c: _block(cats[c], opt)[0] for c in sorted(cats)}
        block["splits"] = {s: _block(splits[s], opt, curves=False)[0] for s in sorted(splits)}
        block["membership"] = _membership(name)
        datasets[name] = block
    overall, _ = _block(list(trajs), opt)
    for group, paper in (("in_distribution", PAPER_IN_DISTRIBUTION), ("ood", PAPER_OOD)):
        present = [d for d in datasets if datasets[d]["membership"] == group
                   and datasets[d]["graded"] > 0]
        avg = _mean([datasets[d]["success_rate"] for d in present])
        if present:
            reps = np.mean([replicates[d] for d in present], axis=0)
            lo, hi = (float(x) for x in np.quantile(reps, [0.025, 0.975]))
        else:
            lo = hi = 0.0
        missing = [d for d in paper if d not in present]
        overall[group] = {
            "average": avg, "ci95": [lo, hi], "datasets": present, "missing": missing,
            "not_implemented": [d for d in missing if _membership_registered(d) is None],
            "paper_datasets": len(paper), "complete": all(d in present for d in paper),
        }
    overall["models"] = sorted({t.model or t.agent or "unknown" for t in trajs})
    return {"datasets": datasets, "overall": overall,
            "settings": {"max_k": max_k, "bootstrap_resamples": resamples, "seed": seed,
                         "loop_threshold": loop_threshold, "verifier_key": verifier_key}}


def evaluate_runs(runs: Sequence[Run], **kwargs: Any) -> dict[str, Any]:
    """:func:`evaluate` over the pooled trajectories of ``runs``, with a list of the runs."""
    report = evaluate([t for r in runs for t in r.trajectories], **kwargs)
    report["runs"] = [{"path": str(r.path), "run_id": r.info.get("run_id", ""), "label": r.label,
                       "episodes": len(r.trajectories)} for r in runs]
    return report


def leaderboard(runs: Sequence[Run], **kwargs: Any) -> dict[str, dict[str, Any]]:
    """One :func:`evaluate` report per model label, pooling every run of that model."""
    by_model: dict[str, list[Trajectory]] = defaultdict(list)
    for r in runs:
        for t in r.trajectories:
            by_model[model_label(t, r.info)].append(t)
    return {label: evaluate(trajs, **kwargs) for label, trajs in sorted(by_model.items())}



# ---------------------------------------------------------------------------- comparison


def compare_runs(a: Run, b: Run) -> dict[str, Any]:
    """Two runs side by side, task by task (graded samples only; infrastructure failures
    leave the counts). Tasks present in one run only are listed apart, never compared.

    ``{"a": label, "b": label, "tasks": [{dataset, task_id, a: {success, graded, rate},
    b: {...}, delta}], "summary": {both, only_a, only_b, neither, a_better, b_better, same,
    mean_delta}, "only_in_a": [...], "only_in_b": [...]}``; a task counts as solved by a run
    when any graded sample succeeded.
    """
    def per_task(run: Run) -> dict[tuple[str, str], dict[str, Any]]:
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for key, samples in _task_samples(run.trajectories).items():
            c = sum(t.success for t in samples)
            out[key] = {"success": c, "graded": len(samples), "rate": c / len(samples)}
        return out

    ta, tb = per_task(a), per_task(b)
    shared = sorted(set(ta) & set(tb))
    rows = []
    counts = Counter()
    for key in shared:
        ra, rb = ta[key], tb[key]
        delta = rb["rate"] - ra["rate"]
        solved_a, solved_b = ra["success"] > 0, rb["success"] > 0
        counts["both" if solved_a and solved_b else "only_a" if solved_a
               else "only_b" if solved_b else "neither"] += 1
        counts["a_better" if delta < 0 else "b_better" if delta > 0 else "same"] += 1
        rows.append({"dataset": key[0], "task_id": key[1], "a": ra, "b": rb, "delta": delta})
    summary = {k: counts.get(k, 0) for k in ("both", "only_a", "only_b", "neither",
                                             "a_better", "b_better", "same")}
    summary["tasks"] = len(shared)
    summary["mean_delta"] = _mean([r["delta"] for r in rows])
    return {"a": a.label, "b": b.label, "a_path": str(a.path), "b_path": str(b.path),
            "tasks": rows, "summary": summary,
            "only_in_a": [f"{d}/{t}" for d, t in sorted(set(ta) - set(tb))],
            "only_in_b": [f"{d}/{t}" for d, t in sorted(set(tb) - set(ta))]}
