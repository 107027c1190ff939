"""EHRSQL-2024 on MIMIC-IV (dataset ``mimic_iv``): the shared task's questions, with the
answers its authors computed on the open MIMIC-IV demo.

This is the one EHR question set whose ground truth was computed by someone else on open
data. The questions, their SQL and the authors' answers come from the ``ehrsql2024`` source
(train 5,124 / valid 1,163 / test 1,167 items; our splits ``train`` / ``valid`` / ``test``);
the database is ``mimic_iv``:

* **imported** (``medagentgym data import mimic-iv --from DIR``: the demo after EHRSQL-2024's
  preprocessing, :mod:`medagentgym.data.importers_mimic_iv`) — an item is kept when its SQL
  executed on our database gives the authors' answer (compared as the shared task's scorer
  compares: rows as text, sorted, the first 100, floats rounded to 3 places as in
  ``answer.json``); the gold is then our execution (full precision, every row). Items that
  disagree, or that need a table the import lacks (``chartevents`` when the demo's
  ``icu/chartevents.csv.gz`` was not there), are left out with the reason counted;
* **synthetic** (the generator of :mod:`medagentgym.data.synth.mimic_iv`, offline) — the
  authors' answers do not apply; the gold is their SQL executed on the synthetic database, and
  items with an empty or NULL-only result are left out.

Either way, as for the other EHR datasets: unanswerable questions (label ``null``) only with
``abstention=True`` (category ``unanswerable``, gold: abstain); tie-dependent gold (a result
that changes when only the row order of the database changes) is left out; no single value
may be the whole answer of more than 1.25 % of the items (a constant answer earns almost
nothing; mostly yes/no questions are left out); the grading spec (count questions, tied
"top N") is stored with the gold and answers are graded by
:func:`medagentgym.graders.ehr_answer_match`. What was kept and why the rest was not is the
build report (:func:`build_items`), recorded in the task cache's manifest.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import re
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field

from medagentgym.data import databases
from medagentgym.tasks.base import DatasetFamily, DatasetOptions
from medagentgym.tasks.family import option
from medagentgym.types import Grade, GroundTruth, Provenance, Task

NOW = "2100-12-31 23:59:00"
#: bumped when the items built from the same inputs change (task caches key on it)
ITEMS_VERSION = 2
MAX_ANSWER_SHARE = 0.0125
#: the release's splits -> ours
SPLITS = {"train": "train", "valid": "valid", "test": "test"}
RELEASE_DIR = "mimic_iv"

Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]

_CATEGORIES: tuple[tuple[str, frozenset[str]], ...] = (
    ("cost", frozenset({"cost"})),
    ("microbiology", frozenset({"microbiologyevents"})),
    ("intake_output", frozenset({"inputevents", "outputevents"})),
    ("vital", frozenset({"chartevents"})),
    ("lab", frozenset({"labevents", "d_labitems"})),
    ("medication", frozenset({"prescriptions"})),
    ("procedure", frozenset({"procedures_icd", "d_icd_procedures"})),
    ("diagnosis", frozenset({"diagnoses_icd", "d_icd_diagnoses"})),
)


def tables_of(sql: str) -> set[str]:
    """The tables a query reads (``FROM`` / ``JOIN`` targets)."""
    return set(re.findall(r"\b(?:from|join)\s+([a-z_][a-z0-9_]*)", sql.lower()))


def normalize(sql: str) -> str:
    """The release's SQL as executed: EHRSQL's rewriting (``current_time`` -> the literal
    now, ``%y`` -> ``%Y``, vital-sign ranges) and subquery aliases in lower case (``T1.C1``
    -> ``t1.c1``; SQLite identifiers ignore case) so that "top N" questions are recognised."""
    from medagentgym.tasks import ehrsql_instances as ei

    return re.sub(r"\bT(\d+)\.C(\d+)\b", r"t\1.c\2", ei.normalize_sql(sql, NOW))


def category_of(sql: str) -> str:
    """Coarse category by the tables the SQL touches (as the other EHR datasets)."""
    tabs = tables_of(sql)
    for name, group in _CATEGORIES:
        if tabs & group:
            return name
    return "admission"


# --------------------------------------------------------------------------- the release


class Item(BaseModel):
    """One published item: question, SQL (``None``: unanswerable) and the authors' answer."""

    id: str
    split: str
    question: str
    sql: str | None
    answer: str | None  # the authors' answer as published (text), None for unanswerable
    template: str | None = None


def _load_json(path: Path) -> Any:
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def _find(base: Path, name: str) -> Path | None:
    for p in (base / f"{name}.gz", base / name):
        if p.is_file():
            return p
    return None


def load_release(src: str | Path) -> list[Item]:
    """Every item of the EHRSQL-2024 release under ``src`` (the pulled ``ehrsql2024`` source,
    or the repository's ``data/`` folder): ``mimic_iv/{train,valid,test}/{data,label,
    answer}.json[.gz]`` (and ``annotated.json`` where present, for the templates)."""
    from medagentgym.errors import ConfigurationError

    root = Path(src)
    if (root / RELEASE_DIR).is_dir():
        root = root / RELEASE_DIR
    items: list[Item] = []
    for split in SPLITS:
        d = root / split
        data, label, answer = (_find(d, f"{n}.json") for n in ("data", "label", "answer"))
        if data is None or label is None:
            raise ConfigurationError(f"{d} lacks data.json / label.json (is {src} the "
                                     "EHRSQL-2024 release?); run `medagentgym data pull "
                                     "ehrsql2024`")
        if answer is None:
            raise ConfigurationError(f"{d} has no answer.json: mimic_iv is graded against the "
                                     "authors' answers, so the release's answer files are needed")
        labels, answers = _load_json(label), _load_json(answer)
        annotated = _find(d, "annotated.json")
        templates = ({r["id"]: r.get("template") for r in _load_json(annotated)}
                     if annotated else {})
        for rec in _load_json(data)["data"]:
            sql = labels.get(rec["id"])
            sql = None if sql in (None, "null") else str(sql)
            ans = answers.get(rec["id"])
            items.append(Item(id=str(rec["id"]), split=SPLITS[split],
                              question=str(rec["question"]), sql=sql,
                              answer=None if sql is None or ans in (None, "null") else str(ans),
                              template=templates.get(rec["id"])))
    return items


# --------------------------------------------------------------------------- execution


def authors_form(rows: list[list[Any]] | list[tuple]) -> str:
    """A result as EHRSQL-2024's ``answer.json`` writes it: every value as text (floats
    rounded to 3 places), rows sorted, the first 100."""

    def text(v: Any) -> str:
        return str(round(v, 3) if isinstance(v, float) else v)

    return str(sorted([[text(c) for c in r] for r in rows])[:100])


class BuildReport(BaseModel):
    """What :func:`build_items` kept, and why it left out the rest."""

    database: str
    source: str  # "imported" | "synthetic"
    items: int = 0
    answerable: int = 0
    unanswerable: int = 0
    kept: int = 0
    kept_by_split: dict[str, int] = Field(default_factory=dict)
    #: answerable items whose SQL gave the authors' answer on our database (imported)
    agree: int = 0
    #: reason -> count, for the answerable items left out
    left_out: dict[str, int] = Field(default_factory=dict)
    answer_capped_values: dict[str, int] = Field(default_factory=dict)
    top_n_gold_gt_n: int = 0
    count_questions: int = 0
    seconds: float = 0.0


def empty_tables(conn: sqlite3.Connection) -> set[str]:
    """The tables of the database behind ``conn`` that hold no row."""
    names = [r[0] for r in conn.execute(
        "select name from sqlite_master where type = 'table' and name not like 'sqlite_%'")]
    return {n for n in names if conn.execute(f'select 1 from "{n}" limit 1').fetchone() is None}


def build_items(items: list[Item], db_path: str | Path, *, source: str,
                abstention: bool = False, max_answer_share: float | None = MAX_ANSWER_SHARE,
                tie_check: bool = True, timeout_s: float = 10.0,
                seed: int = 0) -> tuple[list[Any], BuildReport]:
    """Instances (:class:`medagentgym.tasks.ehrsql_instances.Instance`, gold = the item's SQL
    executed on ``db_path``) for the items that are fair on this database, and the report.
    ``source="imported"`` keeps an item only when that gold matches the authors' answer."""
    from medagentgym.tasks import ehrsql_instances as ei

    started = time.monotonic()
    report = BuildReport(database=str(db_path), source=source, items=len(items))
    left: Counter = Counter()
    conn = sqlite3.connect(f"file:{Path(db_path).resolve()}?mode=ro", uri=True)
    empty = empty_tables(conn)
    with contextlib.ExitStack() as stack:
        tie_conn = None
        if tie_check:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="mag-mimic-iv-"))
            rev = ei.reversed_copy(db_path, Path(tmp) / "reversed.sqlite")
            tie_conn = sqlite3.connect(f"file:{rev}?mode=ro", uri=True)
            stack.callback(tie_conn.close)
        stack.callback(conn.close)
        out: list[Any] = []
        for it in items:
            if it.sql is None:
                report.unanswerable += 1
                if abstention:
                    out.append(ei.Instance(id=it.id, db_id="mimic_iv", category="unanswerable",
                                           template_id=_template_id(it), question=it.question,
                                           sql="", answer=None, is_impossible=True, now=NOW,
                                           source_id=it.id, values={"split": it.split}))
                continue
            report.answerable += 1
            sql = normalize(it.sql)
            missing = sorted(tables_of(sql) & empty)
            if missing:
                left[f"table empty in this database: {', '.join(missing)}"] += 1
                continue
            try:
                rows = ei.execute_sql(conn, sql, timeout_s=timeout_s)
            except sqlite3.OperationalError as exc:
                left["timeout" if "interrupt" in str(exc) else "sql error"] += 1
                continue
            except (sqlite3.Error, ValueError):
                left["sql error or too many rows"] += 1
                continue
            if source == "imported":
                if authors_form(rows) != it.answer:
                    left["disagrees with the authors' answer"] += 1
                    continue
                report.agree += 1
            elif not rows or all(v is None for r in rows for v in r):
                left["empty on this database"] += 1
                continue
            if tie_conn is not None:
                try:
                    again = ei.execute_sql(tie_conn, sql, timeout_s=timeout_s)
                except (sqlite3.Error, ValueError):
                    again = None
                if again is None or ei.rows_key(again) != ei.rows_key(rows):
                    left["tie-dependent gold (changes with the row order)"] += 1
                    continue
            grading = ei.grading_spec(sql, it.question, rows, conn, timeout_s)
            out.append(ei.Instance(id=it.id, db_id="mimic_iv", category=category_of(sql),
                                   template_id=_template_id(it), question=it.question, sql=sql,
                                   answer=rows, now=NOW, grading=grading, source_id=it.id,
                                   values={"split": it.split}))
    if max_answer_share is not None:
        out = _cap(out, max_answer_share, seed, report)
    for inst in out:
        split = inst.values["split"]
        report.kept_by_split[split] = report.kept_by_split.get(split, 0) + 1
        g = inst.grading or {}
        report.count_questions += bool(g.get("count"))
        report.top_n_gold_gt_n += bool(g.get("ranks"))
    capped = sum(report.answer_capped_values.values())
    if capped:
        left["answer cap (one value answers too many items)"] += capped
    report.left_out = dict(sorted(left.items(), key=lambda kv: -kv[1]))
    report.kept = len(out)
    report.seconds = round(time.monotonic() - started, 2)
    return out, report


def _template_id(it: Item) -> str:
    key = it.template or it.id
    return "mimic_iv-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]


def _cap(instances: list[Any], share: float, seed: int, report: BuildReport) -> list[Any]:
    """Leave out items so that no single answer value is the whole answer of more than
    ``share`` of the answerable items that remain (by a hash of ``seed`` and the id)."""
    from medagentgym.tasks import ehrsql_instances as ei

    by_value: dict[str, list[Any]] = {}
    for inst in instances:
        key = None if inst.is_impossible else ei.constant_key(inst)
        if key is not None:
            by_value.setdefault(key, []).append(inst)
    for group in by_value.values():
        group.sort(key=lambda i: hashlib.sha1(f"{seed}:{i.id}".encode()).hexdigest())
    n = sum(not i.is_impossible for i in instances)
    keep = {key: len(group) for key, group in by_value.items()}
    while True:  # the limit is a share of what remains, so shrink to a fixed point
        remaining = n - sum(len(g) - keep[k] for k, g in by_value.items())
        limit = max(1, int(share * remaining))
        new = {k: min(len(g), limit) for k, g in by_value.items()}
        if new == keep:
            break
        keep = new
    drop: set[str] = set()
    for key, group in by_value.items():
        if len(group) > keep[key]:
            drop.update(i.id for i in group[keep[key]:])
            report.answer_capped_values[key] = len(group) - keep[key]
    return [i for i in instances if i.id not in drop]


# --------------------------------------------------------------------------- the family


class MimicIvOptions(DatasetOptions):
    """Options of ``mimic_iv`` (EHRSQL-2024 on MIMIC-IV)."""

    database: Literal["auto", "synthetic", "imported"] = option(
        "auto", "which build: imported when present else synthetic (auto), or one of them")
    patients: int = option(databases.DEFAULT_PATIENTS, "patients of the synthetic database",
                           ge=1, client_le=2000)
    db_seed: Seed = option(databases.DEFAULT_SEED, "seed of the synthetic database")
    seed: Seed = option(0, "seed of the answer cap's choice")
    abstention: bool = option(
        False, "also pose the release's unanswerable questions (category 'unanswerable'; "
        "answering None scores 1); default: answerable questions only")


class MimicIvFamily(DatasetFamily):
    """EHRSQL-2024 questions over MIMIC-IV (see the module docstring)."""

    allowed_actions = ("request_info", "validate_code", "debug")
    preload = "core"
    Options: ClassVar[type[MimicIvOptions]] = MimicIvOptions
    cache_version = ITEMS_VERSION

    options: MimicIvOptions

    def __init__(self, spec: Any, **options: Any) -> None:
        super().__init__(spec, **options)
        self.database = databases.get_database(spec.databases[0])
        self._db: databases.Database | None = None
        self.build_report: dict[str, Any] | None = None

    @property
    def db(self) -> databases.Database:
        if self._db is None:
            o = self.options
            self._db = databases.resolve(self.database.id, o.database, patients=o.patients,
                                         seed=o.db_seed, home=self.home)
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
        return {"dataset": self.name, "db": self.db.build_key, "seed": o.seed,
                "abstention": o.abstention, "items": ITEMS_VERSION}

    def cache_manifest(self) -> dict[str, Any]:
        return {"database": str(self.db.path),
                **({"build_report": self.build_report} if self.build_report else {})}

    def build_records(self) -> list[dict[str, Any]]:
        items = load_release(self.source_dir())
        source = "imported" if self.db.source == "imported" else "synthetic"
        instances, report = build_items(items, self.db.path, source=source,
                                        abstention=self.options.abstention,
                                        seed=self.options.seed)
        self.build_report = report.model_dump()
        return [self._record(inst) for inst in instances]

    def _inputs(self) -> dict[str, str]:
        inputs = {self.db_file: str(self.db.path)}
        if self.db.csv_dir.is_dir():
            inputs[self.csv_dir] = str(self.db.csv_dir)
        return inputs

    def _record(self, inst: Any) -> dict[str, Any]:
        gold_by = ("the authors' answer (matched by the SQL on this database)"
                   if self.db.source == "imported" else "the SQL executed on this database")
        task = Task(
            id=f"{self.name}-{inst.id}", dataset=self.name, category=inst.category,
            split=inst.values["split"], goal=inst.question, inputs=self._inputs(),
            allowed_actions=self.allowed_actions,
            provenance=Provenance(
                source=f"EHRSQL-2024 (MIMIC-IV demo); gold: {gold_by}",
                database=f"{self.database.description}, {self.db.description}",
                licence="CC BY 4.0 (questions); ODbL (MIMIC-IV demo)", original_id=inst.id),
            metadata={"template_id": inst.template_id, "is_impossible": inst.is_impossible},
        )
        truth = GroundTruth(kind="sql_rows", value=inst.answer, solution=self._oracle(inst),
                            extra={"sql": inst.sql, "grading": inst.grading})
        return self.record(task, truth)

    def _oracle(self, inst: Any) -> str:
        if inst.is_impossible:
            return "answer = None  # the question cannot be answered from this database\n"
        return ("import sqlite3\n"
                f"con = sqlite3.connect('file:{self.db_file}?mode=ro', uri=True)\n"
                f"answer = [list(row) for row in con.execute({inst.sql!r}).fetchall()]\n")

    # -- prompting ------------------------------------------------------------------------
    def instructions(self, task: Task) -> str:
        from medagentgym.data.schema import describe

        has_csv = self.db.csv_dir.is_dir()
        return (
            f"Answer questions about the {self.database.description} electronic health record "
            "database by writing Python code.\n"
            f"The data are read-only: a SQLite database at {self.db_file}"
            + (f" and the same tables as CSV files in {self.csv_dir}/ (one <table>.csv per "
               "table)" if has_csv else "")
            + ". Use sqlite3 or pandas.\n"
            f"Assume the current time is {NOW}.\n"
            f"The tables:\n{describe(self.database.schema)}\n"
            "Store the final result in the variable `answer`: a single value, a list of values, "
            "or a list of rows (a pandas DataFrame works too). If the question cannot be "
            "answered from the data, set answer = None."
        )

    # -- grading --------------------------------------------------------------------------
    def grade_value(self, task: Task, answer: Any, *, stage: int = 0) -> Grade:
        from medagentgym.graders import ehr_answer_match

        truth = task.truth
        if truth.value is None or task.metadata.get("is_impossible"):
            if answer is None or (isinstance(answer, list | str) and len(answer) == 0):
                return Grade.right("correctly abstained")
            return Grade.wrong("this question cannot be answered from the data")
        return ehr_answer_match(answer, truth.value, truth.extra.get("grading"))

    def info_index(self, task: Task) -> Any:
        from medagentgym.data.info import get_index

        return get_index(self.db.path)
