"""Append-only trajectory store: one JSON line per finished episode, flushed and fsynced.

A run directory holds ``trajectories.jsonl`` (and ``run.json`` with the run's settings).
Readers tolerate a torn last line (a crash mid-write): it is ignored, and the episode it
belonged to counts as not done, so ``--resume`` runs it again. A line that does not parse
(or is not valid UTF-8) is skipped the same way; it never stops a read.

One bad record never stops a run: every record is sanitised before it is written (see
:mod:`medagentgym.rollout.sanitize`: lone surrogates, unserialisable values, NaN, deep nesting
and oversized strings), and a record that still cannot be encoded or written is replaced by
a minimal one for its (task, sample): an infrastructure error (source ``environment``, type
``StoreError``) that ``--resume`` runs again. Only a store that cannot write even that (disk
full, no permission) raises :class:`OSError`: nothing the run produced would be kept.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from medagentgym.rollout.sanitize import clean_text, encode_line
from medagentgym.types import EpisodeError, Trajectory

FILENAME = "trajectories.jsonl"

log = logging.getLogger(__name__)


class TrajectoryStore:
    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(run_dir)
        self.path = self.dir / FILENAME
        self._lock = threading.Lock()

    def append(self, traj: Trajectory) -> None:
        """Append one episode (sanitised); a record that cannot be stored becomes a minimal
        ``StoreError`` record. Thread-safe; blocks on ``fsync`` (call it off the event loop)."""
        data = record_line(traj)
        with self._lock:
            try:
                self._write(data)
            except OSError as exc:
                log.warning("trajectory %s could not be written: %r", _key(traj), exc)
                self._write(_failure_line(traj, "could not be written", exc))

    def _write(self, data: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        with open(self.path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def _repair_tail(self) -> None:
        """If the file ends mid-line (a crash), cut the torn line so appends stay valid."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return
            data = self.path.read_bytes()
            cut = data.rfind(b"\n") + 1
            fh.truncate(cut)

    def __iter__(self) -> Iterator[Trajectory]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # torn last line
                try:
                    yield Trajectory.model_validate_json(line.decode("utf-8", "replace"))
                except Exception:  # a damaged line: that episode counts as not stored
                    continue

    def load(self) -> list[Trajectory]:
        return list(self)

    def done_keys(self) -> set[tuple[str, int]]:
        """(task_id, sample_index) of every stored episode without an infrastructure error."""
        return {t.key for t in self if t.error is None or t.error.source == "agent"}

    def write_run_info(self, info: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "run.json.tmp"
        tmp.write_text(json.dumps(info, indent=2, default=str) + "\n")
        os.replace(tmp, self.dir / "run.json")


def record_line(traj: Trajectory) -> bytes:
    """The line stored for ``traj`` (UTF-8, newline-terminated): the sanitised record, or
    the minimal ``StoreError`` record when even that cannot be encoded."""
    try:
        return (encode_line(traj) + "\n").encode("utf-8")
    except Exception as exc:
        log.warning("trajectory %s could not be serialised: %r", _key(traj), exc)
        return _failure_line(traj, "could not be serialised", exc)


def _key(traj: Trajectory) -> str:
    return clean_text(f"{getattr(traj, 'task_id', '?')}#{getattr(traj, 'sample_index', '?')}", 200)


def _failure_line(traj: Trajectory, what: str, exc: BaseException) -> bytes:
    """The minimal record that stands in for an episode that could not be stored."""
    def text(name: str) -> str:
        value = getattr(traj, name, "")
        return clean_text(value, 1000) if isinstance(value, str) else ""

    try:
        detail = f"{type(exc).__name__}: {exc}"
    except Exception:
        detail = type(exc).__name__
    k = getattr(traj, "sample_index", 0)
    model = getattr(traj, "model", None)
    lost = getattr(traj, "error", None)
    record = Trajectory(
        run_id=text("run_id"), task_id=text("task_id"), dataset=text("dataset"),
        category=text("category"), split=text("split"),
        sample_index=k if type(k) is int else 0, agent=text("agent"),
        model=clean_text(model, 1000) if isinstance(model, str) else None,
        protocol=text("protocol") or "paper",
        error=EpisodeError(source="environment", type="StoreError",
                           message=clean_text(f"trajectory {what}: {detail}", 4000)),
        metadata={"store_error": {
            "success": bool(getattr(traj, "success", False)),
            "error": lost.model_dump() if isinstance(lost, EpisodeError) else None}})
    return (encode_line(record) + "\n").encode("utf-8")


def latest_by_key(trajs: Iterable[Trajectory]) -> list[Trajectory]:
    """One trajectory per (task, sample): the last stored, but a graded episode beats a later
    infrastructure failure (the store is append-only, so a retried pair appears twice)."""
    best: dict[tuple[str, int], Trajectory] = {}
    for t in trajs:
        old = best.get(t.key)
        graded = t.error is None or t.error.source == "agent"
        old_graded = old is not None and (old.error is None or old.error.source == "agent")
        if old is None or graded or not old_graded:
            best[t.key] = t
    return list(best.values())
