"""Append-only trajectory store: one JSON line per finished episode, flushed and fsynced.

A run directory holds ``trajectories.jsonl`` (and ``run.json`` with the run's settings).
Readers tolerate a torn last line (a crash mid-write): it is ignored, and the episode it
belonged to counts as not done, so ``--resume`` runs it again. A line that does not parse
(or is not valid UTF-8) is skipped the same way; it never stops a read;
the number skipped is kept in ``corrupt_lines`` so that readers can warn about it.

One bad record never stops a run: every record is sanitised before it is written (see
:mod:`medagentgym.rollout.sanitize`: lone surrogates, unserialisable values, NaN, deep nesting
and oversized strings), and a record that still cannot be encoded or written is replaced by
a minimal one for its (task, sample): an infrastructure error (source ``environment``, type
``StoreError``) that ``--resume`` runs again. Only a store that cannot write even that (disk
full, no permission) raises :class:`StoreWriteError` (an :class:`OSError` and an
infrastructure error) whose message is one line with the fix; a full disk is not retried.

Writers hold :meth:`TrajectoryStore.locked` for the length of a run: two runs never write to
one directory at once. :func:`settings_mismatch` / :func:`refuse_mismatch` refuse a
``--resume`` with other settings (one run directory holds one model and one sampling setup).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from medagentgym.errors import ConfigurationError, InfrastructureError
from medagentgym.rollout.sanitize import clean_text, encode_line
from medagentgym.types import EpisodeError, Trajectory

FILENAME = "trajectories.jsonl"
LOCKNAME = ".lock"
#: errors of a full disk or an exhausted quota
FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})

log = logging.getLogger(__name__)


class StoreWriteError(InfrastructureError, OSError):
    """The store cannot write even a minimal record (disk full, no permission): the run
    stops, with one line that says what to do."""

    source = "environment"


def write_failure_message(path: Path, exc: OSError) -> str:
    """One line: the cause, and how to go on."""
    if exc.errno in FULL:
        return (f"no space left on the device of {path} ({exc.strerror or exc}); free space, "
                "then run the same command with --resume (stored episodes are kept)")
    return (f"cannot write {path}: {exc.strerror or exc}; fix that (permissions, mount), then "
            "run the same command with --resume (stored episodes are kept)")


class TrajectoryStore:
    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(run_dir)
        self.path = self.dir / FILENAME
        self._lock = threading.Lock()
        #: lines the last full read skipped because they did not parse (torn last line apart)
        self.corrupt_lines = 0

    def append(self, traj: Trajectory) -> None:
        """Append one episode (sanitised); a record that cannot be stored becomes a minimal
        ``StoreError`` record. Thread-safe; blocks on ``fsync`` (call it off the event loop)."""
        data = record_line(traj)
        with self._lock:
            try:
                self._write(data)
            except OSError as exc:
                if exc.errno in FULL:  # a smaller record would not fit either
                    raise StoreWriteError(write_failure_message(self.path, exc)) from None
                log.warning("trajectory %s could not be written: %r", _key(traj), exc)
                try:
                    self._write(_failure_line(traj, "could not be written", exc))
                except OSError as again:
                    raise StoreWriteError(write_failure_message(self.path, again)) from None

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
        corrupt = 0
        with open(self.path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # torn last line
                if not line.strip():
                    continue
                try:
                    yield Trajectory.model_validate_json(line.decode("utf-8", "replace"))
                except Exception:  # a damaged line: that episode counts as not stored
                    corrupt += 1
                    continue
        self.corrupt_lines = corrupt

    def count_corrupt(self) -> int:
        """Read the whole file; the number of lines that do not parse as a trajectory."""
        for _ in self:
            pass
        return self.corrupt_lines

    @contextlib.contextmanager
    def locked(self, what: str = "run") -> Iterator[None]:
        """Hold an exclusive lock on the run directory (``.lock``) while writing to it: a
        second writer is refused at once, with the way out. The lock dies with the process."""
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        lock = self.dir / LOCKNAME
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    holder = lock.read_text().strip() or "?"
                except OSError:
                    holder = "?"
                raise ConfigurationError(
                    f"{self.dir} is in use by another {what} (pid {holder}); wait for it to "
                    "finish (then --resume), or choose another --out") from None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)

    def load(self) -> list[Trajectory]:
        return list(self)

    def done_keys(self) -> set[tuple[str, int]]:
        """(task_id, sample_index) of every stored episode without an infrastructure error."""
        return {t.key for t in self if t.error is None or t.error.source == "agent"}

    def write_run_info(self, info: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "run.json.tmp"
        try:
            tmp.write_text(json.dumps(info, indent=2, default=str) + "\n")
            os.replace(tmp, self.dir / "run.json")
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreWriteError(write_failure_message(self.dir / "run.json", exc)) from None


def settings_mismatch(old: Mapping[str, Any], new: Mapping[str, Any],
                      keys: Iterable[str]) -> list[str]:
    """The settings (dotted keys into ``run.json``) that differ between a stored run and the
    command resuming it, as ``key: old -> new``; a key the old run did not record is skipped."""
    out = []
    for key in keys:
        a: Any = old
        b: Any = new
        missing = False
        for part in key.split("."):
            if not isinstance(a, Mapping) or part not in a:
                missing = True
                break
            a = a[part]
            b = b.get(part) if isinstance(b, Mapping) else None
        if not missing and a != b:
            out.append(f"{key} {a!r} -> {b!r}")
    return out


def refuse_mismatch(run_dir: Path, differences: list[str]) -> None:
    """A one-line refusal to ``--resume`` a run with other settings, with the way out."""
    if differences:
        raise ConfigurationError(
            f"--resume: {run_dir} was written with other settings ({'; '.join(differences)}); "
            "one run directory holds one model and one set of sampling settings: repeat the "
            "original settings to continue it, or start the new settings in another --out")


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
