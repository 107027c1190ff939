"""EHR database question answering: one family for MIMIC-III, eICU, TREQS and EHR-SeqSQL.

The datasets differ only by configuration: which database (the dataset's ``databases``, a
:class:`~medagentgym.data.databases.DatabaseSpec`), which question set (its first source:
:data:`QUESTION_SETS`, EHRSQL or MIMICSQL templates; or the official MedAgentGym task files
with ``database="official"``) and whether an episode asks one question or a chain
(``mode="sequence"``, EHR-SeqSQL).

Questions are re-instantiated from the templates on the database in use (synthetic, the open
demos or the full imported databases; :mod:`medagentgym.tasks.ehrsql_instances`), and the
ground truth is the gold SQL executed there. By default (``selection``) the splits are the
MedAgentGym paper's task ids, each instantiated on that database (its published values kept
where they answer there), with a ``valid`` split carved from train; the ids that could not
be instantiated are counted by reason (:meth:`EhrSqlFamily.audit_summary`). The agent sees the question, the table
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
from medagentgym.errors import ConfigurationError
from medagentgym.tasks.base import DatasetFamily, DatasetOptions
from medagentgym.tasks.family import option
from medagentgym.types import Grade, GroundTruth, Provenance, Task

NOW = "2105-12-31 23:59:00"
CACHE_VERSION = 2  # 2: task ids no longer repeat the dataset name

Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]


@dataclass(frozen=True)
class QuestionSet:
    """A source of questions: how to instantiate it on a database, and its provenance."""

    provenance: str  # formatted with ``release``
    licence: str
    instances: Callable[..., list[Any]]


def _ehrsql_instances(fam: EhrSqlFamily, src: Path, *, impossible_only: bool = False
                      ) -> list[Any]:
    from medagentgym.tasks import ehrsql_instances as ei

    opts = fam.options
    templates = ei.load_templates(src, fam.db_id, release=opts.release,
                                  include_impossible=fam.include_impossible)
    if impossible_only:
        templates = [t for t in templates if t.is_impossible]
    instances, report = ei.instantiate_with_report(
        templates, fam.db.path, seed=opts.seed, per_template=opts.per_template, now=NOW,
        include_impossible=fam.include_impossible, max_answer_share=opts.max_answer_share)
    if not impossible_only:
        fam.gold_audit = {"selection": "templates",
                          **report.model_dump(exclude={"by_category", "db_path"})}
    return instances


def _treqs_instances(fam: EhrSqlFamily, src: Path, *, impossible_only: bool = False
                     ) -> list[Any]:
    from medagentgym.tasks import ehrsql_instances as ei

    if impossible_only:  # MIMICSQL has no unanswerable questions
        return []
    instances, report = ei.instantiate_with_report(
        ei.load_treqs(src), fam.db.path, seed=fam.options.seed,
        per_template=fam.options.per_template, max_answer_share=fam.options.max_answer_share)
    fam.gold_audit = {"selection": "templates",
                      **report.model_dump(exclude={"by_category", "db_path"})}
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
    selection: Literal["auto", "paper", "templates"] = option(
        "auto", "which questions: the MedAgentGym paper's task ids, each instantiated on the "
        "database in use (paper: test = its 581 MIMIC-III / 611 eICU / 996 TREQS ids, train = "
        "its train ids less the valid share), or every EHRSQL/MIMICSQL template instantiated "
        "per_template times and split by template (templates); auto: paper where its task "
        "files are in the source, else templates")
    valid_fraction: float = option(
        0.15, "share of the train ids (paper) or train combinations (templates) carved out, "
        "by a hash of seed and id, as the valid split", ge=0, lt=1)
    max_answer_share: float = option(
        0.0125, "no single value may be the whole answer of more than this share of a split "
        "(constant answers earn at most about that); 1 keeps every id the database can "
        "answer (the paper's full composition, where answering 0 or 1 scores more)",
        gt=0, le=1)
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
                "gold": _instances_version(), "sel": self.selection, "valid": o.valid_fraction,
                "cap": o.max_answer_share}

    @property
    def selection(self) -> str:
        """``paper`` or ``templates`` (see the ``selection`` option; ``auto`` resolved)."""
        from medagentgym.tasks import ehrsql_instances as ei

        sel = self.options.selection
        if self.database_source == "official":
            return "official"
        if sel == "templates" or (sel == "auto" and self.mode == "sequence"):
            return "templates"
        has_paper = (self.mode == "single"
                     and ei.paper_split_paths(self.source_dir(), self.db_id) is not None)
        if sel == "paper" and not has_paper:
            raise ConfigurationError(
                f"{self.name}: selection='paper' needs MedAgentGym's task files "
                f"(medagentgym_split/, mirror only) in the {self.spec.sources[0]!r} source"
                + ("" if self.mode == "single" else ", and single questions (mode=single)")
                + "; pull the source from a mirror (`medagentgym data pull "
                f"{self.spec.sources[0]} --from DIR`) or use selection='templates'")
        return "paper" if has_paper else "templates"

    def build_report(self) -> dict[str, Any] | None:
        """How the task set in use was built (its gold audit: ids of the paper's split left
        out and why, tie-dependent candidates dropped, ...), from the last build or the task
        cache's manifest; None for the official release's files."""
        from medagentgym.data import home

        if self.gold_audit is None:
            manifest = home.read_manifest(self.cache_file()) or {}
            self.gold_audit = manifest.get("gold_audit")
        return self.gold_audit

    def audit_summary(self, split: str) -> dict[str, Any] | None:
        """The gold-audit counts that matter for ``split``, flat (for ``validate`` and
        ``tasks list``)."""
        audit = self.build_report()
        if not audit:
            return None
        out: dict[str, Any] = {"selection": audit.get("selection", "templates")}
        paper = (audit.get("paper_split") or {}).get(split)
        if paper:
            out["paper_ids"] = {
                "ids": paper["ids"], "instantiated": paper["instantiated"],
                "not_instantiated": paper["ids"] - paper["instantiated"],
                **{f"not_instantiated_{k}": n for k, n in paper["not_instantiated"].items()},
                "published_values_kept": paper["published_values"]}
        # over the whole build (every split): candidates, not tasks, for the tie check
        out["gold_audit"] = {
            "tie_check": audit.get("tie_check"),
            "ties_dropped": audit.get("dropped_tie", 0),
            "ties_accepted_top_n": audit.get("top_n_gold_gt_n", 0),
            "duplicate_row_golds_dedup_accepted": audit.get("duplicate_row_golds", 0),
            "count_questions_dedup_refused": audit.get("count_questions", 0),
            "answer_capped": audit.get("answer_capped", 0),
        }
        return out

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
        selection = self.selection
        if selection == "official":
            split_map = self._official_splits()
        elif selection == "paper":
            split_map = self._paper_splits()
        else:
            instances = self.questions.instances(self, self.source_dir())
            split_map = self._three_way(instances)
        records = []
        for split, items in split_map.items():
            # the release's EHR-SeqSQL records are whole tasks (seed + follow-up question)
            if opts.mode == "sequence" and selection != "official":
                for seq in ei.build_sequences(items, seed=opts.seed, length=opts.sequence_length):
                    records.append(self._sequence_record(seq, split))
            else:
                for inst in items:
                    records.append(self._single_record(inst, split))
        return records

    def _three_way(self, instances: list[Any]) -> dict[str, list[Any]]:
        """train / valid / test by template combination (:func:`split_instances`): test
        first, then the valid share of the rest."""
        from medagentgym.tasks import ehrsql_instances as ei

        opts = self.options
        parts = ei.split_instances(instances, seed=opts.seed, test_fraction=opts.test_fraction)
        rest = ei.split_instances(parts["train"], seed=opts.seed + 1,
                                  test_fraction=opts.valid_fraction)
        return {"train": rest["train"], "valid": rest["test"], "test": parts["test"]}

    def _paper_splits(self) -> dict[str, list[Any]]:
        """The paper's ids instantiated on the database in use (plus, with ``abstention``,
        the release's unanswerable questions split by template)."""
        from medagentgym.tasks import ehrsql_instances as ei

        opts = self.options
        src = self.source_dir()
        paper = ei.load_paper_split(src, self.db_id, seed=opts.seed,
                                    valid_fraction=opts.valid_fraction)
        split_map, report = ei.instantiate_paper_split(
            paper, self.db.path, seed=opts.seed, now=NOW,
            max_answer_share=opts.max_answer_share)
        self.gold_audit = {"selection": "paper",
                           **report.model_dump(exclude={"by_category", "db_path"})}
        if self.include_impossible:
            extra = self.questions.instances(self, src, impossible_only=True)
            for split, items in self._three_way(extra).items():
                split_map.setdefault(split, []).extend(items)
        return split_map

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
            id=_task_id(self.name, inst.id), dataset=self.name, category=inst.category,
            split=split,
            goal=inst.question, inputs=self._inputs(),
            allowed_actions=self.allowed_actions,
            provenance=self._provenance(inst.source_id or inst.template_id),
            metadata={"template_id": inst.template_id, "is_impossible": inst.is_impossible,
                      **({"paper_id": inst.source_id} if inst.source_id else {})},
        )
        truth = GroundTruth(kind="sql_rows", value=inst.answer, solution=self._oracle(inst),
                            extra={"sql": inst.sql, "values": inst.values,
                                   "grading": inst.grading})
        return self.record(task, truth)

    def _sequence_record(self, seq: Any, split: str) -> dict[str, Any]:
        subs = seq.sub_questions
        task = Task(
            id=_task_id(self.name, seq.id), dataset=self.name,
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


def _task_id(dataset: str, instance_id: str) -> str:
    """``<dataset>-<instance id>``, without repeating the dataset when the instance id
    already starts with it (template instances are named after their database)."""
    return instance_id if instance_id.startswith(f"{dataset}-") else f"{dataset}-{instance_id}"

