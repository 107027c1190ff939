"""The on-disk task cache every family shares.

A family's tasks (with their ground truth) are built once and stored as JSONL in the data
home's ``tasks/<dataset>/`` — mode 0600, outside every sandbox mount — under a name derived
from everything that determines their content, so a change of options or data builds anew.
A cache file that no longer loads (a record whose ground truth fails today's validation,
a truncated line) is rebuilt, never a crash. Paths into the data home (a task's database,
say) are stored relative to it (``$MEDAGENTGYM_HOME/...``), so a moved home keeps working;
a file written before that, with absolute paths, is read against the home it now lies in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from medagentgym.data import home as _home
from medagentgym.types import GroundTruth, Task

log = logging.getLogger(__name__)

#: what a cache file that no longer loads raises while it is read
_STALE = (ValueError, KeyError, TypeError)


def cache_path(dataset: str, prefix: str, key: dict[str, Any],
               home: str | os.PathLike[str] | None = None) -> Path:
    """``tasks/<dataset>/<prefix>-<digest of key>.jsonl`` in the data home."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return _home.tasks_dir(dataset, home) / f"{prefix}-{digest}.jsonl"


def record(task: Task, truth: GroundTruth) -> dict[str, Any]:
    return {"task": task.model_dump(), "truth": truth.model_dump()}


def load_or_build(path: Path, build: Callable[[], Iterable[dict[str, Any]]], *,
                  splits: Iterable[str], builder: str, dataset: str,
                  ready: Callable[[], bool] | None = None,
                  late_manifest: Callable[[], dict[str, Any]] | None = None,
                  **manifest: Any) -> dict[str, list[Task]]:
    """Tasks by split from ``path``, building it first (atomically, under a lock) if needed.

    ``ready``: whether the artefacts beside the file (a family's notes, say) are there too;
    ``late_manifest``: manifest fields known only after the build (e.g. build statistics)."""
    splits = tuple(splits)

    def write() -> None:
        n = 0
        home = home_of(path)
        with _home.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for rec in build():
                fh.write(_home.home_relative(json.dumps(rec), home) + "\n")
                n += 1
        os.chmod(path, 0o600)  # ground truth: host-only
        extra = {**manifest, **(late_manifest() if late_manifest is not None else {})}
        _home.write_manifest(path, kind="tasks", builder=builder, dataset=dataset, tasks=n,
                             **extra)

    with _home.file_lock(path):
        if not _home.is_finished(path) or (ready is not None and not ready()):
            write()
    try:
        return read_splits(path, splits)
    except _STALE as exc:
        with _home.file_lock(path):
            try:
                return read_splits(path, splits)  # another process rebuilt it meanwhile
            except _STALE:
                log.warning("rebuilding the task cache %s: it no longer loads (%s: %s)",
                            path, type(exc).__name__, str(exc)[:200])
                _home.remove_artefact(path)
                write()
        return read_splits(path, splits)


def home_of(path: Path) -> Path:
    """The data home a cache file lies in (``<home>/tasks/<dataset>/<file>``)."""
    return Path(path).absolute().parent.parent.parent


def read_splits(path: Path, splits: Iterable[str]) -> dict[str, list[Task]]:
    """Tasks (ground truth attached) by split from a cache file; paths into the data home
    resolve against the home the file lies in now."""
    out: dict[str, list[Task]] = {s: [] for s in splits}
    home = home_of(path)
    recorded = (_home.read_manifest(path) or {}).get("path")
    old_home = home_of(Path(recorded)) if isinstance(recorded, str) and recorded else None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(_home.resolve_home_relative(line, home, old_home))
            task = Task.model_validate(rec["task"]).with_truth(GroundTruth.model_validate(rec["truth"]))
            out.setdefault(task.split, []).append(task)
    return out
