"""Import credentialed or open EHR data the user already has into the data home.

* :func:`import_mimic_iii` — PhysioNet MIMIC-III CSVs (full database or the open demo) into a
  SQLite database with EHRSQL's preprocessed 17-table schema.
* :func:`import_eicu` — PhysioNet eICU-CRD CSVs (full or demo) into EHRSQL's 10-table schema.
* :func:`build_treqs_from_mimic` — MIMICSQL's 5-table schema (TREQS) from MIMIC-III.
* :func:`import_medagentgym` — validate and register the official MedAgentGym preprocessed
  release, which is then used in place.

Inputs are the PhysioNet layouts: one ``<TABLE>.csv`` or ``<TABLE>.csv.gz`` per table, the
file name in any case (``ADMISSIONS.csv.gz``, ``admissions.csv``, ``intakeOutput.csv.gz``),
column names in any case. Every table is streamed in chunks (the full MIMIC-III has 330 M
chartevents rows; no table is ever held in memory): chunks of raw rows go into a temporary
staging table and one ``INSERT … SELECT`` per chunk applies the transformation in SQLite. The
output is written through :func:`medagentgym.data.home.atomic_path` under a file lock, and a
manifest records inputs (sizes, sha256), parameters and per-table row counts.

EHRSQL's preprocessing, as reproduced here (see glee4810/EHRSQL ``preprocess/``)
---------------------------------------------------------------------------------
Common: string values are lower-cased and stripped; pandas' default NA tokens (``NA``,
``NULL``, ``nan``, ...) and empty fields become NULL; ids (``row_id``, ``diagnosisid`` ...) are
renumbered 0, 1, 2 ... in file order after filtering; the "current time" is
``2105-12-31 23:59:00``: any time after it becomes NULL and a row whose key time is NULL is
dropped (a NULL ``dischtime`` marks a patient still in hospital).

MIMIC-III time shift — deterministic per patient: for subject ``s`` a year ``Y`` in
2100..2105 is drawn with weights 1:2:3:4:5:6 from ``random.Random(f"{seed}:mimic_iii:{s}")``;
all of the patient's times move by ``(Y - year(first admittime)) * 365`` days (EHRSQL's
365-day years, so times of day are kept and dates may drift by a few weeks); event rows
before 2100-01-01 are dropped. ``admissions.age`` is the whole number of 365.25-day years
between ``dob`` and ``admittime`` (patients older than 89 keep MIMIC's obfuscated ~300).
``diagnoses_icd.charttime`` is the admission time and ``procedures_icd.charttime`` the
discharge time of the admission. Filters: labevents need hadm_id, valuenum, valueuom and a
known itemid; prescriptions need start/end dates, dose, unit and route, keep only integer
doses (commas removed) and, per drug, only the most frequent unit; inputevents_cv and
outputevents keep rows measured in ``ml`` with a d_items itemid; d_items keeps items linked
to chartevents/inputevents_cv/outputevents; microbiologyevents use ``chartdate`` when
``charttime`` is missing.

eICU time reconstruction — eICU stores minute offsets from unit admission. For patient
``uniquepid`` a first year ``Y`` in 2100..2105 is drawn as above (``random.Random(
f"{seed}:eicu:{uniquepid}")``); the patient's hospital visits discharged in the k-th distinct
``hospitaldischargeyear`` after the first get stratified random dates in year ``Y + k``; a unit
stay's admission time is that date at ``hospitaladmittime24`` minus ``hospitaladmitoffset``
minutes, and every offset in every table is added to it (eICU charts some events before
the hospital admission; as in EHRSQL they are kept, so a few may fall in late 2099).
``patient.age`` is the patient's youngest age plus ``k``. Stays with inconsistent offsets, unknown admit source, a gender other
than male/female, age ``> 89`` or <= 10 are dropped (as EHRSQL). Diagnosis/treatment names are
levels 3-4 of the ``|``-path joined by `` - `` (keeping, for each such name, only its most
frequent levels 1-2); intake/output rows keep labels seen under an ``intake (ml)``/``output
(ml)`` cell path, with a trailing ``intake``/``output`` word removed; medications exclude
cancelled orders.

Cost tables (EHRSQL synthesises them; there is no cost data in MIMIC or eICU): one row per
diagnosis, lab, procedure/treatment and prescription/medication event, charged at the
event's time. Each event type has a mean cost drawn from ``Poisson(10)`` by
``numpy.random.default_rng(seed)``; each item (ICD-9 code, lab item, drug, ...) has a cost
``N(mean, 1)`` rounded to cents drawn from ``random.Random(f"{seed}:{db}:{type}:{item}")`` —
the same item always costs the same, independent of which other rows exist.

Differences from EHRSQL, on purpose: all patients are kept (EHRSQL sampled 1,000 and marked
10 % as "current" patients); eICU stays are not trimmed at the 95th percentile of length of
stay, and an eICU stay with inconsistent offsets drops only itself (EHRSQL also dropped the
patient's later stays); lower-casing of values done in SQL is ASCII-only (SQLite ``lower``). Values drawn at random (dates, costs) therefore differ from EHRSQL's databases: gold
SQL runs unchanged, but answers must be computed on the database built here.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import gzip
import hashlib
import io
import json
import operator
import os
import random
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medagentgym.data import home as _home
from medagentgym.errors import ConfigurationError

CURRENT_TIME = "2105-12-31 23:59:00"
START_TIME = "2100-01-01 00:00:00"
START_YEAR = 2100
TIME_SPAN = 5
DEFAULT_SEED = 0
CHUNK_ROWS = 50_000
_TFMT = "%Y-%m-%d %H:%M:%S"

# pandas.read_csv's default NA tokens: EHRSQL read every CSV with pandas, so these are NULL.
_NA = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)

Progress = Callable[[str, int, int | None], None]
"""progress(stage, done, total): ``stage`` names the table being built; ``done``/``total``
are bytes of its input file read so far (total None when unknown). Raising from the callback
aborts the import and leaves nothing behind."""

_csv_limit_set = False


def _ensure_csv_limit() -> None:
    global _csv_limit_set
    if not _csv_limit_set:
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        _csv_limit_set = True


# --------------------------------------------------------------------------- reports


@dataclass
class ImportReport:
    """What an import produced (also recorded in the artefact's manifest)."""

    path: Path
    database: str
    tables: dict[str, int] = field(default_factory=dict)
    missing_tables: list[str] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


# --------------------------------------------------------------------------- CSV access


def find_table_file(src_dir: str | os.PathLike[str], table: str) -> Path | None:
    """``<table>.csv.gz`` or ``<table>.csv`` in ``src_dir``, matching the name in any case."""
    d = Path(src_dir)
    want = table.lower()
    found: dict[str, Path] = {}
    with contextlib.suppress(OSError):
        for p in d.iterdir():
            n = p.name.lower()
            if n in (f"{want}.csv.gz", f"{want}.csv") and p.is_file():
                found[n] = p
    return found.get(f"{want}.csv.gz") or found.get(f"{want}.csv")


class _TrackedRaw(io.RawIOBase):
    """A binary file that counts (and optionally hashes) the bytes read through it."""

    def __init__(self, path: Path, hashing: bool) -> None:
        self._fh = path.open("rb")
        self.done = 0
        self._hash = hashlib.sha256() if hashing else None

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._fh.readinto(b)
        if n:
            self.done += n
            if self._hash is not None:
                self._hash.update(memoryview(b)[:n])
        return n or 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._fh.close()
        super().close()

    def hexdigest(self) -> str | None:
        return self._hash.hexdigest() if self._hash is not None else None


class _CsvTable:
    """Chunked reader of selected columns of one PhysioNet CSV (plain or gzip)."""

    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.label = label
        self.bytes = path.stat().st_size
        self.sha256: str | None = None
        self.rows_read = 0

    def chunks(
        self,
        columns: Sequence[str],
        *,
        optional: Sequence[str] = (),
        chunk_rows: int = CHUNK_ROWS,
        progress: Progress | None = None,
        hashing: bool = True,
    ) -> Iterator[list[tuple[str | None, ...]]]:
        """Yield lists of tuples (one value per requested column; NA tokens become None).

        Columns in ``optional`` that the file lacks yield None.
        """
        _ensure_csv_limit()
        raw = _TrackedRaw(self.path, hashing and self.sha256 is None)
        try:
            buffered: Any = io.BufferedReader(raw, 1 << 20)
            magic = buffered.peek(2)[:2]
            if magic == b"\x1f\x8b":
                buffered = io.BufferedReader(
                    gzip.GzipFile(fileobj=buffered, mode="rb"),  # type: ignore[arg-type]
                    1 << 20,
                )
            text = io.TextIOWrapper(buffered, encoding="utf-8", errors="replace", newline="")
            reader = csv.reader(text)
            try:
                header = next(reader)
            except StopIteration:
                return
            index = {h.strip().lower(): i for i, h in enumerate(header)}
            idx: list[int] = []
            for c in columns:
                if c in index:
                    idx.append(index[c])
                elif c in optional:
                    idx.append(-1)
                else:
                    raise ConfigurationError(
                        f"{self.path} has no column {c!r} (has: {', '.join(index)})"
                    )
            width = max(idx) + 1 if idx else 0
            na = _NA
            if -1 in idx:  # absent optional columns read as "" (then None)
                width = max(width, len(header) + 1)
                idx = [len(header) if i < 0 else i for i in idx]
            pick = operator.itemgetter(*idx) if len(idx) > 1 else (lambda r: (r[idx[0]],))
            batch: list[tuple[str | None, ...]] = []
            count = 0
            for row in reader:
                if len(row) < width:
                    if not row:
                        continue
                    row = row + [""] * (width - len(row))
                values = pick(row)
                if not na.isdisjoint(values):
                    values = tuple(None if v in na else v for v in values)
                batch.append(values)
                if len(batch) >= chunk_rows:
                    count += len(batch)
                    yield batch
                    batch = []
                    if progress is not None:
                        progress(self.label, raw.done, self.bytes)
            if batch:
                count += len(batch)
                yield batch
            self.rows_read = count  # rows of the file (not summed over passes)
            if progress is not None:
                progress(self.label, self.bytes, self.bytes)
            digest = raw.hexdigest()
            if digest is not None:
                self.sha256 = digest
        finally:
            raw.close()

    def record(self) -> dict[str, Any]:
        st = self.path.stat()
        return {
            "table": self.label,
            "path": str(self.path),
            "bytes": st.st_size,
            "mtime": _dt.datetime.fromtimestamp(st.st_mtime, _dt.UTC).strftime(_TFMT),
            "sha256": self.sha256,
            "rows_read": self.rows_read,
        }


# --------------------------------------------------------------------------- SQL helpers


def _lo(col: str) -> str:
    """SQL: lower-case and strip a text column (EHRSQL's ``x.lower().strip()``)."""
    return f"lower(trim({col}, char(32, 9, 10, 13)))"


def _int(col: str) -> str:
    return f"CAST({col} AS INTEGER)"


def _real(col: str) -> str:
    return f"CAST({col} AS REAL)"


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _sql_lower(v: str | None) -> str | None:
    """Python twin of the SQL ``_lo`` expression (SQLite's lower() is ASCII-only)."""
    return v.strip(" \t\n\r").translate(_ASCII_LOWER) if v is not None else None


def _is_int_dose(v: str | None) -> bool:
    """EHRSQL keeps doses that are whole numbers once thousands separators are removed."""
    if v is None:
        return False
    d = v.replace(",", "")
    return d != "" and d.isascii() and d.isdigit()


def _require(*positions: int) -> Callable[[tuple[str | None, ...]], tuple[Any, ...] | None]:
    """A row filter (before staging) dropping rows with a NULL at any of ``positions``."""

    def keep(row: tuple[str | None, ...]) -> tuple[Any, ...] | None:
        for i in positions:
            if row[i] is None:
                return None
        return row

    return keep


def _weighted_year(rng: random.Random) -> int:
    years = list(range(START_YEAR, START_YEAR + TIME_SPAN + 1))
    return rng.choices(years, weights=range(1, len(years) + 1))[0]


def _parse_time(value: str | None) -> _dt.datetime | None:
    if not value:
        return None
    value = value.strip()
    for fmt in (_TFMT, "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return _dt.datetime.strptime(value, fmt)
        except ValueError:
            continue
    try:
        return _dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def _fmt(t: _dt.datetime | None) -> str | None:
    return t.strftime(_TFMT) if t is not None else None


def _cap(t: _dt.datetime | None, now: _dt.datetime) -> _dt.datetime | None:
    return t if t is not None and t <= now else None


def _lower(v: str | None) -> str | None:
    return v.lower().strip() if v is not None else None


def _to_int(v: str | None) -> int | None:
    if v is None:
        return None
    try:
        return int(v)
    except ValueError:
        try:
            return int(float(v))
        except ValueError:
            return None


def _to_float(v: str | None) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return None


def _item_cost(seed: int, db: str, event_type: str, item: Any, mean: float) -> float:
    rng = random.Random(f"{seed}:{db}:{event_type}:{item}")
    return round(rng.gauss(mean, 1.0), 2)


def _mean_costs(seed: int) -> list[int]:
    import numpy as np

    return [int(x) for x in np.random.default_rng(seed).poisson(lam=10, size=4)]


def _schema() -> Any:
    from medagentgym.data import schema

    return schema


def _create_tables(conn: sqlite3.Connection, name: str) -> None:
    _schema().create_tables(conn, name)


def _open_output(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")  # the whole file is atomic; no journal needed
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-262144")  # 256 MiB
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


class _Builder:
    """Shared machinery: staging, chunked INSERT…SELECT, progress, bookkeeping."""

    db_name = ""

    def __init__(
        self,
        src_dir: Path,
        conn: sqlite3.Connection,
        *,
        progress: Progress | None,
        chunk_rows: int,
        seed: int,
    ) -> None:
        self.src = src_dir
        self.conn = conn
        self.progress = progress
        self.chunk_rows = chunk_rows
        self.seed = seed
        self.inputs: list[dict[str, Any]] = []
        self.missing: list[str] = []
        self.notes: list[str] = []
        self._tables: dict[str, _CsvTable] = {}

    # -- files
    def table(self, name: str, *, required: bool = False) -> _CsvTable | None:
        if name in self._tables:
            return self._tables[name]
        path = find_table_file(self.src, name)
        if path is None:
            if required:
                raise ConfigurationError(
                    f"{name}.csv(.gz) not found in {self.src}; expected the PhysioNet "
                    f"{self.db_name} CSV layout"
                )
            return None
        t = _CsvTable(path, name.lower())
        self._tables[name] = t
        return t

    def finish_inputs(self) -> None:
        self.inputs = [t.record() for t in self._tables.values()]

    # -- staging
    def stage(self, columns: Sequence[str]) -> None:
        self.conn.execute("DROP TABLE IF EXISTS temp.stg")
        cols = ", ".join(f'"{c}"' for c in columns)
        self.conn.execute(f"CREATE TEMP TABLE stg ({cols})")

    def load(
        self,
        target: str,
        source: _CsvTable | None,
        columns: Sequence[str],
        insert_sql: str,
        *,
        optional: Sequence[str] = (),
        row_map: Callable[[tuple[str | None, ...]], tuple[Any, ...] | None] | None = None,
        staged_columns: Sequence[str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> int:
        """Stream ``columns`` of ``source`` through ``stg`` and ``insert_sql`` into ``target``.

        ``insert_sql`` reads ``stg`` (with its implicit ``rowid`` giving file order) and
        receives ``:base`` (the next id of ``target``) plus ``params``. ``row_map`` may
        rewrite or drop (return None) each raw row before staging.
        """
        if source is None:
            self.missing.append(target)
            return 0
        staged = list(staged_columns or columns)
        self.stage(staged)
        placeholders = ", ".join("?" for _ in staged)
        ins = f"INSERT INTO stg VALUES ({placeholders})"
        base = self.count(target)
        total = 0
        for batch in source.chunks(
            columns, optional=optional, chunk_rows=self.chunk_rows, progress=self.progress
        ):
            rows: Any = batch
            if row_map is not None:
                rows = [r for r in map(row_map, batch) if r is not None]
            self.conn.execute("BEGIN")
            self.conn.executemany(ins, rows)
            cur = self.conn.execute(insert_sql, {"base": base, **(params or {})})
            n = max(cur.rowcount, 0)
            self.conn.execute("DELETE FROM stg")
            self.conn.execute("COMMIT")
            base += n
            total += n
        self.conn.execute("DROP TABLE IF EXISTS temp.stg")
        return total

    def count(self, table: str) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        cols = ", ".join(columns)
        ph = ", ".join("?" for _ in columns)
        self.conn.execute("BEGIN")
        self.conn.executemany(f"INSERT INTO {table} ({cols}) VALUES ({ph})", rows)
        self.conn.execute("COMMIT")

    def report_stage(self, stage: str) -> None:
        if self.progress is not None:
            self.progress(stage, 0, None)

    def cost_items(self, event_type: str, table: str, item_col: str, mean: float) -> str:
        """Create temp table ``cost_<event_type>(item, cost)`` over the distinct items of
        ``table.item_col``; the item column gets the event column's type so that the join
        uses its primary-key index. Returns the temp table's name."""
        name = f"cost_{event_type}"
        typ = next(
            (r[2] for r in self.conn.execute(f"PRAGMA table_info({table})") if r[1] == item_col),
            "",
        )
        self.conn.execute(f"DROP TABLE IF EXISTS temp.{name}")
        self.conn.execute(f"CREATE TEMP TABLE {name} (item {typ} PRIMARY KEY, cost REAL)")
        items = [r[0] for r in self.conn.execute(f"SELECT DISTINCT {item_col} FROM {table}")]
        rows = [
            (it, _item_cost(self.seed, self.db_name, event_type, it, mean))
            for it in items
            if it is not None
        ]
        self.insert_rows(f"temp.{name}", ("item", "cost"), rows)
        return f"temp.{name}"

    def table_counts(self, names: Sequence[str]) -> dict[str, int]:
        return {n: self.count(n) for n in names}


# --------------------------------------------------------------------------- MIMIC-III

MIMIC_III_TABLES = (
    "patients",
    "admissions",
    "d_icd_diagnoses",
    "d_icd_procedures",
    "d_labitems",
    "d_items",
    "diagnoses_icd",
    "procedures_icd",
    "labevents",
    "prescriptions",
    "cost",
    "chartevents",
    "inputevents_cv",
    "outputevents",
    "microbiologyevents",
    "icustays",
    "transfers",
)


class _MimicIII(_Builder):
    db_name = "MIMIC-III"

    def shift_expr(self, col: str) -> str:
        return f"datetime(s.{col}, printf('%+d days', h.days))"

    def build(self) -> None:
        now = _dt.datetime.strptime(CURRENT_TIME, _TFMT)
        self.conn.execute("CREATE TEMP TABLE shift (subject_id INTEGER PRIMARY KEY, days INTEGER)")

        # ---- admissions + patients (small: processed in Python) -------------------------
        self.report_stage("admissions")
        pat_t = self.table("PATIENTS", required=True)
        adm_t = self.table("ADMISSIONS", required=True)
        assert pat_t is not None and adm_t is not None
        patients: dict[int, tuple[Any, ...]] = {}
        for batch in pat_t.chunks(
            ["row_id", "subject_id", "gender", "dob", "dod"], progress=self.progress
        ):
            for _row_id, sid, gender, dob, dod in batch:
                s = _to_int(sid)
                if s is not None:
                    patients[s] = (_lower(gender), _parse_time(dob), _parse_time(dod))
        adm_cols = [
            "row_id",
            "subject_id",
            "hadm_id",
            "admittime",
            "dischtime",
            "admission_type",
            "admission_location",
            "discharge_location",
            "insurance",
            "language",
            "marital_status",
            "ethnicity",
        ]
        admissions: list[tuple[Any, ...]] = []
        for batch in adm_t.chunks(adm_cols, progress=self.progress):
            admissions.extend(batch)
        first: dict[int, _dt.datetime] = {}
        for a in admissions:
            s, t = _to_int(a[1]), _parse_time(a[3])
            if s is None or t is None:
                continue
            if s not in first or t < first[s]:
                first[s] = t
        shift_days: dict[int, int] = {}
        for s, t in first.items():
            year = _weighted_year(random.Random(f"{self.seed}:mimic_iii:{s}"))
            shift_days[s] = (year - t.year) * 365
        self.insert_rows("shift", ("subject_id", "days"), sorted(shift_days.items()))

        adm_rows = []
        kept_subjects: set[int] = set()
        for a in admissions:
            s, hadm = _to_int(a[1]), _to_int(a[2])
            admit = _parse_time(a[3])
            if s is None or hadm is None or admit is None or s not in shift_days:
                continue
            delta = _dt.timedelta(days=shift_days[s])
            new_admit = _cap(admit + delta, now)
            if new_admit is None:
                continue
            disch = _parse_time(a[4])
            new_disch = _cap(disch + delta, now) if disch is not None else None
            dob = patients.get(s, (None, None, None))[1]
            if dob is None:
                continue
            age = int((admit - dob).days / 365.25)
            adm_rows.append(
                (
                    len(adm_rows),
                    s,
                    hadm,
                    _fmt(new_admit),
                    _fmt(new_disch),
                    _lower(a[5]),
                    _lower(a[6]),
                    _lower(a[7]) if new_disch is not None else None,
                    _lower(a[8]),
                    _lower(a[9]),
                    _lower(a[10]),
                    _lower(a[11]),
                    age,
                )
            )
            kept_subjects.add(s)
        self.insert_rows(
            "admissions",
            (
                "row_id",
                "subject_id",
                "hadm_id",
                "admittime",
                "dischtime",
                "admission_type",
                "admission_location",
                "discharge_location",
                "insurance",
                "language",
                "marital_status",
                "ethnicity",
                "age",
            ),
            adm_rows,
        )
        pat_rows = []
        for s, (gender, dob, dod) in patients.items():
            if s not in kept_subjects:
                continue
            delta = _dt.timedelta(days=shift_days[s])
            pat_rows.append(
                (
                    len(pat_rows),
                    s,
                    gender,
                    _fmt(dob + delta) if dob else None,
                    _fmt(_cap(dod + delta, now)) if dod else None,
                )
            )
        self.insert_rows("patients", ("row_id", "subject_id", "gender", "dob", "dod"), pat_rows)
        self.conn.execute(
            "CREATE TEMP TABLE adm AS SELECT hadm_id, admittime, dischtime FROM main.admissions"
        )
        self.conn.execute("CREATE UNIQUE INDEX temp.adm_hadm ON adm (hadm_id)")
        del admissions, patients, adm_rows, pat_rows

        # ---- dictionaries -------------------------------------------------------------
        self.report_stage("dictionaries")
        for name in ("D_ICD_DIAGNOSES", "D_ICD_PROCEDURES"):
            self.load(
                name.lower(),
                self.table(name),
                ["icd9_code", "short_title", "long_title"],
                f"""INSERT INTO {name.lower()} (row_id, icd9_code, short_title, long_title)
                SELECT :base + row_number() OVER (ORDER BY r) - 1, code, st, lt FROM (
                    SELECT min(s.rowid) AS r, {_lo("s.icd9_code")} AS code,
                           {_lo("s.short_title")} AS st, {_lo("s.long_title")} AS lt
                    FROM stg s WHERE s.icd9_code IS NOT NULL
                      AND {_lo("s.icd9_code")} NOT IN (SELECT icd9_code FROM {name.lower()})
                    GROUP BY code)""",
            )
        self.load(
            "d_labitems",
            self.table("D_LABITEMS"),
            ["itemid", "label"],
            f"""INSERT INTO d_labitems (row_id, itemid, label)
            SELECT :base + row_number() OVER (ORDER BY s.rowid) - 1, {_int("s.itemid")},
                   {_lo("s.label")}
            FROM stg s WHERE s.itemid IS NOT NULL""",
        )
        self.load(
            "d_items",
            self.table("D_ITEMS"),
            ["itemid", "label", "linksto"],
            f"""INSERT INTO d_items (row_id, itemid, label, linksto)
            SELECT :base + row_number() OVER (ORDER BY s.rowid) - 1, {_int("s.itemid")},
                   {_lo("s.label")}, {_lo("s.linksto")}
            FROM stg s WHERE s.label IS NOT NULL AND s.itemid IS NOT NULL
              AND {_lo("s.linksto")} IN ('inputevents_cv', 'outputevents', 'chartevents')""",
        )

        # ---- stays --------------------------------------------------------------------
        self.report_stage("icustays")
        self.load(
            "icustays",
            self.table("ICUSTAYS"),
            [
                "subject_id",
                "hadm_id",
                "icustay_id",
                "first_careunit",
                "last_careunit",
                "first_wardid",
                "last_wardid",
                "intime",
                "outtime",
            ],
            f"""INSERT INTO icustays (row_id, subject_id, hadm_id, icustay_id, first_careunit,
                last_careunit, first_wardid, last_wardid, intime, outtime)
            SELECT :base + row_number() OVER (ORDER BY r) - 1, sid, hid, iid, fc, lc, fw, lw,
                   t_in, CASE WHEN t_out <= :now THEN t_out END
            FROM (SELECT s.rowid AS r, {_int("s.subject_id")} AS sid, {_int("s.hadm_id")} AS hid,
                         {_int("s.icustay_id")} AS iid, {_lo("s.first_careunit")} AS fc,
                         {_lo("s.last_careunit")} AS lc, {_int("s.first_wardid")} AS fw,
                         {_int("s.last_wardid")} AS lw, {self.shift_expr("intime")} AS t_in,
                         {self.shift_expr("outtime")} AS t_out
                  FROM stg s CROSS JOIN shift h ON h.subject_id = {_int("s.subject_id")}
                  WHERE {_int("s.hadm_id")} IN (SELECT hadm_id FROM adm))
            WHERE t_in IS NOT NULL AND t_in <= :now""",
            params={"now": CURRENT_TIME},
        )
        self.load(
            "transfers",
            self.table("TRANSFERS"),
            [
                "subject_id",
                "hadm_id",
                "icustay_id",
                "eventtype",
                "curr_careunit",
                "curr_wardid",
                "intime",
                "outtime",
            ],
            f"""INSERT INTO transfers (row_id, subject_id, hadm_id, icustay_id, eventtype,
                careunit, wardid, intime, outtime)
            SELECT :base + row_number() OVER (ORDER BY r) - 1, sid, hid, iid, ev, cu, wd, t_in,
                   CASE WHEN t_out <= :now THEN t_out END
            FROM (SELECT s.rowid AS r, {_int("s.subject_id")} AS sid, {_int("s.hadm_id")} AS hid,
                         {_int("s.icustay_id")} AS iid, {_lo("s.eventtype")} AS ev,
                         {_lo("s.curr_careunit")} AS cu, {_int("s.curr_wardid")} AS wd,
                         {self.shift_expr("intime")} AS t_in, {self.shift_expr("outtime")} AS t_out
                  FROM stg s CROSS JOIN shift h ON h.subject_id = {_int("s.subject_id")}
                  WHERE {_int("s.hadm_id")} IN (SELECT hadm_id FROM adm))
            WHERE t_in IS NOT NULL AND t_in <= :now""",
            params={"now": CURRENT_TIME},
        )

        # ---- diagnoses / procedures (charttime from the admission) ---------------------
        self.report_stage("diagnoses_icd")
        for name, dict_table, time_col in (
            ("DIAGNOSES_ICD", "d_icd_diagnoses", "admittime"),
            ("PROCEDURES_ICD", "d_icd_procedures", "dischtime"),
        ):
            self.load(
                name.lower(),
                self.table(name),
                ["subject_id", "hadm_id", "icd9_code"],
                f"""INSERT INTO {name.lower()} (row_id, subject_id, hadm_id, icd9_code, charttime)
                SELECT :base + row_number() OVER (ORDER BY s.rowid) - 1, {_int("s.subject_id")},
                       a.hadm_id, {_lo("s.icd9_code")}, a.{time_col}
                FROM stg s CROSS JOIN adm a ON a.hadm_id = {_int("s.hadm_id")}
                WHERE s.icd9_code IS NOT NULL AND a.{time_col} IS NOT NULL
                  AND a.{time_col} >= :start
                  AND {_lo("s.icd9_code")} IN (SELECT icd9_code FROM {dict_table})""",
                params={"start": START_TIME},
            )

        # ---- events -------------------------------------------------------------------
        tparams = {"now": CURRENT_TIME, "start": START_TIME}
        self.report_stage("labevents")
        self.load(
            "labevents",
            self.table("LABEVENTS"),
            ["subject_id", "hadm_id", "itemid", "charttime", "valuenum", "valueuom"],
            row_map=_require(1, 4, 5),
            insert_sql=f"""INSERT INTO labevents (row_id, subject_id, hadm_id, itemid, charttime, valuenum,
                valueuom)
            SELECT :base + row_number() OVER (ORDER BY r) - 1, sid, hid, item, t, v, u
            FROM (SELECT s.rowid AS r, {_int("s.subject_id")} AS sid, {_int("s.hadm_id")} AS hid,
                         {_int("s.itemid")} AS item, {self.shift_expr("charttime")} AS t,
                         {_real("s.valuenum")} AS v, {_lo("s.valueuom")} AS u
                  FROM stg s CROSS JOIN shift h ON h.subject_id = {_int("s.subject_id")}
                  WHERE s.valuenum IS NOT NULL AND s.valueuom IS NOT NULL
                    AND {_int("s.itemid")} IN (SELECT itemid FROM d_labitems)
                    AND {_int("s.hadm_id")} IN (SELECT hadm_id FROM adm))
            WHERE t IS NOT NULL AND t >= :start AND t <= :now""",
            params=tparams,
        )

        self.report_stage("prescriptions")
        rx = self.table("PRESCRIPTIONS")
        rx_cols = [
            "subject_id",
            "hadm_id",
            "startdate",
            "enddate",
            "drug",
            "dose_val_rx",
            "dose_unit_rx",
            "route",
        ]
        # pass 1: per drug, its most frequent unit among valid rows (ties: first seen)
        self.conn.execute("CREATE TEMP TABLE drug_unit (drug TEXT PRIMARY KEY, unit TEXT)")
        if rx is not None:
            units: dict[str, Counter[str]] = {}
            for batch in rx.chunks(rx_cols, chunk_rows=self.chunk_rows, progress=self.progress):
                for row in batch:
                    if None in row[2:] or not _is_int_dose(row[5]):
                        continue
                    drug, unit = _sql_lower(row[4]), _sql_lower(row[6])
                    units.setdefault(drug, Counter())[unit] += 1
            self.insert_rows(
                "temp.drug_unit",
                ("drug", "unit"),
                [(d, c.most_common(1)[0][0]) for d, c in units.items()],
            )
            del units
        self.load(
            "prescriptions",
            rx,
            rx_cols,
            f"""INSERT INTO prescriptions (row_id, subject_id, hadm_id, startdate, enddate, drug,
                dose_val_rx, dose_unit_rx, route)
            SELECT :base + row_number() OVER (ORDER BY r) - 1, sid, hid, t,
                   CASE WHEN t_end <= :now THEN t_end END, drug, dose, unit, route FROM (
                SELECT s.rowid AS r, {_int("s.subject_id")} AS sid, {_int("s.hadm_id")} AS hid,
                       {self.shift_expr("startdate")} AS t, {self.shift_expr("enddate")} AS t_end,
                       du.drug AS drug,
                       CAST(CAST(replace(s.dose_val_rx, ',', '') AS INTEGER) AS TEXT) AS dose,
                       du.unit AS unit, {_lo("s.route")} AS route
                FROM stg s CROSS JOIN shift h ON h.subject_id = {_int("s.subject_id")}
                CROSS JOIN drug_unit du ON du.drug = {_lo("s.drug")}
                WHERE {_int("s.hadm_id")} IN (SELECT hadm_id FROM adm)
                  AND {_lo("s.dose_unit_rx")} = du.unit
                  AND s.enddate IS NOT NULL AND s.route IS NOT NULL
                  AND replace(s.dose_val_rx, ',', '') <> ''
                  AND replace(s.dose_val_rx, ',', '') NOT GLOB '*[^0-9]*')
            WHERE t IS NOT NULL AND t >= :start AND t <= :now""",
            params=tparams,
        )

        self.report_stage("chartevents")
        self.load(
            "chartevents",
            self.table("CHARTEVENTS"),
            [
                "subject_id",
                "hadm_id",
                "icustay_id",
                "itemid",
                "charttime",
                "valuenum",
                "valueuom",
            ],
            row_map=_require(1, 2, 3, 4, 5, 6),
            insert_sql=f"""INSERT INTO chartevents (row_id, subject_id, hadm_id, icustay_id, itemid,
                charttime, valuenum, valueuom)
            SELECT :base + row_number() OVER (ORDER BY r) - 1, sid, hid, iid, item, t, v, u
            FROM (SELECT s.rowid AS r, {_int("s.subject_id")} AS sid, {_int("s.hadm_id")} AS hid,
                         {_int("s.icustay_id")} AS iid, {_int("s.itemid")} AS item,
                         {self.shift_expr("charttime")} AS t, {_real("s.valuenum")} AS v,
                         {_lo("s.valueuom")} AS u
                  FROM stg s CROSS JOIN shift h ON h.subject_id = {_int("s.subject_id")}
                  WHERE s.icustay_id IS NOT NULL AND s.itemid IS NOT NULL
                    AND s.valuenum IS NOT NULL AND s.valueuom IS NOT NULL
                    AND {_int("s.hadm_id")} IN (SELECT hadm_id FROM adm))
            WHERE t IS NOT NULL AND t >= :start AND t <= :now""",
            params=tparams,
        )
        for name, amount, unit in (
            ("INPUTEVENTS_CV", "amount", "amountuom"),
            ("OUTPUTEVENTS", "value", "valueuom"),
        ):
            self.report_stage(name.lower())
            self.load(
                name.lower(),
                self.table(name),
                ["subject_id", "hadm_id", "icustay_id", "charttime", "itemid", amount, unit],
                row_map=_require(1, 2, 3, 4, 5, 6),
                insert_sql=f"""INSERT INTO {name.lower()} (row_id, subject_id, hadm_id, icustay_id,
                    charttime, itemid, {amount})
                SELECT :base + row_number() OVER (ORDER BY r) - 1, sid, hid, iid, t, item, v
                FROM (SELECT s.rowid AS r, {_int("s.subject_id")} AS sid,
                             {_int("s.hadm_id")} AS hid, {_int("s.icustay_id")} AS iid,
                             {_int("s.itemid")} AS item, {self.shift_expr("charttime")} AS t,
                             {_real("s." + amount)} AS v
                      FROM stg s CROSS JOIN shift h ON h.subject_id = {_int("s.subject_id")}
                      WHERE s.icustay_id IS NOT NULL AND s.{amount} IS NOT NULL
                        AND {_lo("s." + unit)} = 'ml'
                        AND {_int("s.itemid")} IN (SELECT itemid FROM d_items)
                        AND {_int("s.hadm_id")} IN (SELECT hadm_id FROM adm))
                WHERE t IS NOT NULL AND t >= :start AND t <= :now""",
                params=tparams,
            )

        self.report_stage("microbiologyevents")
        self.load(
            "microbiologyevents",
            self.table("MICROBIOLOGYEVENTS"),
            ["subject_id", "hadm_id", "chartdate", "charttime", "spec_type_desc", "org_name"],
            f"""INSERT INTO microbiologyevents (row_id, subject_id, hadm_id, charttime,
                spec_type_desc, org_name)
            SELECT :base + row_number() OVER (ORDER BY r) - 1, sid, hid, t, st, org
            FROM (SELECT s.rowid AS r, {_int("s.subject_id")} AS sid, {_int("s.hadm_id")} AS hid,
                         datetime(coalesce(s.charttime, s.chartdate), printf('%+d days', h.days))
                             AS t,
                         {_lo("s.spec_type_desc")} AS st, {_lo("s.org_name")} AS org
                  FROM stg s CROSS JOIN shift h ON h.subject_id = {_int("s.subject_id")}
                  WHERE {_int("s.hadm_id")} IN (SELECT hadm_id FROM adm))
            WHERE t IS NOT NULL AND t >= :start AND t <= :now""",
            params=tparams,
        )

        # ---- cost (synthesised, as EHRSQL does) --------------------------------------
        self.report_stage("cost")
        means = _mean_costs(self.seed)
        plan = (
            ("diagnoses_icd", "icd9_code", "charttime", means[0]),
            ("labevents", "itemid", "charttime", means[1]),
            ("procedures_icd", "icd9_code", "charttime", means[2]),
            ("prescriptions", "drug", "startdate", means[3]),
        )
        for table, item_col, time_col, mean in plan:
            costs = self.cost_items(table, table, item_col, mean)
            base = self.count("cost")
            self.conn.execute("BEGIN")
            self.conn.execute(
                f"""INSERT INTO cost (row_id, subject_id, hadm_id, event_type, event_id,
                    chargetime, cost)
                SELECT :base + row_number() OVER (ORDER BY e.row_id) - 1, e.subject_id,
                       e.hadm_id, '{table}', e.row_id, e.{time_col}, c.cost
                FROM {table} e CROSS JOIN {costs} c ON c.item = e.{item_col}""",
                {"base": base},
            )
            self.conn.execute("COMMIT")
        self.notes.append(
            f"cost is synthesised (EHRSQL-style): event-type means {means} from "
            f"numpy default_rng({self.seed}).poisson(10, 4); per-item N(mean, 1)"
        )


# --------------------------------------------------------------------------- eICU

EICU_TABLES = (
    "patient",
    "diagnosis",
    "treatment",
    "lab",
    "medication",
    "cost",
    "allergy",
    "intakeoutput",
    "microlab",
    "vitalperiodic",
)


def _path_name(path: str | None) -> tuple[str, str, str] | None:
    """(levels 1-2, levels 3-4, name) of an eICU ``a|b|c|d...`` string (already lowered)."""
    if path is None:
        return None
    parts = path.split("|")
    if len(parts) < 3:
        return None
    p12 = "|".join(parts[:2])
    p34 = "|".join(parts[2:4])
    name = " - ".join(parts[2:4]) if len(parts) > 3 else parts[2]
    return p12, p34, name


class _EICU(_Builder):
    db_name = "eICU"

    def time_expr(self, col: str) -> str:
        return f"datetime(h.base, printf('%+d minutes', CAST(s.{col} AS INTEGER)))"

    def build(self) -> None:
        now = _dt.datetime.strptime(CURRENT_TIME, _TFMT)
        pt = self.table("patient", required=True)
        assert pt is not None
        self.report_stage("patient")
        cols = [
            "uniquepid",
            "patienthealthsystemstayid",
            "patientunitstayid",
            "gender",
            "age",
            "ethnicity",
            "hospitalid",
            "wardid",
            "admissionheight",
            "admissionweight",
            "dischargeweight",
            "hospitaladmitsource",
            "hospitaldischargestatus",
            "hospitaladmitoffset",
            "hospitaladmittime24",
            "unitdischargeoffset",
            "hospitaldischargeoffset",
            "hospitaldischargeyear",
        ]
        rows: list[dict[str, Any]] = []
        for batch in pt.chunks(cols, progress=self.progress):
            for raw in batch:
                r = dict(zip(cols, raw, strict=True))
                for k in (
                    "uniquepid",
                    "gender",
                    "age",
                    "ethnicity",
                    "hospitaladmitsource",
                    "hospitaldischargestatus",
                ):
                    r[k] = _lower(r[k])
                if r["hospitaladmitsource"] is None or r["gender"] not in ("male", "female"):
                    continue
                age = _to_int(r["age"]) if r["age"] not in (None, "> 89") else None
                if age is None or age <= 10:
                    continue
                r["age"] = age
                if None in (
                    _to_int(r["patientunitstayid"]),
                    _to_int(r["patienthealthsystemstayid"]),
                    _to_int(r["hospitaldischargeyear"]),
                    r["uniquepid"],
                ):
                    continue
                rows.append(r)
        by_patient: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_patient.setdefault(r["uniquepid"], []).append(r)

        stays: list[tuple[int, str, str, int]] = []  # (unitstayid, base, uniquepid, hsid)
        out_rows: list[tuple[Any, ...]] = []
        for pid, prow in by_patient.items():
            rng = random.Random(f"{self.seed}:eicu:{pid}")
            first_year = _weighted_year(rng)
            years = sorted({_to_int(r["hospitaldischargeyear"]) for r in prow})
            init_year = years[0]
            init_age = min(r["age"] for r in prow)
            for dyear in years:
                same = [r for r in prow if _to_int(r["hospitaldischargeyear"]) == dyear]
                visits = list(dict.fromkeys(_to_int(r["patienthealthsystemstayid"]) for r in same))
                year = first_year + (dyear - init_year)  # type: ignore[operator]
                jan1 = _dt.datetime(year, 1, 1)
                span = (_dt.datetime(year, 12, 31) - jan1).days
                n = len(visits)
                dates = [
                    jan1 + _dt.timedelta(days=int(((k + rng.random()) / n) * span))
                    for k in range(n)
                ]
                for vdate, hsid in zip(dates, visits, strict=True):
                    for r in same:
                        if _to_int(r["patienthealthsystemstayid"]) != hsid:
                            continue
                        h_off = _to_int(r["hospitaladmitoffset"])
                        u_off = _to_int(r["unitdischargeoffset"])
                        hd_off = _to_int(r["hospitaldischargeoffset"])
                        t24 = r["hospitaladmittime24"]
                        if None in (h_off, u_off, hd_off) or t24 is None:
                            continue
                        if not (h_off <= 0 < u_off <= hd_off):  # type: ignore[operator]
                            continue
                        try:
                            hh, mm, ss = (int(x) for x in t24.strip().split(":"))
                        except ValueError:
                            continue
                        hosp_admit = vdate.replace(hour=hh, minute=mm, second=ss)
                        base = hosp_admit - _dt.timedelta(minutes=h_off)  # type: ignore[arg-type]
                        h_admit = _cap(hosp_admit, now)
                        u_admit = _cap(base, now)
                        if h_admit is None or u_admit is None:
                            continue
                        u_dis = _cap(base + _dt.timedelta(minutes=u_off), now)  # type: ignore[arg-type]
                        h_dis = _cap(base + _dt.timedelta(minutes=hd_off), now)  # type: ignore[arg-type]
                        usid = _to_int(r["patientunitstayid"])
                        assert usid is not None and hsid is not None
                        stays.append((usid, _fmt(base) or "", pid, hsid))
                        out_rows.append(
                            (
                                pid,
                                hsid,
                                usid,
                                r["gender"],
                                str(init_age + (dyear - init_year)),  # type: ignore[operator]
                                r["ethnicity"],
                                _to_int(r["hospitalid"]),
                                _to_int(r["wardid"]),
                                _to_float(r["admissionheight"]),
                                _to_float(r["admissionweight"]),
                                _to_float(r["dischargeweight"]) if h_dis else None,
                                _fmt(h_admit),
                                r["hospitaladmitsource"],
                                _fmt(u_admit),
                                _fmt(u_dis),
                                _fmt(h_dis),
                                r["hospitaldischargestatus"] if h_dis else None,
                            )
                        )
        order = {r["patientunitstayid"]: i for i, r in enumerate(rows)}
        out_rows.sort(key=lambda x: order.get(str(x[2]), 0))
        self.insert_rows(
            "patient",
            (
                "uniquepid",
                "patienthealthsystemstayid",
                "patientunitstayid",
                "gender",
                "age",
                "ethnicity",
                "hospitalid",
                "wardid",
                "admissionheight",
                "admissionweight",
                "dischargeweight",
                "hospitaladmittime",
                "hospitaladmitsource",
                "unitadmittime",
                "unitdischargetime",
                "hospitaldischargetime",
                "hospitaldischargestatus",
            ),
            out_rows,
        )
        self.conn.execute(
            "CREATE TEMP TABLE stay (patientunitstayid INTEGER PRIMARY KEY, base TEXT, "
            "uniquepid TEXT, hsid INTEGER)"
        )
        self.insert_rows("stay", ("patientunitstayid", "base", "uniquepid", "hsid"), stays)
        del rows, by_patient, out_rows, stays
        tparams = {"now": CURRENT_TIME}

        def event_sql(
            table: str,
            id_col: str,
            cols: Sequence[str],
            values: str,
            time_col: str,
            offset_col: str,
            where: str = "1",
        ) -> str:
            """INSERT for an eICU event table; ``values`` yields ``cols`` (as aliases)."""
            names = ", ".join(["patientunitstayid", *cols, time_col])
            return f"""INSERT INTO {table} ({id_col}, {names})
            SELECT :base + row_number() OVER (ORDER BY r) - 1, {names} FROM (
                SELECT s.rowid AS r, h.patientunitstayid AS patientunitstayid, {values},
                       {self.time_expr(offset_col)} AS {time_col}
                FROM stg s CROSS JOIN stay h ON h.patientunitstayid = {_int("s.patientunitstayid")}
                WHERE s.{offset_col} IS NOT NULL AND {where})
            WHERE {time_col} IS NOT NULL AND {time_col} <= :now"""

        # ---- diagnosis / treatment: '|'-path names -------------------------------------
        for table, string_col, name_col, id_col, off_col, extra in (
            (
                "diagnosis",
                "diagnosisstring",
                "diagnosisname",
                "diagnosisid",
                "diagnosisoffset",
                ("icd9code",),
            ),
            ("treatment", "treatmentstring", "treatmentname", "treatmentid", "treatmentoffset", ()),
        ):
            self.report_stage(table)
            src = self.table(table)
            if src is None:
                self.missing.append(table)
                continue
            read_cols = ["patientunitstayid", off_col, string_col, *extra]
            counts: dict[str, Counter[str]] = {}
            for batch in src.chunks(read_cols, chunk_rows=self.chunk_rows, progress=self.progress):
                for row in batch:
                    pn = _path_name(_lower(row[2]))
                    if pn is not None:
                        counts.setdefault(pn[1], Counter())[pn[0]] += 1
            best = {p34: c.most_common(1)[0][0] for p34, c in counts.items()}
            del counts

            def mapper(
                row: tuple[str | None, ...], best: dict[str, str] = best
            ) -> tuple[Any, ...] | None:
                pn = _path_name(_lower(row[2]))
                if pn is None or best.get(pn[1]) != pn[0]:
                    return None
                return (row[0], row[1], pn[2], *(_lower(v) for v in row[3:]))

            staged = ["patientunitstayid", "off", "name", *extra]
            self.load(
                table,
                src,
                read_cols,
                event_sql(
                    table,
                    id_col,
                    [name_col, *extra],
                    ", ".join([f"s.name AS {name_col}", *(f"s.{c} AS {c}" for c in extra)]),
                    f"{table}time",
                    "off",
                ),
                staged_columns=staged,
                row_map=mapper,
                params=tparams,
            )

        # ---- lab -----------------------------------------------------------------------
        self.report_stage("lab")
        self.load(
            "lab",
            self.table("lab"),
            ["patientunitstayid", "labresultoffset", "labname", "labresult"],
            event_sql(
                "lab",
                "labid",
                ["labname", "labresult"],
                f"{_lo('s.labname')} AS labname, {_real('s.labresult')} AS labresult",
                "labresulttime",
                "labresultoffset",
                "s.labresult IS NOT NULL AND s.labname IS NOT NULL",
            ),
            params=tparams,
        )

        # ---- medication ----------------------------------------------------------------
        self.report_stage("medication")
        self.load(
            "medication",
            self.table("medication"),
            [
                "patientunitstayid",
                "drugstartoffset",
                "drugstopoffset",
                "drugname",
                "dosage",
                "routeadmin",
                "drugordercancelled",
            ],
            f"""INSERT INTO medication (medicationid, patientunitstayid, drugname, dosage,
                routeadmin, drugstarttime, drugstoptime)
            SELECT :base + row_number() OVER (ORDER BY r) - 1, u, dn, ds, ra, t1,
                   CASE WHEN t2 <= :now THEN t2 END
            FROM (SELECT s.rowid AS r, h.patientunitstayid AS u, {_lo("s.drugname")} AS dn,
                         {_lo("s.dosage")} AS ds, {_lo("s.routeadmin")} AS ra,
                         {self.time_expr("drugstartoffset")} AS t1,
                         {self.time_expr("drugstopoffset")} AS t2
                  FROM stg s CROSS JOIN stay h ON h.patientunitstayid = {_int("s.patientunitstayid")}
                  WHERE s.drugname IS NOT NULL AND s.dosage IS NOT NULL
                    AND s.routeadmin IS NOT NULL AND s.drugstartoffset IS NOT NULL
                    AND {_lo("s.drugordercancelled")} = 'no')
            WHERE t1 IS NOT NULL AND t1 <= :now""",
            params=tparams,
        )

        # ---- allergy, microlab ---------------------------------------------------------
        self.report_stage("allergy")
        self.load(
            "allergy",
            self.table("allergy"),
            ["patientunitstayid", "allergyoffset", "drugname", "allergyname"],
            event_sql(
                "allergy",
                "allergyid",
                ["drugname", "allergyname"],
                f"{_lo('s.drugname')} AS drugname, {_lo('s.allergyname')} AS allergyname",
                "allergytime",
                "allergyoffset",
                "s.allergyname IS NOT NULL",
            ),
            params=tparams,
        )
        self.report_stage("microlab")
        self.load(
            "microlab",
            self.table("microlab"),
            ["patientunitstayid", "culturetakenoffset", "culturesite", "organism"],
            event_sql(
                "microlab",
                "microlabid",
                ["culturesite", "organism"],
                f"{_lo('s.culturesite')} AS culturesite, {_lo('s.organism')} AS organism",
                "culturetakentime",
                "culturetakenoffset",
                "s.culturesite IS NOT NULL AND s.organism IS NOT NULL",
            ),
            params=tparams,
        )

        # ---- intakeoutput ------------------------------------------------------------
        self.report_stage("intakeoutput")
        io_src = self.table("intakeoutput")
        if io_src is None:
            self.missing.append("intakeoutput")
        else:
            io_cols = [
                "patientunitstayid",
                "intakeoutputoffset",
                "cellpath",
                "celllabel",
                "cellvaluenumeric",
            ]
            labels: set[str] = set()
            for batch in io_src.chunks(io_cols, chunk_rows=self.chunk_rows, progress=self.progress):
                for row in batch:
                    cp = _lower(row[2]) or ""
                    if ("intake (ml)" in cp or "output (ml)" in cp) and row[3] is not None:
                        labels.add(_lower(row[3]) or "")
            labels -= {"intake", "output", ""}

            def io_map(row: tuple[str | None, ...]) -> tuple[Any, ...] | None:
                label = _lower(row[3])
                if label is None or label not in labels or row[4] is None:
                    return None
                words = label.split()
                if words and words[-1] == "intake":
                    words = words[:-1]
                if words and words[-1] == "output":
                    words = words[:-1]
                return (row[0], row[1], _lower(row[2]), " ".join(words), row[4])

            self.load(
                "intakeoutput",
                io_src,
                io_cols,
                event_sql(
                    "intakeoutput",
                    "intakeoutputid",
                    ["cellpath", "celllabel", "cellvaluenumeric"],
                    f"s.cellpath AS cellpath, s.celllabel AS celllabel, "
                    f"{_real('s.cellvaluenumeric')} AS cellvaluenumeric",
                    "intakeoutputtime",
                    "intakeoutputoffset",
                ),
                row_map=io_map,
                params=tparams,
            )

        # ---- vitalperiodic -----------------------------------------------------------
        self.report_stage("vitalperiodic")
        vit = [
            "temperature",
            "sao2",
            "heartrate",
            "respiration",
            "systemicsystolic",
            "systemicdiastolic",
            "systemicmean",
        ]
        self.load(
            "vitalperiodic",
            self.table("vitalperiodic"),
            ["patientunitstayid", "observationoffset", *vit],
            event_sql(
                "vitalperiodic",
                "vitalperiodicid",
                vit,
                ", ".join(f"{_real('s.' + c)} AS {c}" for c in vit),
                "observationtime",
                "observationoffset",
            ),
            params=tparams,
        )

        # ---- cost --------------------------------------------------------------------
        self.report_stage("cost")
        means = _mean_costs(self.seed)
        plan = (
            ("diagnosis", "diagnosisid", "diagnosisname", "diagnosistime", means[0]),
            ("lab", "labid", "labname", "labresulttime", means[1]),
            ("treatment", "treatmentid", "treatmentname", "treatmenttime", means[2]),
            ("medication", "medicationid", "drugname", "drugstarttime", means[3]),
        )
        for table, id_col, item_col, time_col, mean in plan:
            costs = self.cost_items(table, table, item_col, mean)
            base = self.count("cost")
            self.conn.execute("BEGIN")
            self.conn.execute(
                f"""INSERT INTO cost (costid, uniquepid, patienthealthsystemstayid, eventtype,
                    eventid, chargetime, cost)
                SELECT :base + row_number() OVER (ORDER BY e.{id_col}) - 1, h.uniquepid, h.hsid,
                       '{table}', e.{id_col}, e.{time_col}, c.cost
                FROM {table} e CROSS JOIN stay h ON h.patientunitstayid = e.patientunitstayid
                CROSS JOIN {costs} c ON c.item = e.{item_col}""",
                {"base": base},
            )
            self.conn.execute("COMMIT")
        self.notes.append(
            f"cost is synthesised (EHRSQL-style): event-type means {means} from "
            f"numpy default_rng({self.seed}).poisson(10, 4); per-item N(mean, 1)"
        )


# --------------------------------------------------------------------------- driver


def _run_import(
    builder_cls: type[_Builder],
    schema_name: str,
    tables: Sequence[str],
    src_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    progress: Progress | None,
    seed: int,
    chunk_rows: int,
    builder_name: str,
    extra_manifest: Callable[[_Builder], dict[str, Any]] | None = None,
) -> ImportReport:
    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise ConfigurationError(f"{src} is not a directory of {builder_cls.db_name} CSV files")
    out = Path(out_path).expanduser().absolute()
    started = time.monotonic()
    with _home.file_lock(out):
        with _home.atomic_path(out) as tmp:
            conn = _open_output(tmp)
            try:
                _create_tables(conn, schema_name)
                b = builder_cls(src, conn, progress=progress, chunk_rows=chunk_rows, seed=seed)
                b.build()
                if progress is not None:
                    progress("indexes", 0, None)
                _schema().create_indexes(conn, schema_name)
                b.finish_inputs()
                counts = b.table_counts(tables)
                conn.execute("PRAGMA journal_mode=DELETE")
            finally:
                conn.close()
            # the old marker must never describe the new file
            with contextlib.suppress(FileNotFoundError):
                _home.manifest_path(out).unlink()
        seconds = round(time.monotonic() - started, 3)
        missing = sorted(set(b.missing))
        notes = list(b.notes)
        if missing:
            notes.append(
                "source tables absent from the input (created empty): " + ", ".join(missing)
            )
        extra = extra_manifest(b) if extra_manifest else {}
        size = out.stat().st_size
        _home.write_manifest(
            out,
            kind="database",
            builder=builder_name,
            inputs=b.inputs,
            checksum=size < (4 << 30),
            source=str(src),
            schema=schema_name,
            tables=counts,
            missing_tables=missing,
            parameters={
                "seed": seed,
                "current_time": CURRENT_TIME,
                "start_year": START_YEAR,
                "time_span": TIME_SPAN,
            },
            seconds=seconds,
            notes=notes,
            **extra,
        )
    return ImportReport(
        path=out,
        database=schema_name,
        tables=counts,
        missing_tables=missing,
        seconds=seconds,
        notes=notes,
        inputs=b.inputs,
    )


def import_mimic_iii(
    src_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    *,
    seed: int = DEFAULT_SEED,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportReport:
    """Import PhysioNet MIMIC-III CSVs (full or demo) into EHRSQL's preprocessed schema.

    ``out_path`` defaults to ``db/mimic_iii.sqlite`` in the data home. PATIENTS and
    ADMISSIONS are required; any other absent table is created empty and listed in the
    manifest's ``missing_tables``.
    """
    out = Path(out_path) if out_path is not None else _home.db_path("mimic_iii")
    return _run_import(
        _MimicIII,
        "mimic_iii",
        MIMIC_III_TABLES,
        src_dir,
        out,
        progress=progress,
        seed=seed,
        chunk_rows=chunk_rows,
        builder_name="medagentgym.data.importers.import_mimic_iii",
    )


def import_eicu(
    src_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    *,
    seed: int = DEFAULT_SEED,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportReport:
    """Import PhysioNet eICU-CRD CSVs (full or demo) into EHRSQL's 10-table eICU schema.

    ``out_path`` defaults to ``db/eicu.sqlite`` in the data home. ``patient`` is required;
    absent tables (the open demo mirror lacks ``lab`` and ``vitalperiodic``) are created empty
    and listed in the manifest's ``missing_tables``.
    """
    out = Path(out_path) if out_path is not None else _home.db_path("eicu")
    return _run_import(
        _EICU,
        "eicu",
        EICU_TABLES,
        src_dir,
        out,
        progress=progress,
        seed=seed,
        chunk_rows=chunk_rows,
        builder_name="medagentgym.data.importers.import_eicu",
    )


# --------------------------------------------------------------------------- TREQS

TREQS_TABLES = ("demographic", "diagnoses", "procedures", "prescriptions", "lab")


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_FIRST_NAMES = _words(
    "james mary robert patricia john jennifer michael linda david elizabeth william barbara "
    "richard susan joseph jessica thomas sarah charles karen christopher lisa daniel nancy "
    "matthew betty anthony margaret mark sandra donald ashley steven kimberly paul emily andrew "
    "donna joshua michelle kenneth carol kevin amanda brian dorothy george melissa timothy "
    "deborah ronald stephanie edward rebecca jason sharon jeffrey laura ryan cynthia jacob "
    "kathleen gary amy nicholas angela eric shirley jonathan anna stephen brenda larry pamela "
    "justin emma scott nicole brandon helen benjamin samantha samuel katherine gregory christine "
    "alexander debra frank rachel patrick carolyn raymond janet jack catherine dennis maria "
    "jerry heather tyler diane aaron ruth jose julie adam olivia nathan joyce henry virginia"
)
_LAST_NAMES = _words(
    "smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez "
    "gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white "
    "harris sanchez clark ramirez lewis robinson walker young allen king wright scott torres "
    "nguyen hill flores green adams nelson baker hall rivera campbell mitchell carter roberts "
    "gomez phillips evans turner diaz parker cruz edwards collins reyes stewart morris morales "
    "murphy cook rogers gutierrez ortiz morgan cooper peterson bailey reed kelly howard ramos "
    "kim cox ward richardson watson brooks chavez wood james bennett gray mendoza ruiz hughes "
    "price alvarez castillo sanders patel myers long ross foster jimenez powell jenkins perry"
)


def _fake_name(seed: int, subject_id: Any) -> str:
    rng = random.Random(f"{seed}:treqs-name:{subject_id}")
    return f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"


def _treqs_text(v: str | None, lowercase: bool) -> str | None:
    if v is None:
        return None
    return v.strip().lower() if lowercase else v


class _TreqsFromCsv(_Builder):
    """MIMICSQL tables from PhysioNet MIMIC-III CSVs (TREQS's own procedure)."""

    db_name = "MIMIC-III"

    def __init__(self, *args: Any, lowercase: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lowercase = lowercase

    def lo(self, col: str) -> str:
        return _lo(col) if self.lowercase else col

    def build(self) -> None:
        lc = self.lowercase
        self.report_stage("demographic")
        pat_t = self.table("PATIENTS", required=True)
        adm_t = self.table("ADMISSIONS", required=True)
        assert pat_t is not None and adm_t is not None
        pcols = ["subject_id", "gender", "dob", "dod", "expire_flag"]
        patients: dict[str, tuple[Any, ...]] = {}
        for batch in pat_t.chunks(pcols, optional=("expire_flag",), progress=self.progress):
            for row in batch:
                if row[0] is not None:
                    patients[row[0]] = row
        acols = [
            "subject_id",
            "hadm_id",
            "marital_status",
            "language",
            "religion",
            "admission_type",
            "insurance",
            "ethnicity",
            "admission_location",
            "discharge_location",
            "diagnosis",
            "admittime",
            "dischtime",
        ]
        demo_rows = []
        for batch in adm_t.chunks(
            acols, optional=("religion", "diagnosis"), progress=self.progress
        ):
            for a in batch:
                p = patients.get(a[0] or "")
                if p is None:
                    continue
                dob, dod = _parse_time(p[2]), _parse_time(p[3])
                admit, disch = _parse_time(a[11]), _parse_time(a[12])
                if dob is None or admit is None:
                    continue
                age = admit.year - dob.year
                if age > 89:
                    age = 89 + age - 300
                demo_rows.append(
                    (
                        a[0],
                        a[1],
                        _treqs_text(_fake_name(self.seed, a[0]).title(), lc),
                        _treqs_text(a[2], lc),
                        age,
                        p[2],
                        _treqs_text(p[1], lc),
                        _treqs_text(a[3], lc),
                        _treqs_text(a[4], lc),
                        _treqs_text(a[5], lc),
                        (disch - admit).days if disch is not None else None,
                        _treqs_text(a[6], lc),
                        _treqs_text(a[7], lc),
                        _to_int(p[4]) if p[4] is not None else (1 if dod else 0),
                        _treqs_text(a[8], lc),
                        _treqs_text(a[9], lc),
                        _treqs_text(a[10], lc),
                        p[3],
                        dob.year,
                        float(dod.year) if dod else None,
                        a[11],
                        a[12],
                        admit.year,
                    )
                )
        self.insert_rows("demographic", _DEMOGRAPHIC_COLS, demo_rows)
        del demo_rows, patients

        for table, src_name, dict_name in (
            ("diagnoses", "DIAGNOSES_ICD", "D_ICD_DIAGNOSES"),
            ("procedures", "PROCEDURES_ICD", "D_ICD_PROCEDURES"),
        ):
            self.report_stage(table)
            dict_src = self.table(dict_name)
            self.conn.execute(f"DROP TABLE IF EXISTS temp.dict_{table}")
            self.conn.execute(
                f"CREATE TEMP TABLE dict_{table} (icd9_code TEXT PRIMARY KEY, st TEXT, lt TEXT)"
            )
            if dict_src is not None:
                self.load(
                    f"temp.dict_{table}",
                    dict_src,
                    ["icd9_code", "short_title", "long_title"],
                    f"""INSERT OR IGNORE INTO temp.dict_{table} (icd9_code, st, lt)
                    SELECT s.icd9_code, {self.lo("s.short_title")}, {self.lo("s.long_title")}
                    FROM stg s WHERE s.icd9_code IS NOT NULL""",
                )
            else:
                self.missing.append(dict_name.lower())
            self.load(
                table,
                self.table(src_name),
                ["subject_id", "hadm_id", "icd9_code"],
                f"""INSERT INTO {table} (subject_id, hadm_id, icd9_code, short_title, long_title)
                SELECT s.subject_id, s.hadm_id, {self.lo("s.icd9_code")}, d.st, d.lt
                FROM stg s CROSS JOIN temp.dict_{table} d ON d.icd9_code = s.icd9_code""",
            )
            self._sort_by_hadm(table)

        self.report_stage("prescriptions")
        self.load(
            "prescriptions",
            self.table("PRESCRIPTIONS"),
            [
                "subject_id",
                "hadm_id",
                "icustay_id",
                "drug_type",
                "drug",
                "formulary_drug_cd",
                "route",
                "dose_val_rx",
                "dose_unit_rx",
            ],
            f"""INSERT INTO prescriptions (subject_id, hadm_id, icustay_id, drug_type, drug,
                formulary_drug_cd, route, drug_dose)
            SELECT s.subject_id, s.hadm_id, s.icustay_id, {self.lo("s.drug_type")},
                   {self.lo("s.drug")}, {self.lo("s.formulary_drug_cd")}, {self.lo("s.route")},
                   {self.lo("s.dose_val_rx || s.dose_unit_rx")}
            FROM stg s WHERE s.dose_val_rx IS NOT NULL AND s.dose_unit_rx IS NOT NULL""",
        )

        self.report_stage("lab")
        self.conn.execute(
            "CREATE TEMP TABLE dict_lab (itemid TEXT PRIMARY KEY, label TEXT, fluid TEXT, "
            "category TEXT)"
        )
        lab_dict = self.table("D_LABITEMS")
        if lab_dict is None:
            self.missing.append("d_labitems")
        else:
            self.load(
                "temp.dict_lab",
                lab_dict,
                ["itemid", "label", "fluid", "category"],
                f"""INSERT OR IGNORE INTO temp.dict_lab (itemid, label, fluid, category)
                SELECT s.itemid, {self.lo("s.label")}, {self.lo("s.fluid")},
                       {self.lo("s.category")} FROM stg s WHERE s.itemid IS NOT NULL""",
            )
        self.load(
            "lab",
            self.table("LABEVENTS"),
            ["subject_id", "hadm_id", "itemid", "charttime", "flag", "value", "valueuom"],
            f"""INSERT INTO lab (subject_id, hadm_id, itemid, charttime, flag, value_unit,
                label, fluid, category)
            SELECT s.subject_id, s.hadm_id, s.itemid, s.charttime, {self.lo("s.flag")},
                   {self.lo("s.value || s.valueuom")}, d.label, d.fluid, d.category
            FROM stg s CROSS JOIN temp.dict_lab d ON d.itemid = s.itemid
            WHERE s.hadm_id IS NOT NULL AND s.value IS NOT NULL AND s.valueuom IS NOT NULL""",
        )

    def _sort_by_hadm(self, table: str) -> None:
        # TREQS sorts diagnoses/procedures by HADM_ID (as text); keep that row order
        self.conn.execute("BEGIN")
        self.conn.execute(f"CREATE TEMP TABLE sorted_{table} AS SELECT * FROM {table} WHERE 0")
        self.conn.execute(
            f"INSERT INTO temp.sorted_{table} SELECT * FROM {table} "
            f"ORDER BY CAST(hadm_id AS TEXT), rowid"
        )
        self.conn.execute(f"DELETE FROM {table}")
        self.conn.execute(f"INSERT INTO {table} SELECT * FROM temp.sorted_{table}")
        self.conn.execute(f"DROP TABLE temp.sorted_{table}")
        self.conn.execute("COMMIT")


_DEMOGRAPHIC_COLS = (
    "subject_id",
    "hadm_id",
    "name",
    "marital_status",
    "age",
    "dob",
    "gender",
    "language",
    "religion",
    "admission_type",
    "days_stay",
    "insurance",
    "ethnicity",
    "expire_flag",
    "admission_location",
    "discharge_location",
    "diagnosis",
    "dod",
    "dob_year",
    "dod_year",
    "admittime",
    "dischtime",
    "admityear",
)

_TREQS_FROM_DB_UNAVAILABLE = (
    "demographic.religion",
    "demographic.diagnosis",
    "prescriptions.icustay_id",
    "prescriptions.drug_type",
    "prescriptions.formulary_drug_cd",
    "lab.flag",
    "lab.fluid",
    "lab.category",
)


def _treqs_from_db(conn: sqlite3.Connection, mimic_db: Path, seed: int) -> None:
    """MIMICSQL tables derived from an EHRSQL-schema MIMIC-III database (reduced fidelity)."""
    conn.execute("ATTACH DATABASE ? AS m", (f"file:{mimic_db}?mode=ro",))
    conn.create_function(
        "fake_name", 1, lambda sid: _fake_name(seed, sid).lower(), deterministic=True
    )
    conn.execute("BEGIN")
    conn.execute(
        f"""INSERT INTO demographic ({", ".join(_DEMOGRAPHIC_COLS)})
        SELECT a.subject_id, a.hadm_id, fake_name(a.subject_id), a.marital_status, a.age, p.dob,
               p.gender, a.language, NULL, a.admission_type,
               CAST(julianday(a.dischtime) - julianday(a.admittime) AS INTEGER), a.insurance,
               a.ethnicity, CASE WHEN p.dod IS NULL THEN 0 ELSE 1 END, a.admission_location,
               a.discharge_location, NULL, p.dod, CAST(strftime('%Y', p.dob) AS INTEGER),
               CAST(strftime('%Y', p.dod) AS REAL), a.admittime, a.dischtime,
               CAST(strftime('%Y', a.admittime) AS INTEGER)
        FROM m.admissions a JOIN m.patients p ON p.subject_id = a.subject_id
        ORDER BY a.row_id"""
    )
    for table, src, dct in (
        ("diagnoses", "diagnoses_icd", "d_icd_diagnoses"),
        ("procedures", "procedures_icd", "d_icd_procedures"),
    ):
        conn.execute(
            f"""INSERT INTO {table} (subject_id, hadm_id, icd9_code, short_title, long_title)
            SELECT e.subject_id, e.hadm_id, e.icd9_code, d.short_title, d.long_title
            FROM m.{src} e JOIN m.{dct} d ON d.icd9_code = e.icd9_code
            ORDER BY CAST(e.hadm_id AS TEXT), e.row_id"""
        )
    conn.execute(
        """INSERT INTO prescriptions (subject_id, hadm_id, icustay_id, drug_type, drug,
            formulary_drug_cd, route, drug_dose)
        SELECT subject_id, hadm_id, NULL, NULL, drug, NULL, route, dose_val_rx || dose_unit_rx
        FROM m.prescriptions ORDER BY row_id"""
    )
    conn.execute(
        """INSERT INTO lab (subject_id, hadm_id, itemid, charttime, flag, value_unit, label,
            fluid, category)
        SELECT e.subject_id, e.hadm_id, e.itemid, e.charttime, NULL,
               CAST(e.valuenum AS TEXT) || e.valueuom, d.label, NULL, NULL
        FROM m.labevents e JOIN m.d_labitems d ON d.itemid = e.itemid ORDER BY e.row_id"""
    )
    conn.execute("COMMIT")
    conn.execute("DETACH DATABASE m")


def build_treqs_from_mimic(
    mimic_db: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    *,
    lowercase: bool = True,
    seed: int = DEFAULT_SEED,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportReport:
    """Build the MIMICSQL (TREQS) 5-table database from MIMIC-III.

    ``mimic_db`` is either a directory of PhysioNet MIMIC-III CSVs (full fidelity, TREQS's
    own procedure: original dates, ``age`` = admit year - birth year with >89 mapped back,
    ``drug_dose`` = dose + unit, ``value_unit`` = value + unit, fake patient names drawn
    deterministically from ``seed``) or an imported EHRSQL-schema ``.sqlite`` database, which
    lacks some MIMICSQL columns (listed in the manifest as ``unavailable_columns``; they are
    NULL) and carries EHRSQL's shifted dates. ``lowercase`` lower-cases text values as
    MedAgentGym's TREQS task queries expect. ``out_path`` defaults to ``db/treqs.sqlite``.
    """
    src = Path(mimic_db).expanduser()
    out = (Path(out_path) if out_path is not None else _home.db_path("treqs")).absolute()
    if not src.exists():
        raise ConfigurationError(
            f"MIMIC-III not found at {src}; pass a PhysioNet CSV directory or the database "
            f"built by `medagentgym data import mimic-iii --from DIR`"
        )
    started = time.monotonic()
    unavailable: list[str] = []
    inputs: list[dict[str, Any]]
    missing: list[str] = []
    with _home.file_lock(out), _home.atomic_path(out) as tmp:
        conn = _open_output(tmp)
        try:
            _create_tables(conn, "treqs")
            if src.is_dir():
                b = _TreqsFromCsv(
                    src,
                    conn,
                    progress=progress,
                    chunk_rows=chunk_rows,
                    seed=seed,
                    lowercase=lowercase,
                )
                b.build()
                b.finish_inputs()
                inputs = b.inputs
                missing = sorted(set(b.missing))
                origin = "physionet-csv"
            else:
                if progress is not None:
                    progress("treqs", 0, None)
                _treqs_from_db(conn, src.absolute(), seed)
                unavailable = list(_TREQS_FROM_DB_UNAVAILABLE)
                m = _home.read_manifest(src)
                inputs = [
                    {
                        "path": str(src),
                        "bytes": src.stat().st_size,
                        "sha256": (m or {}).get("sha256"),
                        "manifest": bool(m),
                    }
                ]
                origin = "ehrsql-sqlite"
            _schema().create_indexes(conn, "treqs")
            counts = {
                t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                for t in TREQS_TABLES
            }
            conn.execute("PRAGMA journal_mode=DELETE")
        finally:
            conn.close()
        with contextlib.suppress(FileNotFoundError):
            _home.manifest_path(out).unlink()
    seconds = round(time.monotonic() - started, 3)
    notes = []
    if unavailable:
        notes.append(
            "built from an EHRSQL-preprocessed database: dates are EHRSQL-shifted and these "
            "columns are NULL: " + ", ".join(unavailable)
        )
    if missing:
        notes.append("source tables absent from the input: " + ", ".join(missing))
    with _home.file_lock(out):
        _home.write_manifest(
            out,
            kind="database",
            builder="medagentgym.data.importers.build_treqs_from_mimic",
            inputs=inputs,
            source=str(src),
            origin=origin,
            schema="treqs",
            tables=counts,
            missing_tables=missing,
            unavailable_columns=unavailable,
            parameters={"lowercase": lowercase, "seed": seed},
            seconds=seconds,
            notes=notes,
        )
    return ImportReport(
        path=out,
        database="treqs",
        tables=counts,
        missing_tables=missing,
        seconds=seconds,
        notes=notes,
        inputs=inputs,
    )


# --------------------------------------------------------------------------- MedAgentGym release

_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_sqlite(path: Path) -> list[str]:
    with path.open("rb") as fh:
        if fh.read(16) != _SQLITE_MAGIC:
            raise ConfigurationError(f"{path} is not a SQLite database")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise ConfigurationError(f"{path} is not a readable SQLite database: {exc}") from None
    return names


#: release datasets whose tasks are graded against the answer stored with each task
_STORED_ANSWER_DATASETS = frozenset({"mimic_iii", "eicu", "treqs", "ehr_seqsql"})


def _count_jsonl(path: Path, require_answer: bool = False) -> int:
    """Count the tasks of a release task file. ``require_answer``: refuse a file whose
    answerable tasks lack their stored ``answer`` (the EHR release mode grades against it:
    without it every task would read as "must abstain")."""
    n = missing = 0
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise ConfigurationError(
                    f"{path}:{lineno} is not valid JSON (expected one task per line)"
                ) from None
            n += 1
            if require_answer and (not isinstance(rec, dict) or (
                rec.get("answer") is None and rec.get("ans") is None  # ans: EHR-SeqSQL
                and not rec.get("is_impossible")
            )):
                missing += 1
    if missing:
        raise ConfigurationError(
            f"{path}: {missing} of {n} tasks have no stored 'answer' (a questions-only file?); "
            "the official release mode grades against the answers stored in the release's "
            "task files, so import the release with its answers"
        )
    return n


def import_medagentgym(
    src_dir: str | os.PathLike[str],
    home: str | os.PathLike[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Validate the official MedAgentGym preprocessed release and register it (used in place).

    ``src_dir`` is the release root (holding ``data/``) or its ``data/`` folder. Every
    ``data/<dataset>/`` folder with ``*_tasks.jsonl`` files is a dataset: its task files are
    parsed and counted, its ``*.db``/``*.sqlite`` files checked to be readable SQLite databases
    (table names recorded), its ``*.csv`` files listed. Each dataset is registered in the data
    home's ``registry.json`` as ``medagentgym/<dataset>``; nothing is copied. Returns the
    records by dataset.

    The EHR datasets (mimic_iii, eicu, treqs, ehr_seqsql) are graded against the answer stored
    with each task: a task file in which an answerable task has none (the published
    ``*_noanswer`` question files) is refused with a one-line ConfigurationError, and nothing
    is registered.
    """
    root = Path(src_dir).expanduser().absolute()
    if not root.is_dir():
        raise ConfigurationError(f"{root} is not a directory (expected the MedAgentGym release)")
    data = root / "data" if (root / "data").is_dir() else root
    records: dict[str, dict[str, Any]] = {}
    for ds in sorted(p for p in data.iterdir() if p.is_dir()):
        task_files = sorted(list(ds.rglob("*_tasks.jsonl")) + list(ds.rglob("*_tasks.jsonl.gz")))
        if not task_files:
            continue
        tasks = {}
        for tf in task_files:
            split = tf.name.split("_tasks.jsonl")[0]
            tasks[split] = {"path": str(tf),
                            "tasks": _count_jsonl(tf, ds.name in _STORED_ANSWER_DATASETS)}
        dbs = {}
        for db in sorted(list(ds.rglob("*.db")) + list(ds.rglob("*.sqlite"))):
            dbs[str(db.relative_to(ds))] = {
                "path": str(db),
                "bytes": db.stat().st_size,
                "tables": _check_sqlite(db),
            }
        csvs = [str(p.relative_to(ds)) for p in sorted(ds.rglob("*.csv"))]
        size = sum(p.stat().st_size for p in ds.rglob("*") if p.is_file())
        record = {
            "kind": "medagentgym_release",
            "dataset": ds.name,
            "path": str(ds),
            "bytes": size,
            "builder": "medagentgym.data.importers.import_medagentgym",
            "tasks": tasks,
            "databases": dbs,
            "csv_files": csvs,
            "summary": (
                f"{sum(t['tasks'] for t in tasks.values()):,} tasks in {len(tasks)} splits, "
                f"{len(dbs)} databases, {len(csvs)} csv files (used in place)"
            ),
        }
        records[ds.name] = record
    if not records:
        raise ConfigurationError(
            f"no MedAgentGym datasets found under {data} (expected data/<dataset>/*_tasks.jsonl)"
        )
    for name, record in records.items():
        _home.register(f"medagentgym/{name}", record, home)
    return records
