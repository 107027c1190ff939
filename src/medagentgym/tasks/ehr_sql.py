"""EHR database question answering: one family for MIMIC-III, eICU, TREQS and EHR-SeqSQL.

The datasets differ only by configuration: which database (``db_id``), which question source
(EHRSQL or MIMICSQL templates, or the official MedAgentGym task files) and whether an
episode asks one question or a chain (``mode="sequence"``, EHR-SeqSQL).

Questions are re-instantiated from the templates on the database in use (synthetic, the open
demos or the full imported databases; :mod:`medagentgym.tasks.ehrsql_instances`), and the
ground truth is the gold SQL executed there. The agent sees the question, the table
descriptions and the data — the SQLite file at ``/data/<db>.db`` and one CSV per table under
``/data/<db>/`` — and must store the result in ``answer``; it is graded as a multiset of rows
(:func:`medagentgym.graders.sql_result_match`). Gold SQL, answers and task files stay on the
host, outside every sandbox mount.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medagentgym.data import databases
from medagentgym.errors import ConfigurationError
from medagentgym.tasks import cache as task_cache
from medagentgym.tasks.family import TaskFamily
from medagentgym.types import Grade, GroundTruth, Provenance, Task

NOW = "2105-12-31 23:59:00"
CACHE_VERSION = 1

_SOURCES = {
    "mimic_iii": ("ehrsql", "EHRSQL {release} (templates re-instantiated)", "CC BY 4.0"),
    "eicu": ("ehrsql", "EHRSQL {release} (templates re-instantiated)", "CC BY 4.0"),
    "treqs": ("treqs", "MIMICSQL / TREQS (templates re-instantiated)", "MIT"),
}
_DB_TITLES = {"mimic_iii": "MIMIC-III", "eicu": "eICU", "treqs": "MIMIC-III (TREQS/MIMICSQL 5-table schema)"}


class EhrSqlFamily(TaskFamily):
    allowed_actions = ("request_info", "validate_code", "debug")
    preload = "core"

    def __init__(
        self,
        spec: Any,
        *,
        db_id: str,
        mode: str = "single",
        database: str = "auto",
        patients: int = databases.DEFAULT_PATIENTS,
        db_seed: int = databases.DEFAULT_SEED,
        seed: int = 0,
        release: str = "2024-04-27",
        per_template: int = 3,
        test_fraction: float = 0.5,
        sequence_length: int = 3,
        include_impossible: bool = True,
        home: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(spec)
        if mode not in ("single", "sequence"):
            raise ConfigurationError(f"mode must be 'single' or 'sequence', not {mode!r}")
        self.db_id = db_id
        self.mode = mode
        self.database_source = database
        self.patients = patients
        self.db_seed = db_seed
        self.seed = seed
        self.release = release
        self.per_template = per_template
        self.test_fraction = test_fraction
        self.sequence_length = sequence_length
        self.include_impossible = include_impossible
        self.home = home
        self._db: databases.Database | None = None
        self._splits: dict[str, list[Task]] | None = None

    # -- data -----------------------------------------------------------------------------
    @property
    def db(self) -> databases.Database:
        if self._db is None:
            self._db = databases.resolve(self.db_id, self.database_source, patients=self.patients,
                                         seed=self.db_seed, home=self.home)
        return self._db

    @property
    def db_file(self) -> str:
        return f"/data/{self.db_id}.db"

    @property
    def csv_dir(self) -> str:
        return f"/data/{self.db_id}"

    def _source_dir(self) -> Path:
        """The question files; fetched on first use (``$MEDAGENTGYM_MIRROR`` or official URLs)."""
        from medagentgym.data.sources import ensure_source

        return ensure_source(_SOURCES[self.db_id][0], self.home)

    def _cache_file(self) -> Path:
        return task_cache.cache_path(self.name, self.db.path.stem, {
            "v": CACHE_VERSION, "dataset": self.name, "db": self.db.build_key, "mode": self.mode,
            "seed": self.seed, "release": self.release, "per": self.per_template,
            "test": self.test_fraction, "len": self.sequence_length,
            "imp": self.include_impossible}, self.home)

    def load_tasks(self, split: str) -> list[Task]:
        if self._splits is None:
            self._splits = task_cache.load_or_build(
                self._cache_file(), self._build_records, splits=self.spec.splits,
                builder=f"{__name__}.EhrSqlFamily", dataset=self.name,
                database=str(self.db.path))
        if split not in self._splits:
            raise ConfigurationError(f"{self.name}: no split {split!r}; splits: {', '.join(self._splits)}")
        return self._splits[split]

    # -- building -------------------------------------------------------------------------
    def _instances(self) -> list[Any]:
        from medagentgym.tasks import ehrsql_instances as ei

        src = self._source_dir()
        if self.db_id == "treqs":
            templates = ei.load_treqs(src)
            return ei.instantiate_treqs(templates, self.db.path, seed=self.seed,
                                        per_template=self.per_template)
        templates = ei.load_templates(src, self.db_id, release=self.release,
                                      include_impossible=self.include_impossible)
        return ei.instantiate(templates, self.db.path, seed=self.seed, per_template=self.per_template,
                              now=NOW, include_impossible=self.include_impossible)

    def _official_splits(self) -> dict[str, list[Any]]:
        """Paper-fidelity mode: the release's own task files and stored answers, as-is."""
        from medagentgym.tasks import ehrsql_instances as ei

        record = databases.official_record(self.name, self.home)
        out: dict[str, list[Any]] = {}
        for split, info in (record.get("tasks") or {}).items():
            ours = databases.OFFICIAL_SPLITS.get(split, split)
            out.setdefault(ours, []).extend(ei.load_official(info["path"]))
        return out

    def _build_records(self) -> list[dict[str, Any]]:
        from medagentgym.tasks import ehrsql_instances as ei

        if self.database_source == "official":
            split_map = self._official_splits()
        else:
            instances = self._instances()
            split_map = ei.split_instances(instances, seed=self.seed, test_fraction=self.test_fraction)
        records = []
        for split, items in split_map.items():
            if self.mode == "sequence":
                for seq in ei.build_sequences(items, seed=self.seed, length=self.sequence_length):
                    records.append(self._sequence_record(seq, split))
            else:
                for inst in items:
                    records.append(self._single_record(inst, split))
        return records

    def _provenance(self, original_id: str | None = None) -> Provenance:
        _, source, licence = _SOURCES[self.db_id]
        if self.database_source == "official":
            source = "MedAgentGym official release (stored answers)"
        return Provenance(source=source.format(release=self.release),
                          database=f"{_DB_TITLES[self.db_id]}, {self.db.description}",
                          licence=licence, original_id=original_id)

    @property
    def has_csv_view(self) -> bool:
        return self.db.csv_dir.is_dir()

    def _inputs(self) -> dict[str, str]:
        inputs = {self.db_file: str(self.db.path)}
        if self.has_csv_view:
            inputs[self.csv_dir] = str(self.db.csv_dir)
        return inputs

    def _single_record(self, inst: Any, split: str) -> dict[str, Any]:
        task = Task(
            id=f"{self.name}-{inst.id}", dataset=self.name, category=inst.category, split=split,
            goal=inst.question, inputs=self._inputs(),
            allowed_actions=self.allowed_actions, provenance=self._provenance(inst.template_id),
            metadata={"template_id": inst.template_id, "is_impossible": inst.is_impossible},
        )
        truth = GroundTruth(kind="sql_rows", value=inst.answer, solution=self._oracle(inst),
                            extra={"sql": inst.sql, "values": inst.values})
        return task_cache.record(task, truth)

    def _sequence_record(self, seq: Any, split: str) -> dict[str, Any]:
        subs = seq.sub_questions
        task = Task(
            id=f"{self.name}-{seq.id}", dataset=self.name,
            category="+".join(dict.fromkeys(s.category for s in subs)), split=split,
            goal=subs[0].question, inputs=self._inputs(),
            allowed_actions=self.allowed_actions, provenance=self._provenance(seq.id),
            metadata={"patient_id": seq.patient_id, "questions": [s.question for s in subs],
                      "template_ids": [s.template_id for s in subs]},
        )
        truth = GroundTruth(kind="sequence", value=[s.answer for s in subs],
                            solution=[self._oracle(s) for s in subs],
                            extra={"sql": [s.sql for s in subs]})
        return task_cache.record(task, truth)

    def _oracle(self, inst: Any) -> str:
        if inst.is_impossible:
            return "answer = None  # the question cannot be answered from this database\n"
        return (
            "import sqlite3\n"
            f"con = sqlite3.connect('file:{self.db_file}?mode=ro', uri=True)\n"
            f"answer = [list(row) for row in con.execute({inst.sql!r}).fetchall()]\n"
        )

    # -- prompting ------------------------------------------------------------------------
    def instructions(self, task: Task) -> str:
        from medagentgym.data.schema import describe

        return (
            f"Answer questions about the {_DB_TITLES[self.db_id]} electronic health record "
            f"database by writing Python code.\n"
            f"The data are read-only: a SQLite database at {self.db_file}"
            + (f" and the same tables as CSV files in {self.csv_dir}/ (one <table>.csv per table)"
               if self.has_csv_view else "")
            + ". Use sqlite3 or pandas.\n"
            f"Assume the current time is {NOW}.\n"
            f"The tables:\n{describe(self.db_id)}\n"
            "Store the final result in the variable `answer`: a single value, a list of values, "
            "or a list of rows (a pandas DataFrame works too). If the question cannot be "
            "answered from the data, set answer = None."
        )

    def stages(self, task: Task) -> list[str]:
        return list(task.metadata.get("questions") or [task.goal])

    # -- grading --------------------------------------------------------------------------
    def grade_value(self, task: Task, answer: Any, *, stage: int = 0) -> Grade:
        from medagentgym.graders import sql_result_match

        truth = task.truth
        gold = truth.value[stage] if truth.kind == "sequence" else truth.value
        if gold is None or (truth.kind == "sql_rows" and task.metadata.get("is_impossible")):
            # unanswerable: the agent must abstain (checked by type: never compares a value)
            if answer is None or (isinstance(answer, list | str) and len(answer) == 0):
                return Grade.right("correctly abstained")
            return Grade.wrong("this question cannot be answered from the data")
        return sql_result_match(answer, gold)

    def info_index(self, task: Task) -> Any:
        from medagentgym.env.info import get_index

        return get_index(self.db.path)
