"""EHR database question answering: one family for MIMIC-III, eICU, TREQS and EHR-SeqSQL.

The datasets differ only by configuration: which database (the dataset's ``databases``, a
:class:`~medagentgym.data.databases.DatabaseSpec`), which question set (its first source:
:data:`QUESTION_SETS`, EHRSQL or MIMICSQL templates; or the official MedAgentGym task files
with ``database="official"``) and whether an episode asks one question or a chain
(``mode="sequence"``, EHR-SeqSQL).

Questions are re-instantiated from the templates on the database in use (synthetic, the open
demos or the full imported databases; :mod:`medagentgym.tasks.ehrsql_instances`), and the
ground truth is the gold SQL executed there. The agent sees the question, the table
descriptions and the data — the SQLite file at ``/data/<db>.db`` and one CSV per table under
``/data/<db>/`` — and must store the result in ``answer``; it is graded as a multiset of rows
(:func:`medagentgym.graders.ehr_answer_match`: columns in any order, repeated rows optional
unless a count is asked, tied "top N" sets). Unanswerable questions only with
``abstention=True``. Gold SQL, answers and task files stay on the
host, outside every sandbox mount.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from medagentgym.data import databases
from medagentgym.tasks.base import DatasetFamily, DatasetOptions
from medagentgym.tasks.family import option
from medagentgym.types import Grade, GroundTruth, Provenance, Task

NOW = "2105-12-31 23:59:00"
CACHE_VERSION = 1

Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]


@dataclass(frozen=True)
class QuestionSet:
    """A source of questions: how to instantiate it on a database, and its provenance."""

    provenance: str  # formatted with ``release``
    licence: str
    instances: Callable[[EhrSqlFamily, Path], list[Any]]


def _ehrsql_instances(fam: EhrSqlFamily, src: Path) -> list[Any]:
    from medagentgym.tasks import ehrsql_instances as ei

    opts = fam.options
    templates = ei.load_templates(src, fam.db_id, release=opts.release,
                                  include_impossible=fam.include_impossible)
    instances, report = ei.instantiate_with_report(
        templates, fam.db.path, seed=opts.seed, per_template=opts.per_template, now=NOW,
        include_impossible=fam.include_impossible)
    fam.gold_audit = report.model_dump(exclude={"by_category", "db_path"})
    return instances


def _treqs_instances(fam: EhrSqlFamily, src: Path) -> list[Any]:
    from medagentgym.tasks import ehrsql_instances as ei

    instances, report = ei.instantiate_with_report(
        ei.load_treqs(src), fam.db.path, seed=fam.options.seed,
        per_template=fam.options.per_template)
    fam.gold_audit = report.model_dump(exclude={"by_category", "db_path"})
    return instances


def _instances_version() -> int:
    from medagentgym.tasks import ehrsql_instances as ei

    return ei.INSTANCES_VERSION


#: question sets by the source they are pulled from (a dataset's first source)
QUESTION_SETS: dict[str, QuestionSet] = {
    "ehrsql": QuestionSet("EHRSQL {release} (templates re-instantiated)", "CC BY 4.0",
                          _ehrsql_instances),
    "treqs": QuestionSet("MIMICSQL / TREQS (templates re-instantiated)", "MIT",
                         _treqs_instances),
}


class EhrSqlOptions(DatasetOptions):
    """Options of the EHR SQL datasets (mimic_iii, eicu, treqs, ehr_seqsql)."""

    mode: Literal["single", "sequence"] = option(
        "single", "one question per episode, or a chain about one patient (EHR-SeqSQL)",
        scope="identity")
    database: databases.DatabaseSource = option(
        "auto", "which build: imported when present else synthetic (auto), or one of them")
    patients: int = option(databases.DEFAULT_PATIENTS, "patients of the synthetic database",
                           ge=1, client_le=2000)
    db_seed: Seed = option(databases.DEFAULT_SEED, "seed of the synthetic database")
    seed: Seed = option(0, "seed of question instantiation and splits")
    release: Literal["2024-04-27", "1.5.1"] = option("2024-04-27", "EHRSQL release")
    per_template: int = option(3, "instances per question template", ge=1, client_le=20)
    test_fraction: float = option(0.5, "share of templates in the test split", gt=0, lt=1)
    sequence_length: int = option(3, "questions per chain (mode=sequence)", ge=1,
                                  client_le=10)
    abstention: bool = option(
        False, "also pose EHRSQL's unanswerable questions (category 'unanswerable'; answering "
        "None scores 1); the paper's setting, the default, has answerable questions only")
    include_impossible: bool | None = option(None, "deprecated: the same as abstention")


class EhrSqlFamily(DatasetFamily):
    allowed_actions = ("request_info", "validate_code", "debug")
    preload = "core"
    Options: ClassVar[type[EhrSqlOptions]] = EhrSqlOptions
    cache_version = CACHE_VERSION

    options: EhrSqlOptions

    def __init__(self, spec: Any, **options: Any) -> None:
        super().__init__(spec, **options)
        self.database = databases.get_database(spec.databases[0])
        self.questions = QUESTION_SETS[spec.sources[0]]
        self._db: databases.Database | None = None
        #: the instantiation report of the last build (recorded in the cache's manifest)
        self.gold_audit: dict[str, Any] | None = None

    @property
    def include_impossible(self) -> bool:
        """Whether unanswerable questions are posed (``abstention``)."""
        return self.options.abstention or bool(self.options.include_impossible)

    @property
    def db_id(self) -> str:
        return self.database.id

    @property
    def mode(self) -> str:
        return self.options.mode

    @property
    def database_source(self) -> str:
        return self.options.database

    # -- data -----------------------------------------------------------------------------
    @property
    def db(self) -> databases.Database:
        if self._db is None:
            opts = self.options
            self._db = databases.resolve(self.db_id, opts.database, patients=opts.patients,
                                         seed=opts.db_seed, home=self.home)
        return self._db

    @property
    def db_file(self) -> str:
        return self.database.sandbox_db

    @property
    def csv_dir(self) -> str:
        return self.database.sandbox_csv_dir

    def cache_prefix(self) -> str:
        return self.db.path.stem

    def cache_key(self) -> dict[str, Any]:
        o = self.options
        return {"dataset": self.name, "db": self.db.build_key, "mode": o.mode, "seed": o.seed,
                "release": o.release, "per": o.per_template, "test": o.test_fraction,
                "len": o.sequence_length, "imp": self.include_impossible,
                "gold": _instances_version()}

    def cache_manifest(self) -> dict[str, Any]:
        return {"database": str(self.db.path),
                **({"gold_audit": self.gold_audit} if self.gold_audit else {})}

    # -- building -------------------------------------------------------------------------
    def _official_splits(self) -> dict[str, list[Any]]:
        """Paper-fidelity mode: the release's own task files and stored answers, as-is."""
        from medagentgym.tasks import ehrsql_instances as ei

        record = databases.official_record(self.name, self.home)
        out: dict[str, list[Any]] = {}
        for split, info in (record.get("tasks") or {}).items():
            ours = databases.OFFICIAL_SPLITS.get(split, split)
            out.setdefault(ours, []).extend(
                ei.load_official(info["path"], include_impossible=self.include_impossible))
        return out

    def build_records(self) -> list[dict[str, Any]]:
        from medagentgym.tasks import ehrsql_instances as ei

        opts = self.options
        if opts.database == "official":
            split_map = self._official_splits()
        else:
            instances = self.questions.instances(self, self.source_dir())
            split_map = ei.split_instances(instances, seed=opts.seed,
                                           test_fraction=opts.test_fraction)
        records = []
        for split, items in split_map.items():
            if opts.mode == "sequence":
                for seq in ei.build_sequences(items, seed=opts.seed, length=opts.sequence_length):
                    records.append(self._sequence_record(seq, split))
            else:
                for inst in items:
                    records.append(self._single_record(inst, split))
        return records

    def _provenance(self, original_id: str | None = None) -> Provenance:
        source = self.questions.provenance
        if self.database_source == "official":
            source = "MedAgentGym official release (stored answers)"
        return Provenance(source=source.format(release=self.options.release),
                          database=f"{self.database.description}, {self.db.description}",
                          licence=self.questions.licence, original_id=original_id)

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
                            extra={"sql": inst.sql, "values": inst.values,
                                   "grading": inst.grading})
        return self.record(task, truth)

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
                            extra={"sql": [s.sql for s in subs],
                                   "grading": [s.grading for s in subs]})
        return self.record(task, truth)

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
            f"Answer questions about the {self.database.description} electronic health record "
            f"database by writing Python code.\n"
            f"The data are read-only: a SQLite database at {self.db_file}"
            + (f" and the same tables as CSV files in {self.csv_dir}/ (one <table>.csv per table)"
               if self.has_csv_view else "")
            + ". Use sqlite3 or pandas.\n"
            f"Assume the current time is {NOW}.\n"
            f"The tables:\n{describe(self.database.schema)}\n"
            "Store the final result in the variable `answer`: a single value, a list of values, "
            "or a list of rows (a pandas DataFrame works too). If the question cannot be "
            "answered from the data, set answer = None."
        )

    def stages(self, task: Task) -> list[str]:
        return list(task.metadata.get("questions") or [task.goal])

    # -- grading --------------------------------------------------------------------------
    def grade_value(self, task: Task, answer: Any, *, stage: int = 0) -> Grade:
        from medagentgym.graders import ehr_answer_match

        truth = task.truth
        gold = truth.value[stage] if truth.kind == "sequence" else truth.value
        if gold is None or (truth.kind == "sql_rows" and task.metadata.get("is_impossible")):
            # unanswerable: the agent must abstain (checked by type: never compares a value)
            if answer is None or (isinstance(answer, list | str) and len(answer) == 0):
                return Grade.right("correctly abstained")
            return Grade.wrong("this question cannot be answered from the data")
        grading = truth.extra.get("grading")
        if truth.kind == "sequence":
            grading = grading[stage] if isinstance(grading, list) and stage < len(grading) else None
        return ehr_answer_match(answer, gold, grading)

    def info_index(self, task: Task) -> Any:
        from medagentgym.data.info import get_index

        return get_index(self.db.path)
