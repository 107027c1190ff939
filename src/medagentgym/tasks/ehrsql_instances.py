"""Question templates of EHRSQL / MIMICSQL and their re-instantiation on the database in use.

The question/SQL pairs published with EHRSQL (MIMIC-III, eICU) and MIMICSQL (TREQS) were
answered on databases built from credentialed data; their answers are wrong on any other
database (the open 100-patient demos, the synthetic generators). This module turns the
published items into *templates* (SQL and question with ``{slot}`` placeholders), samples new
slot values **from the database in use** and recomputes every answer by executing the gold
SQL there. Everything here is a pure function of its inputs (files, a SQLite path, a seed).

Public API
----------
``load_ehrsql_items`` / ``load_templates`` (EHRSQL) · ``load_treqs`` (MIMICSQL) ·
``instantiate`` / ``instantiate_with_report`` / ``instantiate_treqs`` · ``split_instances`` ·
``build_sequences`` (EHR-SeqSQL-style chains) · ``load_official`` (MedAgentGym task files) ·
``load_paper_split`` / ``instantiate_paper_split`` / ``carve_valid`` (the paper's task ids) ·
``normalize_sql`` / ``fill_sql`` / ``fill_question`` / ``execute_sql`` · ``grading_spec``
(how an answer is graded) · ``reversed_copy`` / ``rows_key`` (the tie check) ·
``constant_key`` (the answer cap).

Templates (EHRSQL)
------------------
An item's template key is ``(db_id, q_tag, t_tag, o_tag)``; the template id is
``"{db_id}-{sha1(key)[:12]}"``. Slots are

* **value slots** — the keys of the item's ``value`` dict (``patient_id``, ``drug_name``,
  ``lab_name`` ...). A value is located in the SQL as a quoted literal (``'aspirin'``), as a
  bare number after a comparison (``subject_id = 1234``, ``valuenum > 87.0``) or, for eICU
  vital signs, as a column (``vitalperiodic.sao2``); in the question case-insensitively at word
  boundaries. Slots that share one value (``abbreviation`` = ``diagnosis_name`` =
  ``procedure_name``) collapse into the slot named in ``q_tag``. A slot absent from the SQL is
  dropped.
* **time slots** — literals of the time filters (``t_tag``), which EHRSQL does not list in
  ``value``: ``year`` (``strftime('%Y',x) >= '2101'`` / "2101"), ``year_month``
  (``'2101-05'`` / "05/2101"), ``date`` (``'2101-05-03'`` / "05/03/2101"), ``month``
  (``'05'`` / "05/this year"), ``month_day`` (``'05-03'`` / "05/03/last year"), ``day``
  (``'21'`` / "this month/21") and ``n_year`` / ``n_month`` / ``n_day`` (``datetime(
  current_time,'-2 year')`` / "2 year(s) ago"). A time literal becomes a slot only where the
  machine question (``template`` field) shows it; otherwise it stays a constant.
* **derived slots** — ``vital_lower`` / ``vital_upper``: the normal range of the vital sign in
  ``vital_name`` (EHRSQL writes them as ``heart_rate_lower`` ... and substitutes them when it
  executes a query; :data:`NORMAL_RANGES`).

SQL normalisation (what EHRSQL's evaluation does before executing, and what every stored SQL
here has had done): ``strftime('%y'...)`` → ``'%Y'`` (SQLite has no ``%y`` before 3.44 and
MedAgentGym rewrote it too), ``'%j'`` → ``'%J'`` (day differences across years),
``current_time`` → the literal "now" (default ``2105-12-31 23:59:00``), ``<vital>_lower`` /
``<vital>_upper`` → numbers.

Within a template the most common SQL skeleton is kept; every member item whose skeleton equals
it contributes its paraphrased question (``question``) as a question skeleton when all slots
are found in it (else the machine question ``template`` is used). Unanswerable
(``is_impossible``) items become one template each, flagged, with ``patient <id>`` turned into
a slot.

Categories (coarse, 9 per database): the answer's subject, by the tables the SQL touches, first
match in this order — ``cost`` (cost) · ``microbiology`` (microbiologyevents, microlab) ·
``intake_output`` (inputevents_cv, outputevents, intakeoutput) · ``vital`` (chartevents,
vitalperiodic) · ``lab`` (labevents, d_labitems, lab) · ``medication`` (prescriptions,
medication, allergy) · ``procedure`` (procedures_icd, d_icd_procedures, treatment) ·
``diagnosis`` (diagnoses_icd, d_icd_diagnoses, diagnosis) · else ``admission`` (patients,
admissions, icustays, transfers, patient). TREQS (4 categories) by the outer SELECT:
``count`` · ``average`` · ``min_max`` · ``retrieval``.

Sampling
--------
Per database, *sources* aggregate event rows per ``(patient, values)`` with their first/last
time (e.g. prescriptions → ``(subject_id, drug, route, min(startdate), max(startdate))``). For
a template, the source covering most of its value slots (then: whose time column or table the
SQL uses) is the *anchor*: one aggregated row gives the patient, its values and an event time
from which the time slots are derived so that the anchor event satisfies the time filter.
Further slots are drawn from the same patient's rows of their own source (distinct values for
``drug_name1..3``), falling back to any patient. Templates about a current hospital / ICU stay
draw only patients with one; templates with a fixed relative period ("this year", "last
month") prefer rows in that period; vital-sign "normal" templates only vitals with a known
range. Each candidate is executed (progress-handler timeout); empty or NULL-only results are
rejected. The random generator of a template is seeded from ``(seed, template id)``: results
are deterministic, and — before the answer cap below — do not depend on which other templates
are instantiated.

Gold that is right whatever an agent does (:func:`instantiate_with_report`)
---------------------------------------------------------------------------
* **Answerable only** by default (the paper's split has no unanswerable question);
  ``include_impossible=True`` adds them (category ``unanswerable``, gold: abstain).
* **Tie-safe**: each candidate's gold SQL also runs on :func:`reversed_copy` of the database
  (every table's rows stored in reverse order); a candidate whose result changes — "the last
  procedure of patient X" when two procedures share the time, a ``GROUP BY`` representative —
  is dropped and another sampled (``report.dropped_tie``).
* **No answer a constant can hit**: within a template a lone 0 or 1, or the single value of an
  instance already kept, only when nothing else turned up; yes/no templates (``select
  count(*)>0``) get "yes" and "no" in turn (a "no" asks about another patient); across the
  dataset no single value may be the whole answer of more than ``max_answer_share``
  (:data:`MAX_ANSWER_SHARE`, 1.25 %) of the instances — the excess is left out, from the
  templates with the most instances first (``report.answer_capped``). This leaves out most
  yes/no templates (they can only answer 0/1).
* **Grading spec** (:func:`grading_spec`, stored with the gold): ``count`` (the question asks
  for a count: repeated rows are information, a de-duplicated answer is wrong), ``top_n`` and
  ``ranks`` (EHRSQL's "top N" ranks with ``dense_rank() <= N``: the dense rank of each gold
  row, found by re-running with ``<= k``, so that exactly N rows of a tied set are accepted).

TREQS: conditions ``table.'column' <op> 'value'`` are the slots (``{table}_{column}``); values
are drawn from the rows of one anchor admission (``hadm_id``) so that all conditions hold
together (``<`` / ``>`` thresholds are moved past the anchor's value).

Coverage (``per_template=3``, seed 0; answerable templates → templates with ≥1 instance →
templates kept after the answer cap → instances), measured when this was written —
``tests/tasks/test_ehrsql_instances.py`` prints the live numbers:

* synthetic (100 patients): mimic_iii 1322 → 1281 → 1113 → 2793; eicu 1343 → 1330 → 1181 →
  3006; treqs 721 → 721 → 720 → 1796.
* open demo (imported): mimic_iii 1322 → 1233 → 1084 → 2693 (see docs/datasets.md for eicu,
  whose mirror lacks ``lab`` and ``vitalperiodic``, and treqs).

What cannot be instantiated: EHRSQL items whose SQL hard-codes event timestamps (5 MIMIC-III,
11 eICU "change between two measurements" items: skipped), questions about a current ICU stay
or "today" when the database has no such rows.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gzip
import hashlib
import itertools
import json
import math
import random
import re
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from collections.abc import Sequence as _Seq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "DEFAULT_NOW",
    "INSTANCES_VERSION",
    "MAX_ANSWER_SHARE",
    "NORMAL_RANGES",
    "PAPER_SPLIT_FILES",
    "TIE_CHECK_MAX_BYTES",
    "Instance",
    "InstantiationReport",
    "PaperSplit",
    "Sequence",
    "Template",
    "asks_count",
    "build_sequences",
    "carve_valid",
    "category_of",
    "constant_key",
    "display_value",
    "execute_sql",
    "fill_question",
    "fill_sql",
    "grading_spec",
    "instantiate",
    "instantiate_paper_split",
    "instantiate_treqs",
    "instantiate_with_report",
    "is_yes_no",
    "load_ehrsql_items",
    "load_official",
    "load_paper_split",
    "load_templates",
    "load_treqs",
    "normalize_sql",
    "paper_split_paths",
    "reversed_copy",
    "rows_key",
    "split_instances",
    "templates_from_items",
    "top_n_of",
    "top_n_ranks",
]

DEFAULT_NOW = "2105-12-31 23:59:00"
#: bumped whenever the instances built from the same inputs change (task caches key on it)
INSTANCES_VERSION = 4
_TFMT = "%Y-%m-%d %H:%M:%S"

# Normal ranges of vital signs used by EHRSQL's "has the <vital> been normal" questions
# (EHRSQL writes ``<key>_lower`` / ``<key>_upper`` in its SQL and substitutes these numbers).
NORMAL_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (35.5, 38.1),
    "sao2": (95.0, 100.0),
    "heart_rate": (60.0, 100.0),
    "respiration": (12.0, 18.0),
    "systolic_bp": (90.0, 120.0),
    "diastolic_bp": (60.0, 90.0),
    "mean_bp": (60.0, 110.0),
}
# vital_name value (MIMIC-III d_items.label, eICU vitalperiodic column) -> NORMAL_RANGES key
_VITAL_RANGE_KEY: dict[str, str] = {
    "temperature c (calc)": "temperature",
    "temperature c": "temperature",
    "temperature": "temperature",
    "sao2": "sao2",
    "heart rate": "heart_rate",
    "heartrate": "heart_rate",
    "respiratory rate": "respiration",
    "respiration": "respiration",
    "arterial bp [systolic]": "systolic_bp",
    "systemicsystolic": "systolic_bp",
    "arterial bp [diastolic]": "diastolic_bp",
    "systemicdiastolic": "diastolic_bp",
    "arterial bp mean": "mean_bp",
    "systemicmean": "mean_bp",
}
_EICU_VITAL_COLUMNS = (
    "temperature",
    "sao2",
    "heartrate",
    "respiration",
    "systemicsystolic",
    "systemicdiastolic",
    "systemicmean",
)

TIME_SLOTS = (
    "year",
    "year_month",
    "date",
    "month",
    "month_day",
    "day",
    "n_year",
    "n_month",
    "n_day",
)
DERIVED_SLOTS = ("vital_lower", "vital_upper")


# =========================================================================== models


class Template(BaseModel):
    """A question template: SQL and question skeletons with ``{slot}`` placeholders."""

    id: str
    db_id: str
    category: str
    tag: str = ""
    sql: str = ""
    questions: list[str] = Field(default_factory=list)
    slots: list[str] = Field(default_factory=list)
    slot_ops: dict[str, str] = Field(default_factory=dict)
    example_values: dict[str, str] = Field(default_factory=dict)
    item_ids: list[str] = Field(default_factory=list)
    item_values: list[dict[str, str]] = Field(default_factory=list)
    #: each item's own question skeleton ("" when it has none that shows every slot)
    item_questions: list[str] = Field(default_factory=list)
    is_impossible: bool = False


class Instance(BaseModel):
    """One concrete question with its gold SQL and the answer computed on the database in use."""

    id: str
    db_id: str
    category: str
    template_id: str
    question: str
    sql: str
    values: dict[str, str] = Field(default_factory=dict)
    answer: Any = None
    is_impossible: bool = False
    now: str | None = None
    #: how the answer is graded (:func:`grading_spec`; :func:`medagentgym.graders.ehr_answer_match`)
    grading: dict[str, Any] = Field(default_factory=dict)
    #: the published task this instance stands for (the paper's split), if any
    source_id: str | None = None


class Sequence(BaseModel):
    """A chain of related sub-questions about one patient (EHR-SeqSQL style)."""

    id: str
    db_id: str
    patient_id: str
    sub_questions: list[Instance]


class InstantiationReport(BaseModel):
    db_id: str
    db_path: str
    templates: int = 0
    templates_impossible: int = 0
    templates_instantiated: int = 0
    #: templates with at least one instance before ``max_answer_share`` left some out
    templates_sampled: int = 0
    instances: int = 0
    attempts: int = 0
    dropped_empty: int = 0
    dropped_error: int = 0
    dropped_timeout: int = 0
    dropped_too_large: int = 0
    zero_answers: int = 0
    #: how tie-dependent gold was detected ("reversed-copy", or why it was not checked)
    tie_check: str = "off"
    #: candidates dropped because their gold changed when only the row order changed
    dropped_tie: int = 0
    #: candidates whose gold is a lone 0 or 1 (kept only when a template has nothing better)
    trivial_fallbacks: int = 0
    #: yes/no questions (``select count(*)>0``) kept, and how many of them answer "yes"
    yes_no_instances: int = 0
    yes_no_yes: int = 0
    #: instances left out so that no single answer value exceeds ``max_answer_share``
    answer_capped: int = 0
    answer_capped_values: dict[str, int] = Field(default_factory=dict)
    #: instances whose question asks for "top N" (EHRSQL ``dense_rank() <= N``), and those
    #: whose gold holds more than N rows because of ties (graded with their ranks)
    top_n_instances: int = 0
    top_n_gold_gt_n: int = 0
    #: instances whose gold repeats a row (a de-duplicated answer is accepted unless the
    #: question asks for a count)
    duplicate_row_golds: int = 0
    count_questions: int = 0
    unknown_slots: dict[str, int] = Field(default_factory=dict)
    skipped: dict[str, int] = Field(default_factory=dict)
    #: the paper's split (:func:`instantiate_paper_split`), per split: ``ids`` requested,
    #: ``instantiated``, ``published_values`` (kept their published values and question),
    #: ``not_instantiated`` (reason -> count) and ``missing_ids`` (id -> reason)
    paper_split: dict[str, dict[str, Any]] = Field(default_factory=dict)
    by_category: dict[str, list[int]] = Field(default_factory=dict)
    seconds: float = 0.0


# =========================================================================== helpers


def _sha(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def _read_records(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        return list(json.loads(stripped))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _find_file(base: Path) -> Path | None:
    for cand in (base, base.with_name(base.name + ".gz")):
        if cand.exists():
            return cand
    return None


_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def _fmt_num(v: Any) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return f"{v:.1f}"
        return repr(v)
    return str(v)


def _int_text(v: Any) -> str:
    if isinstance(v, float) and v == int(v):
        return str(int(v))
    return str(v)


# =========================================================================== SQL normalisation

_STRFTIME_FMT = re.compile(r"strftime\(\s*'([^']*)'")
_RANGE_IDENT = re.compile(r"\b([a-z0-9_]+?)_(lower|upper)\b")


def _fix_strftime(sql: str) -> str:
    return _STRFTIME_FMT.sub(
        lambda m: "strftime('" + m.group(1).replace("%y", "%Y").replace("%j", "%J") + "'", sql
    )


def _replace_ranges(sql: str) -> str:
    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in NORMAL_RANGES:
            return m.group(0)
        lo, hi = NORMAL_RANGES[key]
        return str(lo if m.group(2) == "lower" else hi)

    return _RANGE_IDENT.sub(sub, sql)


def normalize_sql(sql: str, now: str = DEFAULT_NOW) -> str:
    """EHRSQL's pre-execution rewriting: ``%y``→``%Y``, ``%j``→``%J``, ``current_time`` → now,
    vital-sign range identifiers → numbers."""
    out = _fix_strftime(sql)
    out = re.sub(r"\bcurrent_time\b", f"'{now}'", out)
    return _replace_ranges(out)


def fill_sql(skeleton: str, values: dict[str, str], *, now: str = DEFAULT_NOW) -> str:
    """Fill a SQL skeleton. String values are escaped for single-quoted literals."""
    vals = dict(values)
    if "{vital_lower}" in skeleton or "{vital_upper}" in skeleton:
        key = _VITAL_RANGE_KEY.get(str(vals.get("vital_name", "")))
        if key is None:
            raise KeyError(f"no normal range for vital {vals.get('vital_name')!r}")
        lo, hi = NORMAL_RANGES[key]
        vals["vital_lower"], vals["vital_upper"] = str(lo), str(hi)

    def sub(m: re.Match) -> str:
        return str(vals[m.group(1)]).replace("'", "''")

    out = _PLACEHOLDER.sub(sub, skeleton)
    return re.sub(r"\bcurrent_time\b", f"'{now}'", out)


def display_value(slot: str, value: str) -> str:
    """How a slot value is written in a question (``year_month`` '2101-05' -> '05/2101')."""
    base = _base(slot)
    if base == "year_month":
        y, m = value.split("-")
        return f"{m}/{y}"
    if base == "date":
        y, m, d = value.split("-")
        return f"{m}/{d}/{y}"
    if base == "month_day":
        m, d = value.split("-")
        return f"{m}/{d}"
    return str(value)


def fill_question(skeleton: str, values: dict[str, str]) -> str:
    """Fill a question skeleton (time values in the question's display format)."""
    out = _PLACEHOLDER.sub(lambda m: display_value(m.group(1), str(values[m.group(1)])), skeleton)
    if any(_base(k).startswith("n_") and str(v) == "1" for k, v in values.items()):
        out = re.sub(r"(?<![\d.])1 (year|month|day)s\b", r"1 \1", out)
    return out


def _base(slot: str) -> str:
    return re.sub(r"\d+$", "", slot)


# =========================================================================== execution


@dataclass
class _ExecResult:
    rows: list[list[Any]] | None
    status: str  # ok | error | timeout


def execute_sql(
    conn: sqlite3.Connection, sql: str, *, timeout_s: float = 5.0, max_rows: int = 10_000
) -> list[list[Any]]:
    """Execute ``sql`` with a wall-clock limit; returns rows as lists (JSON-able values).

    Raises ``sqlite3.OperationalError`` ("interrupted") on timeout and ``ValueError`` when
    more than ``max_rows`` rows come back."""
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 2000)
    try:
        cur = conn.execute(sql)
        rows = cur.fetchmany(max_rows + 1)
    finally:
        conn.set_progress_handler(None, 0)
    if len(rows) > max_rows:
        raise ValueError("too many rows")
    return [[_jsonable(v) for v in r] for r in rows]


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _run(conn: sqlite3.Connection, sql: str, timeout_s: float, max_rows: int) -> _ExecResult:
    try:
        return _ExecResult(execute_sql(conn, sql, timeout_s=timeout_s, max_rows=max_rows), "ok")
    except sqlite3.OperationalError as exc:
        return _ExecResult(None, "timeout" if "interrupt" in str(exc) else "error")
    except ValueError:
        return _ExecResult(None, "too_large")
    except sqlite3.Error:
        return _ExecResult(None, "error")


def _run_counted(conn: sqlite3.Connection, sql: str, timeout_s: float,
                 report: InstantiationReport,
                 tie_conn: sqlite3.Connection | None = None) -> _ExecResult | None:
    """Run a candidate's gold SQL; ``None`` (and the reason counted) when it is dropped.

    With ``tie_conn`` (the same database, rows stored in reverse order: :func:`reversed_copy`)
    the SQL is run there too, and a candidate whose result differs — its gold depends on how
    ties are broken — is dropped."""
    report.attempts += 1
    res = _run(conn, sql, timeout_s, 10_000)
    if res.status == "ok" and res.rows is not None and not _is_empty(res.rows) and tie_conn:
        again = _run(tie_conn, sql, timeout_s, 10_000)
        if again.status != "ok" or again.rows is None:
            res = again
        elif rows_key(again.rows) != rows_key(res.rows):
            report.dropped_tie += 1
            return None
    if res.status != "ok" or res.rows is None:
        if res.status == "timeout":
            report.dropped_timeout += 1
        elif res.status == "too_large":
            report.dropped_too_large += 1
        else:
            report.dropped_error += 1
        return None
    if _is_empty(res.rows):
        report.dropped_empty += 1
        return None
    return res


def _canon(v: Any) -> Any:
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return int(v)
        return float(f"{v:.10g}")  # summation order may change the last bits
    return v


def rows_key(rows: Iterable[Iterable[Any]]) -> Counter:
    """A result as a multiset of rows (floats to 10 significant digits), for comparing
    the results of one query on two row orders."""
    return Counter(json.dumps([_canon(v) for v in r], default=str) for r in rows)


#: a database larger than this is not copied for the tie check (it is reported as skipped)
TIE_CHECK_MAX_BYTES = 4 << 30


def reversed_copy(src: str | Path, dst: str | Path) -> Path:
    """Copy the SQLite database ``src`` to ``dst`` with every table's rows stored in reverse
    order, so that whatever a query leaves to the row order (``ORDER BY ... LIMIT`` among
    ties, bare columns of an aggregate, ``GROUP BY`` representatives) comes out the other way.
    ``INTEGER PRIMARY KEY`` columns become plain keys (their values kept) so that the storage
    order can change; indexes and views are recreated."""
    src, dst = Path(src).resolve(), Path(dst).resolve()
    out = sqlite3.connect(dst.as_uri(), uri=True)
    try:
        out.execute("pragma journal_mode = off")
        out.execute("pragma synchronous = off")
        out.execute("attach database ? as src", (src.as_uri() + "?mode=ro",))
        objects = out.execute(
            "select type, name, sql from src.sqlite_master where sql is not null "
            "and name not like 'sqlite_%' order by type = 'table' desc, rowid"
        ).fetchall()
        for typ, name, sql in objects:
            if typ != "table":
                continue
            out.execute(re.sub(r"\bINTEGER\s+PRIMARY\s+KEY\b", "INT PRIMARY KEY", sql,
                               flags=re.IGNORECASE))
            quoted = '"' + name.replace('"', '""') + '"'
            out.execute(f"insert into main.{quoted} select * from src.{quoted} "
                        "order by rowid desc")
        out.commit()
        for typ, _name, sql in objects:
            if typ in ("index", "view"):
                out.execute(sql)
        out.commit()
        analyzed = out.execute(
            "select count(*) from src.sqlite_master where name = 'sqlite_stat1'").fetchone()[0]
        out.execute("detach database src")
        if analyzed:  # the same planner statistics as the original
            out.execute("analyze")
            out.commit()
    finally:
        out.close()
    return dst


def _is_empty(rows: list[list[Any]]) -> bool:
    return not rows or all(v is None for r in rows for v in r)


def _is_zero(rows: list[list[Any]]) -> bool:
    return len(rows) == 1 and len(rows[0]) == 1 and rows[0][0] in (0, 0.0)


def _is_trivial(rows: list[list[Any]]) -> bool:
    """A lone 0 or 1: what a constant answer (or a yes/no guess) would hit."""
    if len(rows) != 1 or len(rows[0]) != 1:
        return False
    v = rows[0][0]
    return isinstance(v, int | float) and not isinstance(v, bool) and v in (0, 1)


def _repeats_single(rows: list[list[Any]], kept: list[Instance]) -> bool:
    """A single-value answer equal to that of an instance already kept for the template."""
    if len(rows) != 1 or len(rows[0]) != 1:
        return False
    key = rows_key(rows)
    return any(len(k.answer) == 1 and rows_key(k.answer) == key for k in kept)


_YES_NO_SQL = re.compile(r"^\s*select\s+count\s*\(\s*\*\s*\)\s*>\s*0\b", re.IGNORECASE)
_TOP_N_SQL = re.compile(r"(\bt\d+\.c\d+\s*<=\s*)(\d+)\b")
_COUNT_HEAD = re.compile(r"\bcount\s*\(", re.IGNORECASE)
_COUNT_WORDS = re.compile(r"\b(how many|how often|number of times|count of)\b", re.IGNORECASE)


def is_yes_no(sql: str) -> bool:
    """Whether the gold SQL answers yes/no (EHRSQL's ``select count(*)>0 ...``)."""
    return _YES_NO_SQL.match(sql) is not None


def asks_count(sql: str, question: str = "") -> bool:
    """Whether the question asks for a count (then repeated rows are information): the gold
    SQL's outer SELECT counts, or the question says "how many", "how often", "number of
    times" or "count of" ("the number of days of stay" asks for values, not a count)."""
    head = re.split(r"\bfrom\b", sql, maxsplit=1, flags=re.IGNORECASE)[0]
    return bool(_COUNT_HEAD.search(head)) or bool(_COUNT_WORDS.search(question))


def top_n_of(sql: str) -> int | None:
    """N of a "top N" question (EHRSQL ranks with ``dense_rank() ... where tK.cJ <= N``)."""
    if "dense_rank" not in sql.lower():
        return None
    found = {int(m.group(2)) for m in _TOP_N_SQL.finditer(sql)}
    return found.pop() if len(found) == 1 else None


def top_n_ranks(conn: sqlite3.Connection, sql: str, rows: list[list[Any]], n: int,
                timeout_s: float = 5.0) -> list[int] | None:
    """The dense rank of each of ``rows`` (the gold of a "top N" ``sql``), found by running
    the SQL with ``<= k`` for k = 1..N; None when they cannot be told."""
    remaining = rows_key(rows)
    by_key: dict[str, list[int]] = defaultdict(list)
    prev: Counter = Counter()
    for k in range(1, n + 1):
        variant = _TOP_N_SQL.sub(lambda m, k=k: m.group(1) + str(k), sql)
        res = _run(conn, variant, timeout_s, 10_000)
        if res.status != "ok" or res.rows is None:
            return None
        cur = rows_key(res.rows)
        for key, c in (cur - prev).items():
            by_key[key].extend([k] * c)
        prev = cur
    if prev != remaining:
        return None
    out: list[int] = []
    for r in rows:
        key = json.dumps([_canon(v) for v in r], default=str)
        if not by_key.get(key):
            return None
        out.append(by_key[key].pop(0))
    return out


def grading_spec(sql: str, question: str, rows: list[list[Any]] | None = None,
                 conn: sqlite3.Connection | None = None, timeout_s: float = 5.0) -> dict[str, Any]:
    """How an instance's answer is graded (stored with the gold; read by
    :func:`medagentgym.graders.ehr_answer_match`): ``count`` — the question asks for a count
    (no de-duplicated answer); ``top_n`` and ``ranks`` — a "top N" question whose gold has
    more than N rows because of ties (the dense rank of each gold row)."""
    spec: dict[str, Any] = {"count": asks_count(sql, question)}
    n = top_n_of(sql)
    if n is not None:
        spec["top_n"] = n
        if rows is not None and conn is not None and len(rows) > n:
            ranks = top_n_ranks(conn, sql, rows, n, timeout_s)
            if ranks is not None:
                spec["ranks"] = ranks
    return spec


# =========================================================================== categories

_CATEGORY_ORDER: tuple[tuple[str, frozenset[str]], ...] = (
    ("cost", frozenset({"cost"})),
    ("microbiology", frozenset({"microbiologyevents", "microlab"})),
    ("intake_output", frozenset({"inputevents_cv", "outputevents", "intakeoutput"})),
    ("vital", frozenset({"chartevents", "vitalperiodic"})),
    ("lab", frozenset({"labevents", "d_labitems", "lab"})),
    ("medication", frozenset({"prescriptions", "medication", "allergy"})),
    ("procedure", frozenset({"procedures_icd", "d_icd_procedures", "treatment"})),
    ("diagnosis", frozenset({"diagnoses_icd", "d_icd_diagnoses", "diagnosis"})),
)


def _tables(sql: str) -> set[str]:
    return set(re.findall(r"\b(?:from|join)\s+([a-z_][a-z0-9_]*)", sql.lower()))


def category_of(sql: str, db_id: str) -> str:
    """Coarse question category (see the module docstring for the mapping)."""
    low = sql.lower()
    if db_id == "treqs":
        head = low.split(" from ", 1)[0]
        if re.search(r"\bcount\s*\(", head):
            return "count"
        if re.search(r"\bavg\s*\(", head):
            return "average"
        if re.search(r"\b(min|max)\s*\(", head):
            return "min_max"
        return "retrieval"
    tabs = _tables(low)
    for name, group in _CATEGORY_ORDER:
        if tabs & group:
            return name
    return "admission"


# =========================================================================== EHRSQL templating

_TIME_SQL_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("year", re.compile(r"(strftime\('%Y',[^()]*\)\s*(>=|<=|=|<|>)\s*)'(\d{4})'")),
    ("year_month", re.compile(r"(strftime\('%Y-%m',[^()]*\)\s*(>=|<=|=|<|>)\s*)'(\d{4}-\d{2})'")),
    (
        "date",
        re.compile(r"(strftime\('%Y-%m-%d',[^()]*\)\s*(>=|<=|=|<|>)\s*)'(\d{4}-\d{2}-\d{2})'"),
    ),
    ("month", re.compile(r"(strftime\('%m',[^()]*\)\s*(=)\s*)'(\d{2})'")),
    ("month_day", re.compile(r"(strftime\('%m-%d',[^()]*\)\s*(=)\s*)'(\d{2}-\d{2})'")),
    ("day", re.compile(r"(strftime\('%d',[^()]*\)\s*(=)\s*)'(\d{2})'")),
)
_REL_SQL = re.compile(r"(\)\s*(>=|<=)\s*datetime\(current_time,)'-(\d+) (year|month|day)'\)")


def _time_question_pattern(slot_base: str, value: str, unit: str | None = None) -> str:
    if slot_base == "year":
        return rf"(?<![\d/]){value}(?![\d/])"
    if slot_base == "year_month":
        y, m = value.split("-")
        return rf"(?<![\d/]){m}/{y}(?!\d)"
    if slot_base == "date":
        y, m, d = value.split("-")
        return rf"(?<![\d/]){m}/{d}/{y}(?!\d)"
    if slot_base == "month":
        return rf"(?<![\d/]){value}(?=/(?:this|last) year)"
    if slot_base == "month_day":
        m, d = value.split("-")
        return rf"(?<![\d/]){m}/{d}(?=/(?:this|last) year)"
    if slot_base == "day":
        return rf"(?<=(?:this|last) month/){value}(?!\d)"
    # relative n_<unit>
    return rf"(?<![\d.]){value}(?= {unit}s?\b)"


def _value_question_pattern(value: str) -> str:
    esc = re.escape(value)
    left = r"(?<![\w])" if re.match(r"\w", value) else ""
    right = r"(?![\w])" if re.search(r"\w$", value) else ""
    if re.fullmatch(r"\d{3}-\d+", value):  # eICU uniquepid
        left, right = r"(?<![\w-])", r"(?![\w-])"
    return left + esc + right


def _templatize_question(text: str, patterns: dict[str, str]) -> str | None:
    """Replace every slot's pattern in ``text`` by ``{slot}``; None if a slot is missing or
    two slots claim overlapping spans."""
    spans: list[tuple[int, int, str]] = []
    for slot, pat in patterns.items():
        found = [(m.start(), m.end(), slot) for m in re.finditer(pat, text, flags=re.IGNORECASE)]
        if not found:
            return None
        spans.extend(found)
    spans.sort()
    for (_s1, e1, a), (s2, _e2, b) in itertools.pairwise(spans):
        if s2 < e1 and a != b:
            return None
    out, pos = [], 0
    for s, e, slot in spans:
        if s < pos:
            continue
        out.append(text[pos:s])
        out.append("{" + slot + "}")
        pos = e
    out.append(text[pos:])
    return "".join(out)


@dataclass
class _ItemTemplate:
    item_id: str
    key: tuple
    sql: str
    values: dict[str, str]
    slot_ops: dict[str, str]
    machine_q: str | None
    para_q: str | None
    problem: str | None = None


def _templatize_ehrsql_item(item: dict, db_id: str) -> _ItemTemplate:
    key = (
        db_id,
        item.get("q_tag", ""),
        tuple(item.get("t_tag") or ()),
        tuple(item.get("o_tag") or ()),
    )
    raw_sql = str(item.get("query") or "")
    iid = str(item.get("id", ""))
    res = _ItemTemplate(iid, key, "", {}, {}, None, None)
    if "{" in raw_sql or "}" in raw_sql:
        res.problem = "braces"
        return res
    if _HARDCODED_TS.search(raw_sql):
        res.problem = "hardcoded_timestamp"
        return res
    sql = _fix_strftime(raw_sql)
    q_tag = str(item.get("q_tag", ""))
    raw_values: dict[str, Any] = dict(item.get("value") or {})

    # collapse slots sharing one value, keeping the one named in q_tag
    by_value: dict[str, list[str]] = defaultdict(list)
    for k, v in raw_values.items():
        by_value[_value_text(v)].append(k)
    values: dict[str, str] = {}
    for vtext, names in by_value.items():
        named = [n for n in names if "{" + n + "}" in q_tag]
        if len(named) > 1:  # two question slots with one value: positions are ambiguous
            res.problem = "ambiguous_values"
            return res
        values[(named or sorted(names))[0]] = vtext

    q_patterns: dict[str, str] = {}
    for slot in sorted(values, key=lambda s: -len(values[s])):
        vtext = values[slot]
        raw_v = raw_values[slot]
        quoted = "'" + vtext.replace("'", "''") + "'"
        new_sql, n = _replace_literal(sql, quoted, "'{" + slot + "}'")
        if n == 0 and db_id == "eicu" and slot == "vital_name":
            new_sql, n = re.subn(
                r"\bvitalperiodic\." + re.escape(vtext) + r"\b", "vitalperiodic.{" + slot + "}", sql
            )
        if n == 0 and _looks_numeric(vtext):
            for form in dict.fromkeys([vtext, _int_text(raw_v), _fmt_num(raw_v)]):
                new_sql, n = re.subn(
                    r"(?<=[=<>] )" + re.escape(form) + r"(?![\w.])", "{" + slot + "}", sql
                )
                if n:
                    values[slot] = form
                    vtext = form
                    break
        if n == 0:
            values.pop(slot)  # not used by the SQL
            continue
        sql = new_sql
        q_patterns[slot] = _value_question_pattern(vtext)

    machine = str(item.get("template") or "")
    para = str(item.get("question") or "")

    # time literals -> slots where the machine question shows them
    slot_ops: dict[str, str] = {}
    for base, pat in _TIME_SQL_PATTERNS:
        literals = list(dict.fromkeys(m.group(3) for m in pat.finditer(sql)))
        for i, lit in enumerate(literals):
            name = base if i == 0 else f"{base}{i + 1}"
            qpat = _time_question_pattern(base, lit)
            if not re.search(qpat, machine, flags=re.IGNORECASE):
                continue
            ops = {m.group(2) for m in pat.finditer(sql) if m.group(3) == lit}
            sql = pat.sub(
                lambda m, lit=lit, name=name: (
                    m.group(1) + "'{" + name + "}'" if m.group(3) == lit else m.group(0)
                ),
                sql,
            )
            values[name] = lit
            slot_ops[name] = sorted(ops)[0]
            q_patterns[name] = qpat
    rel = list(dict.fromkeys((m.group(3), m.group(4)) for m in _REL_SQL.finditer(sql)))
    seen_units: Counter = Counter()
    for n_val, unit in rel:
        seen_units[unit] += 1
        name = f"n_{unit}" if seen_units[unit] == 1 else f"n_{unit}{seen_units[unit]}"
        qpat = _time_question_pattern("n", n_val, unit)
        if not re.search(qpat, machine, flags=re.IGNORECASE):
            continue
        ops = {
            m.group(2) for m in _REL_SQL.finditer(sql) if (m.group(3), m.group(4)) == (n_val, unit)
        }
        sql = _REL_SQL.sub(
            lambda m, n_val=n_val, unit=unit, name=name: (
                m.group(1) + "'-{" + name + "} " + unit + "')"
                if (m.group(3), m.group(4)) == (n_val, unit)
                else m.group(0)
            ),
            sql,
        )
        values[name] = n_val
        slot_ops[name] = sorted(ops)[0]
        q_patterns[name] = qpat

    # vital-sign normal ranges
    if _RANGE_IDENT.search(sql):
        vname = values.get("vital_name")
        vkey = _VITAL_RANGE_KEY.get(vname or "")
        idents = {m.group(1) for m in _RANGE_IDENT.finditer(sql) if m.group(1) in NORMAL_RANGES}
        if vkey is not None and idents == {vkey}:
            sql = re.sub(rf"\b{vkey}_lower\b", "{vital_lower}", sql)
            sql = re.sub(rf"\b{vkey}_upper\b", "{vital_upper}", sql)
        else:
            sql = _replace_ranges(sql)

    res.sql, res.values, res.slot_ops = sql, values, slot_ops
    res.machine_q = _templatize_question(machine, q_patterns) if machine else None
    res.para_q = _templatize_question(para, q_patterns) if para else None
    if res.machine_q is None and res.para_q is None:
        res.problem = "slot_not_in_question"
    return res


def _value_text(v: Any) -> str:
    if isinstance(v, (float, int)):
        return _fmt_num(v) if isinstance(v, float) else str(v)
    return str(v)


def _looks_numeric(text: str) -> bool:
    return re.fullmatch(r"-?\d+(\.\d+)?", text) is not None


def _replace_literal(sql: str, literal: str, repl: str) -> tuple[str, int]:
    """Replace a quoted literal only outside other quoted strings' interiors."""
    out, n, i = [], 0, 0
    L = len(literal)
    in_str = False
    while i < len(sql):
        if not in_str and sql.startswith(literal, i):
            out.append(repl)
            i += L
            n += 1
            continue
        ch = sql[i]
        if ch == "'":
            if in_str and i + 1 < len(sql) and sql[i + 1] == "'":
                out.append("''")
                i += 2
                continue
            in_str = not in_str
        out.append(ch)
        i += 1
    return "".join(out), n


_HARDCODED_TS = re.compile(r"'\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}'")

_IMPOSSIBLE_PATIENT = {
    "mimic_iii": re.compile(r"(?<=patient )(\d+)\b"),
    "eicu": re.compile(r"(?<=patient )(\d{3}-\d+)\b"),
}


def load_ehrsql_items(
    source_dir: str | Path,
    db_id: str,
    release: str = "2024-04-27",
    splits: _Seq[str] = ("valid", "test"),
) -> list[dict]:
    """Raw EHRSQL items. ``splits`` name EHRSQL files (``valid``, ``test``, ``train`` if
    present) or the MedAgentGym task files (``medagentgym_train``, ``medagentgym_valid``)."""
    if db_id not in ("mimic_iii", "eicu"):
        raise ValueError(f"db_id must be mimic_iii or eicu, not {db_id!r}")
    root = Path(source_dir)
    out: list[dict] = []
    for split in splits:
        if split.startswith("medagentgym_"):
            name = split.removeprefix("medagentgym_")
            path = _find_file(root / "medagentgym_split" / f"{db_id}_{name}_tasks_noanswer.jsonl")
            if path is None:
                path = _find_file(root / "medagentgym_split" / f"{db_id}_{name}_tasks.jsonl")
        else:
            rel = release if release.startswith("v") else f"v{release}"
            path = _find_file(root / rel / db_id / f"{split}.json")
        if path is None:
            raise FileNotFoundError(f"EHRSQL split {split!r} for {db_id} not found under {root}")
        for rec in _read_records(path):
            rec = dict(rec)
            rec.setdefault("split", split)
            out.append(rec)
    return out


def load_templates(
    source_dir: str | Path,
    db_id: str,
    release: str = "2024-04-27",
    splits: _Seq[str] = ("valid", "test"),
    *,
    include_impossible: bool = True,
) -> list[Template]:
    """Group EHRSQL items into templates (see the module docstring)."""
    items = load_ehrsql_items(source_dir, db_id, release, splits)
    return templates_from_items(items, db_id, include_impossible=include_impossible)


def templates_from_items(
    items: Iterable[dict], db_id: str, *, include_impossible: bool = True
) -> list[Template]:
    """Group raw EHRSQL items (``load_ehrsql_items`` records, MedAgentGym task records...)
    into templates."""
    groups: dict[tuple, list[_ItemTemplate]] = defaultdict(list)
    order: list[tuple] = []
    impossible: dict[str, Template] = {}
    for item in items:
        if item.get("is_impossible"):
            if include_impossible:
                _add_impossible(impossible, item, db_id)
            continue
        if str(item.get("query", "")).strip().lower() in ("", "nan", "null", "none"):
            continue
        it = _templatize_ehrsql_item(item, db_id)
        if it.key not in groups:
            order.append(it.key)
        groups[it.key].append(it)

    templates: list[Template] = []
    for key in order:
        members = [m for m in groups[key] if m.problem is None]
        if not members:
            continue
        skel_counts = Counter(m.sql for m in members)
        best = max(
            skel_counts.items(),
            key=lambda kv: (kv[1], -members.index(next(m for m in members if m.sql == kv[0]))),
        )[0]
        same = [m for m in members if m.sql == best]
        para = list(dict.fromkeys(m.para_q for m in same if m.para_q))
        machine = list(dict.fromkeys(m.machine_q for m in same if m.machine_q))
        questions = para or machine
        slots = sorted(set(_PLACEHOLDER.findall(best)) - set(DERIVED_SLOTS))
        if any(not all("{" + s + "}" in q for s in slots) for q in questions):
            questions = [q for q in questions if all("{" + s + "}" in q for s in slots)]
            if not questions:
                continue
        tid = f"{db_id}-{_sha(*key)[:12]}"
        rep = same[0]
        templates.append(
            Template(
                id=tid,
                db_id=db_id,
                category=category_of(best, db_id),
                tag=_tag_text(key),
                sql=best,
                questions=questions,
                slots=slots,
                slot_ops=dict(rep.slot_ops),
                example_values=dict(rep.values),
                item_ids=[m.item_id for m in groups[key]],
                item_values=[dict(m.values) for m in groups[key]],
                item_questions=[_own_question(m, best, slots) for m in groups[key]],
                is_impossible=False,
            )
        )
    templates.extend(impossible.values())
    return templates


def _own_question(m: _ItemTemplate, sql: str, slots: list[str]) -> str:
    """An item's own question skeleton, when it fits the template's SQL skeleton."""
    q = m.para_q or m.machine_q or ""
    if m.problem is not None or m.sql != sql or not all("{" + s + "}" in q for s in slots):
        return ""
    return q


def _tag_text(key: tuple) -> str:
    _db, q_tag, t_tag, o_tag = key
    extra = [t for t in (*t_tag, *o_tag) if t]
    return q_tag + (f"  [{', '.join(extra)}]" if extra else "")


def _add_impossible(acc: dict[str, Template], item: dict, db_id: str) -> None:
    question = str(item.get("question", ""))
    pat = _IMPOSSIBLE_PATIENT[db_id]
    m = pat.search(question)
    values: dict[str, str] = {}
    skel = question
    if m:
        values["patient_id"] = m.group(1)
        skel = pat.sub("{patient_id}", question)
    tid = f"{db_id}-imp-{_sha(db_id, skel)[:12]}"
    if tid in acc:
        acc[tid].item_ids.append(str(item.get("id", "")))
        acc[tid].item_values.append(values)
        return
    acc[tid] = Template(
        id=tid,
        db_id=db_id,
        category="unanswerable",
        tag=str(item.get("template") or ""),
        sql="",
        questions=[skel],
        slots=sorted(values),
        example_values=values,
        item_ids=[str(item.get("id", ""))],
        item_values=[values],
        is_impossible=True,
    )


# =========================================================================== DB samplers


@dataclass(frozen=True)
class _Source:
    name: str
    tables: frozenset[str]
    time_cols: tuple[str, ...]
    sql: str  # -> patient, tmin, tmax, *cat, *num_min, *num_max
    cat: tuple[str, ...] = ()
    num: tuple[str, ...] = ()


@dataclass
class _Group:
    patient: str
    tmin: str | None
    tmax: str | None
    vals: dict[str, str]
    nums: dict[str, tuple[str, str]]


def _mimic_sources() -> list[_Source]:
    def ev(
        name: str, table: str, tcol: str, label_slot: str, linksto: str | None, num: bool
    ) -> _Source:
        dict_tab = "d_labitems" if table == "labevents" else "d_items"
        numcols = ", min(e.valuenum), max(e.valuenum)" if num else ""
        link = f" and d.linksto = '{linksto}'" if linksto else ""
        return _Source(
            name,
            frozenset({table, dict_tab}),
            (f"{table}.{tcol}",),
            f"select e.subject_id, min(e.{tcol}), max(e.{tcol}), d.label{numcols} from {table} e "
            f"join {dict_tab} d on d.itemid = e.itemid{link} group by e.subject_id, d.label",
            (label_slot,),
            ("lab_value",) if num and table == "labevents" else (("vital_value",) if num else ()),
        )

    icd = (
        "select e.subject_id, min(e.charttime), max(e.charttime), d.short_title from {t} e "
        "join {d} d on d.icd9_code = e.icd9_code group by e.subject_id, d.short_title"
    )
    return [
        _Source(
            "patients",
            frozenset({"patients"}),
            ("patients.dob",),
            "select subject_id, null, null, gender from patients",
            ("gender",),
        ),
        _Source(
            "admissions",
            frozenset({"admissions"}),
            ("admissions.admittime", "admissions.dischtime"),
            "select subject_id, min(admittime), max(admittime), admission_location from admissions "
            "group by subject_id, admission_location",
            ("admission_route",),
        ),
        _Source(
            "diagnoses",
            frozenset({"diagnoses_icd", "d_icd_diagnoses"}),
            ("diagnoses_icd.charttime",),
            icd.format(t="diagnoses_icd", d="d_icd_diagnoses"),
            ("diagnosis_name",),
        ),
        _Source(
            "procedures",
            frozenset({"procedures_icd", "d_icd_procedures"}),
            ("procedures_icd.charttime",),
            icd.format(t="procedures_icd", d="d_icd_procedures"),
            ("procedure_name",),
        ),
        _Source(
            "abbreviation",
            frozenset(),
            (),
            icd.format(t="diagnoses_icd", d="d_icd_diagnoses")
            + " union all "
            + icd.format(t="procedures_icd", d="d_icd_procedures"),
            ("abbreviation",),
        ),
        _Source(
            "prescriptions",
            frozenset({"prescriptions"}),
            ("prescriptions.startdate",),
            "select subject_id, min(startdate), max(startdate), drug, route from prescriptions "
            "group by subject_id, drug, route",
            ("drug_name", "drug_route"),
        ),
        ev("labevents", "labevents", "charttime", "lab_name", None, True),
        ev("chartevents", "chartevents", "charttime", "vital_name", "chartevents", True),
        ev("inputevents", "inputevents_cv", "charttime", "intake_name", "inputevents_cv", False),
        ev("outputevents", "outputevents", "charttime", "output_name", "outputevents", False),
        _Source(
            "microbiology",
            frozenset({"microbiologyevents"}),
            ("microbiologyevents.charttime",),
            "select subject_id, min(charttime), max(charttime), spec_type_desc from microbiologyevents "
            "group by subject_id, spec_type_desc",
            ("culture_name",),
        ),
        _Source(
            "transfers",
            frozenset({"transfers"}),
            ("transfers.intime",),
            "select subject_id, min(intime), max(intime), careunit, wardid from transfers "
            "group by subject_id, careunit, wardid",
            ("careunit", "ward_id"),
        ),
        _Source(
            "icustays",
            frozenset({"icustays"}),
            ("icustays.intime",),
            "select subject_id, min(intime), max(intime) from icustays group by subject_id",
        ),
        _Source(
            "cost",
            frozenset({"cost"}),
            ("cost.chargetime",),
            "select subject_id, min(chargetime), max(chargetime) from cost group by subject_id",
        ),
    ]


def _eicu_sources() -> list[_Source]:
    def ev(
        name: str,
        table: str,
        tcol: str,
        cols: tuple[str, ...],
        slots: tuple,
        where: str = "",
        num: tuple[str, str] | None = None,
    ) -> _Source:
        sel = ", ".join(f"t.{c}" for c in cols)
        numsel = f", min(t.{num[0]}), max(t.{num[0]})" if num else ""
        grp = ", ".join(f"t.{c}" for c in cols)
        return _Source(
            name,
            frozenset({table}),
            (f"{table}.{tcol}",),
            f"select p.uniquepid, min(t.{tcol}), max(t.{tcol})"
            + (f", {sel}" if cols else "")
            + numsel
            + f" from {table} t join patient p on p.patientunitstayid = t.patientunitstayid"
            + (f" where {where}" if where else "")
            + " group by p.uniquepid"
            + (f", {grp}" if cols else ""),
            slots,
            (num[1],) if num else (),
        )

    vit = " union all ".join(
        f"select p.uniquepid, min(t.observationtime), max(t.observationtime), '{c}', min(t.{c}), "
        f"max(t.{c}) from vitalperiodic t join patient p on p.patientunitstayid = t.patientunitstayid "
        f"where t.{c} is not null group by p.uniquepid"
        for c in _EICU_VITAL_COLUMNS
    )
    return [
        _Source(
            "patient",
            frozenset({"patient"}),
            ("patient.hospitaladmittime", "patient.unitadmittime"),
            "select uniquepid, min(hospitaladmittime), max(hospitaladmittime), gender, "
            "hospitaladmitsource, wardid from patient group by uniquepid, gender, hospitaladmitsource, wardid",
            ("gender", "admission_route", "ward_id"),
        ),
        ev("diagnosis", "diagnosis", "diagnosistime", ("diagnosisname",), ("diagnosis_name",)),
        ev("treatment", "treatment", "treatmenttime", ("treatmentname",), ("procedure_name",)),
        ev(
            "medication",
            "medication",
            "drugstarttime",
            ("drugname", "routeadmin"),
            ("drug_name", "drug_route"),
        ),
        ev(
            "lab",
            "lab",
            "labresulttime",
            ("labname",),
            ("lab_name",),
            num=("labresult", "lab_value"),
        ),
        _Source(
            "vitalperiodic",
            frozenset({"vitalperiodic"}),
            ("vitalperiodic.observationtime",),
            vit,
            ("vital_name",),
            ("vital_value",),
        ),
        ev(
            "intake",
            "intakeoutput",
            "intakeoutputtime",
            ("celllabel",),
            ("intake_name",),
            where="t.cellpath like '%intake%'",
        ),
        ev(
            "output",
            "intakeoutput",
            "intakeoutputtime",
            ("celllabel",),
            ("output_name",),
            where="t.cellpath like '%output%'",
        ),
        ev("microlab", "microlab", "culturetakentime", ("culturesite",), ("culture_name",)),
        ev("allergy", "allergy", "allergytime", (), ()),
        _Source(
            "cost",
            frozenset({"cost"}),
            ("cost.chargetime",),
            "select uniquepid, min(chargetime), max(chargetime) from cost group by uniquepid",
        ),
    ]


_CURRENT_FILTERS = {
    "mimic_iii": {
        "admissions.dischtime is null": "select distinct subject_id from admissions where dischtime is null",
        "icustays.outtime is null": "select distinct subject_id from icustays where outtime is null",
    },
    "eicu": {
        "patient.hospitaldischargetime is null": (
            "select distinct uniquepid from patient where hospitaldischargetime is null"
        ),
        "patient.unitdischargetime is null": (
            "select distinct uniquepid from patient where unitdischargetime is null"
        ),
    },
}


class _Sampler:
    def __init__(self, conn: sqlite3.Connection, db_id: str, now: str, timeout_s: float) -> None:
        self.conn = conn
        self.tie_conn: sqlite3.Connection | None = None
        self.db_id = db_id
        self.now = now
        self.now_dt = _dt.datetime.strptime(now, _TFMT)
        self.timeout_s = timeout_s
        self.sources = _mimic_sources() if db_id == "mimic_iii" else _eicu_sources()
        self.by_slot: dict[str, _Source] = {}
        for s in self.sources:
            for slot in (*s.cat, *s.num):
                self.by_slot.setdefault(slot, s)
        self._groups: dict[str, list[_Group]] = {}
        self._by_patient: dict[str, dict[str, list[_Group]]] = {}
        self._filters: dict[str, set[str]] = {}
        self.patient_source = self.sources[0]

    def known(self, slot: str) -> bool:
        b = _base(slot)
        return b in TIME_SLOTS or b == "patient_id" or b in self.by_slot

    def groups(self, src: _Source) -> list[_Group]:
        if src.name in self._groups:
            return self._groups[src.name]
        try:
            rows = execute_sql(
                self.conn, src.sql, timeout_s=max(60.0, self.timeout_s), max_rows=5_000_000
            )
        except (sqlite3.Error, ValueError):
            rows = []
        nc, nn = len(src.cat), len(src.num)
        out: list[_Group] = []
        for r in rows:
            if r[0] is None:
                continue
            vals = {}
            for i, slot in enumerate(src.cat):
                v = r[3 + i]
                if v is not None and str(v).strip() != "":
                    vals[slot] = _int_text(v) if slot == "ward_id" else str(v)
            nums = {}
            for i, slot in enumerate(src.num):
                lo, hi = r[3 + nc + i], r[3 + nc + nn + i]
                if lo is not None and hi is not None:
                    nums[slot] = (_fmt_num(float(lo)), _fmt_num(float(hi)))
            out.append(_Group(str(r[0]), r[1], r[2], vals, nums))
        out.sort(key=lambda g: (g.patient, sorted(g.vals.items()), g.tmin or "", g.tmax or ""))
        self._groups[src.name] = out
        idx: dict[str, list[_Group]] = defaultdict(list)
        for g in out:
            idx[g.patient].append(g)
        self._by_patient[src.name] = idx
        return out

    def patient_groups(self, src: _Source, patient: str) -> list[_Group]:
        self.groups(src)
        return self._by_patient[src.name].get(patient, [])

    def current_patients(self, sql: str) -> set[str] | None:
        allowed: set[str] | None = None
        for needle, q in _CURRENT_FILTERS[self.db_id].items():
            if needle in sql:
                if needle not in self._filters:
                    try:
                        rows = execute_sql(self.conn, q, timeout_s=60.0, max_rows=5_000_000)
                    except (sqlite3.Error, ValueError):
                        rows = []
                    self._filters[needle] = {str(r[0]) for r in rows if r[0] is not None}
                s = self._filters[needle]
                allowed = set(s) if allowed is None else allowed & s
        return allowed

    def primary(self, tpl: Template) -> _Source:
        bases = {_base(s) for s in tpl.slots} - {"patient_id", *TIME_SLOTS}
        tabs = _tables(tpl.sql)
        best, best_score = None, None
        for i, src in enumerate(self.sources):
            covered = len(bases & set(src.cat + src.num))
            tmatch = any(tc in tpl.sql for tc in src.time_cols)
            score = (covered, tmatch, bool(src.tables & tabs), -i)
            if src.name == "abbreviation" and "abbreviation" not in bases:
                continue
            if best_score is None or score > best_score:
                best, best_score = src, score
        return best or self.patient_source


# --------------------------------------------------------------------------- time slots

_PERIOD = re.compile(
    r"datetime\(current_time,'start of (year|month|day)','-(\d+) (?:year|month|day)'\)"
)


def _period_prefix(sql: str, now: _dt.datetime) -> str | None:
    """Fixed relative period of the template ("this year" -> '2105'), as a timestamp prefix."""
    m = _PERIOD.search(sql)
    if not m:
        return None
    unit, k = m.group(1), int(m.group(2))
    if unit == "year":
        return f"{now.year - k:04d}"
    if unit == "month":
        y, mo = divmod(now.year * 12 + now.month - 1 - k, 12)
        return f"{y:04d}-{mo + 1:02d}"
    d = now.date() - _dt.timedelta(days=k)
    return d.isoformat()


def _time_value(slot: str, op: str, t: _dt.datetime, now: _dt.datetime) -> str | None:
    base = _base(slot)
    if base == "year":
        return f"{t.year:04d}"
    if base == "year_month":
        return t.strftime("%Y-%m")
    if base == "date":
        return t.strftime("%Y-%m-%d")
    if base == "month":
        return t.strftime("%m")
    if base == "month_day":
        return t.strftime("%m-%d")
    if base == "day":
        return t.strftime("%d")
    if base == "n_year":
        diff = now.year - t.year
    elif base == "n_month":
        diff = (now.year - t.year) * 12 + now.month - t.month
    elif base == "n_day":
        diff = (now - t).days
    else:
        return None
    n = diff + 1 if op == ">=" else diff - 1
    return str(n) if n >= 1 else None


def _parse_time(v: Any) -> _dt.datetime | None:
    if v is None:
        return None
    text = str(v).strip()
    for fmt, width in ((_TFMT, 19), ("%Y-%m-%d %H:%M", 16), ("%Y-%m-%d", 10)):
        try:
            return _dt.datetime.strptime(text[:width], fmt)
        except ValueError:
            continue
    return None


# =========================================================================== instantiation


def _instance_id(template_id: str, values: dict[str, str]) -> str:
    return f"{template_id}-{_sha(template_id, sorted(values.items()))[:10]}"


def _open_ro(db_path: str | Path) -> sqlite3.Connection:
    path = Path(db_path).resolve()
    if not path.exists():
        raise FileNotFoundError(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    return conn


#: no single value is the whole answer of more than this share of the answerable instances
#: (see :func:`instantiate_with_report`): a constant answer earns at most about this much
MAX_ANSWER_SHARE = 0.0125


def instantiate(
    templates: Iterable[Template],
    db_path: str | Path,
    *,
    seed: int = 0,
    per_template: int = 3,
    now: str = DEFAULT_NOW,
    timeout_s: float = 5.0,
    max_attempts: int | None = None,
    include_impossible: bool = False,
    tie_check: bool = True,
    max_answer_share: float | None = MAX_ANSWER_SHARE,
) -> list[Instance]:
    """Sample ``per_template`` instances of every template from the database at ``db_path``
    (see :func:`instantiate_with_report`)."""
    return instantiate_with_report(
        templates,
        db_path,
        seed=seed,
        per_template=per_template,
        now=now,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        include_impossible=include_impossible,
        tie_check=tie_check,
        max_answer_share=max_answer_share,
    )[0]


def instantiate_with_report(
    templates: Iterable[Template],
    db_path: str | Path,
    *,
    seed: int = 0,
    per_template: int = 3,
    now: str = DEFAULT_NOW,
    timeout_s: float = 5.0,
    max_attempts: int | None = None,
    include_impossible: bool = False,
    tie_check: bool = True,
    max_answer_share: float | None = MAX_ANSWER_SHARE,
) -> tuple[list[Instance], InstantiationReport]:
    """Instantiate templates on the database at ``db_path``; also returns an
    :class:`InstantiationReport`.

    * Unanswerable (``is_impossible``) templates only with ``include_impossible`` (the
      paper's setting has none; with them, an agent must abstain).
    * ``tie_check``: every candidate's gold SQL also runs on :func:`reversed_copy` of the
      database; a candidate whose result changes with the row order alone (ties under
      ``ORDER BY ... LIMIT``, representatives of ``GROUP BY``) is dropped and another one
      sampled (``report.dropped_tie``). Skipped for databases over
      :data:`TIE_CHECK_MAX_BYTES` (``report.tie_check`` says so).
    * Answers a constant would hit are avoided. Within a template: a lone 0 or 1, or the
      same single value as an instance already kept, only when the template has nothing
      else; yes/no templates get "yes" and "no" instances in turn (a "no" asks about another
      patient than the one whose rows gave the values). Across templates: no single value
      may be the whole answer of more than ``max_answer_share`` of the answerable instances;
      the excess is left out (from the templates with the most instances first, then by a
      hash of ``seed`` and the instance id; ``report.answer_capped``), so a constant answer
      (``0``, ``1``, ``True``, ``"f"``...) earns at most about that share. ``None`` keeps
      everything (and a template's instances no longer depend on the other templates).
    * Each instance carries its :func:`grading_spec`.
    """
    tpls = list(templates)
    db_id = _db_id_of(tpls)
    started = time.monotonic()
    report = InstantiationReport(db_id=db_id, db_path=str(db_path))
    attempts_cap = max_attempts if max_attempts is not None else 4 * per_template + 6
    out: list[Instance] = []
    with _sampling(db_path, db_id, now, timeout_s, tie_check, report) as sampler:
        conn = sampler.conn
        unknown: Counter = Counter()
        skipped: Counter = Counter()
        by_cat: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for tpl in tpls:
            if tpl.is_impossible:
                report.templates_impossible += 1
                if not include_impossible:
                    continue
            report.templates += 1
            by_cat[tpl.category][0] += 1
            if db_id == "treqs":
                made = _instantiate_treqs_template(
                    tpl, sampler, seed, per_template, attempts_cap, timeout_s, report
                )
            elif tpl.is_impossible:
                made = _instantiate_impossible(tpl, sampler, seed, per_template, now)
            else:
                bad = [s for s in tpl.slots if not sampler.known(s)]
                if bad:
                    for s in bad:
                        unknown[s] += 1
                    skipped["unknown_slot"] += 1
                    continue
                made = _instantiate_template(
                    tpl, sampler, seed, per_template, attempts_cap, now, timeout_s, report,
                    skipped
                )
            out.extend(made)
        report.templates_sampled = len({i.template_id for i in out})
        if max_answer_share is not None:
            out = _cap_answer_values(out, max_answer_share, seed, report)
        for inst in out:
            if not inst.is_impossible:
                inst.grading = grading_spec(inst.sql, inst.question, inst.answer, conn,
                                            timeout_s)
        made_by_tpl = Counter(i.template_id for i in out)
        cat_of = {t.id: t.category for t in tpls}
        for tid, n in made_by_tpl.items():
            report.templates_instantiated += 1
            by_cat[cat_of.get(tid, "unknown")][1] += 1
            by_cat[cat_of.get(tid, "unknown")][2] += n
        report.unknown_slots = dict(unknown)
        report.skipped = dict(skipped)
        report.by_category = {k: v for k, v in sorted(by_cat.items())}
    _summarize(report, out, started)
    return out, report


def _db_id_of(tpls: list[Template]) -> str:
    db_ids = {t.db_id for t in tpls}
    if len(db_ids) > 1:
        raise ValueError(f"templates of several databases: {sorted(db_ids)}")
    return db_ids.pop() if db_ids else "mimic_iii"


@contextlib.contextmanager
def _sampling(db_path: str | Path, db_id: str, now: str, timeout_s: float, tie_check: bool,
              report: InstantiationReport) -> Iterator[Any]:
    """A sampler over the database at ``db_path`` (with the reversed-row copy for the tie
    check, unless the database is too large: ``report.tie_check`` says which)."""
    import tempfile

    conn = _open_ro(db_path)
    tie_conn = None
    try:
        with tempfile.TemporaryDirectory(prefix="medagentgym-ties-") as tmp:
            if tie_check:
                size = Path(db_path).stat().st_size
                if size > TIE_CHECK_MAX_BYTES:
                    report.tie_check = (f"skipped: the database ({size >> 20} MiB) is larger "
                                        f"than {TIE_CHECK_MAX_BYTES >> 20} MiB")
                else:
                    tie_conn = _open_ro(reversed_copy(db_path, Path(tmp) / "reversed.sqlite"))
                    report.tie_check = "reversed-copy"
            sampler: Any = (_TreqsSampler(conn) if db_id == "treqs"
                            else _Sampler(conn, db_id, now, timeout_s))
            sampler.tie_conn = tie_conn
            try:
                yield sampler
            finally:
                if tie_conn is not None:
                    tie_conn.close()
    finally:
        conn.close()


def _summarize(report: InstantiationReport, out: list[Instance], started: float) -> None:
    """The report's counts over the instances kept."""
    report.instances = len(out)
    report.zero_answers = sum(1 for i in out if i.answer and _is_zero(i.answer))
    answerable = [i for i in out if not i.is_impossible]
    report.yes_no_instances = sum(1 for i in answerable if is_yes_no(i.sql))
    report.yes_no_yes = sum(1 for i in answerable if is_yes_no(i.sql) and not _is_zero(i.answer))
    report.top_n_instances = sum(1 for i in answerable if "top_n" in i.grading)
    report.top_n_gold_gt_n = sum(
        1 for i in answerable if "top_n" in i.grading and len(i.answer) > i.grading["top_n"])
    report.duplicate_row_golds = sum(
        1 for i in answerable if len(rows_key(i.answer)) < len(i.answer))
    report.count_questions = sum(1 for i in answerable if i.grading.get("count"))
    report.seconds = round(time.monotonic() - started, 3)


def constant_key(inst: Instance) -> str | None:
    """The one value a constant answer would have to be to match ``inst`` (its gold is a
    single value, or — where repeated rows may be dropped — one value repeated), else None."""
    rows = inst.answer
    if inst.is_impossible or not rows or any(len(r) != 1 for r in rows):
        return None
    if len(rows) > 1 and (inst.grading.get("count", True) or len(rows_key(rows)) > 1):
        return None
    from medagentgym.graders.values import normalize_scalar

    try:
        v = normalize_scalar(rows[0][0])
    except TypeError:
        return None
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        v = int(v)
    return None if v is None else f"{type(v).__name__}:{v}"


def _cap_answer_values(instances: list[Instance], share: float, seed: int,
                       report: InstantiationReport) -> list[Instance]:
    """Leave out instances so that no single answer value exceeds ``share`` of the
    answerable instances (from the templates with the most instances first)."""
    answerable = [i for i in instances if not i.is_impossible]
    for inst in answerable:  # the cap needs the count flag (a repeated value may be dropped)
        inst.grading.setdefault("count", asks_count(inst.sql, inst.question))
    share = min(max(share, 0.0), 1.0)
    keys = {i.id: constant_key(i) for i in answerable}
    per_tpl = Counter(i.template_id for i in answerable)
    by_key: dict[str, list[Instance]] = defaultdict(list)
    for inst in answerable:
        if keys[inst.id] is not None:
            by_key[keys[inst.id]].append(inst)
    drop: set[str] = set()
    total = len(answerable)
    changed = True
    while changed:  # dropping shrinks the total, which may put another value over the cap
        changed = False
        limit = int(share * (total - len(drop)))
        for key in sorted(by_key, key=lambda k: -len(by_key[k])):
            pool = [i for i in by_key[key] if i.id not in drop]
            excess = len(pool) - limit
            if excess <= 0:
                continue
            changed = True
            report.answer_capped_values[key] = report.answer_capped_values.get(key, 0) + excess
            for _ in range(excess):
                victim = max(pool, key=lambda i: (per_tpl[i.template_id],
                                                  _sha(seed, "cap", i.id)))
                pool.remove(victim)
                per_tpl[victim.template_id] -= 1
                drop.add(victim.id)
            break
    report.answer_capped = len(drop)
    return [i for i in instances if i.id not in drop]


def _instantiate_impossible(
    tpl: Template, sampler: _Sampler, seed: int, per_template: int, now: str
) -> list[Instance]:
    rng = random.Random(f"{seed}:{tpl.id}")
    want = per_template if "patient_id" in tpl.slots else 1
    pats: list[str] = []
    if "patient_id" in tpl.slots:
        pats = sorted({g.patient for g in sampler.groups(sampler.patient_source)})
        if not pats:
            return []
    out: list[Instance] = []
    seen: set[str] = set()
    for _ in range(want * 3):
        if len(out) >= want:
            break
        values = {"patient_id": rng.choice(pats)} if pats else {}
        iid = _instance_id(tpl.id, values)
        if iid in seen:
            continue
        seen.add(iid)
        out.append(
            Instance(
                id=iid,
                db_id=tpl.db_id,
                category=tpl.category,
                template_id=tpl.id,
                question=fill_question(rng.choice(tpl.questions), values),
                sql="",
                values=values,
                answer=None,
                is_impossible=True,
                now=now,
            )
        )
    return out


def _pick_time(g: _Group, prefix: str | None, rng: random.Random) -> _dt.datetime | None:
    cands = [t for t in (g.tmin, g.tmax) if t]
    if prefix:
        inside = [t for t in cands if str(t).startswith(prefix)]
        cands = inside or cands
    if not cands:
        return None
    return _parse_time(rng.choice(cands))


def _covers_period(g: _Group, prefix: str) -> bool:
    if not g.tmin or not g.tmax:
        return False
    return str(g.tmin)[: len(prefix)] <= prefix <= str(g.tmax)[: len(prefix)]


def _sample_values(
    tpl: Template,
    sampler: _Sampler,
    rng: random.Random,
    primary: _Source,
    candidates: list[_Group],
) -> dict[str, str] | None:
    g = rng.choice(candidates)
    values: dict[str, str] = {}
    used: dict[str, set[str]] = defaultdict(set)
    if "patient_id" in tpl.slots:
        values["patient_id"] = g.patient
    taken_from_anchor: set[str] = set()
    value_slots = [s for s in tpl.slots if _base(s) not in TIME_SLOTS and s != "patient_id"]
    for slot in value_slots:
        b = _base(slot)
        if b in primary.cat + primary.num and b not in taken_from_anchor:
            v = g.vals.get(b) if b in primary.cat else _pick_num(g, b, rng)
            if v is None:
                return None
            values[slot] = v
            used[b].add(v)
            taken_from_anchor.add(b)
            continue
        src = sampler.by_slot.get(b)
        if src is None:
            return None
        pool = [x for x in sampler.patient_groups(src, g.patient) if _val(x, b) not in used[b]]
        pool = [x for x in pool if _val(x, b) is not None]
        if not pool:
            pool = [
                x
                for x in sampler.groups(src)
                if _val(x, b) is not None and _val(x, b) not in used[b]
            ]
        if b == "vital_name" and "{vital_lower}" in tpl.sql:
            pool = [x for x in pool if x.vals.get(b) in _VITAL_RANGE_KEY]
        if not pool:
            return None
        x = rng.choice(pool)
        v = x.vals.get(b) if b in src.cat else _pick_num(x, b, rng)
        if v is None:
            return None
        values[slot] = v
        used[b].add(v)
    time_slots = [s for s in tpl.slots if _base(s) in TIME_SLOTS]
    if time_slots:
        t = _pick_time(g, _period_prefix(tpl.sql, sampler.now_dt), rng)
        if t is None:
            t = _random_time(rng, sampler.now_dt)
        for slot in time_slots:
            v = _time_value(slot, tpl.slot_ops.get(slot, "="), t, sampler.now_dt)
            if v is None:
                return None
            values[slot] = v
    return values


def _val(g: _Group, b: str) -> str | None:
    if b in g.vals:
        return g.vals[b]
    if b in g.nums:
        return g.nums[b][0]
    return None


def _pick_num(g: _Group, b: str, rng: random.Random) -> str | None:
    pair = g.nums.get(b)
    return rng.choice(pair) if pair else None


def _random_time(rng: random.Random, now: _dt.datetime) -> _dt.datetime:
    days = rng.randint(0, 6 * 365)
    return now - _dt.timedelta(days=days, minutes=rng.randint(0, 1439))


def _instantiate_template(
    tpl: Template,
    sampler: _Sampler,
    seed: int,
    per_template: int,
    attempts_cap: int,
    now: str,
    timeout_s: float,
    report: InstantiationReport,
    skipped: Counter,
    preferred: _Seq[dict[str, str]] = (),
) -> list[Instance]:
    """Up to ``per_template`` instances; ``preferred`` slot values (a published item's) are
    tried before any sampled ones."""
    rng = random.Random(f"{seed}:{tpl.id}")
    want = per_template if tpl.slots else 1
    preferred = [dict(v) for v in preferred if set(v) == set(tpl.slots)] if tpl.slots else []
    primary = sampler.primary(tpl)
    candidates = sampler.groups(primary)
    allowed = sampler.current_patients(tpl.sql)
    if allowed is not None:
        candidates = [g for g in candidates if g.patient in allowed]
    bases = {_base(s) for s in tpl.slots}
    need = [b for b in (primary.cat + primary.num) if b in bases]
    candidates = [g for g in candidates if all(_val(g, b) is not None for b in need)]
    if "vital_name" in need and "{vital_lower}" in tpl.sql:
        candidates = [g for g in candidates if g.vals.get("vital_name") in _VITAL_RANGE_KEY]
    prefix = _period_prefix(tpl.sql, sampler.now_dt)
    if prefix:
        inside = [g for g in candidates if _covers_period(g, prefix)]
        candidates = inside or candidates
    if not candidates and not preferred:
        skipped["no_candidate_rows"] += 1
        return []
    out: list[Instance] = []
    fallback: list[Instance] = []
    seen: set[str] = set()
    conn = sampler.conn
    yes_no = is_yes_no(tpl.sql) and bool(tpl.slots)
    # yes/no: "yes" and "no" in turn (the order drawn per template); a "no" is looked for by
    # asking about another patient than the one whose rows gave the slot values
    turns = [1, 0] if rng.random() < 0.5 else [0, 1]
    need = Counter(turns[i % 2] for i in range(want))
    others: list[str] = []
    if yes_no and "patient_id" in tpl.slots:
        others = sorted({g.patient for g in sampler.groups(sampler.patient_source)})
        if allowed is not None:
            others = [p for p in others if p in allowed]
    for attempt in range(len(preferred) + (attempts_cap if tpl.slots else 1)):
        if len(out) >= want:
            break
        if attempt < len(preferred):
            values = dict(preferred[attempt])
        elif not tpl.slots:
            values = {}
        elif candidates:
            values = _sample_values(tpl, sampler, rng, primary, candidates)
        else:
            break
        if values is None:
            continue
        if attempt >= len(preferred) and yes_no and need[0] > need[1] and len(others) > 1:
            values["patient_id"] = rng.choice([p for p in others if p != values["patient_id"]])
        iid = _instance_id(tpl.id, values)
        if iid in seen:
            continue
        seen.add(iid)
        try:
            sql = fill_sql(tpl.sql, values, now=now)
        except KeyError:
            continue
        res = _run_counted(conn, sql, timeout_s, report, sampler.tie_conn)
        if res is None:
            continue
        inst = Instance(
            id=iid,
            db_id=tpl.db_id,
            category=tpl.category,
            template_id=tpl.id,
            question=fill_question(rng.choice(tpl.questions), values),
            sql=sql,
            values=values,
            answer=res.rows,
            is_impossible=False,
            now=now,
        )
        if yes_no:
            answer = 0 if _is_zero(res.rows) else 1
            if need[answer] > 0:
                need[answer] -= 1
                out.append(inst)
            else:
                fallback.append(inst)
        elif tpl.slots and (_is_trivial(res.rows) or _repeats_single(res.rows, out)):
            fallback.append(inst)
        else:
            out.append(inst)
    if len(out) < want:
        report.trivial_fallbacks += min(len(fallback), want - len(out))
        out.extend(fallback[: want - len(out)])
    return out


# =========================================================================== TREQS

_TREQS_COND = re.compile(
    r"(\b(demographic|diagnoses|procedures|prescriptions|lab)\.'(\w+)'\s*(=|<=|>=|<|>)\s*)'((?:[^']|'')*)'"
)


_TREQS_VALUE_END = r"(?=\s+and\s|\s+or\s|\s+order\s|\s+group\s|\s*\)|\s*;?\s*$)"


def _treqs_norm_sql(sql: str) -> str:
    """Lower-case MIMICSQL SQL with single-quoted literals (inner apostrophes doubled)."""
    s = re.sub(r"\s+", " ", sql.strip().lower())
    if '"' in s:
        s = re.sub(r'"([^"]*)"', lambda m: "'" + m.group(1).replace("'", "''") + "'", s)
        return s
    # single-quoted source: re-escape bare apostrophes inside condition values
    return re.sub(
        r"((?:=|<=|>=|<|>) ?)'(.*?)'" + _TREQS_VALUE_END,
        lambda m: m.group(1) + "'" + m.group(2).replace("''", "'").replace("'", "''") + "'",
        s,
    )


@dataclass
class _TreqsItem:
    key: str
    sql: str
    questions: list[str] = field(default_factory=list)


def load_treqs(
    source_dir: str | Path,
    *,
    variants: _Seq[str] = ("template", "natural_v2", "natural"),
    splits: _Seq[str] = ("dev", "test"),
    medagentgym: _Seq[str] = ("train", "test"),
) -> list[Template]:
    """MIMICSQL templates: one per SQL skeleton (condition literals → ``{table_column}``).

    Questions come from every variant where each literal is found verbatim (the machine
    ``mimicsql_template`` questions nearly always; natural paraphrases when they kept the
    value), plus the MedAgentGym task files (``medagentgym_split``)."""
    root = Path(source_dir)
    items: dict[str, _TreqsItem] = {}
    order: list[str] = []

    def add(key: str, sql: str, question: str) -> None:
        if key not in items:
            items[key] = _TreqsItem(key, _treqs_norm_sql(sql))
            order.append(key)
        if question:
            items[key].questions.append(question.strip())

    for name in medagentgym:
        path = _find_file(
            root / "medagentgym_split" / f"treqs_{name}_tasks_noanswer.jsonl"
        ) or _find_file(root / "medagentgym_split" / f"treqs_{name}_tasks.jsonl")
        if path is None:
            continue
        for rec in _read_records(path):
            add(str(rec.get("id")), str(rec.get("query", "")), str(rec.get("question", "")))
    for variant in variants:
        for split in splits:
            path = _find_file(root / f"mimicsql_{variant}" / f"{split}.json")
            if path is None:
                continue
            for rec in _read_records(path):
                add(
                    str(rec.get("key")),
                    str(rec.get("sql", "")),
                    str(rec.get("question_refine", "")),
                )

    groups: dict[str, list[tuple[_TreqsItem, dict[str, str], dict[str, str], list[str]]]] = (
        defaultdict(list)
    )
    gorder: list[str] = []
    for key in order:
        it = items[key]
        skel, values, ops = _treqs_skeleton(it.sql)
        qs = []
        pats = {s: _treqs_q_pattern(v) for s, v in values.items()}
        for q in dict.fromkeys(it.questions):
            qq = _templatize_question(q.lower(), pats)
            if qq is not None:
                qs.append(qq)
        if skel not in groups:
            gorder.append(skel)
        groups[skel].append((it, values, ops, qs))

    out: list[Template] = []
    for skel in gorder:
        members = groups[skel]
        questions = list(dict.fromkeys(q for m in members for q in m[3]))
        slots = sorted(set(_PLACEHOLDER.findall(skel)))
        questions = [q for q in questions if all("{" + s + "}" in q for s in slots)]
        if not questions:
            continue
        tid = f"treqs-{_sha('treqs', skel)[:12]}"
        out.append(
            Template(
                id=tid,
                db_id="treqs",
                category=category_of(skel, "treqs"),
                tag="",
                sql=skel,
                questions=questions,
                slots=slots,
                slot_ops=dict(members[0][2]),
                example_values=dict(members[0][1]),
                item_ids=[m[0].key for m in members],
                item_values=[dict(m[1]) for m in members],
                item_questions=[
                    next((q for q in m[3] if all("{" + s + "}" in q for s in slots)), "")
                    for m in members
                ],
            )
        )
    return out


def _treqs_skeleton(sql: str) -> tuple[str, dict[str, str], dict[str, str]]:
    values: dict[str, str] = {}
    ops: dict[str, str] = {}
    counts: Counter = Counter()

    def sub(m: re.Match) -> str:
        table, col, op, val = m.group(2), m.group(3), m.group(4), m.group(5).replace("''", "'")
        counts[(table, col)] += 1
        name = f"{table}_{col}" + ("" if counts[(table, col)] == 1 else str(counts[(table, col)]))
        values[name] = val
        ops[name] = op
        return m.group(1) + "'{" + name + "}'"

    return _TREQS_COND.sub(sub, sql), values, ops


def _treqs_q_pattern(value: str) -> str:
    forms = [value]
    if re.fullmatch(r"-?\d+\.0", value):
        forms.append(value[:-2])
    return "(?:" + "|".join(_value_question_pattern(f) for f in forms) + ")"


class _TreqsSampler:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.tie_conn: sqlite3.Connection | None = None
        self._cols: dict[tuple[str, str], dict[int, list[str]]] = {}
        self._hadms: dict[str, set[int]] = {}

    def column(self, table: str, col: str) -> dict[int, list[str]]:
        key = (table, col)
        if key not in self._cols:
            try:
                rows = execute_sql(
                    self.conn,
                    f"select distinct hadm_id, {col} from {table} where {col} is not null "
                    f"order by hadm_id",
                    timeout_s=60.0,
                    max_rows=10_000_000,
                )
            except (sqlite3.Error, ValueError):
                rows = []
            idx: dict[int, list[str]] = defaultdict(list)
            for h, v in rows:
                if h is None or str(v).strip() == "":
                    continue
                idx[h].append(_treqs_text(v))
            for h in idx:
                idx[h] = sorted(set(idx[h]))
            self._cols[key] = dict(idx)
        return self._cols[key]


def _treqs_text(v: Any) -> str:
    if isinstance(v, float) and v == int(v):
        return str(int(v))
    return str(v)


def _treqs_shift(value: str, op: str) -> str:
    try:
        num = float(value)
    except ValueError:
        return value
    if op == "<":
        num += 1
    elif op == ">":
        num -= 1
    return str(int(num)) if num == int(num) else repr(num)


def _instantiate_treqs_template(
    tpl: Template,
    sampler: _TreqsSampler,
    seed: int,
    per_template: int,
    attempts_cap: int,
    timeout_s: float,
    report: InstantiationReport,
    preferred: _Seq[dict[str, str]] = (),
) -> list[Instance]:
    rng = random.Random(f"{seed}:{tpl.id}")
    preferred = [dict(v) for v in preferred if set(v) == set(tpl.slots)] if tpl.slots else []
    slot_cols: dict[str, tuple[str, str]] = {}
    for slot in tpl.slots:
        m = re.fullmatch(r"(demographic|diagnoses|procedures|prescriptions|lab)_(\w+?)(\d*)", slot)
        if not m:
            return []
        slot_cols[slot] = (m.group(1), m.group(2))
    cols = {s: sampler.column(*tc) for s, tc in slot_cols.items()}
    hadms: set[int] | None = None
    for idx in cols.values():
        hadms = set(idx) if hadms is None else hadms & set(idx)
    anchors = sorted(hadms) if hadms is not None else []
    want = per_template if tpl.slots else 1
    out: list[Instance] = []
    fallback: list[Instance] = []
    seen: set[str] = set()
    if tpl.slots and not anchors and not preferred:
        return []
    for attempt in range(len(preferred) + (attempts_cap if tpl.slots else 1)):
        if len(out) >= want:
            break
        values: dict[str, str] = {}
        if attempt < len(preferred):
            values = dict(preferred[attempt])
        elif tpl.slots:
            if not anchors:
                break
            h = rng.choice(anchors)
            for slot in tpl.slots:
                v = rng.choice(cols[slot][h])
                values[slot] = _treqs_shift(v, tpl.slot_ops.get(slot, "="))
        iid = _instance_id(tpl.id, values)
        if iid in seen:
            continue
        seen.add(iid)
        sql = fill_sql(tpl.sql, values)
        res = _run_counted(sampler.conn, sql, timeout_s, report, sampler.tie_conn)
        if res is None:
            continue
        inst = Instance(
            id=iid,
            db_id="treqs",
            category=tpl.category,
            template_id=tpl.id,
            question=fill_question(rng.choice(tpl.questions), values),
            sql=sql,
            values=values,
            answer=res.rows,
        )
        trivial = _is_trivial(res.rows) or _repeats_single(res.rows, out)
        (fallback if trivial and tpl.slots else out).append(inst)
    if len(out) < want:
        report.trivial_fallbacks += min(len(fallback), want - len(out))
        out.extend(fallback[: want - len(out)])
    return out


def instantiate_treqs(
    templates: Iterable[Template],
    db_path: str | Path,
    *,
    seed: int = 0,
    per_template: int = 3,
    timeout_s: float = 5.0,
    max_attempts: int | None = None,
    tie_check: bool = True,
) -> list[Instance]:
    """Instantiate MIMICSQL templates on a TREQS (5-table) database."""
    return instantiate(
        templates,
        db_path,
        seed=seed,
        per_template=per_template,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        tie_check=tie_check,
    )


# =========================================================================== splits & sequences


def split_instances(
    instances: Iterable[Instance], seed: int = 0, test_fraction: float = 0.2
) -> dict[str, list[Instance]]:
    """Stratified split by template: each distinct (template, values) combination lands in
    exactly one split and every template contributes ``test_fraction`` of its combinations
    to ``test`` (randomised rounding), so both splits keep EHRSQL's template distribution."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError("test_fraction must be in [0, 1]")
    by_tpl: dict[str, dict[str, list[Instance]]] = defaultdict(lambda: defaultdict(list))
    for inst in instances:
        by_tpl[inst.template_id][_sha(inst.template_id, sorted(inst.values.items()))].append(inst)
    train: list[Instance] = []
    test: list[Instance] = []
    for tid in sorted(by_tpl):
        combos = sorted(by_tpl[tid])
        rng = random.Random(f"{seed}:split:{tid}")
        rng.shuffle(combos)
        exact = len(combos) * test_fraction
        n_test = int(exact) + (1 if rng.random() < exact - int(exact) else 0)
        for i, key in enumerate(combos):
            (test if i < n_test else train).extend(by_tpl[tid][key])
    return {"train": train, "test": test}


def build_sequences(
    instances: Iterable[Instance], seed: int = 0, length: int = 3
) -> list[Sequence]:
    """Chains of ``length`` sub-questions about one patient, each from a different template;
    consecutive sub-questions share as many further slot values as possible. Each instance is
    used at most once."""
    if length < 1:
        raise ValueError("length must be >= 1")
    rng = random.Random(f"{seed}:sequences")
    by_patient: dict[tuple[str, str], list[Instance]] = defaultdict(list)
    for inst in instances:
        if inst.is_impossible or "patient_id" not in inst.values:
            continue
        by_patient[(inst.db_id, inst.values["patient_id"])].append(inst)
    out: list[Sequence] = []
    for key in sorted(by_patient):
        pool = sorted(by_patient[key], key=lambda i: i.id)
        rng.shuffle(pool)
        while True:
            templates_left = {i.template_id for i in pool}
            if len(templates_left) < length:
                break
            chain = [pool.pop(0)]
            while len(chain) < length:
                prev = chain[-1]
                used_t = {c.template_id for c in chain}
                cands = [i for i in pool if i.template_id not in used_t]
                if not cands:
                    break
                prev_vals = {(k, v) for k, v in prev.values.items() if k != "patient_id"}

                def shared(i: Instance, prev_vals: set = prev_vals) -> int:
                    vals = {(_base(k), v) for k, v in i.values.items() if k != "patient_id"}
                    return len(vals & {(_base(k), v) for k, v in prev_vals})

                best = max(shared(i) for i in cands)
                pick = next(i for i in cands if shared(i) == best)
                pool.remove(pick)
                chain.append(pick)
            if len(chain) < length:
                break
            sid = f"{key[0]}-seq-{_sha([c.id for c in chain])[:12]}"
            out.append(Sequence(id=sid, db_id=key[0], patient_id=key[1], sub_questions=chain))
    return out


# =========================================================================== the paper's split

#: MedAgentGym's task files (``medagentgym_split/``, questions only) by our split name: its
#: "valid" files of MIMIC-III and eICU are the paper's test sets (581 / 611 ids)
PAPER_SPLIT_FILES: dict[str, dict[str, str]] = {
    "mimic_iii": {"train": "mimic_iii_train", "test": "mimic_iii_valid"},
    "eicu": {"train": "eicu_train", "test": "eicu_valid"},
    "treqs": {"train": "treqs_train", "test": "treqs_test"},
}


def paper_split_paths(source_dir: str | Path, db_id: str) -> dict[str, Path] | None:
    """The MedAgentGym task files of ``db_id`` by split (``train``, ``test``), or None when
    the source lacks any of them (they are in the mirror only)."""
    names = PAPER_SPLIT_FILES.get(db_id)
    if names is None:
        return None
    out: dict[str, Path] = {}
    for split, stem in names.items():
        base = Path(source_dir) / "medagentgym_split"
        path = (_find_file(base / f"{stem}_tasks_noanswer.jsonl")
                or _find_file(base / f"{stem}_tasks.jsonl"))
        if path is None:
            return None
        out[split] = path
    return out


class PaperSplit(BaseModel):
    """The paper's task ids by split, the templates they belong to and, for ids without a
    template, why (:func:`load_paper_split`)."""

    db_id: str
    ids: dict[str, list[str]]
    templates: list[Template]
    problems: dict[str, str] = Field(default_factory=dict)


def carve_valid(ids: _Seq[str], *, seed: int = 0, fraction: float = 0.1) -> tuple[list[str],
                                                                                   list[str]]:
    """``(train, valid)``: ``round(fraction * len(ids))`` ids chosen by a hash of ``seed``
    and the id (independent of the database and of the other ids), order kept."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError("fraction must be in [0, 1)")
    n_valid = round(fraction * len(ids))
    chosen = set(sorted(ids, key=lambda i: _sha(seed, "valid", i))[:n_valid])
    return [i for i in ids if i not in chosen], [i for i in ids if i in chosen]


def load_paper_split(source_dir: str | Path, db_id: str, *, seed: int = 0,
                     valid_fraction: float = 0.1) -> PaperSplit:
    """The paper's ids (``test``; ``train`` less a ``valid`` share carved by
    :func:`carve_valid`) with the templates of all of them together, so that one template's
    instances are distinct across splits."""
    paths = paper_split_paths(source_dir, db_id)
    if paths is None:
        raise FileNotFoundError(f"MedAgentGym task files of {db_id} not found under "
                                f"{Path(source_dir) / 'medagentgym_split'}")
    records = {split: _read_records(path) for split, path in paths.items()}
    ids: dict[str, list[str]] = {}
    for split, recs in records.items():
        ids[split] = list(dict.fromkeys(str(r.get("id")) for r in recs
                                        if not r.get("is_impossible")))
    ids["train"], ids["valid"] = carve_valid(ids["train"], seed=seed, fraction=valid_fraction)
    ids = {s: ids[s] for s in ("train", "valid", "test")}
    problems: dict[str, str] = {}
    if db_id == "treqs":
        # MIMICSQL's own files add question wordings for ids whose question lost its value
        templates = load_treqs(source_dir, medagentgym=tuple(PAPER_SPLIT_FILES["treqs"]))
        covered = {i for t in templates for i in t.item_ids}
        for recs in records.values():
            for r in recs:
                if str(r.get("id")) not in covered:
                    problems[str(r.get("id"))] = "question_lacks_value"
    else:
        items = [r for recs in records.values() for r in recs if not r.get("is_impossible")]
        templates = templates_from_items(items, db_id, include_impossible=False)
        covered = {i for t in templates for i in t.item_ids}
        for r in items:
            if str(r.get("id")) not in covered:
                problems[str(r.get("id"))] = (
                    _templatize_ehrsql_item(r, db_id).problem or "no_question_skeleton")
    return PaperSplit(db_id=db_id, ids=ids, templates=templates, problems=problems)


def instantiate_paper_split(
    paper: PaperSplit,
    db_path: str | Path,
    *,
    seed: int = 0,
    now: str = DEFAULT_NOW,
    timeout_s: float = 5.0,
    tie_check: bool = True,
    max_answer_share: float | None = MAX_ANSWER_SHARE,
) -> tuple[dict[str, list[Instance]], InstantiationReport]:
    """One instance per paper id (``Instance.id`` = the id), on the database at ``db_path``.

    An id keeps its published slot values and question when they give an answer there
    (non-empty, tie-safe); otherwise its template is instantiated with values sampled from
    the database (the id's own question wording, the values replaced). One template's
    instances are distinct across all splits. Within each split no single value may be the
    whole answer of more than ``max_answer_share`` of the ids (at least one): an id over the
    cap gets another instance of its template, or is left out. Ids left out, with the
    reason, are in ``report.paper_split`` (``no_template:<why>``, ``unknown_slot``,
    ``no_candidate_rows``, ``no_instance`` — every candidate empty, failing or
    tie-dependent —, ``too_few_distinct``, ``answer_cap``)."""
    tpls = [t for t in paper.templates if not t.is_impossible]
    db_id = paper.db_id
    started = time.monotonic()
    report = InstantiationReport(db_id=db_id, db_path=str(db_path))
    where: dict[str, tuple[Template, int]] = {}
    for t in tpls:
        for j, iid in enumerate(t.item_ids):
            where.setdefault(iid, (t, j))
    missing: dict[str, str] = {}
    members: dict[str, list[str]] = defaultdict(list)
    for ids in paper.ids.values():
        for iid in ids:
            if iid in where:
                members[where[iid][0].id].append(iid)
            else:
                missing[iid] = "no_template:" + paper.problems.get(iid, "unknown")
    assigned: dict[str, Instance] = {}
    published: set[str] = set()
    spares: dict[str, list[Instance]] = {}
    skipped: Counter = Counter()
    unknown: Counter = Counter()
    out: dict[str, list[Instance]] = {s: [] for s in paper.ids}
    with _sampling(db_path, db_id, now, timeout_s, tie_check, report) as sampler:
        for t in tpls:
            ids = members.get(t.id)
            if not ids:
                continue
            report.templates += 1
            own = {i: t.item_values[where[i][1]] for i in ids}
            preferred = list({json.dumps(v, sort_keys=True): v for v in own.values()}.values())
            want = 2 * len(ids) + 2  # spares: replacements for ids over the answer cap
            cap = 4 * want + 6
            if db_id == "treqs":
                made = _instantiate_treqs_template(t, sampler, seed, want, cap, timeout_s,
                                                   report, preferred)
            else:
                bad = [s for s in t.slots if not sampler.known(s)]
                if bad:
                    unknown.update(bad)
                    skipped["unknown_slot"] += 1
                    missing.update(dict.fromkeys(ids, "unknown_slot"))
                    continue
                before = skipped["no_candidate_rows"]
                made = _instantiate_template(t, sampler, seed, want, cap, now, timeout_s,
                                             report, skipped, preferred)
                if skipped["no_candidate_rows"] > before:
                    missing.update(dict.fromkeys(ids, "no_candidate_rows"))
                    continue
            if not made:
                missing.update(dict.fromkeys(ids, "no_instance"))
                continue
            report.templates_sampled += 1
            pool = list(made)
            picks: dict[str, Instance] = {}
            for iid in ids:  # the published values first (unless trivial: a lone 0 or 1)
                j = where[iid][1]
                if j >= len(t.item_questions) or not t.item_questions[j]:
                    continue  # the id's own SQL or question does not fit the template
                hit = next((m for m in pool if m.values == own[iid]
                            and not (t.slots and _is_trivial(m.answer))), None)
                if hit is not None:
                    picks[iid] = hit
                    published.add(iid)
                    if t.slots:
                        pool.remove(hit)
            for iid in ids:
                if iid in picks:
                    continue
                if not t.slots:  # one question: every id asks it in its own words
                    picks[iid] = pool[0]
                elif pool:
                    picks[iid] = pool.pop(0)
                else:
                    missing[iid] = "too_few_distinct"
            spares[t.id] = pool if t.slots else []
            for iid, inst in picks.items():
                assigned[iid] = _as_paper(inst, iid, t, where[iid][1])
        for split, ids in paper.ids.items():
            kept = {i: assigned[i] for i in ids if i in assigned}
            if max_answer_share is not None:
                _cap_paper(kept, spares, where, max_answer_share, seed, published, missing,
                           report)
            for iid in ids:
                inst = kept.get(iid)
                if inst is not None:
                    inst.grading = grading_spec(inst.sql, inst.question, inst.answer,
                                                sampler.conn, timeout_s)
                    out[split].append(inst)
    report.templates_instantiated = len({i.template_id for v in out.values() for i in v})
    report.unknown_slots = dict(unknown)
    report.skipped = dict(skipped)
    for split, ids in paper.ids.items():
        gone = {i: missing[i] for i in ids if i in missing}
        report.paper_split[split] = {
            "ids": len(ids),
            "instantiated": len(out[split]),
            "published_values": sum(1 for i in out[split] if i.id in published),
            "not_instantiated": dict(Counter(r.split(":")[0] if r.startswith("no_template")
                                             else r for r in gone.values()).most_common()),
            "missing_ids": gone,
        }
    _summarize(report, [i for v in out.values() for i in v], started)
    return out, report


def _as_paper(inst: Instance, iid: str, tpl: Template, j: int) -> Instance:
    """``inst`` as the paper's task ``iid``: its id, and the id's own question wording."""
    skeleton = tpl.item_questions[j] if j < len(tpl.item_questions) else ""
    question = fill_question(skeleton, inst.values) if skeleton else inst.question
    copy = inst.model_copy(deep=True, update={"id": iid, "question": question,
                                              "source_id": iid})
    copy.grading = {"count": asks_count(copy.sql, copy.question)}
    return copy


def _cap_paper(kept: dict[str, Instance], spares: dict[str, list[Instance]],
               where: dict[str, tuple[Template, int]], share: float, seed: int,
               published: set[str], missing: dict[str, str],
               report: InstantiationReport) -> None:
    """No single value answers more than ``share`` of ``kept`` (at least one id): an id over
    it gets a spare instance of its template whose answer is under the cap, or is dropped."""
    limit = max(1, int(min(max(share, 0.0), 1.0) * len(kept)))
    counts: Counter = Counter()
    for iid in sorted(kept, key=lambda i: (i not in published, _sha(seed, "cap", i))):
        key = constant_key(kept[iid])
        if key is None or counts[key] < limit:
            if key is not None:
                counts[key] += 1
            continue
        tpl, j = where[iid]
        pool = spares.get(tpl.id, [])
        for k, spare in enumerate(pool):
            cand = _as_paper(spare, iid, tpl, j)
            ck = constant_key(cand)
            if ck is None or counts[ck] < limit:
                del pool[k]
                kept[iid] = cand
                published.discard(iid)
                if ck is not None:
                    counts[ck] += 1
                break
        else:
            del kept[iid]
            missing[iid] = "answer_cap"
            report.answer_capped += 1
            report.answer_capped_values[key] = report.answer_capped_values.get(key, 0) + 1

# =========================================================================== official tasks


def load_official(
    path: str | Path,
    *,
    normalize: bool = True,
    now: str = DEFAULT_NOW,
    require_answers: bool = True,
    include_impossible: bool = False,
) -> list[Instance]:
    """Read a MedAgentGym task file (``{db}_{split}_tasks[.noanswer].jsonl[.gz]``: question,
    query, value, q_tag/t_tag/o_tag, is_impossible, id, and ``answer`` when present) as
    instances whose stored answers are used as-is (valid only on the official database).

    ``require_answers`` (default): a file in which an answerable task has no stored
    ``answer`` is refused (:class:`~medagentgym.errors.ConfigurationError`, one line) — the
    published ``*_noanswer`` files hold questions only, and grading them would read every
    task as "must abstain". ``include_impossible``: keep tasks marked unanswerable (the
    paper's split has none)."""
    from medagentgym.errors import ConfigurationError

    out: list[Instance] = []
    missing = total = 0
    for rec in _read_records(Path(path)):
        if "seed_question" in rec:  # EHR-SeqSQL: a follow-up question after its seed
            rec = _seqsql_record(rec)
        impossible = bool(rec.get("is_impossible", False))
        if impossible and not include_impossible:
            continue
        total += 1
        if not impossible and rec.get("answer") is None:
            missing += 1
            if require_answers:
                continue
        db_id = str(rec.get("db_id", ""))
        query = str(rec.get("query") or "")
        if query.strip().lower() in ("nan", "null", "none"):
            query = ""
        if "q_tag" in rec:
            key = (
                db_id,
                rec.get("q_tag", ""),
                tuple(rec.get("t_tag") or ()),
                tuple(rec.get("o_tag") or ()),
            )
            tid = f"{db_id}-{_sha(*key)[:12]}"
        elif db_id == "treqs":
            tid = f"treqs-{_sha('treqs', _treqs_skeleton(_treqs_norm_sql(query))[0])[:12]}"
        else:
            tid = f"{db_id}-{_sha(db_id, rec.get('template') or query)[:12]}"
        sql = query
        if normalize and query and db_id != "treqs":
            sql = normalize_sql(query, now)
        values = {k: _value_text(v) for k, v in (rec.get("value") or {}).items()}
        question = str(rec.get("question", ""))
        out.append(
            Instance(
                id=str(rec.get("id") or _sha(db_id, rec.get("question"))[:16]),
                db_id=db_id,
                category=(category_of(query, db_id) if query
                          else rec.get("category") or "unanswerable"),
                template_id=tid,
                question=question,
                sql=sql,
                values=values,
                answer=rec.get("answer"),
                is_impossible=impossible,
                now=now if db_id != "treqs" else None,
                grading={} if impossible else grading_spec(sql, question),
            )
        )
    if require_answers and missing:
        raise ConfigurationError(
            f"{path}: {missing} of {total} answerable tasks have no stored 'answer' (a "
            f"questions-only file such as *_tasks_noanswer.jsonl?); the official release mode "
            f"grades against stored answers, so it needs the release's task files with answers"
        )
    return out


def _seqsql_record(rec: dict) -> dict:
    """A record of MedAgentGym's EHR-SeqSQL task files (``seed_question``, ``question``,
    ``ans``: the answer of the follow-up, a list of values or rows) in the shape of the
    other EHR task files: one question (the seed, then the follow-up), answer as rows."""
    ans = rec.get("ans")
    rows = None
    if isinstance(ans, list):
        rows = [list(r) if isinstance(r, list | tuple) else [r] for r in ans]
    elif ans is not None:
        rows = [[ans]]
    question = " ".join(str(rec.get(k) or "").strip() for k in ("seed_question", "question"))
    return {**rec, "db_id": rec.get("db_id") or "mimic_iii", "question": question.strip(),
            "answer": rows, "query": rec.get("query") or "", "category": "sequential",
            "is_impossible": bool(rec.get("is_impossible", False))}

