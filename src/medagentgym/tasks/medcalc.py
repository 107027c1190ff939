"""MedCalc-Bench: a clinical calculator value computed from a patient note.

The agent sees the question *and the patient note* (in the goal, and as a read-only text file
under ``/data/notes/``) and stores the value in ``answer``. Categories are MedCalc-Bench's 55
calculator names.

Splits:

* ``test`` — the 1,047 rows of the official test set (``data pull medcalcbench``). With the
  family option ``answer_key="relabelled"`` the answers, limits and questions come from the
  physician-audited relabelling (junzeye/validate-medcalc-labels) instead; its rows marked
  ``N/A`` (not answerable from the note) are left out.
* ``train`` — synthetic notes (:mod:`medagentgym.tasks.calc.notes`) for the calculators with a
  reference implementation (:mod:`medagentgym.tasks.calc.calculators`) whose agreement with
  the official test labels is at least ``min_agreement``; the real training set is not
  available offline. :func:`calculator_agreement` measures that agreement.

Grading (never the published ``or`` of two bounds): a numeric answer must lie in the row's
``[Lower Limit, Upper Limit]``, inclusive (bounds given the wrong way round, as ±5 % of a
negative number gives, are swapped); a date must be the same calendar date (MM/DD/YYYY, ISO,
"September 23, 2014"…); a gestational age must be exactly (weeks, days).

Oracle solutions are Python that computes the answer from the note's values with the
reference calculator; for a test row whose documented answer the calculator does not
reproduce (or that has no implementation here) the oracle stores the documented value.
"""

from __future__ import annotations

import ast
import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from medagentgym.data import home as _home
from medagentgym.errors import ConfigurationError
from medagentgym.graders import bound_answer, normalize_scalar, numeric_match, short_repr, to_int
from medagentgym.tasks.base import DatasetFamily, DatasetOptions
from medagentgym.tasks.family import option
from medagentgym.types import Grade, GroundTruth, Provenance, Task

CACHE_VERSION = 1
GENERATOR_VERSION = 1
SOURCE = "medcalcbench"
TEST_FILE = "test_data_v1_2024-06-26.csv.gz"
RELABELLED_FILE = "relabelled_junzeye/medcalc_v1_corrected.csv.gz"
NOTES_MOUNT = "/data/notes"
ANSWER_KEYS = ("original", "relabelled")
DECIMAL_TOLERANCE = 0.05  # synthetic decimal answers: ±5 %, as the benchmark's limits


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class BenchmarkRow:
    """One row of the MedCalc-Bench CSV layout."""

    row_number: int
    calculator_id: int
    calculator_name: str
    output_type: str
    note_id: str
    note: str
    question: str
    entities: str
    answer: str
    lower: str
    upper: str
    explanation: str


def _open_csv(path: Path) -> Iterator[dict[str, str]]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    yield from csv.DictReader(io.StringIO(raw.decode("utf-8")))


def read_rows(path: str | os.PathLike[str]) -> list[BenchmarkRow]:
    """The rows of a MedCalc-Bench CSV (``.csv`` or ``.csv.gz``), in file order."""
    rows = []
    for rec in _open_csv(Path(path)):
        try:
            rows.append(BenchmarkRow(
                row_number=int(rec["Row Number"]), calculator_id=int(rec["Calculator ID"]),
                calculator_name=rec["Calculator Name"], output_type=rec.get("Output Type", ""),
                note_id=rec.get("Note ID", ""), note=rec["Patient Note"],
                question=rec["Question"], entities=rec.get("Relevant Entities", ""),
                answer=rec["Ground Truth Answer"], lower=rec["Lower Limit"],
                upper=rec["Upper Limit"], explanation=rec.get("Ground Truth Explanation", "")))
        except KeyError as exc:
            raise ConfigurationError(f"{path}: not the MedCalc-Bench CSV layout (no column "
                                     f"{exc.args[0]!r})") from None
    return rows


def read_relabelled(path: str | os.PathLike[str]) -> dict[int, dict[str, str]]:
    """The relabelled answer key: ``{row number: {question, answer, lower, upper}}``."""
    out = {}
    for rec in _open_csv(Path(path)):
        out[int(rec["Unique ID"])] = {"question": rec["Question"],
                                      "answer": rec["Ground Truth Answer"],
                                      "lower": rec["Lower Limit"], "upper": rec["Upper Limit"],
                                      "note": rec.get("Patient Note", "")}
    return out


# --------------------------------------------------------------------------- answers

_DATE_FORMATS = ("%m/%d/%Y", "%Y-%m-%d", "%m-%d-%Y", "%B %d, %Y", "%b %d, %Y", "%B %d %Y",
                 "%b %d %Y", "%d %B %Y", "%d %b %Y", "%b. %d, %Y", "%Y/%m/%d")
_WEEKS_DAYS = re.compile(r"(\d+)\s*(?:weeks?|wks?|w)\b\W*(?:and\s*)?(\d+)\s*(?:days?|d)\b", re.I)
_TWO_INTS = re.compile(r"^\W*(\d+)\s*[,;/ ]\s*(\d+)\W*$")
MAX_ANSWER_TEXT = 200  # a longer string is not read as a date or a gestational age


def gold_kind(answer: str) -> str:
    """``weeks_days``, ``date`` or ``numeric``, from how a documented answer is written."""
    text = answer.strip()
    if text.startswith("("):
        return "weeks_days"
    if re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}", text):
        return "date"
    return "numeric"


def parse_weeks_days(value: Any) -> tuple[int, int] | None:
    """(weeks, days) from ``(14, 1)``, ``[14, 1]``, ``{"weeks": 14, "days": 1}``,
    ``"(14 weeks, 1 days)"``, ``"('14 weeks', '1 days')"`` or ``"14w 1d"``; else None.

    Never raises: strings longer than :data:`MAX_ANSWER_TEXT` and numbers that are not whole
    are None."""
    if isinstance(value, dict):
        weeks = [v for k, v in value.items() if "week" in str(k).lower()]
        days = [v for k, v in value.items() if "day" in str(k).lower()]
        if len(weeks) == 1 and len(days) == 1:
            value = [weeks[0], days[0]]
        else:
            return None
    if isinstance(value, list | tuple):
        if len(value) != 2:
            return None
        out: list[int | None] = []
        for item in value:
            if isinstance(item, bool | list | tuple | dict | set | frozenset):
                return None
            if isinstance(item, str):
                if len(item) > MAX_ANSWER_TEXT:
                    return None
                m = re.fullmatch(r"\s*(\d+)\s*(?:weeks?|days?|w|d)?\s*", item, re.I)
                if not m:
                    return None
                out.append(to_int(m.group(1)))
                continue
            num = normalize_scalar(item)
            out.append(to_int(num) if isinstance(num, int | float) else None)
        if out[0] is None or out[1] is None:
            return None
        return out[0], out[1]
    if isinstance(value, str):
        if len(value) > MAX_ANSWER_TEXT:
            return None
        pairs = _WEEKS_DAYS.findall(value)
        if len(pairs) > 1:
            return None  # several candidates are not an answer
        if pairs:
            return _int_pair(*pairs[0])
        m = _TWO_INTS.match(value)
        if m:
            return _int_pair(m.group(1), m.group(2))
        try:
            literal = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
        if isinstance(literal, tuple | list):
            return parse_weeks_days(list(literal))
    return None


def _int_pair(weeks: str, days: str) -> tuple[int, int] | None:
    w, d = to_int(weeks), to_int(days)
    return None if w is None or d is None else (w, d)


def parse_date_answer(value: Any) -> dt.date | None:
    """A calendar date from the common ways of writing one (US month-first when ambiguous)."""
    for _ in range(64):
        if not (isinstance(value, list | tuple) and len(value) == 1):
            break
        value = value[0]
    if isinstance(value, dt.date):
        return value if not isinstance(value, dt.datetime) else value.date()
    if not isinstance(value, str) or len(value) > MAX_ANSWER_TEXT:
        return None
    text = " ".join(value.split()).strip().rstrip(".")
    norm = normalize_scalar(text)
    if isinstance(norm, dt.datetime):
        return norm.date()
    if isinstance(norm, dt.date):
        return norm
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


# --------------------------------------------------------------------------- grading


def grade_answer(truth: GroundTruth, answer: Any) -> Grade:
    """Grade ``answer`` against a MedCalc ground truth (a pure function; see module doc).

    Never raises on an agent's answer: one over budget or of the wrong kind is wrong."""
    answer, why = bound_answer(answer)
    if why is not None:
        return Grade.wrong(f"wrong: {why}")
    shown = short_repr(answer)
    if truth.kind == "date":
        gold = parse_date_answer(truth.value)
        assert gold is not None
        got = parse_date_answer(answer)
        if got is None:
            return Grade.wrong("wrong: expected a date (MM/DD/YYYY) but the answer is not one",
                               detail=f"pred={shown} gold={truth.value!r}")
        if got == gold:
            return Grade.right("correct: the date matches the expected date")
        return Grade.wrong(f"wrong: the date {got:%m/%d/%Y} is not the expected date",
                           detail=f"pred={shown} gold={truth.value!r}")
    if truth.kind == "weeks_days":
        gold_wd = tuple(truth.value)
        got_wd = parse_weeks_days(answer)
        if got_wd is None:
            return Grade.wrong("wrong: expected a gestational age as (weeks, days)",
                               detail=f"pred={shown} gold={truth.value!r}")
        if got_wd == gold_wd:
            return Grade.right("correct: the gestational age matches")
        return Grade.wrong(f"wrong: {got_wd[0]} weeks {got_wd[1]} days is not the expected "
                           "gestational age", detail=f"pred={shown} gold={truth.value!r}")
    return numeric_match(answer, truth.value, truth.extra["lower"], truth.extra["upper"])


# --------------------------------------------------------------------------- agreement


def _gold_truth(answer: str, lower: str, upper: str) -> GroundTruth:
    kind = gold_kind(answer)
    if kind == "weeks_days":
        wd = parse_weeks_days(answer)
        if wd is None:
            raise ConfigurationError(f"unreadable gestational age {answer!r}")
        return GroundTruth(kind="weeks_days", value=list(wd))
    if kind == "date":
        return GroundTruth(kind="date", value=answer.strip())
    lo, hi = sorted((float(lower), float(upper)))
    return GroundTruth(kind="numeric", value=float(answer), extra={"lower": lo, "upper": hi})


def reference_answer(row: BenchmarkRow) -> tuple[Any, Any] | None:
    """(calculator, its answer) for a test row, from the row's "Relevant Entities"; None
    when there is no reference calculator or the entities lack an input."""
    from medagentgym.tasks.calc import calculators as C

    calc = C.BY_ID.get(row.calculator_id)
    if calc is None:
        return None
    try:
        values = C.inputs_from_entities(calc, row.entities)
        return calc, (C.compute(calc, values), values)
    except (KeyError, ValueError, SyntaxError, TypeError, ZeroDivisionError,
            ConfigurationError):
        return None


def calculator_agreement(rows: list[BenchmarkRow],
                         key: dict[int, dict[str, str]] | None = None) -> dict[str, dict[str, Any]]:
    """Per calculator: how many test rows the reference calculator reproduces.

    ``key`` replaces the rows' answers (the relabelled key); rows it lacks or marks ``N/A``
    are skipped, and so are rows whose answer is of another kind than the calculator's (the
    relabelling asks for the gestational age in days). Returns ``{calculator name: {id,
    rows, agree, errors, rate, disagree}}`` for the calculators implemented here.
    """
    from medagentgym.tasks.calc import calculators as C

    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        answer, lower, upper = row.answer, row.lower, row.upper
        if key is not None:
            alt = key.get(row.row_number)
            if alt is None or alt["answer"].strip().upper() == "N/A":
                continue
            answer, lower, upper = alt["answer"], alt["lower"], alt["upper"]
        calc = C.BY_ID.get(row.calculator_id)
        if calc is None:
            continue
        expected = calc.output if calc.output in ("date", "weeks_days") else "numeric"
        if gold_kind(answer) != expected:
            continue  # the relabelling changed the question (gestational age in days)
        stat = out.setdefault(calc.name, {"id": calc.id, "rows": 0, "agree": 0, "errors": 0,
                                          "disagree": []})
        stat["rows"] += 1
        ref = reference_answer(row)
        if ref is None:
            stat["errors"] += 1
            continue
        value = ref[1][0]
        if grade_answer(_gold_truth(answer, lower, upper), _jsonable(value)).correct:
            stat["agree"] += 1
        else:
            stat["disagree"].append(row.row_number)
    for stat in out.values():
        stat["rate"] = stat["agree"] / stat["rows"] if stat["rows"] else 0.0
    return out


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# --------------------------------------------------------------------------- family


class MedCalcOptions(DatasetOptions):
    """Options of MedCalc-Bench."""

    answer_key: Literal["original", "relabelled"] = option(
        "original", "the test set's published answers, or the physician-audited relabelling")
    train_per_calculator: int = option(30, "synthetic training notes per calculator", ge=1,
                                       client_le=1000)
    min_agreement: float = option(
        0.85, "train only calculators that reproduce this share of the test labels", ge=0,
        le=1)
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = option(0, "seed of the synthetic notes")


class MedCalcFamily(DatasetFamily):
    """MedCalc-Bench (see the module docstring)."""

    allowed_actions = ("validate_code", "debug", "terminal")
    preload = "core"
    Options: ClassVar[type[MedCalcOptions]] = MedCalcOptions
    cache_version = CACHE_VERSION

    options: MedCalcOptions

    def __init__(self, spec: Any, **options: Any) -> None:
        super().__init__(spec, **options)
        self._agreement: dict[str, Any] = {}

    @property
    def answer_key(self) -> str:
        return self.options.answer_key

    @property
    def train_per_calculator(self) -> int:
        return self.options.train_per_calculator

    @property
    def min_agreement(self) -> float:
        return self.options.min_agreement

    @property
    def seed(self) -> int:
        return self.options.seed

    # -- files --------------------------------------------------------------------------
    def _relabelled_path(self) -> Path:
        path = self.source_dir() / RELABELLED_FILE
        if not path.is_file():
            raise ConfigurationError(
                f"the relabelled MedCalc-Bench key ({RELABELLED_FILE}) is not in the pulled "
                f"source; pull it again from a mirror that has it (`medagentgym data pull "
                f"{SOURCE} --from DIR`) or use answer_key='original'")
        return path

    def _notes_key(self) -> dict[str, Any]:
        st = (self.source_dir() / TEST_FILE).stat()
        return {"v": self.cache_version, "gen": GENERATOR_VERSION,
                "per": self.train_per_calculator, "agree": self.min_agreement,
                "seed": self.seed, "src": [st.st_size, st.st_mtime_ns]}

    def cache_key(self) -> dict[str, Any]:
        """Per answer key; the notes directory is shared by both keys."""
        return {**self._notes_key(), "key": self.answer_key}

    def notes_dir(self) -> Path:
        digest = hashlib.sha256(json.dumps(self._notes_key(), sort_keys=True).encode()).hexdigest()
        return _home.tasks_dir(self.name, self.home) / f"notes-{digest[:16]}"

    def cache_ready(self) -> bool:
        return self.notes_dir().is_dir()

    def cache_manifest(self) -> dict[str, Any]:
        return {"answer_key": self.answer_key, "notes_dir": str(self.notes_dir()),
                "calculator_agreement": {k: {x: v[x] for x in ("id", "rows", "agree", "rate")}
                                         for k, v in self._agreement.items()}}

    @staticmethod
    def _write_notes(notes: Path, texts: dict[str, str]) -> None:
        """One ``<task id>.txt`` per task: every test row (either key) and training note."""
        with _home.file_lock(notes):
            if notes.is_dir() and all((notes / f"{i}.txt").is_file() for i in texts):
                return
            with _home.atomic_path(notes, directory=True) as tmp:
                os.chmod(tmp, 0o755)  # notes are what the agent may read
                for task_id, text in texts.items():
                    note_file = tmp / f"{task_id}.txt"
                    note_file.write_text(text + "\n", encoding="utf-8")
                    os.chmod(note_file, 0o644)

    # -- building -----------------------------------------------------------------------
    def build_records(self) -> list[dict[str, Any]]:
        """Every task record, after writing the notes they mount (``/data/notes``)."""
        records, self._agreement, texts = self._records_and_notes()
        notes = self.notes_dir()
        self._write_notes(notes, texts)
        for rec in records:
            rec["task"]["inputs"] = {NOTES_MOUNT: str(notes)}
        return records

    def _records_and_notes(self) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, str]]:
        """(task records, calculator agreement, note text by task id)."""
        rows = read_rows(self.source_dir() / TEST_FILE)
        key = read_relabelled(self._relabelled_path()) if self.answer_key == "relabelled" else None
        agreement = calculator_agreement(rows)
        texts = {self._test_id(row): row.note for row in rows}
        records = [rec for row in rows if (rec := self._test_record(row, key)) is not None]
        trusted = sorted(v["id"] for v in agreement.values()
                         if v["rate"] >= self.min_agreement)
        for rec, note in self._train_records(trusted):
            records.append(rec)
            texts[rec["task"]["id"]] = note
        return records, agreement, texts

    def _test_id(self, row: BenchmarkRow) -> str:
        return f"{self.name}-test-{row.row_number:04d}"

    def _goal(self, question: str, note: str, kind: str, task_id: str) -> str:
        if kind == "date":
            contract = "Store the date in `answer` as a string MM/DD/YYYY."
        elif kind == "weeks_days":
            contract = "Store the gestational age in `answer` as a tuple (weeks, days), e.g. (4, 3)."
        else:
            contract = "Store the value in `answer` as a single number (no units)."
        return (f"{question}\n\nPatient note:\n{note}\n\n(The note is also in "
                f"{NOTES_MOUNT}/{task_id}.txt.) {contract}")

    def _test_record(self, row: BenchmarkRow, key: dict[int, dict[str, str]] | None
                     ) -> dict[str, Any] | None:
        question, answer, lower, upper = row.question, row.answer, row.lower, row.upper
        if key is not None:
            alt = key.get(row.row_number)
            if alt is None or alt["answer"].strip().upper() == "N/A":
                return None
            question, answer, lower, upper = (alt["question"], alt["answer"], alt["lower"],
                                              alt["upper"])
        gold = _gold_truth(answer, lower, upper)
        task_id = self._test_id(row)
        solution, computed = self._test_solution(row, gold)
        truth = GroundTruth(kind=gold.kind, value=gold.value, solution=solution,
                            extra={**gold.extra, "calculator_id": row.calculator_id,
                                   "row_number": row.row_number, "answer_text": answer,
                                   "oracle": "computed" if computed else "documented",
                                   "explanation": row.explanation})
        licence = "CC BY-SA 4.0" if key is None else "CC BY-SA 4.0 (notes); MIT (relabelling)"
        source = ("MedCalc-Bench test set v1 (2024-06-26)" if key is None
                  else "MedCalc-Bench test set, relabelled (junzeye/validate-medcalc-labels)")
        task = Task(
            id=task_id, dataset=self.name, category=row.calculator_name, split="test",
            goal=self._goal(question, row.note, gold.kind, task_id),
            allowed_actions=self.allowed_actions,
            provenance=Provenance(source=source, licence=licence,
                                  original_id=f"row {row.row_number} ({row.note_id})"),
            metadata={"calculator_id": row.calculator_id, "output_type": row.output_type,
                      "note_type": "benchmark", "answer_key": self.answer_key},
        )
        return self.record(task, truth)

    def _test_solution(self, row: BenchmarkRow, gold: GroundTruth) -> tuple[str, bool]:
        from medagentgym.tasks.calc import calculators as C

        ref = reference_answer(row)
        if ref is not None:
            calc, (value, values) = ref
            if grade_answer(gold, _jsonable(value)).correct:
                return C.oracle_code(calc, values), True
        if gold.kind == "date":
            literal: Any = gold.value
        elif gold.kind == "weeks_days":
            literal = tuple(gold.value)
        else:
            literal = gold.value
        why = ("no reference calculator here" if ref is None
               else f"the reference calculator gives {_jsonable(ref[1][0])!r}")
        return f"answer = {literal!r}  # documented answer ({why})\n", False

    def _train_records(self, calculator_ids: list[int]) -> list[tuple[dict[str, Any], str]]:
        """(record, note) for every synthetic training task."""
        from medagentgym.tasks.calc import calculators as C
        from medagentgym.tasks.calc import notes as N

        records = []
        for cid in calculator_ids:
            calc = C.BY_ID[cid]
            rng = random.Random(f"medcalc-{self.seed}-{cid}")
            for i in range(self.train_per_calculator):
                case = N.sample_case(rng, calc)
                value = C.compute(calc, case.values)
                while calc.output == "decimal" and abs(value) < 1e-6:
                    case = N.sample_case(rng, calc)  # a zero-width tolerance: draw again
                    value = C.compute(calc, case.values)
                if calc.output == "date":
                    gold = GroundTruth(kind="date", value=value)
                elif calc.output == "weeks_days":
                    gold = GroundTruth(kind="weeks_days", value=list(value))
                elif calc.output == "integer":
                    gold = GroundTruth(kind="numeric", value=float(value),
                                       extra={"lower": float(value), "upper": float(value)})
                else:
                    lo, hi = sorted((value * (1 - DECIMAL_TOLERANCE),
                                     value * (1 + DECIMAL_TOLERANCE)))
                    gold = GroundTruth(kind="numeric", value=value,
                                       extra={"lower": lo, "upper": hi})
                task_id = f"{self.name}-train-{calc.slug}-{i:03d}"
                truth = GroundTruth(kind=gold.kind, value=gold.value,
                                    solution=C.oracle_code(calc, case.values),
                                    extra={**gold.extra, "calculator_id": cid,
                                           "oracle": "computed",
                                           "inputs": {k: _plain(v) for k, v in
                                                      case.values.items()}})
                task = Task(
                    id=task_id, dataset=self.name, category=calc.name, split="train",
                    goal=self._goal(calc.question, case.note, gold.kind, task_id),
                    allowed_actions=self.allowed_actions,
                    provenance=Provenance(
                        source=f"medagentgym synthetic MedCalc notes v{GENERATOR_VERSION}",
                        database=f"seed={self.seed}", licence="Apache-2.0"),
                    metadata={"calculator_id": cid, "output_type": calc.output,
                              "note_type": "synthetic", "distractors": case.distractors},
                )
                records.append((self.record(task, truth), case.note))
        return records

    # -- prompting ----------------------------------------------------------------------
    def instructions(self, task: Task) -> str:
        return (
            "You compute clinical calculator values (scores, formulas, dates) for a patient "
            "by writing Python code.\nThe question and the patient note are in the task; the "
            f"note is also a read-only text file in {NOTES_MOUNT}/. Read the values you need "
            "from the note, convert units where necessary, and apply the calculator the "
            "question names.\nStore the final result in the variable `answer`: a single "
            "number without units for scores and measurements, a string MM/DD/YYYY for a "
            "date, a tuple (weeks, days) for a gestational age. Decimal results are accepted "
            "within the task's tolerance (about ±5%); scores, dates and gestational ages "
            "must be exact."
        )

    # -- grading ------------------------------------------------------------------------
    def grade_value(self, task: Task, answer: Any, *, stage: int = 0) -> Grade:
        return grade_answer(task.truth, answer)


def _plain(v: Any) -> Any:
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, tuple):
        return list(v)
    return v
