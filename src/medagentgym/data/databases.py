"""The databases tasks run on: a registry of :class:`DatabaseSpec` (what each database is and
how to get it) and :func:`resolve` (which build a dataset uses: synthetic, imported, official).

Names in the data home (``db/<name>.sqlite``):

* ``<id>`` (``mimic_iii``, ``eicu``, ``treqs``, ...) — imported real data (the open demos or
  the full credentialed databases), from ``medagentgym data import ...`` / ``build-...``;
* ``synthetic_<id>_p<patients>_s<seed>`` — the built-in generator's output, built on first
  use (about a second for 100 patients) or by ``medagentgym data build-synthetic``.

``database="auto"`` (the default) prefers imported data and falls back to synthetic.
Every database is accompanied by a CSV view (``<name>.csv/``, one file per table) so that
agents can use pandas on files as in the paper, or SQL on the SQLite file.

Adding a database is one :func:`register_database` call plus its modules (a schema in
:mod:`medagentgym.data.schema`, a synthetic generator, an importer); the CLI (``data
build-synthetic``, ``data import <id>``, ``data list``), the data home's "how to get it"
messages and the datasets that name it read this registry, never a list of ids.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from medagentgym.data import home as _home
from medagentgym.errors import ConfigurationError

#: which build of a database: imported when present else synthetic (auto), or one of them
DatabaseSource = Literal["auto", "synthetic", "imported", "official"]
SOURCES: tuple[str, ...] = get_args(DatabaseSource)
#: official release splits -> our split names
OFFICIAL_SPLITS = {"train": "train", "valid": "test", "test": "test"}
DEFAULT_PATIENTS = 100
DEFAULT_SEED = 0


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class DatabaseSpec:
    """One database kind (a schema) and how to get it.

    ``synthetic``: ``"module:function"`` of its generator, ``f(path, patients=, seed=)``;
    ``importer``: ``"module:function"`` that imports it from ``import_from`` files,
    ``f(src_dir, out_path, progress=, seed=)`` (``medagentgym data import <cli_name>``);
    ``derived_from``: the database it is built from (``medagentgym data build-<cli_name>``).
    Which datasets use it is declared by the datasets (``DatasetSpec.databases``;
    ``medagentgym.tasks.registry.datasets_using``)."""

    id: str
    title: str  # short, in messages: "MIMIC-III"
    description: str  # in prompts and provenance: "MIMIC-III (TREQS/MIMICSQL 5-table schema)"
    schema: str  # a schema of medagentgym.data.schema
    synthetic: str | None = None
    importer: str | None = None
    import_from: str = ""
    derived_from: str | None = None

    @property
    def cli_name(self) -> str:
        return self.id.replace("_", "-")

    @property
    def sandbox_db(self) -> str:
        """Where the SQLite file is mounted in the sandbox."""
        return f"/data/{self.id}.db"

    @property
    def sandbox_csv_dir(self) -> str:
        """Where the CSV view (one ``<table>.csv`` per table) is mounted in the sandbox."""
        return f"/data/{self.id}"

    def imported_path(self, home: str | os.PathLike[str] | None = None) -> Path:
        return _home.db_path(self.id, home)

    def synthetic_name(self, patients: int, seed: int) -> str:
        return f"synthetic_{self.id}_p{patients}_s{seed}"

    def how_to_get(self) -> str:
        """One line: the commands that provide this database."""
        ways = []
        if self.synthetic:
            ways.append("`medagentgym data build-synthetic`")
        if self.importer:
            ways.append(f"`medagentgym data import {self.cli_name} --from DIR`")
        if self.derived_from:
            parent = get_database(self.derived_from)
            ways.append(f"`medagentgym data build-{self.cli_name}` (after importing {parent.title})")
        return "run " + " or ".join(ways) if ways else "see `medagentgym data list`"

    def generator(self) -> Callable[..., Path]:
        if not self.synthetic:
            raise ConfigurationError(f"{self.title} has no synthetic generator; "
                                     f"{self.how_to_get()}")
        return _load(self.synthetic)

    def import_function(self) -> Callable[..., Any]:
        if not self.importer:
            raise ConfigurationError(f"{self.title} has no importer; {self.how_to_get()}")
        return _load(self.importer)


def _load(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


_DATABASES: dict[str, DatabaseSpec] = {}


def register_database(spec: DatabaseSpec) -> DatabaseSpec:
    if spec.id in _DATABASES and _DATABASES[spec.id] != spec:
        raise ConfigurationError(f"database {spec.id!r} is already registered differently")
    _DATABASES[spec.id] = spec
    return spec


def db_ids() -> tuple[str, ...]:
    """The registered database ids, in registration order."""
    return tuple(_DATABASES)


def get_database(db_id: str) -> DatabaseSpec:
    key = db_id.strip().lower().replace("-", "_")
    try:
        return _DATABASES[key]
    except KeyError:
        raise ConfigurationError(f"unknown database {db_id!r}; choose one of "
                                 f"{', '.join(_DATABASES)}") from None


def find_database(db_id: str) -> DatabaseSpec | None:
    return _DATABASES.get(db_id)


register_database(DatabaseSpec(
    "mimic_iii", "MIMIC-III", "MIMIC-III", "mimic_iii",
    synthetic="medagentgym.data.synth.mimic_iii:build_mimic_iii",
    importer="medagentgym.data.importers:import_mimic_iii",
    import_from="a directory of PhysioNet MIMIC-III CSV files"))
register_database(DatabaseSpec(
    "eicu", "eICU", "eICU", "eicu",
    synthetic="medagentgym.data.synth.eicu:build_eicu",
    importer="medagentgym.data.importers:import_eicu",
    import_from="a directory of PhysioNet eICU-CRD CSV files"))
register_database(DatabaseSpec(
    "treqs", "TREQS (MIMICSQL)", "MIMIC-III (TREQS/MIMICSQL 5-table schema)", "treqs",
    synthetic="medagentgym.data.synth.treqs:build_treqs", derived_from="mimic_iii"))
# MIMIC-IV with EHRSQL-2024's preprocessing (issue 12); its dataset is mimic_iv
register_database(DatabaseSpec(
    "mimic_iv", "MIMIC-IV", "MIMIC-IV (EHRSQL-2024 schema)", "mimic_iv",
    synthetic="medagentgym.data.synth.mimic_iv:build_mimic_iv",
    importer="medagentgym.data.importers_mimic_iv:import_mimic_iv",
    import_from="the MIMIC-IV demo's root folder (hosp/ and icu/ CSV files)"))


# --------------------------------------------------------------------------- builds


@dataclass(frozen=True)
class Database:
    db_id: str
    source: str  # "synthetic" | "imported" | "official"
    path: Path
    description: str

    @property
    def csv_dir(self) -> Path:
        return self.path.with_suffix(".csv")

    @property
    def build_key(self) -> str:
        """Identifies the exact database contents (for task caches)."""
        manifest = _home.read_manifest(self.path) or {}
        return f"{self.path.stem}:{manifest.get('sha256', manifest.get('built_at', ''))}"


def synthetic_name(db_id: str, patients: int, seed: int) -> str:
    return get_database(db_id).synthetic_name(patients, seed)


def build_synthetic(db_id: str, *, patients: int = DEFAULT_PATIENTS, seed: int = DEFAULT_SEED,
                    home: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """Build (once) the synthetic database and its CSV view; returns the SQLite path."""
    from medagentgym.data.synth import GENERATOR_VERSION, export_csv

    spec = get_database(db_id)
    generate = spec.generator()
    path = _home.db_path(spec.synthetic_name(patients, seed), home)
    csv_dir = path.with_suffix(".csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _home.file_lock(path):
        if not force and _home.is_finished(path) and _home.is_finished(csv_dir):
            return path
        generate(path, patients=patients, seed=seed)
        _home.make_world_readable(path)
        with _home.atomic_path(csv_dir, directory=True) as tmp:
            export_csv(path, tmp)
        _home.make_world_readable(csv_dir)
        _home.write_manifest(csv_dir, kind="database", builder="medagentgym.data.synth.export_csv",
                             checksum=False, csv_of=path.name)
        _home.write_manifest(path, kind="database", builder="medagentgym.data.synth.build",
                             db_id=spec.id, patients=patients, seed=seed,
                             generator_version=GENERATOR_VERSION)
    return path


def ensure_csv_view(path: Path) -> Path:
    """The CSV view of an (imported) database, exported once."""
    from medagentgym.data.synth import export_csv

    csv_dir = path.with_suffix(".csv")
    with _home.file_lock(csv_dir):
        if not _home.is_finished(csv_dir):
            with _home.atomic_path(csv_dir, directory=True) as tmp:
                export_csv(path, tmp)
            _home.make_world_readable(csv_dir)
            _home.write_manifest(csv_dir, kind="database", builder="medagentgym.data.synth.export_csv",
                                 checksum=False, csv_of=path.name)
    return csv_dir


def resolve(db_id: str, source: str = "auto", *, patients: int = DEFAULT_PATIENTS,
            seed: int = DEFAULT_SEED, home: str | os.PathLike[str] | None = None) -> Database:
    """The database a dataset should use, building the synthetic one when needed."""
    if source not in SOURCES:
        raise ConfigurationError(f"unknown database source {source!r}; choose one of {', '.join(SOURCES)}")
    spec = get_database(db_id)
    if source == "official":
        record = official_record(db_id, home)
        dbs = record.get("databases") or {}
        if not dbs:
            raise ConfigurationError(f"the registered MedAgentGym release for {db_id!r} has no database file")
        path = Path(next(iter(dbs.values()))["path"])
        return Database(db_id, "official", path, f"official MedAgentGym release ({record.get('path')})")
    imported = spec.imported_path(home)
    if source in ("auto", "imported") and _home.is_finished(imported):
        manifest = _home.read_manifest(imported) or {}
        _home.make_world_readable(imported)  # imported through the API, not the CLI
        ensure_csv_view(imported)
        origin = manifest.get("source_dir") or manifest.get("builder", "imported")
        return Database(db_id, "imported", imported, f"imported ({origin})")
    if source == "imported":
        _home.require_db(db_id, home)  # raises the one-line "how to get it" error
    path = build_synthetic(db_id, patients=patients, seed=seed, home=home)
    return Database(db_id, "synthetic", path, f"synthetic (patients={patients}, seed={seed})")


def official_record(dataset: str, home: str | os.PathLike[str] | None = None) -> dict:
    """The registry record of the official MedAgentGym release for ``dataset``."""
    record = _home.load_registry(home).get(f"medagentgym/{dataset}")
    if record is None:
        raise ConfigurationError(
            f"no official MedAgentGym release registered for {dataset!r}; run "
            "`medagentgym data import medagentgym --from DIR` (the release's root folder)")
    return record
