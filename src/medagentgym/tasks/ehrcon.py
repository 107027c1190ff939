"""EHRCon: is a clinical note's mention of an entity inconsistent with the patient's tables?

Each task names one line of one note (``note id, line, entity``). The agent reads the note
(read-only, ``/data/notes/<note id>.txt``) and the MIMIC-III database (read-only, as the EHR
family mounts it) and stores ``answer = {"inconsistent": bool, "n_fields": int}``. It is graded
once, on the boolean: the first readable answer of an episode is final (answering again earns
nothing, so flipping after feedback cannot win); the field count is reported, not graded.

Tasks come from

* ``source="generated"`` (the default unless a release was imported): notes rendered from the database in use (the imported
  MIMIC-III demo or full database, else the synthetic one) with inconsistencies of the three
  EHRCon kinds injected and verified (:mod:`medagentgym.tasks.ehrcon_notes`); the paper's
  3,229 / 976 tasks where the database has the records for them, split by patient.
  The reference solution is an independent checker (:mod:`medagentgym.tasks.ehrcon_oracle`)
  that re-reads the note line and queries the tables.
* ``source="release"`` (the default once imported): the credentialed EHRCon annotations
  and notes, imported with :func:`import_release` (layout in its docstring), on the
  imported full MIMIC-III.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import math
import os
import random
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from medagentgym.data import databases
from medagentgym.data import home as _home
from medagentgym.errors import ConfigurationError
from medagentgym.graders import bound_answer
from medagentgym.tasks.base import DatasetFamily, DatasetOptions
from medagentgym.tasks.family import option
from medagentgym.types import Grade, GroundTruth, Provenance, Task

CACHE_VERSION = 1
NOTES_MOUNT = "/data/notes"
PAPER_SIZES = {"train": 3229, "test": 976}
MAX_ANSWER_TEXT = 1000  # a longer string answer is not read
MAX_FIELDS = 1000
#: ``Grade.detail`` of a readable answer: the episode's first one is final
ANSWERED = "ehrcon:answered"
RELEASE_DIR = "release"
CATEGORIES = ("numeric", "string", "existence")

Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]


# --------------------------------------------------------------------------- answers

_TRUE = {"true", "yes", "inconsistent", "1"}
_FALSE = {"false", "no", "consistent", "0"}
_FLAG_KEYS = {"inconsistent", "is_inconsistent"}
_COUNT_KEYS = {"n_fields", "num_fields", "n_inconsistent_fields", "fields_inconsistent"}


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool) or type(value).__name__ in ("bool_", "bool"):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and len(value) <= 20:
        text = value.strip().lower()
        return True if text in _TRUE else False if text in _FALSE else None
    return None


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_FIELDS else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return _count(int(value))
    if isinstance(value, str) and 0 < len(value.strip()) <= 4 and value.strip().isdigit():
        return _count(int(value.strip()))
    return None


def parse_answer(answer: Any) -> tuple[tuple[bool, int | None] | None, str]:
    """``((inconsistent, n_fields or None), "")`` from the forms an agent may store, else
    ``(None, why)``. Accepted: ``{"inconsistent": bool, "n_fields": int}`` (``n_fields``
    optional; flags also as "true"/"false"/"yes"/"no"/0/1), that dict as JSON or Python text,
    a one-row table of it, or a pair ``(bool, int)``. Never raises; a plain boolean is not an
    answer (the count must be keyed, so a constant cannot pass for one)."""
    answer, why = bound_answer(answer)
    if why is not None:
        return None, why
    for _ in range(3):
        if isinstance(answer, list | tuple) and len(answer) == 1:
            answer = answer[0]  # a one-row table
    if isinstance(answer, str):
        if len(answer) > MAX_ANSWER_TEXT:
            return None, "the text is too long to be an answer"
        text = answer.strip()
        try:
            answer = json.loads(text)
        except (ValueError, RecursionError):
            try:
                answer = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                return None, "the text is not a dict"
        if not isinstance(answer, dict):
            return None, "the text is not a dict"
    if isinstance(answer, list | tuple):
        if len(answer) == 2 and isinstance(answer[0], bool) and _count(answer[1]) is not None:
            flag, n = answer[0], _count(answer[1])
        else:
            return None, "a list is read only as (inconsistent, n_fields)"
    elif isinstance(answer, dict):
        keys = {}
        for k, v in answer.items():
            if not isinstance(k, str) or len(k) > 40:
                return None, "unexpected keys"
            keys[k.strip().lower().replace(" ", "_").replace("-", "_")] = v
        flags = [keys[k] for k in keys if k in _FLAG_KEYS]
        counts = [keys[k] for k in keys if k in _COUNT_KEYS]
        extra = set(keys) - _FLAG_KEYS - _COUNT_KEYS
        if len(flags) != 1 or len(counts) > 1 or extra:
            return None, "expected the keys inconsistent and n_fields (and no others)"
        flag = _flag(flags[0])
        n = _count(counts[0]) if counts else None
        if flag is None:
            return None, "inconsistent must be true or false"
        if counts and n is None:
            return None, f"n_fields must be a whole number from 0 to {MAX_FIELDS}"
    else:
        return None, f"a {type(answer).__name__} is not an answer"
    if n is not None and (n > 0) != flag:
        return None, "the answer contradicts itself (n_fields is 0 exactly when consistent)"
    return (flag, n), ""


def grade_answer(truth: GroundTruth, answer: Any) -> Grade:
    """Grade one answer on the boolean; the field count goes to ``detail`` (host-side)."""
    parsed, why = parse_answer(answer)
    if parsed is None:
        return Grade.wrong(
            f"unreadable answer ({why}); store answer = {{\"inconsistent\": true or false, "
            "\"n_fields\": N}. An unreadable answer is not counted.")
    flag, n = parsed
    gold = truth.value
    count = ("count not given" if n is None else
             "count matches" if n == gold["n_fields"] else "count differs")
    detail = (f"{ANSWERED} pred={flag},{n} gold={gold['inconsistent']},{gold['n_fields']} "
              f"{count}")
    if flag == gold["inconsistent"]:
        return Grade.right(f"correct ({count})", detail=detail)
    return Grade.wrong("not correct", detail=detail)


# --------------------------------------------------------------------------- the release


def _records_file(src: Path) -> Path:
    for name in ("records.jsonl", "records.json"):
        if (src / name).is_file():
            return src / name
    raise ConfigurationError(f"{src}: no records.jsonl or records.json; see the expected "
                             "layout in `medagentgym.tasks.ehrcon.import_release`")


def _read_records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise ConfigurationError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ConfigurationError(f"{path}: expected one JSON object per record")
    return rows


def _release_flag(rec: dict[str, Any]) -> bool | None:
    if "inconsistent" in rec:
        return _flag(rec["inconsistent"])
    label = str(rec.get("label", "")).strip().lower()
    return True if label in ("inconsistent", "true", "1") else (
        False if label in ("consistent", "false", "0") else None)


def import_release(src: str | os.PathLike[str], home: str | os.PathLike[str] | None = None
                   ) -> Path:
    """Import the credentialed EHRCon annotations and notes (for users who have them).

    Expected layout of ``src``::

        records.jsonl  (or records.json, a list)   one object per annotated mention:
            note_id      the note's id (NOTEEVENTS.ROW_ID); records without one are refused
            hadm_id      the admission
            entity       the mention as written in the note
            inconsistent true/false (or label: "consistent" / "inconsistent")
            n_fields     optional: how many of its fields disagree (or fields: [names])
            line         optional: 1-based line of the note (else the first line naming it)
            category     optional: numeric / string / existence
            split        optional: train / test (else 77 % / 23 % by note id)
        notes/<note_id>.txt                        each note's text

    The tasks run on the imported full MIMIC-III (``medagentgym data import mimic-iii
    --from DIR``). Writes ``<home>/tasks/ehrcon/release/`` (tasks.jsonl and the notes) and
    returns it; a record whose entity is not in its note is skipped and counted.
    """
    src = Path(src)
    rows = _read_records(_records_file(src))
    if not rows:
        raise ConfigurationError(f"{src}: the records file is empty")
    missing = sum(1 for r in rows if not str(r.get("note_id") or "").strip())
    if missing:
        raise ConfigurationError(
            f"{src}: {missing} of {len(rows)} records have no note_id; EHRCon records must "
            "name their note (NOTEEVENTS.ROW_ID) so that the note can be mounted")
    out_dir = _home.tasks_dir("ehrcon", home) / RELEASE_DIR
    tasks, skipped, notes = [], {"entity not in note": 0, "no label": 0}, {}
    for r in rows:
        note_id = str(r["note_id"]).strip()
        if not note_id.replace("-", "").replace("_", "").isalnum():
            raise ConfigurationError(f"{src}: note_id {note_id!r} is not a plain id")
        if note_id not in notes:
            path = src / "notes" / f"{note_id}.txt"
            if not path.is_file():
                raise ConfigurationError(f"{src}: note {note_id} is missing (notes/{note_id}.txt)")
            notes[note_id] = path.read_text(encoding="utf-8", errors="replace")
        flag = _release_flag(r)
        if flag is None:
            skipped["no label"] += 1
            continue
        lines = notes[note_id].splitlines()
        entity = str(r.get("entity", "")).strip()
        line = r.get("line")
        if not (isinstance(line, int) and 1 <= line <= len(lines)
                and entity.lower() in lines[line - 1].lower()):
            line = next((i + 1 for i, t in enumerate(lines)
                         if entity and entity.lower() in t.lower()), None)
        if line is None:
            skipped["entity not in note"] += 1
            continue
        n = r.get("n_fields")
        if n is None and isinstance(r.get("fields"), list):
            n = len(r["fields"])
        n = _count(n) if n is not None else None
        n = (max(1, n or 0) if flag else 0) if n is None or (n > 0) != flag else n
        split = str(r.get("split") or "").lower()
        if split not in ("train", "test"):
            digest = hashlib.sha256(note_id.encode()).digest()[0]
            split = "test" if digest < 0.23 * 256 else "train"
        tasks.append({"note_id": note_id, "hadm_id": r.get("hadm_id"), "entity": entity,
                      "line": line, "inconsistent": flag, "n_fields": n, "split": split,
                      "category": str(r.get("category") or "unknown").lower()})
    with _home.file_lock(out_dir), _home.atomic_path(out_dir, directory=True) as tmp:
        (tmp / "notes").mkdir()
        for note_id, text in notes.items():
            (tmp / "notes" / f"{note_id}.txt").write_text(text, encoding="utf-8")
        (tmp / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
        os.chmod(tmp / "tasks.jsonl", 0o600)
    _home.make_world_readable(out_dir / "notes")
    _home.write_manifest(out_dir, kind="ehrcon_release", builder="medagentgym.tasks.ehrcon",
                         checksum=False, source_dir=str(src), records=len(rows),
                         tasks=len(tasks), skipped=skipped)
    return out_dir


# --------------------------------------------------------------------------- family


class EhrConOptions(DatasetOptions):
    """Options of EHRCon."""

    source: Literal["auto", "generated", "release"] = option(
        "auto", "the imported credentialed release (import_release) when there is one, else "
        "notes generated from the database (auto), or one of them")
    database: databases.DatabaseSource = option(
        "auto", "which MIMIC-III build: imported when present else synthetic (auto), or one")
    patients: int = option(databases.DEFAULT_PATIENTS, "patients of the synthetic database",
                           ge=1, client_le=2000)
    db_seed: Seed = option(databases.DEFAULT_SEED, "seed of the synthetic database")
    seed: Seed = option(0, "seed of the split, the mentions and the note wording")
    train_size: int = option(PAPER_SIZES["train"], "generated training tasks (at most)",
                             ge=2, client_le=20000)
    test_size: int = option(PAPER_SIZES["test"], "generated test tasks (at most)", ge=2,
                            client_le=20000)


@functools.cache
def oracle_source() -> str:
    """The reference checker's source (it runs in the sandbox, where medagentgym is not)."""
    from medagentgym.tasks import ehrcon_oracle

    return Path(ehrcon_oracle.__file__).read_text(encoding="utf-8")


class EhrConFamily(DatasetFamily):
    """EHRCon (see the module docstring)."""

    allowed_actions = ("request_info", "validate_code", "debug", "terminal")
    preload = "core"
    Options: ClassVar[type[EhrConOptions]] = EhrConOptions
    cache_version = CACHE_VERSION

    options: EhrConOptions

    def __init__(self, spec: Any, **options: Any) -> None:
        super().__init__(spec, **options)
        self.database = databases.get_database(spec.databases[0])
        self._db: databases.Database | None = None
        self.report: dict[str, Any] = {}

    # -- data -----------------------------------------------------------------------------
    @property
    def db(self) -> databases.Database:
        if self._db is None:
            o = self.options
            source = o.database
            if self.source == "release" and source == "auto":
                source = "imported"  # annotations of the real notes need the real database
            self._db = databases.resolve(self.database.id, source, patients=o.patients,
                                         seed=o.db_seed, home=self.home)
        return self._db

    @property
    def source(self) -> str:
        """``release`` or ``generated`` (``auto``: the release when it was imported, unless
        the synthetic database was asked for: its annotations describe the real notes)."""
        if self.options.source != "auto":
            return self.options.source
        path = _home.tasks_dir(self.name, self.home) / RELEASE_DIR
        real = self.options.database != "synthetic"
        return "release" if real and _home.is_finished(path) else "generated"

    def release_dir(self) -> Path:
        path = _home.tasks_dir(self.name, self.home) / RELEASE_DIR
        if not _home.is_finished(path):
            raise ConfigurationError(
                "ehrcon: no imported EHRCon release; run `python -c \"from "
                "medagentgym.tasks.ehrcon import import_release; import_release('DIR')\"` "
                "(DIR: records.jsonl + notes/) or use source='generated'")
        return path

    def _key(self) -> dict[str, Any]:
        o = self.options
        key: dict[str, Any] = {"v": self.cache_version, "db": self.db.build_key,
                               "source": self.source}
        if self.source == "generated":
            from medagentgym.tasks.ehrcon_notes import GENERATOR_VERSION

            key |= {"gen": GENERATOR_VERSION, "seed": o.seed, "train": o.train_size,
                    "test": o.test_size}
        else:
            key["release"] = (_home.read_manifest(self.release_dir()) or {}).get("built_at", "")
        return key

    def cache_key(self) -> dict[str, Any]:
        return self._key()

    def cache_prefix(self) -> str:
        return f"{self.source}-{self.db.path.stem}"

    def notes_dir(self) -> Path:
        if self.source == "release":
            return self.release_dir() / "notes"
        digest = hashlib.sha256(json.dumps(self._key(), sort_keys=True).encode()).hexdigest()
        return _home.tasks_dir(self.name, self.home) / f"notes-{digest[:16]}"

    def cache_ready(self) -> bool:
        return self.notes_dir().is_dir()

    def cache_manifest(self) -> dict[str, Any]:
        return {"database": str(self.db.path), "notes_dir": str(self.notes_dir()),
                **({"report": self.report} if self.report else {})}

    def _inputs(self) -> dict[str, str]:
        inputs = {self.database.sandbox_db: str(self.db.path), NOTES_MOUNT: str(self.notes_dir())}
        if self.db.csv_dir.is_dir():
            inputs[self.database.sandbox_csv_dir] = str(self.db.csv_dir)
        return inputs

    # -- building -------------------------------------------------------------------------
    def build_records(self) -> list[dict[str, Any]]:
        if self.source == "release":
            return self._release_records()
        return self._generated_records()

    def _generated_records(self) -> list[dict[str, Any]]:
        from medagentgym.tasks import ehrcon_notes as gen

        o = self.options
        rec = gen.load_records(self.db.path)
        sizes = {"train": o.train_size, "test": o.test_size}
        hadms = gen.split_subjects(rec, o.seed, o.test_size / (o.train_size + o.test_size))
        texts: dict[str, str] = {}
        items: list[tuple[str, Any]] = []
        for split, prefix in (("train", "T"), ("test", "E")):
            rng = random.Random(f"ehrcon-{o.seed}-{split}")
            mentions = gen.draw_mentions(rec, hadms[split], sizes[split], rng)
            notes, lines = gen.render_notes(mentions, rec, rng, prefix=prefix)
            texts.update(notes)
            items += [(split, line) for line in lines]
        self._write_notes(texts)
        self.report = {
            split: {"tasks": sum(1 for s, _ in items if s == split), "asked": sizes[split],
                    "inconsistent": sum(1 for s, x in items if s == split
                                        and x.mention.inconsistent),
                    "patients": len({rec.subject_of[h] for h in hadms[split]})}
            for split in sizes}
        return [self._generated_record(split, line) for split, line in items]

    def _write_notes(self, texts: dict[str, str]) -> None:
        notes = self.notes_dir()
        with _home.file_lock(notes):
            if notes.is_dir() and all((notes / f"{i}.txt").is_file() for i in texts):
                return
            with _home.atomic_path(notes, directory=True) as tmp:
                os.chmod(tmp, 0o755)  # notes are what the agent may read
                for note_id, text in texts.items():
                    (tmp / f"{note_id}.txt").write_text(text, encoding="utf-8")
                    os.chmod(tmp / f"{note_id}.txt", 0o644)

    def _goal(self, note_id: str, line: int, entity: str, text: str, kind: str,
              header: str) -> str:
        return (f"Note {note_id} ({NOTES_MOUNT}/{note_id}.txt; {header}), line {line}:\n"
                f"    {text}\n"
                f"Is this line's mention of \"{entity}\" ({kind}) inconsistent with the "
                "patient's records in the database, and in how many of its fields? Store "
                "answer = {\"inconsistent\": True or False, \"n_fields\": N}. Your first "
                "readable answer is final.")

    def _generated_record(self, split: str, nl: Any) -> dict[str, Any]:
        from medagentgym.tasks.ehrcon_notes import GENERATOR_VERSION, KIND_TITLES

        m = nl.mention
        task_id = f"{self.name}-{nl.note_id}-L{nl.line:03d}"
        header = f"patient subject_id {m.subject}, admission hadm_id {m.hadm}"
        task = Task(
            id=task_id, dataset=self.name, category=m.category, split=split,
            goal=self._goal(nl.note_id, nl.line, nl.entity, nl.text, KIND_TITLES[m.kind], header),
            inputs=self._inputs(), allowed_actions=self.allowed_actions,
            provenance=Provenance(
                source=f"medagentgym EHRCon-style notes v{GENERATOR_VERSION} (seed {self.options.seed})",
                database=f"{self.database.description}, {self.db.description}",
                licence="Apache-2.0 (generated notes)"),
            metadata={"note_id": nl.note_id, "line": nl.line, "entity": nl.entity,
                      "kind": m.kind, "hadm_id": m.hadm, "subject_id": m.subject})
        call = (f"answer = ehrcon_check({NOTES_MOUNT + '/' + nl.note_id + '.txt'!r}, {nl.line}, "
                f"{nl.entity!r}, {self.database.sandbox_db!r})\n")
        truth = GroundTruth(kind="consistency",
                            value={"inconsistent": m.inconsistent, "n_fields": m.n_fields},
                            solution=call, extra={"changed": list(m.changed)})
        return self.record(task, truth)

    def _release_records(self) -> list[dict[str, Any]]:
        root = self.release_dir()
        out = []
        for raw in (root / "tasks.jsonl").read_text().splitlines():
            t = json.loads(raw)
            lines = (root / "notes" / f"{t['note_id']}.txt").read_text(
                encoding="utf-8", errors="replace").splitlines()
            text = lines[t["line"] - 1].strip()
            gold = {"inconsistent": t["inconsistent"], "n_fields": t["n_fields"]}
            task = Task(
                id=f"{self.name}-release-{t['note_id']}-L{t['line']:04d}-{len(out):05d}",
                dataset=self.name, category=t["category"], split=t["split"],
                goal=self._goal(t["note_id"], t["line"], t["entity"], text, "entity",
                                f"admission hadm_id {t['hadm_id']}"),
                inputs=self._inputs(), allowed_actions=self.allowed_actions,
                provenance=Provenance(source="EHRCon (credentialed release)",
                                      database=self.db.description,
                                      licence="PhysioNet Credentialed Health Data License",
                                      original_id=f"note {t['note_id']}"),
                metadata={"note_id": t["note_id"], "line": t["line"], "entity": t["entity"],
                          "hadm_id": t["hadm_id"]})
            truth = GroundTruth(kind="consistency", value=gold,
                                solution=f"answer = {gold!r}  # the release's annotation\n")
            out.append(self.record(task, truth))
        return out

    # -- prompting ------------------------------------------------------------------------
    def instructions(self, task: Task) -> str:
        from medagentgym.data.schema import describe

        db = self.database
        csv = (f" and the same tables as CSV files in {db.sandbox_csv_dir}/"
               if self.db.csv_dir.is_dir() else "")
        return (
            "Check a clinical note against the patient's electronic health record by writing "
            "Python code.\n"
            f"The notes are read-only text files in {NOTES_MOUNT}/ (one <note id>.txt each; "
            "line 2 names the patient and the admission). The database is read-only: "
            f"SQLite at {db.sandbox_db}{csv}. Use sqlite3 or pandas.\n"
            "A mention is consistent when one record of the admission agrees with every field "
            "the line states: a laboratory result (d_labitems.label; the value is valuenum "
            "as written; the date is the day of labevents.charttime), a medication "
            "(prescriptions.drug; dose_val_rx; the route family — PO and oral are one, IV "
            "covers iv, iv drip and iv bolus; the day of startdate), a culture "
            "(microbiologyevents.spec_type_desc; org_name; the day of charttime) or a "
            "diagnosis (a short or long title of an ICD-9 code in diagnoses_icd). Names may "
            "be abbreviated or written as synonyms (K for potassium, vanc for vancomycin, "
            "BCx for blood culture, E. coli). Otherwise it is inconsistent: n_fields is 1 "
            "when the admission has no record of the entity, else the fewest stated fields "
            "that disagree with any one record of it.\n"
            f"The tables:\n{describe(db.schema)}\n"
            "Store answer = {\"inconsistent\": True or False, \"n_fields\": N} (N = 0 when "
            "consistent). The first readable answer you store is final and graded on "
            "`inconsistent`; set `answer` only once you have decided."
        )

    # -- grading --------------------------------------------------------------------------
    async def grade(self, ctx: Any) -> Grade:
        if not ctx.has_answer:
            return Grade.wrong("no `answer` was set")
        grade = grade_answer(ctx.task.truth, ctx.answer)
        if grade.detail.startswith(ANSWERED) and any(
                step.grade is not None and step.grade.detail.startswith(ANSWERED)
                for step in ctx.history):
            return Grade.wrong("an answer was already given: the first answer is final",
                               detail=f"{ANSWERED} repeated; {grade.detail}")
        return grade

    def grade_value(self, task: Task, answer: Any, *, stage: int = 0) -> Grade:
        return grade_answer(task.truth, answer)

    def oracle_code(self, task: Task, *, stage: int = 0) -> str:
        solution = task.truth.solution or ""
        if "ehrcon_check(" not in solution:
            return solution  # an annotation of the release
        return oracle_source() + "\n\n" + solution

    def info_index(self, task: Task) -> Any:
        from medagentgym.data.info import get_index

        return get_index(self.db.path)
