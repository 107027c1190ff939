"""Training data from stored trajectories: SFT, DPO, verifier and RL prompt rows.

Every function here is a pure function of :class:`~medagentgym.types.Trajectory` objects
(read from run directories with :func:`load_runs`); nothing calls a model or an environment.
Rows are plain dicts written as JSON lines (or Parquet), loadable with
``datasets.load_dataset("json", data_files=PATH)`` and fed straight to TRL:

* **SFT** — ``{"messages": [system, user, assistant, user, ..., assistant], ...}``: the whole
  conversation, ending on the agent's last reply; every assistant turn is a target
  (``assistant_only_loss``), observations are context only.
* **DPO** — ``{"prompt": [...messages], "chosen": [assistant], "rejected": [assistant]}``:
  the paper's in-trajectory pairs (the context before an earlier failing code attempt; chosen =
  the successful code turn that followed it, rejected = that failing attempt; for multi-stage
  tasks the success of the same question, so a solved stage of a partly solved episode counts) and
  cross-sample pairs (a successful and a failed sample of the same task, cut where their
  conversations first diverge, so both replies answer the same context).
* **verifier** — ``{"prompt": text, "completion": " YES"|" NO", "label": 1|0, ...}``: the
  rendered trajectory under a fixed question; classes balanced, length capped (head and tail
  kept).
* **RL** — one row per task: ``{"prompt": [system, user], "dataset", "split", "task_id",
  "env_kwargs", ...}``: what :class:`~medagentgym.env.env.AsyncMedAgentEnv` needs to rebuild
  the episode.

Conversations come from ``Trajectory.messages`` (LLM-agent runs: exactly what the model saw,
loop hints included) or, when absent (oracle / replay / older runs), are rebuilt from the
steps: system prompt, goal, then each step's model output (or raw action) and observation.
Native tool calls are written back as the paper's JSON action text, so every row is plain
system/user/assistant text.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medagentgym.types import StepRecord, Trajectory

Message = dict[str, Any]
TokenCounter = Callable[[str], int]

_THINK = re.compile(r"<think>.*?</think>\s*", re.DOTALL | re.IGNORECASE)
CODE_ACTIONS = ("validate_code", "submit")

VERIFIER_INSTRUCTION = (
    "Below is the record of an AI agent working on a biomedical data-science task in a code "
    "environment: the task, then each action the agent took and what the environment answered. "
    "Judge whether the agent's final answer solves the task correctly.")
VERIFIER_QUESTION = "Did the agent solve the task correctly? Answer YES or NO.\nAnswer:"
YES, NO = " YES", " NO"


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (3.5 characters a token) for length filters."""
    return int(len(text) / 3.5) + 1


# ------------------------------------------------------------------------------- loading


def load_runs(run_dirs: Iterable[str | Path]) -> list[Trajectory]:
    """Every graded trajectory of the run directories (the last one per (run, task, sample));
    infrastructure failures are left out: they say nothing about the policy."""
    from medagentgym.rollout.store import TrajectoryStore, latest_by_key

    out: list[Trajectory] = []
    for d in run_dirs:
        path = Path(d)
        store = TrajectoryStore(path.parent if path.is_file() else path)
        if path.is_file():
            store.path = path
        out.extend(t for t in latest_by_key(store) if is_graded(t))
    return out


def load_run_info(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "run.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            return {}
    return {}


def is_graded(t: Trajectory) -> bool:
    return t.error is None or t.error.source == "agent"


# ------------------------------------------------------------------------- conversations


def _tool_call_text(msg: Message) -> str:
    call = (msg.get("tool_calls") or [{}])[0].get("function", {})
    args: Any = call.get("arguments", "")
    try:
        args = json.loads(args) if isinstance(args, str) and args.strip() else (args or {})
    except ValueError:
        pass
    return json.dumps({"action": call.get("name", ""), "params": args}, ensure_ascii=False)


def conversation(t: Trajectory, *, strip_reasoning: bool = True) -> list[Message]:
    """The trajectory as plain ``system/user/assistant`` messages (see the module docstring)."""
    msgs: list[Message] = []
    stored = t.messages or t.metadata.get("messages")
    if isinstance(stored, list) and stored:
        for m in stored:
            role = m.get("role")
            content = m.get("content") or ""
            if role == "assistant" and m.get("tool_calls"):
                content = (content + "\n" if content else "") + _tool_call_text(m)
            if role == "tool":
                role = "user"
            if role not in ("system", "user", "assistant"):
                continue
            msgs.append({"role": role, "content": content})
    else:
        msgs = [{"role": "system", "content": t.system_prompt}, {"role": "user", "content": t.goal}]
        for s in t.steps:
            msgs.append({"role": "assistant", "content": step_text(s)})
            msgs.append({"role": "user", "content": s.observation})
    if strip_reasoning:
        for m in msgs:
            if m["role"] == "assistant":
                m["content"] = _THINK.sub("", m["content"]).strip()
    return msgs


def step_text(s: StepRecord) -> str:
    """What the agent wrote on a step: its output, else the raw action, else the action."""
    if s.model_output:
        return s.model_output
    if s.raw_action is not None:
        return s.raw_action
    if s.action is not None:
        action = dict(s.action)
        name = action.pop("action", "")
        return json.dumps({"action": name, "params": action}, ensure_ascii=False)
    return ""


def _assistant_positions(msgs: Sequence[Message]) -> list[int]:
    return [i for i, m in enumerate(msgs) if m["role"] == "assistant"]


def step_message_index(t: Trajectory, msgs: Sequence[Message]) -> dict[int, int]:
    """Step index -> index of its assistant message (the k-th reply is the k-th step)."""
    pos = _assistant_positions(msgs)
    return {k: pos[k] for k in range(min(len(pos), len(t.steps)))}


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _meta(t: Trajectory) -> dict[str, Any]:
    return {"task_id": t.task_id, "dataset": t.dataset, "category": t.category, "split": t.split,
            "run_id": t.run_id, "sample_index": t.sample_index, "model": t.model or "",
            "agent": t.agent, "reward": t.reward, "success": t.success, "turns": t.turns}


# ------------------------------------------------------------------------------- filters


@dataclass
class ExportFilter:
    """Which trajectories an export uses."""

    datasets: Sequence[str] | None = None
    splits: Sequence[str] | None = None
    max_turns: int | None = None
    max_tokens: int | None = None
    #: keep only datasets whose licence contains one of these (case-insensitive)
    licences: Sequence[str] | None = None
    #: drop datasets whose licence contains one of these (e.g. "SA" for share-alike)
    exclude_licences: Sequence[str] = ()
    count_tokens: TokenCounter = field(default=estimate_tokens)

    def licence_of(self, t: Trajectory) -> str:
        if t.metadata.get("licence"):
            return str(t.metadata["licence"])
        try:
            from medagentgym.tasks.registry import get_spec

            return get_spec(t.dataset).licence
        except Exception:
            return ""

    def keep(self, t: Trajectory, msgs: Sequence[Message] | None = None) -> bool:
        if self.datasets and t.dataset not in self.datasets:
            return False
        if self.splits and t.split not in self.splits:
            return False
        if self.max_turns is not None and t.turns > self.max_turns:
            return False
        if self.licences or self.exclude_licences:
            lic = self.licence_of(t).lower()
            if self.licences and not any(p.lower() in lic for p in self.licences):
                return False
            if any(p.lower() in lic for p in self.exclude_licences):
                return False
        if self.max_tokens is not None:
            msgs = msgs if msgs is not None else conversation(t)
            if sum(self.count_tokens(m["content"]) for m in msgs) > self.max_tokens:
                return False
        return True


# ----------------------------------------------------------------------------------- SFT


def sft_rows(trajs: Iterable[Trajectory], flt: ExportFilter | None = None, *,
             success_only: bool = True, dedupe: bool = True) -> list[dict[str, Any]]:
    """Successful trajectories as chat conversations ending on the agent's last reply."""
    flt = flt or ExportFilter()
    rows, seen = [], set()
    for t in trajs:
        if success_only and not t.success:
            continue
        msgs = conversation(t)
        while msgs and msgs[-1]["role"] != "assistant":
            msgs.pop()  # the final observation teaches nothing
        if not _assistant_positions(msgs) or not flt.keep(t, msgs):
            continue
        if dedupe:
            key = _hash(msgs)
            if key in seen:
                continue
            seen.add(key)
        rows.append({"messages": msgs, **_meta(t)})
    return rows


# ----------------------------------------------------------------------------------- DPO


def failing_step(s: StepRecord, *, include_parse_errors: bool = True) -> bool:
    """A failed attempt: code that errored or whose answer was wrong, or an unreadable reply."""
    if s.parse_error is not None:
        return include_parse_errors
    name = (s.action or {}).get("action")
    if name not in CODE_ACTIONS:
        return False
    if s.grade is not None:
        return not s.grade.correct
    return s.exec_status not in (None, "ok")


def _next_success(t: Trajectory, k: int) -> int | None:
    """The first correctly graded step after step ``k``: the successful code of the same
    question (a multi-stage task moves on only when a stage is solved)."""
    for j in range(k + 1, len(t.steps)):
        g = t.steps[j].grade
        if g is not None and g.correct:
            return j
    return None


@dataclass
class DPOCounts:
    trajectories: int = 0
    tasks: int = 0
    in_trajectory: int = 0
    cross_sample: int = 0
    duplicates: int = 0
    filtered: int = 0

    @property
    def total(self) -> int:
        return self.in_trajectory + self.cross_sample

    def as_dict(self) -> dict[str, int]:
        return {"trajectories": self.trajectories, "tasks": self.tasks,
                "in_trajectory": self.in_trajectory, "cross_sample": self.cross_sample,
                "duplicates": self.duplicates, "filtered": self.filtered, "total": self.total}


def dpo_rows(trajs: Iterable[Trajectory], flt: ExportFilter | None = None, *,
             in_trajectory: bool = True, cross_sample: bool = True,
             max_pairs_per_trajectory: int = 4, max_cross_pairs_per_task: int = 4,
             include_parse_errors: bool = True, seed: int = 0,
             ) -> tuple[list[dict[str, Any]], DPOCounts]:
    """Preference pairs (see the module docstring) and their counts."""
    flt = flt or ExportFilter()
    rng = random.Random(seed)
    counts = DPOCounts()
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    by_task: dict[tuple[str, str, str], list[Trajectory]] = defaultdict(list)

    def add(prompt: list[Message], chosen: str, rejected: str, kind: str, t: Trajectory,
            extra: dict[str, Any]) -> bool:
        if chosen.strip() == rejected.strip():
            return False
        if flt.max_tokens is not None:
            size = sum(flt.count_tokens(m["content"]) for m in prompt)
            if size + flt.count_tokens(max(chosen, rejected, key=len)) > flt.max_tokens:
                counts.filtered += 1
                return False
        key = _hash([prompt, chosen, rejected])
        if key in seen:
            counts.duplicates += 1
            return False
        seen.add(key)
        rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}], "pair_type": kind,
                     **_meta(t), **extra})
        return True

    for t in trajs:
        if not flt.keep(t):
            continue
        counts.trajectories += 1
        by_task[(t.dataset, t.split, t.task_id)].append(t)
        if not in_trajectory:
            continue
        msgs = conversation(t)
        where = step_message_index(t, msgs)
        made = 0
        # the attempts closest to a success first: their context is the richest
        for k in range(len(t.steps) - 1, -1, -1):
            if made >= max_pairs_per_trajectory:
                break
            if k not in where or not failing_step(t.steps[k],
                                                  include_parse_errors=include_parse_errors):
                continue
            solved = _next_success(t, k)  # the success that closed this attempt's question
            if solved is None or solved not in where:
                continue
            if add(msgs[:where[k]], msgs[where[solved]]["content"], msgs[where[k]]["content"],
                   "in_trajectory", t, {"rejected_turn": k + 1, "chosen_turn": solved + 1}):
                counts.in_trajectory += 1
                made += 1

    counts.tasks = len(by_task)
    if cross_sample:
        for group in by_task.values():
            good = [t for t in group if t.success]
            bad = [t for t in group if not t.success]
            combos = [(g, b) for g in good for b in bad]
            rng.shuffle(combos)
            made = 0
            for g, b in combos:
                if made >= max_cross_pairs_per_task:
                    break
                gm, bm = conversation(g), conversation(b)
                d = 0
                while d < min(len(gm), len(bm)) and gm[d] == bm[d]:
                    d += 1
                if d >= min(len(gm), len(bm)) or d < 2:
                    continue
                if gm[d]["role"] != "assistant" or bm[d]["role"] != "assistant":
                    continue  # the contexts diverged on an observation: no shared prefix
                if add(gm[:d], gm[d]["content"], bm[d]["content"], "cross_sample", g,
                       {"rejected_sample_index": b.sample_index, "rejected_run_id": b.run_id,
                        "chosen_turn": _assistant_positions(gm).index(d) + 1}):
                    counts.cross_sample += 1
                    made += 1
    return rows, counts


# ------------------------------------------------------------------------------ verifier


def _cap(text: str, max_chars: int) -> str:
    """Head and tail of ``text``: the task stays, and so does the ending (the answer)."""
    if len(text) <= max_chars:
        return text
    head = max_chars // 3
    tail = max_chars - head - 40
    return f"{text[:head]}\n[... {len(text) - head - tail} characters omitted ...]\n{text[-tail:]}"


def render_trajectory(t: Trajectory, *, max_chars: int = 12_000,
                      max_observation_chars: int = 1_500) -> str:
    """The trajectory as one text for the verifier: task, then each action and answer.

    The grader's verdict that the ``paper`` protocol appends to observations is removed, so
    the verifier must judge the work, not read the label."""
    parts = [f"## Task\n{t.goal.strip()}"]
    for s in t.steps:
        action = _THINK.sub("", step_text(s)).strip()
        obs = _strip_verdict(s.observation)
        parts.append(f"## Turn {s.turn}\nAgent:\n{_cap(action, max_observation_chars * 2)}\n"
                     f"Environment:\n{_cap(obs, max_observation_chars)}")
    return _cap("\n\n".join(parts), max_chars)


_VERDICT = re.compile(r"\n*\[answer checked:[^\]]*\]|\n*(Correct\.|Submitted\.) Next question\.",
                      re.IGNORECASE)


def _strip_verdict(text: str) -> str:
    return _VERDICT.sub("", text).strip()


def verifier_prompt(trajectory_text: str) -> str:
    return f"{VERIFIER_INSTRUCTION}\n\n{trajectory_text}\n\n{VERIFIER_QUESTION}"


def verifier_rows(trajs: Iterable[Trajectory], flt: ExportFilter | None = None, *,
                  balance: bool = True, max_chars: int = 12_000, seed: int = 0,
                  dedupe: bool = True) -> list[dict[str, Any]]:
    """(trajectory text, label) rows; with ``balance`` the larger class is down-sampled."""
    flt = flt or ExportFilter()
    pos, neg, seen = [], [], set()
    for t in trajs:
        if not t.steps or not flt.keep(t):
            continue
        text = render_trajectory(t, max_chars=max_chars)
        if dedupe:
            key = _hash([text, t.success])
            if key in seen:
                continue
            seen.add(key)
        row = {"prompt": verifier_prompt(text), "completion": YES if t.success else NO,
               "label": int(t.success), "trajectory": text, **_meta(t)}
        (pos if t.success else neg).append(row)
    rng = random.Random(seed)
    if balance and pos and neg:
        n = min(len(pos), len(neg))
        pos, neg = rng.sample(pos, n), rng.sample(neg, n)
    rows = pos + neg
    rng.shuffle(rows)
    return rows


def split_by_task(rows: Sequence[dict[str, Any]], eval_fraction: float, *, seed: int = 0,
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train / held-out rows, split by task so no task appears on both sides."""
    tasks = sorted({(r["dataset"], r["task_id"]) for r in rows})
    random.Random(seed).shuffle(tasks)
    n_eval = round(len(tasks) * eval_fraction) if eval_fraction > 0 else 0
    if eval_fraction > 0 and len(tasks) > 1:
        n_eval = min(max(1, n_eval), len(tasks) - 1)
    held = set(tasks[:n_eval])
    train = [r for r in rows if (r["dataset"], r["task_id"]) not in held]
    test = [r for r in rows if (r["dataset"], r["task_id"]) in held]
    return train, test


# ------------------------------------------------------------------------------------ RL


def rl_rows(trajs: Iterable[Trajectory], flt: ExportFilter | None = None, *,
            env_kwargs: dict[str, Any] | None = None,
            run_info: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One prompt row per task, with its pass rate in the runs (for curriculum filtering:
    GRPO learns nothing from tasks every sample solves or every sample fails)."""
    flt = flt or ExportFilter()
    info = run_info or {}
    kwargs = dict(info.get("family_options") or {})
    for key in ("protocol", "max_turns"):
        if info.get(key) is not None:
            kwargs[key] = info[key]
    kwargs.update(env_kwargs or {})
    groups: dict[tuple[str, str, str], list[Trajectory]] = defaultdict(list)
    for t in trajs:
        if flt.keep(t):
            groups[(t.dataset, t.split, t.task_id)].append(t)
    rows = []
    for (dataset, split, task_id), group in sorted(groups.items()):
        t = group[0]
        row_kwargs = dict(kwargs)
        row_kwargs.setdefault("protocol", t.protocol)
        rows.append({
            "prompt": [{"role": "system", "content": t.system_prompt},
                       {"role": "user", "content": t.goal}],
            "dataset": dataset, "split": split, "task_id": task_id, "category": t.category,
            "env_kwargs": json.dumps(row_kwargs, sort_keys=True),
            "samples": len(group), "pass_rate": sum(x.success for x in group) / len(group)})
    return rows


def rl_rows_from_tasks(dataset: str, split: str, tasks: Sequence[Any], *,
                       protocol: str = "paper", max_turns: int = 15,
                       family_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """RL rows straight from task definitions (no trajectories needed)."""
    from medagentgym.env.env import task_system_prompt
    from medagentgym.tasks.registry import get_family

    family = get_family(dataset, **(family_options or {}))
    kwargs = {"protocol": protocol, "max_turns": max_turns, **(family_options or {})}
    rows = []
    for task in tasks:
        allowed = tuple(a for a in task.allowed_actions if a != "submit")
        if protocol == "submit":
            allowed += ("submit",)
        stages = family.stages(task)
        goal = stages[0] if len(stages) == 1 else f"Question 1 of {len(stages)}: {stages[0]}"
        rows.append({
            "prompt": [{"role": "system", "content": task_system_prompt(
                family, task, allowed, protocol, max_turns)},
                {"role": "user", "content": goal}],
            "dataset": dataset, "split": split, "task_id": task.id, "category": task.category,
            "env_kwargs": json.dumps(kwargs, sort_keys=True), "samples": 0, "pass_rate": -1.0})
    return rows


# ------------------------------------------------------------------------------- writing


def write_rows(rows: Sequence[dict[str, Any]], out: str | Path) -> Path:
    """JSON lines (``.jsonl``/``.json``) or Parquet (``.parquet``, needs pyarrow)."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(list(rows)), path)
        return path
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
