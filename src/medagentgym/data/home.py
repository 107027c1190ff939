"""The local data home: where built databases, pulled sources and task files live.

Layout (``data_home()`` is ``$MEDAGENTGYM_HOME`` or ``~/.cache/medagentgym``)::

    db/<name>.sqlite                      built or imported databases (mimic_iii, eicu, treqs, ...)
    db/<name>.sqlite.manifest.json        what built it, when, from what, with which checksums
    raw/<source>/...                      files of an open source fetched by ``data pull``
    raw/<source>.manifest.json
    tasks/<dataset>/...                   task files per dataset
    tasks/<dataset>.manifest.json
    registry.json                         external artefacts used in place (``data import medagentgym``)

Every finished artefact has a sibling ``<artefact>.manifest.json``; an artefact without one is
treated as unfinished. Files inside the home refer to each other relative to it
(:func:`home_relative` / :func:`resolve_home_relative`), so the whole home can be moved or
copied: ``mv ~/.cache/medagentgym /data/mag; export MEDAGENTGYM_HOME=/data/mag``. Builders write through :func:`atomic_path` (a temporary sibling that is
renamed into place only on success) while holding :func:`file_lock`, so a crash or a second
concurrent builder never leaves a half-written artefact that looks finished.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medagentgym.errors import ConfigurationError, InfrastructureError

ENV_VAR = "MEDAGENTGYM_HOME"
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_SCHEMA = 1
_TMP_MARK = ".tmp-"

# --------------------------------------------------------------------------- locations


def data_home() -> Path:
    """The data home: ``$MEDAGENTGYM_HOME`` if set, else ``~/.cache/medagentgym``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().absolute()
    return Path("~/.cache/medagentgym").expanduser().absolute()


def _home(home: str | os.PathLike[str] | None) -> Path:
    return Path(home).expanduser().absolute() if home is not None else data_home()


def db_dir(home: str | os.PathLike[str] | None = None) -> Path:
    return _home(home) / "db"


def db_path(name: str, home: str | os.PathLike[str] | None = None) -> Path:
    """Where database ``name`` lives (it may not exist yet)."""
    return db_dir(home) / f"{name}.sqlite"


def raw_dir(source: str, home: str | os.PathLike[str] | None = None) -> Path:
    return _home(home) / "raw" / source


def tasks_dir(dataset: str, home: str | os.PathLike[str] | None = None) -> Path:
    return _home(home) / "tasks" / dataset


def registry_path(home: str | os.PathLike[str] | None = None) -> Path:
    return _home(home) / "registry.json"


def manifest_path(artefact: str | os.PathLike[str]) -> Path:
    """The marker of a finished artefact: ``<artefact>.manifest.json`` beside it."""
    p = Path(artefact)
    return p.with_name(p.name + MANIFEST_SUFFIX)


def _display(path: Path) -> str:
    """A path as the user thinks of it (``~`` for the home directory)."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- relative paths

#: how a stored record writes "the data home" (it is resolved again when the record is read)
HOME_MARK = "$MEDAGENTGYM_HOME"


def _json_text(path: Path) -> str:
    return json.dumps(str(path))[1:-1]


def home_relative(line: str, home: str | os.PathLike[str]) -> str:
    """A JSON text with every string that starts with ``home/`` rewritten to start with
    ``$MEDAGENTGYM_HOME/`` (stored records name files inside the home relative to it)."""
    return line.replace(f'"{_json_text(Path(home))}/', f'"{HOME_MARK}/')


def resolve_home_relative(line: str, home: str | os.PathLike[str],
                          old_home: str | os.PathLike[str] | None = None) -> str:
    """The inverse of :func:`home_relative` for the home as it is now; ``old_home`` (where
    the home was when a record with absolute paths was written) is rewritten too."""
    here = _json_text(Path(home))
    if HOME_MARK in line:
        line = line.replace(f'"{HOME_MARK}/', f'"{here}/')
    if old_home is not None and str(old_home) != str(home):
        line = line.replace(f'"{_json_text(Path(old_home))}/', f'"{here}/')
    return line


# --------------------------------------------------------------------------- manifests


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def environment_info() -> dict[str, str]:
    """Versions recorded in every manifest."""
    from medagentgym import __version__

    return {
        "medagentgym": __version__,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(terse=True),
    }


def write_manifest(
    artefact: str | os.PathLike[str],
    *,
    kind: str,
    builder: str,
    inputs: list[dict[str, Any]] | None = None,
    checksum: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """Write (atomically) the marker that says ``artefact`` is finished, and return it.

    ``kind`` is ``database``, ``source``, ``tasks`` or ``external``; ``builder`` names the
    function that built it; ``inputs`` describes what it was built from (paths, checksums,
    versions). For a file artefact the manifest records its size and (if ``checksum``) sha256.
    """
    path = Path(artefact)
    if not path.exists():
        raise InfrastructureError(f"cannot write a manifest for missing artefact {path}")
    record: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "name": path.name,
        "kind": kind,
        "path": str(path),
        "created_at": utc_now(),
        "builder": builder,
        "environment": environment_info(),
        "inputs": inputs or [],
    }
    if path.is_file():
        record["bytes"] = path.stat().st_size
        if checksum:
            record["sha256"] = sha256_file(path)
    else:
        record["bytes"] = _tree_size(path)
    record.update(extra)
    target = manifest_path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=False, default=str) + "\n")
    return record


def read_manifest(artefact: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of ``artefact``, or None when it is absent or unreadable."""
    target = manifest_path(artefact)
    try:
        return json.loads(target.read_text())
    except (OSError, ValueError):
        return None


def is_finished(artefact: str | os.PathLike[str]) -> bool:
    """True when ``artefact`` exists and has its manifest (it was completed)."""
    return Path(artefact).exists() and read_manifest(artefact) is not None


def remove_artefact(artefact: str | os.PathLike[str]) -> None:
    """Delete an artefact and its manifest (the manifest first, so it never looks finished)."""
    path = Path(artefact)
    with contextlib.suppress(FileNotFoundError):
        manifest_path(path).unlink()
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# --------------------------------------------------------------------------- atomic writes


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY
    if path.is_dir():
        flags |= getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.EROFS):
            raise
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for root, _dirs, files in os.walk(path):
            for name in files:
                _fsync_path(Path(root) / name)
            _fsync_path(Path(root))
    elif path.exists():
        _fsync_path(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``final``; move it into place only if the block succeeds.

    The caller writes a file (or, with ``directory=True``, fills a directory that already
    exists) at the yielded path. On success the data are fsynced and renamed over ``final``
    with ``os.replace`` (an existing directory is swapped out and removed); on any exception,
    including KeyboardInterrupt, the temporary is deleted and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}{_TMP_MARK}{os.getpid()}-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if not tmp.exists():
            raise InfrastructureError(f"the builder of {final} removed its temporary output")
        _fsync_tree(tmp)
        if directory and final.exists():
            old = final.with_name(f".{final.name}{_TMP_MARK}old-{os.getpid()}-{time.time_ns()}")
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
        _fsync_path(final.parent)
    except BaseException:
        _remove(tmp)
        raise


def make_world_readable(path: str | os.PathLike[str]) -> None:
    """Let a sandbox's unprivileged user read mounted data (a file, or a tree: dirs 0755,
    files 0644). Only for what the agent may see — never for task files or ground truth."""
    path = Path(path)
    if path.is_file():
        os.chmod(path, 0o644)
        return
    for dirpath, _dirs, files in os.walk(path):
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(Path(dirpath) / name, 0o644)


# --------------------------------------------------------------------------- locking


@contextlib.contextmanager
def file_lock(
    target: str | os.PathLike[str], *, timeout: float | None = None, poll: float = 0.1
) -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``<target>.lock`` for the duration of the block.

    Concurrent builders of the same artefact serialise on it (the lock dies with the process,
    so a crash never leaves a stale lock). ``timeout=None`` waits forever; otherwise an
    :class:`InfrastructureError` is raised after ``timeout`` seconds.
    """
    target = Path(target)
    lock = target.with_name(target.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise InfrastructureError(
                            f"another process is building {target} (lock {lock} held for "
                            f"more than {timeout:g} s)"
                        ) from None
                    time.sleep(poll)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        try:
            yield lock
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- lookups


def _db_title_and_hint(name: str) -> tuple[str, str | None]:
    """A registered database's title and "how to get it" line (the registry lives in
    :mod:`medagentgym.data.databases`, which builds on this module)."""
    from medagentgym.data.databases import find_database

    spec = find_database(name)
    return (spec.title, spec.how_to_get()) if spec is not None else (name, None)


def missing_message(name: str, where: Path, hint: str | None = None) -> str:
    title, how = _db_title_and_hint(name)
    hint = hint or how or f"run `medagentgym data pull {name}`"
    return f"{title} database not found in {_display(where)}; {hint}"


def require_db(name: str, home: str | os.PathLike[str] | None = None) -> Path:
    """The path of finished database ``name``; ConfigurationError (one line) when absent."""
    path = db_path(name, home)
    if not is_finished(path):
        if path.exists():
            title, how = _db_title_and_hint(name)
            raise ConfigurationError(
                f"{title} database at {_display(path)} is incomplete "
                f"(no manifest); rebuild it: {how or 'see `medagentgym data`'}"
            )
        raise ConfigurationError(missing_message(name, path.parent))
    return path


def require_source(name: str, home: str | os.PathLike[str] | None = None) -> Path:
    """The directory of pulled source ``name``; ConfigurationError (one line) when absent."""
    path = raw_dir(name, home)
    if not is_finished(path):
        raise ConfigurationError(
            f"source {name!r} not found in {_display(path.parent)}; run "
            f"`medagentgym data pull {name}` (or `medagentgym data pull {name} --from DIR`)"
        )
    return path


def require_tasks(dataset: str, home: str | os.PathLike[str] | None = None) -> Path:
    path = tasks_dir(dataset, home)
    if not is_finished(path):
        raise ConfigurationError(
            f"task files for {dataset!r} not found in {_display(path.parent)}; run "
            f"`medagentgym data build-synthetic` or `medagentgym data import medagentgym --from DIR`"
        )
    return path


# --------------------------------------------------------------------------- registry


def load_registry(home: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Registered external artefacts (used in place, not copied): ``{name: record}``."""
    try:
        data = json.loads(registry_path(home).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def register(name: str, record: dict[str, Any], home: str | os.PathLike[str] | None = None) -> None:
    """Add or replace an entry of ``registry.json`` (locked and atomic)."""
    path = registry_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path, timeout=60):
        data = load_registry(home)
        data[name] = {**record, "registered_at": utc_now()}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def unregister(name: str, home: str | os.PathLike[str] | None = None) -> bool:
    path = registry_path(home)
    with file_lock(path, timeout=60):
        data = load_registry(home)
        if name not in data:
            return False
        del data[name]
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return True


# --------------------------------------------------------------------------- status


@dataclass
class ArtefactStatus:
    """One line of ``medagentgym data status``."""

    kind: str  # database | source | tasks | external | partial
    name: str
    path: str
    bytes: int
    finished: bool
    created_at: str | None = None
    builder: str | None = None
    summary: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


def _summary(manifest: dict[str, Any]) -> str:
    parts: list[str] = []
    if "tables" in manifest and isinstance(manifest["tables"], dict):
        rows = sum(int(v) for v in manifest["tables"].values() if isinstance(v, int))
        parts.append(f"{len(manifest['tables'])} tables, {rows:,} rows")
    if "files" in manifest and isinstance(manifest["files"], list):
        parts.append(f"{len(manifest['files'])} files")
    if manifest.get("source"):
        parts.append(f"from {manifest['source']}")
    if manifest.get("missing_tables"):
        parts.append("missing: " + ", ".join(manifest["missing_tables"]))
    return "; ".join(parts)


def _entry(kind: str, name: str, path: Path) -> ArtefactStatus:
    manifest = read_manifest(path) or {}
    return ArtefactStatus(
        kind=kind,
        name=name,
        path=str(path),
        bytes=_tree_size(path),
        finished=bool(manifest),
        created_at=manifest.get("created_at"),
        builder=manifest.get("builder"),
        summary=_summary(manifest) if manifest else "unfinished (no manifest)",
        manifest=manifest,
    )


def _partial(name: str, child: Path) -> ArtefactStatus:
    return ArtefactStatus(kind="partial", name=name, path=str(child), bytes=_tree_size(child),
                          finished=False,
                          summary="left over by an interrupted build; safe to delete")


def _skip(name: str) -> bool:
    return (name.endswith(MANIFEST_SUFFIX) or name.endswith(".lock") or name.endswith("-journal")
            or name.endswith("-wal") or name.endswith("-shm"))


def _task_sets(dataset_dir: Path) -> list[ArtefactStatus]:
    """The task sets of one dataset (``tasks/<dataset>/<prefix>-<digest>.jsonl``, each with
    its manifest), and what lies beside them (a family's notes directory, say)."""
    out: list[ArtefactStatus] = []
    for child in sorted(dataset_dir.iterdir()):
        name = f"{dataset_dir.name}/{child.name}"
        if _skip(child.name):
            continue
        if _TMP_MARK in child.name:
            out.append(_partial(name, child))
        elif read_manifest(child) is not None:
            entry = _entry("tasks", name, child)
            n = entry.manifest.get("tasks")
            if isinstance(n, int):
                entry.summary = "; ".join(x for x in (f"{n:,} tasks", entry.summary) if x)
            out.append(entry)
        elif child.is_dir():  # built atomically beside a task set: finished when present
            files = sum(len(f) for _r, _d, f in os.walk(child))
            out.append(ArtefactStatus(kind="tasks", name=name, path=str(child),
                                      bytes=_tree_size(child), finished=True,
                                      summary=f"{files:,} supporting files"))
        else:
            out.append(_entry("tasks", name, child))
    return out


def status(home: str | os.PathLike[str] | None = None) -> list[ArtefactStatus]:
    """Everything present in the data home: databases, sources, task sets, registered external
    artefacts, and leftovers of interrupted builds (kind ``partial``)."""
    root = _home(home)
    out: list[ArtefactStatus] = []
    layout = (("db", "database"), ("raw", "source"), ("tasks", "tasks"))
    for sub, kind in layout:
        base = root / sub
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            name = child.name
            if _skip(name):
                continue
            if _TMP_MARK in name:
                out.append(_partial(name, child))
                continue
            if kind == "tasks" and child.is_dir() and read_manifest(child) is None:
                out.extend(_task_sets(child))  # one entry per task set of the dataset
                continue
            label = (
                name[: -len(".sqlite")] if kind == "database" and name.endswith(".sqlite") else name
            )
            out.append(_entry(kind, label, child))
    for name, record in sorted(load_registry(root).items()):
        p = Path(record.get("path", ""))
        out.append(
            ArtefactStatus(
                kind="external",
                name=name,
                path=str(p),
                bytes=int(record.get("bytes", 0)),
                finished=p.exists(),
                created_at=record.get("registered_at"),
                builder=record.get("builder"),
                summary=record.get("summary", "") if p.exists() else "registered path is gone",
                manifest=record,
            )
        )
    return out


def status_dict(home: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """:func:`status` as plain JSON-ready data (for ``--json``)."""
    root = _home(home)
    return {"home": str(root), "artefacts": [s.to_dict() for s in status(root)]}
