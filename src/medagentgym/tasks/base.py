"""The base of families that build their tasks from data: options, splits, sources and the
task cache, so that a family implements only what is its own.

A :class:`DatasetFamily` subclass provides

* ``Options`` — its typed options (a :class:`DatasetOptions` subclass; ``home`` is already
  there);
* :meth:`~DatasetFamily.cache_key` — everything that determines the tasks' content (option
  values, the data build, generator versions); ``cache_version`` is added to it;
* :meth:`~DatasetFamily.build_records` — the task records (:meth:`record` of a task and its
  ground truth), all splits at once;
* prompting (``instructions``, optionally ``stages``) and grading (``grade_value`` or
  ``grade``), as every :class:`~medagentgym.tasks.family.TaskFamily`.

and may refine :meth:`cache_prefix`, :meth:`cache_manifest` (fields recorded beside the
cache), :meth:`cache_ready` (artefacts that must exist beside the cache) or
:meth:`load_splits` (tasks that do not come from the cache). The base class loads the
cache once per family instance, builds it (under a lock, atomically) when it is missing, and
answers ``load_tasks(split)`` with a one-line error for an unknown split.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from medagentgym.errors import ConfigurationError
from medagentgym.tasks import cache as task_cache
from medagentgym.tasks.family import FamilyOptions, TaskFamily, option
from medagentgym.types import GroundTruth, Task

if TYPE_CHECKING:
    from medagentgym.tasks.family import DatasetSpec


class DatasetOptions(FamilyOptions):
    """Options every dataset family takes."""

    home: Path | None = option(None, "data home (default: $MEDAGENTGYM_HOME or "
                               "~/.cache/medagentgym)", scope="host")


class DatasetFamily(TaskFamily):
    """A family whose tasks are built from data once and cached in the data home."""

    Options: ClassVar[type[DatasetOptions]] = DatasetOptions
    #: bump when ``build_records`` changes what it produces for the same key
    cache_version: ClassVar[int] = 1

    options: DatasetOptions

    def __init__(self, spec: DatasetSpec, **options: Any) -> None:
        super().__init__(spec, **options)
        self._splits: dict[str, list[Task]] = {}

    @property
    def home(self) -> Path | None:
        return self.options.home

    # -- what a family implements ---------------------------------------------------------
    @abc.abstractmethod
    def cache_key(self) -> dict[str, Any]:
        """Everything that determines the tasks' content (``cache_version`` is added)."""

    @abc.abstractmethod
    def build_records(self) -> Iterable[dict[str, Any]]:
        """Every split's task records (:meth:`record`), built from the data."""

    def cache_prefix(self) -> str:
        """The cache file's name starts with it (``<prefix>-<digest>.jsonl``)."""
        return "tasks"

    def cache_manifest(self) -> dict[str, Any]:
        """Fields recorded in the cache's manifest (called after a build)."""
        return {}

    def cache_ready(self) -> bool:
        """Whether artefacts that must exist beside the cache file are there."""
        return True

    # -- shared mechanics -----------------------------------------------------------------
    @staticmethod
    def record(task: Task, truth: GroundTruth) -> dict[str, Any]:
        """A task and its ground truth as one cache record."""
        return task_cache.record(task, truth)

    def source_dir(self, name: str | None = None) -> Path:
        """A pulled open source (default: the dataset's first), fetched on first use
        (``$MEDAGENTGYM_MIRROR`` or the official URLs)."""
        from medagentgym.data.sources import ensure_source

        if name is None:
            if not self.spec.sources:
                raise ConfigurationError(f"{self.name}: the dataset names no source")
            name = self.spec.sources[0]
        return ensure_source(name, self.home)

    def cache_file(self) -> Path:
        return task_cache.cache_path(self.name, self.cache_prefix(),
                                     {"v": self.cache_version, **self.cache_key()}, self.home)

    def load_splits(self, split: str) -> dict[str, list[Task]]:
        """Tasks by split, at least ``split``'s when it exists (default: every split, from
        the cache, built first when missing)."""
        cls = type(self)
        return task_cache.load_or_build(
            self.cache_file(), self.build_records, splits=self.spec.splits,
            builder=f"{cls.__module__}.{cls.__qualname__}", dataset=self.name,
            ready=self.cache_ready, late_manifest=self.cache_manifest)

    def load_tasks(self, split: str) -> list[Task]:
        if split not in self._splits:
            self._splits.update(self.load_splits(split))
        if split not in self._splits:
            raise ConfigurationError(f"{self.name}: no split {split!r}; splits: "
                                     f"{', '.join(self._splits) or 'none'}")
        return self._splits[split]


def run_in_thread(coro: Any, name: str = "build") -> Any:
    """Run ``coro`` on a fresh event loop in its own thread (the caller may be inside a loop,
    e.g. a family building its tasks from within an environment); its result or exception."""
    import asyncio
    import threading

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name=name)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]

