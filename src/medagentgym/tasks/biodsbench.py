"""BioDSBench: biomedical data analysis over cBioPortal-style study tables, graded by the
published test asserts turned into probes whose expectations never enter the sandbox.

Tasks: the 99 BioDSBench-Python tasks MedAgentGym uses (50 train / 49 test, by the published
split ids), each a question, the study's tables and a reference solution (with its code
history, if any, in front). The published test script of each task is parsed with ``ast``
into probes (:mod:`medagentgym.tasks.biodsbench_probes`): each assert's agent-side expression
is evaluated in the agent's namespace after its code ran and comes back as a JSON value; the
host compares it, with the assert's own comparator, with the value the same expression had
after the reference solution on the same tables.

Data. The 11 studies are not openly available, so by default every *episode* gets its own
synthetic tables (:mod:`medagentgym.tasks.biodsbench_synth`, seeded per episode: constants
memorised from the real studies or an earlier episode do not hold). They are written on the
host to a fresh directory under ``<home>/biodsbench/episodes`` (mounted read-only at
``/data/biodsbench``) and reached at ``/workspace/data``; at ``setup`` the reference runs on
them in the episode's sandbox (before the agent has run anything), its probe values become the
episode's expectations on the host, and the sandbox is reset. The system prompt describes the
tables actually served. Real-data mode (option ``studies``: a directory with one folder per
cBioPortal study id holding ``data_*.csv`` / datahub ``data_*.txt``) serves the user's tables,
computes the expectations once at build time and checks the agent's values against the
published constants as well.

Reference defects found when running the references are fixed by one-line patches where the fix
is unambiguous (:data:`FIXES`); the other tasks are excluded with the reason
(:data:`EXCLUDED`, recorded in the cache manifest and in ``docs/datasets.md``).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import gzip
import json
import math
import os
import secrets
import shutil
import threading
import time
import weakref
from pathlib import Path
from typing import Any, ClassVar

from medagentgym.errors import ConfigurationError
from medagentgym.sandbox.base import PRELOAD_PRESETS
from medagentgym.tasks import biodsbench_probes as bp
from medagentgym.tasks.base import DatasetFamily, DatasetOptions, run_in_thread
from medagentgym.tasks.family import option
from medagentgym.types import Grade, GroundTruth, Provenance, Task

CACHE_VERSION = 1
GENERATOR_VERSION = 2
TASK_FILE = "BioDSBench-Python/python_tasks_with_class.jsonl.gz"
SPLIT_FILE = "medagentgym_split_ids.jsonl"
METADATA_FILE = "cbioportal_dataset_metadata.csv"
MOUNT = "/data/biodsbench"
DATA_DIR = "/workspace/data"
LICENCE = "MIT (BioDSBench tasks); the studies are cBioPortal's (ODbL); synthetic by default"
#: attempts at a seed on which the reference gives usable values, per episode (a few
#: references fail on a good share of random studies: 32864625_5 selects a
#: Variant_Classification column that a study may lack after its filters; each failed
#: attempt costs one reference run, a successful first attempt nothing more)
SEED_ATTEMPTS = 24
REFERENCE_TIMEOUT = 120.0
EPISODE_DIR_TTL = 24 * 3600

#: one-line fixes of reference defects: task -> [(old, new)] applied to the reference code
FIXES: dict[str, list[tuple[str, str]]] = {
    # uses `pd` and `KaplanMeierFitter` without importing them
    "28472509_4": [("import matplotlib.pyplot as plt\n",
                    "import matplotlib.pyplot as plt\n"
                    "import pandas as pd; from lifelines import KaplanMeierFitter\n")],
    # plotly's static image export needs kaleido and a headless Chrome (not offline): the
    # export line (a side effect the test does not read) is dropped
    "37699004_1": [('fig.write_image("stage_categories_percentage_ratio.png")', "pass")],
}

#: tasks left out, with the reason
EXCLUDED: dict[str, str] = {}


class BioDSBenchOptions(DatasetOptions):
    """Options of BioDSBench."""

    studies: Path | None = option(
        None, "directory of real cBioPortal studies (one folder per study id, data_*.csv or "
        "datahub data_*.txt): real-data mode with the published constants", scope="host")
    seed: int | None = option(
        None, "seed of the synthetic tables (default: a fresh one per episode)", ge=0,
        le=2**32 - 1)
    workers: int = option(2, "sandboxes used while building real-data expectations", ge=1,
                          le=16, scope="host")


def read_published(root: Path) -> list[dict[str, Any]]:
    """The BioDSBench-Python tasks that MedAgentGym uses, with their split, in split-file
    order."""
    path = root / TASK_FILE
    if not path.is_file():
        raise ConfigurationError(f"biodsbench: {path} is missing; run `medagentgym data pull "
                                 "biodsbench`")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = {(str(r["study_ids"]), str(r["question_ids"])): r
                for r in map(json.loads, fh)}
    split_path = root / SPLIT_FILE
    if not split_path.is_file():
        raise ConfigurationError(f"biodsbench: {split_path} is missing; run `medagentgym data "
                                 "pull biodsbench`")
    out = []
    for line in split_path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        s = json.loads(line)
        key = (str(s["study_ids"]), str(s["question_ids"]))
        if key in rows:
            out.append({**rows[key], "split": s["split"]})
    return out


def study_ids(root: Path) -> dict[str, str]:
    """PMID -> cBioPortal study id (from the published metadata)."""
    import csv

    out: dict[str, str] = {}
    path = root / METADATA_FILE
    if path.is_file():
        with path.open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                pmid = (row.get("PMID") or "").strip()
                if pmid and pmid not in out:
                    out[pmid] = row["dataset_id"]
    return out


def reference_code(row: dict[str, Any]) -> str:
    """The code history (if any) and the reference, with the known one-line fixes, reading the
    tables from :data:`DATA_DIR`."""
    uid = row["unique_question_ids"]
    ref = row["reference_answer"]
    for old, new in FIXES.get(uid, []):
        if old not in ref:
            raise ConfigurationError(f"biodsbench: fix for {uid} no longer applies")
        ref = ref.replace(old, new, 1)
    code = ((row.get("code_histories") or "").rstrip() + "\n\n" + ref).strip() + "\n"
    return code.replace("/workdir", DATA_DIR)


def _tables(row: dict[str, Any]) -> list[str]:
    try:
        names = json.loads(row["tables"]) if isinstance(row["tables"], str) else row["tables"]
    except (TypeError, ValueError):
        names = []
    return [Path(str(n)).stem for n in names or []]


def _category(row: dict[str, Any]) -> str:
    kinds = row.get("analysis_types")
    if isinstance(kinds, str):
        try:
            kinds = ast.literal_eval(kinds)
        except (ValueError, SyntaxError):
            kinds = [kinds]
    return str(kinds[0]) if kinds else "Data Analysis"


# --------------------------------------------------------------------------- the family


class BioDSBenchFamily(DatasetFamily):
    """BioDSBench analyses graded by probes (see the module docstring)."""

    allowed_actions = ("validate_code", "debug", "terminal")
    #: the science preset plus the plotting libraries the references import
    preload = (*PRELOAD_PRESETS["science"], "matplotlib", "matplotlib.pyplot", "seaborn",
               "PyComplexHeatmap")
    needs_answer = False
    #: tasks `medagentgym demo` runs (each episode runs the reference once at setup)
    demo_tasks = 4
    Options: ClassVar[type[BioDSBenchOptions]] = BioDSBenchOptions
    cache_version = CACHE_VERSION

    options: BioDSBenchOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exclusions: list[dict[str, str]] = []
        self._schemas: dict[str, Any] | None = None
        # per-episode expectations, by sandbox (one episode at a time per sandbox)
        self._expected: weakref.WeakKeyDictionary[Any, dict[str, Any]] = \
            weakref.WeakKeyDictionary()
        self._described: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- tasks ------------------------------------------------------------------------
    def cache_prefix(self) -> str:
        return "biodsbench"

    @property
    def real(self) -> bool:
        return self.options.studies is not None

    def cache_key(self) -> dict[str, Any]:
        key: dict[str, Any] = {"gen": GENERATOR_VERSION,
                               "fixes": {k: [list(f) for f in v] for k, v in FIXES.items()},
                               "excluded": EXCLUDED}
        if self.options.studies is not None:
            key["studies"] = _fingerprint(self.options.studies)
        return key

    def cache_manifest(self) -> dict[str, Any]:
        return {"generator_version": GENERATOR_VERSION, "excluded": len(self.exclusions),
                "exclusions": self.exclusions,
                "mode": "real" if self.real else "synthetic"}

    def excluded(self) -> list[dict[str, str]]:
        """The published tasks left out, each with its reason (from the cache's manifest)."""
        from medagentgym.data import home as _home

        manifest = _home.read_manifest(self.cache_file()) or {}
        return list(manifest.get("exclusions") or self.exclusions)

    def episodes_root(self) -> Path:
        from medagentgym.data import home as _home

        root = _home._home(self.home) / "biodsbench" / "episodes"
        root.mkdir(parents=True, exist_ok=True)
        # the sandbox's unprivileged user reads it (other episodes' folders hold tables only,
        # never an expectation)
        os.chmod(root, 0o755)
        return root

    def load_tasks(self, split: str) -> list[Task]:
        tasks = super().load_tasks(split)
        if not self.real:
            self.episodes_root()  # the mounted folder exists, readable by the sandbox
        return tasks

    def build_records(self) -> list[dict[str, Any]]:
        src = self.source_dir()
        rows = read_published(src)
        self.exclusions = []
        pmid_to_id = study_ids(src)
        plans = []
        for row in rows:
            uid = row["unique_question_ids"]
            why = EXCLUDED.get(uid)
            probes: list[bp.Probe] = []
            if why is None:
                probes, problems = bp.parse_tests(row["test_cases"] or "", DATA_DIR)
                if problems:
                    why = "; ".join(problems)
                elif not probes:
                    why = "the test has no assert"
                elif all(p.weak for p in probes):
                    why = "every assert is a boolean over the agent's objects (nothing to compare)"
            if why is not None:
                self.exclusions.append({"split": row["split"], "task": uid, "reason": why})
                continue
            plans.append({"row": row, "probes": probes,
                          "cbio": pmid_to_id.get(str(row["study_ids"]), "")})
        if self.real:
            plans = self._real_expectations(plans)
        return [self._record(p) for p in plans]

    def _record(self, plan: dict[str, Any]) -> dict[str, Any]:
        from medagentgym.tasks import biodsbench_synth as syn

        row = plan["row"]
        uid = row["unique_question_ids"]
        tables = _tables(row)
        code = reference_code(row)
        history = (row.get("code_histories") or "").strip().replace("/workdir", DATA_DIR)
        files = ", ".join(f"`{t}.csv`" for t in tables)
        goal = (f"{row['queries'].strip()}\n\nThe study's tables are CSV files in "
                f"`{DATA_DIR}/` (read-only): {files}. Their columns are described in the "
                "instructions.")
        if history:
            goal += ("\n\nThis code was written before (it is NOT run for you; include what "
                     f"you need of it in your program):\n```python\n{history}\n```")
        goal += ("\n\nWrite Python that computes the requested results and leaves them in the "
                 "variables the question names; after your code runs, hidden tests read those "
                 "variables.")
        if self.real:
            inputs = {MOUNT: str(plan["real_dir"])}
            value: dict[str, Any] = {"mode": "real", "study": row["study_ids"],
                                     "link": plan["cbio"], "expected": plan["expected"]}
        else:
            inputs = {MOUNT: str(self.episodes_root())}
            value = {"mode": "synthetic", "study": row["study_ids"]}
        literals = syn.code_literals(code, self._study_schemas().get(str(row["study_ids"]), {}))
        value.update({"probes": [p.to_json() for p in plan["probes"]], "tables": tables,
                      "scale": 0.25 if "oncoPrint" in code else 1.0,
                      "literals": {k: sorted(v, key=repr) for k, v in literals.items()}})
        task = Task(
            id=f"{self.name}-{row['split']}-{uid}", dataset=self.name,
            category=_category(row), split=row["split"], goal=goal, inputs=inputs,
            allowed_actions=self.allowed_actions,
            provenance=Provenance(
                source="BioDSBench-Python (RyanWangZf/BioDSA @ 554600ef)", licence=LICENCE,
                database=("cBioPortal " + plan["cbio"]) if self.real else
                "synthetic tables, seeded per episode", original_id=uid),
            metadata={"study": row["study_ids"], "cbioportal_id": plan["cbio"],
                      "study_title": row.get("study_title"), "tables": tables,
                      "fixed": uid in FIXES},
        )
        truth = GroundTruth(kind="probe_values", solution=code, value=value)
        return self.record(task, truth)

    def _study_schemas(self) -> dict[str, Any]:
        if self._schemas is None:
            from medagentgym.tasks import biodsbench_synth as syn

            self._schemas = syn.load_schemas(self.source_dir())
        return self._schemas

    # -- real-data mode ---------------------------------------------------------------
    def _real_expectations(self, plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from medagentgym.data import home as _home

        studies = Path(self.options.studies or ".").expanduser()
        if not studies.is_dir():
            raise ConfigurationError(f"biodsbench: studies directory {studies} does not exist "
                                     "(pass the folder that holds one folder per cBioPortal "
                                     "study id)")
        out_root = _home._home(self.home) / "biodsbench" / "real"
        kept = []
        for plan in plans:
            cbio = plan["cbio"]
            folder = studies / cbio if cbio else None
            if folder is None or not folder.is_dir():
                self.exclusions.append({"split": plan["row"]["split"],
                                        "task": plan["row"]["unique_question_ids"],
                                        "reason": f"real-data mode: study {cbio or '?'} is not "
                                                  f"in {studies}"})
                continue
            plan["real_dir"] = out_root
            plan["real_study"] = _import_study(folder, out_root / cbio)
            kept.append(plan)
        results = _run_in_thread(self._run_references(kept))
        done = []
        for plan, outcome in zip(kept, results, strict=True):
            if isinstance(outcome, str):
                self.exclusions.append({"split": plan["row"]["split"],
                                        "task": plan["row"]["unique_question_ids"],
                                        "reason": outcome})
                continue
            plan["expected"] = outcome
            done.append(plan)
        return done

    async def _run_references(self, plans: list[dict[str, Any]]) -> list[Any]:
        from medagentgym.sandbox import open_sandbox_async

        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(plans)):
            queue.put_nowait(i)
        results: list[Any] = [None] * len(plans)

        async def worker() -> None:
            async with open_sandbox_async(inputs={MOUNT: str(plans[0]["real_dir"])},
                                          preload=self.preload) as sb:
                while not queue.empty():
                    i = queue.get_nowait()
                    plan = plans[i]
                    try:
                        link = f"{MOUNT}/{plan['cbio']}"
                        got = await run_reference(sb, reference_code(plan["row"]),
                                                  plan["probes"], link)
                        if isinstance(got, str):
                            results[i] = got
                        else:
                            bad = [p.source for p in plan["probes"]
                                   if bp.check_published(p, got[p.name]) is False]
                            results[i] = (f"the reference disagrees with the published test "
                                          f"on these data: {bad[0][:120]}") if bad else got
                    except Exception as exc:  # one bad reference never stops the build
                        results[i] = f"build error: {type(exc).__name__}: {exc}"[:300]
                    await sb.reset()

        if plans:
            await asyncio.gather(*(worker() for _ in range(min(self.options.workers,
                                                               len(plans)))))
        return results

    # -- episodes ---------------------------------------------------------------------
    async def setup(self, episode: Any) -> None:
        spec = episode.task.truth.value
        sb = episode.sandbox
        if spec.get("mode") == "real":
            if MOUNT not in episode.task.inputs or not episode.task.metadata.get("cbioportal_id"):
                return  # nothing mounted to link or describe (the expectations are stored)
            link = f"{MOUNT}/{episode.task.metadata.get('cbioportal_id')}"
            await _link(sb, link)
            from medagentgym.tasks import biodsbench_synth as syn

            self._described[episode.task.id] = _describe_dir(
                Path(episode.task.inputs[MOUNT]) / episode.task.metadata["cbioportal_id"],
                spec["tables"], syn)
            return
        probes = [bp.Probe.from_json(p) for p in spec["probes"]]
        root = Path(episode.task.inputs[MOUNT])
        _sweep(root)
        base = self.options.seed if self.options.seed is not None else secrets.randbits(32)
        last = "no attempt"
        for attempt in range(SEED_ATTEMPTS):
            seed = (base + attempt * 7919) % 2**32
            token = secrets.token_hex(16)
            folder = root / token
            tables = await asyncio.to_thread(self._write_tables, spec, folder, seed)
            got = await run_reference(sb, episode.task.truth.solution, probes,
                                      f"{MOUNT}/{token}")
            await sb.reset()  # nothing the reference wrote survives into the agent's episode
            if isinstance(got, str):
                last = got
                shutil.rmtree(folder, ignore_errors=True)
                continue
            await _link(sb, f"{MOUNT}/{token}")
            from medagentgym.tasks import biodsbench_synth as syn

            self._expected[sb] = {"task": episode.task.id, "values": got, "seed": seed}
            episode.state["biodsbench"] = {"folder": str(folder), "seed": seed}
            self._described[episode.task.id] = syn.describe(tables, DATA_DIR)
            return
        raise RuntimeError(f"biodsbench: the reference of {episode.task.id} gave no usable "
                           f"values on {SEED_ATTEMPTS} synthetic studies ({last})")

    def _write_tables(self, spec: dict[str, Any], folder: Path, seed: int) -> dict[str, Any]:
        from medagentgym.tasks import biodsbench_synth as syn

        schemas = self._study_schemas().get(str(spec["study"]), {})
        wanted = {t: schemas[t] for t in spec["tables"] if t in schemas}
        literals = {k: set(v) for k, v in (spec.get("literals") or {}).items()}
        tables = syn.generate_study(wanted, literals, seed, scale=spec.get("scale", 1.0))
        folder.mkdir(mode=0o755)
        os.chmod(folder, 0o755)
        for name, df in tables.items():
            path = folder / f"{name}.csv"
            df.to_csv(path, index=False)
            os.chmod(path, 0o644)
        return tables

    async def teardown(self, episode: Any) -> None:
        state = episode.state.get("biodsbench") or {}
        self._expected.pop(episode.sandbox, None)
        if state.get("folder"):
            await asyncio.to_thread(shutil.rmtree, state["folder"], True)

    # -- prompting --------------------------------------------------------------------
    def instructions(self, task: Task) -> str:
        described = self._described.get(task.id) or self._schema_text(task)
        return ("You are a biomedical data scientist. Write Python (pandas, numpy, scipy, "
                "statsmodels, scikit-learn, lifelines, matplotlib, seaborn and PyComplexHeatmap "
                f"are available; there is no network). The study's tables in `{DATA_DIR}/`:\n\n"
                f"{described}\n\nNothing needs to be stored in `answer`: after each execution "
                "of your code, hidden tests read the variables the question names and compare "
                "them with the reference analysis on the same tables.")

    def _schema_text(self, task: Task) -> str:
        """Before an episode has served tables: their columns (sizes and values vary)."""
        spec = task.truth.value if task.has_truth else {}
        schemas = self._study_schemas().get(str(spec.get("study")), {})
        parts = []
        for name in spec.get("tables") or []:
            t = schemas.get(name)
            if t is not None:
                cols = ", ".join(t.names[:40]) + (", ..." if len(t.names) > 40 else "")
                parts.append(f"`{DATA_DIR}/{name}.csv`: columns {cols}")
        return "\n".join(parts) + ("\n(row counts and values are drawn anew for each "
                                   "episode)" if parts else "")

    # -- grading ----------------------------------------------------------------------
    def probes(self, task: Task, stage: int = 0) -> dict[str, str] | None:
        return {p["name"]: p["expr"] for p in task.truth.value["probes"]}

    async def grade(self, ctx: Any) -> Grade:
        spec = ctx.task.truth.value
        probes = [bp.Probe.from_json(p) for p in spec["probes"]]
        got = ctx.probes
        if not got:  # nothing ran (or it exited before the tests could read anything)
            return Grade.wrong("the tests could not run (no probe values)")
        if spec.get("mode") == "real":
            expected = spec.get("expected") or {}
        else:
            sandbox = getattr(ctx.sandbox, "_sandbox", None)
            episode = self._expected.get(sandbox) if sandbox is not None else None
            if episode is None or episode.get("task") != ctx.task.id:
                raise RuntimeError("biodsbench: no expectations for this episode (setup did "
                                   "not run)")
            expected = episode["values"]
        passed, failed = 0, []
        for p in probes:
            value = got.get(p.name)
            ok = value is not None and value.ok and bp.matches(p, expected.get(p.name),
                                                                value.value)
            if ok and spec.get("mode") == "real" and bp.check_published(p, value.value) is False:
                ok = False
            if ok:
                passed += 1
            else:
                failed.append((p, value))
        if not failed:
            return Grade.right(f"all {len(probes)} tests pass")
        p, value = failed[0]
        # the agent-side expression only: the published assert may quote a constant
        why = (f"{passed} of {len(probes)} tests pass; failing: `{p.expr[:160]}` "
               f"({_CMP_TEXT.get(p.cmp, p.cmp)})")
        if value is not None and not value.ok:
            why += f" ({str(value.error or '')[:160]})"
        return Grade.wrong(why)


# --------------------------------------------------------------------------- helpers

_CMP_TEXT = {"close": "a number, compared within the test's tolerance",
             "equal": "compared for equality", "set": "compared as a set",
             "in_list": "compared with the accepted values", "contains": "must contain a value",
             "type": "type checked", "approx": "a number, compared to 1e-6"}


async def run_reference(sb: Any, code: str, probes: list[bp.Probe],
                        link: str) -> dict[str, Any] | str:
    """Run ``code`` (after linking ``DATA_DIR`` to ``link``) in the sandbox; the probes'
    values, or why they are not usable (an error, a failed probe, a NaN, too large)."""
    prelude = (f"import os as _o, matplotlib as _m\n_m.use('Agg')\n"
               f"_o.makedirs('/tmp/_ref', exist_ok=True)\n_o.chdir('/tmp/_ref')\n"
               f"_o.path.lexists({DATA_DIR!r}) or _o.symlink({link!r}, {DATA_DIR!r})\n"
               "del _o, _m\n")
    res = await sb.execute(prelude + code, timeout=REFERENCE_TIMEOUT,
                           probes={p.name: p.expr for p in probes}, probe_timeout=30)
    if res.status != "ok":
        return f"the reference fails ({(res.error or res.status)[:200]})"
    out: dict[str, Any] = {}
    for p in probes:
        v = (res.probes or {}).get(p.name)
        if v is None or not v.ok:
            return f"probe `{p.source[:80]}` fails on the reference ({(v.error if v else '')!s:.120})"
        if _has_nan(v.value):
            return f"probe `{p.source[:80]}` is NaN on the reference"
        if not bp.matches(p, v.value, v.value):
            return f"probe `{p.source[:80]}` does not match itself on the reference"
        out[p.name] = v.value
    return out


def _has_nan(value: Any, depth: int = 0) -> bool:
    if depth > 50:
        return True
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_has_nan(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(_has_nan(v, depth + 1) for v in value.values())
    return False


async def _link(sb: Any, target: str) -> None:
    res = await sb.execute(f"import os\nos.path.lexists({DATA_DIR!r}) or "
                           f"os.symlink({target!r}, {DATA_DIR!r})", timeout=30)
    if res.status != "ok":
        raise RuntimeError(f"biodsbench: cannot link {DATA_DIR} ({res.error})")


def _sweep(root: Path) -> None:
    """Drop episode folders left by processes that died (older than a day)."""
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in root.iterdir():
            with contextlib.suppress(OSError):
                if now - entry.stat().st_mtime > EPISODE_DIR_TTL:
                    shutil.rmtree(entry, ignore_errors=True)


def _fingerprint(path: Path) -> str:
    import hashlib

    h = hashlib.sha256(str(Path(path).expanduser().resolve()).encode())
    with contextlib.suppress(OSError):
        for f in sorted(Path(path).expanduser().rglob("data_*")):
            st = f.stat()
            h.update(f"{f}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _import_study(folder: Path, dest: Path) -> Path:
    """A user's study as CSV tables in the data home (datahub ``.txt`` files converted)."""
    import pandas as pd

    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)
    os.chmod(dest.parent, 0o755)
    for f in sorted(folder.iterdir()):
        if not f.name.startswith("data_") or f.suffix not in (".csv", ".txt"):
            continue
        out = dest / (f.stem + ".csv")
        if f.suffix == ".csv":
            shutil.copyfile(f, out)
        elif not (folder / (f.stem + ".csv")).exists():
            pd.read_csv(f, sep="\t", comment="#", low_memory=False).to_csv(out, index=False)
        os.chmod(out, 0o644)
    return dest


def _describe_dir(folder: Path, tables: list[str], syn: Any) -> str:
    import pandas as pd

    frames = {}
    for t in tables:
        with contextlib.suppress(Exception):
            frames[t] = pd.read_csv(folder / f"{t}.csv", low_memory=False)
    return syn.describe(frames, DATA_DIR)


def _run_in_thread(coro: Any) -> Any:
    return run_in_thread(coro, "biodsbench-build")
