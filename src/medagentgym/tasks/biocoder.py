"""BioCoder: write one bioinformatics function from its signature, docstring and context,
graded by differential testing on hidden inputs.

Tasks come from BioCoder's Python function corpora (``python_public``: the test split, 157
functions as in the paper; ``python_hidden``: the train split). For each function the
context (imports, corpus helpers) is rebuilt (:mod:`medagentgym.tasks.biocoder_corpus`);
functions whose context cannot be rebuilt offline are excluded with the reason.

Hidden tests: argument lists generated from the parameters (seeded by the task id) are run
through the golden *in the sandbox* at build time, as probes ``fname(*args)`` after the
golden's code — the very probes the grader later evaluates after the agent's code. Kept:
inputs on which the golden returns the same JSON value in two runs. A task needs
:data:`HIDDEN` such cases with at least two distinct outputs (a constant function fails) plus
one visible example (shown in the prompt; the hidden cases differ from it, and at least one
hidden output differs from its output). The expected values live in the ground truth on the
host; the sandbox sees the hidden inputs only as probe text, after the agent's code finished,
with its output discarded. Grading compares returned values on the host (floats within
``rel 1e-6 / abs 1e-9``, lists and tuples alike, bool distinct from int); all hidden cases
must match.

Functions that read a file get one staged per case: the argument is an expression that writes
the file's text (FASTA, FASTQ, delimited table or plain lines, chosen from the golden's use
and seeded by the task id) into the sandbox's ``/tmp`` when the probe runs, and evaluates to
its path; outputs that contain a staged path are not kept. When only :data:`HIDDEN` inputs
return, one hidden case may expect an exception (a type in :data:`RAISES` that the golden
raises on that input in both runs); the probe's error names the type and the host compares it.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from medagentgym.errors import ConfigurationError
from medagentgym.tasks import biocoder_corpus as bc
from medagentgym.tasks.base import DatasetFamily, DatasetOptions, run_in_thread
from medagentgym.tasks.family import option
from medagentgym.types import Grade, GroundTruth, Provenance, Task

CACHE_VERSION = 1
GENERATOR_VERSION = 4
#: exceptions a golden may be expected to raise on one hidden case (never TypeError /
#: AttributeError / NameError: those mostly mean a generated input of the wrong kind)
RAISES = ("ValueError", "KeyError", "IndexError", "ZeroDivisionError")
HIDDEN = 5
MAX_OUTPUT_CHARS = 4000
CORPORA = {"test": "python_public.json.gz", "train": "python_hidden.json.gz"}
LICENCE = "CC BY 4.0 (BioCoder; snippets mined from GitHub projects under their own licences)"


class BioCoderOptions(DatasetOptions):
    """Options of BioCoder."""

    workers: int = option(4, "sandboxes used while building the hidden tests", ge=1, le=32,
                          scope="host")
    source: Literal["auto", "corpus", "official"] = option(
        "auto", "the MedAgentGym release registered by `data import medagentgym` (official), "
        "the open function corpora (corpus), or official when registered (auto)")


OFFICIAL_KEY = "medagentgym/biocoder"
#: the most release tasks read from one file, and the longest line kept
MAX_RELEASE_TASKS = 20_000
MAX_RELEASE_LINE = 2_000_000


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr, allow_nan=True)


#: types whose JSON form is their value (other objects come back as their repr)
_FAITHFUL = {"int", "float", "str", "bool", "NoneType", "list", "tuple", "dict", "set",
             "frozenset"}
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def faithful(type_name: str | None, value: Any) -> bool:
    """Whether a probe value stands for the returned value itself (not an object's repr)."""
    if type_name is None:
        return False
    ok = type_name in _FAITHFUL or type_name.startswith(("numpy.", "pandas."))
    return ok and not _ADDRESS.search(canonical(value))


_SEQ = {"list", "tuple"}
_NUM = {"int", "float", "numpy.int64", "numpy.float64", "numpy.int32", "numpy.float32"}


def _same_type(want: str | None, got: str | None) -> bool:
    if want == got:
        return True
    return bool(want and got and ((want in _SEQ and got in _SEQ) or
                                  (want in _NUM and got in _NUM)))


def same_value(want: Any, got: Any, depth: int = 0) -> bool:
    """JSON values equal, floats within tolerance, bool never a number (host-side)."""
    if depth > 60:
        return False
    if isinstance(want, bool) or isinstance(got, bool):
        return type(want) is type(got) and want == got
    if isinstance(want, int | float) and isinstance(got, int | float):
        if isinstance(want, float) and math.isnan(want):
            return isinstance(got, float) and math.isnan(got)
        if (isinstance(got, float) and not math.isfinite(got)) or \
                (isinstance(want, float) and not math.isfinite(want)):
            return want == got
        return math.isclose(want, got, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(
            same_value(a, b, depth + 1) for a, b in zip(want, got, strict=True))
    if isinstance(want, dict) and isinstance(got, dict):
        return set(want) == set(got) and all(same_value(want[k], got[k], depth + 1)
                                             for k in want)
    return type(want) is type(got) and want == got


def raised_type(error: Any) -> str | None:
    """The exception type name a failed probe reports (``'ValueError: msg'``)."""
    if not isinstance(error, str):
        return None
    head = error[:120].split(":", 1)[0].strip()
    return head if re.fullmatch(r"[A-Za-z_]\w{0,60}", head) else None


def _shortcut(case: tuple[list[str], dict[str, Any]]) -> bool:
    """Whether a case's output is a shortcut of one of its staged files."""
    args, out = case
    if "value" not in out:
        return False
    for arg in args:
        text = bc.staged_text(arg)
        if text is not None and any(same_value(v, out["value"]) for v in
                                    bc.file_shortcuts(text)):
            return True
    return False


def _case_matches(want: dict[str, Any], got: Any) -> bool:
    if got is None:
        return False
    if "raises" in want:  # the golden raises this exception type on this input
        try:
            return not got.ok and raised_type(got.error) == want["raises"]
        except Exception:
            return False
    if not getattr(got, "ok", False):
        return False
    try:
        return _same_type(want.get("type"), got.type) and same_value(want["value"], got.value)
    except Exception:  # whatever came back is the agent's: never an exception here
        return False


class BioCoderFamily(DatasetFamily):
    """BioCoder functions graded on hidden inputs (see the module docstring)."""

    allowed_actions = ("validate_code", "debug", "terminal")
    preload = "science"
    needs_answer = False
    Options: ClassVar[type[BioCoderOptions]] = BioCoderOptions
    cache_version = CACHE_VERSION

    options: BioCoderOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exclusions: list[dict[str, str]] = []

    # -- tasks ------------------------------------------------------------------------
    def _official_record(self) -> dict[str, Any] | None:
        from medagentgym.data import home as _home

        rec = _home.load_registry(self.home).get(OFFICIAL_KEY)
        return rec if isinstance(rec, dict) else None

    def resolved_source(self) -> str:
        if self.options.source != "auto":
            return self.options.source
        return "official" if self._official_record() else "corpus"

    def _official_files(self) -> dict[str, Path]:
        from medagentgym.data import home as _home

        rec = self._official_record()
        if not rec:
            raise ConfigurationError(
                "the MedAgentGym BioCoder release is not registered; run `medagentgym data "
                "import medagentgym --from DIR` (the release) or use source='corpus'")
        files: dict[str, Path] = {}
        for split, info in (rec.get("tasks") or {}).items():
            if split not in self.spec.splits or not isinstance(info, dict):
                continue
            path = Path(str(info.get("path", "")))
            if not path.is_absolute():
                path = _home._home(self.home) / path
            if not path.is_file():
                raise ConfigurationError(
                    f"{self.name}: the registered release file {path} is gone; re-run "
                    "`medagentgym data import medagentgym --from DIR`")
            files[split] = path
        if not files:
            raise ConfigurationError(
                f"{self.name}: the registered release has none of the splits "
                f"{', '.join(self.spec.splits)}")
        return files

    def cache_prefix(self) -> str:
        return "biocoder" if self.resolved_source() == "corpus" else "biocoder-official"

    def cache_key(self) -> dict[str, Any]:
        key: dict[str, Any] = {"gen": GENERATOR_VERSION, "hidden": HIDDEN}
        if self.resolved_source() == "official":
            key["release"] = {s: [str(p), p.stat().st_size, int(p.stat().st_mtime)]
                              for s, p in sorted(self._official_files().items())}
        return key

    def cache_manifest(self) -> dict[str, Any]:
        return {"generator_version": GENERATOR_VERSION, "excluded": len(self.exclusions),
                "exclusions": self.exclusions}

    def excluded(self) -> list[dict[str, str]]:
        """The corpus functions left out, each with its reason (from the cache's manifest)."""
        from medagentgym.data import home as _home

        manifest = _home.read_manifest(self.cache_file()) or {}
        return list(manifest.get("exclusions") or self.exclusions)

    def build_records(self) -> list[dict[str, Any]]:
        self.exclusions = []
        if self.resolved_source() == "official":
            plans = self._release_plans()
        else:
            plans = self._corpus_plans()
        return self._build(plans)

    def _release_plans(self) -> list[dict[str, Any]]:
        plans: list[dict[str, Any]] = []
        for split, path in self._official_files().items():
            for i, record in enumerate(_read_release(path)):
                key = f"{i}"
                if not isinstance(record, dict):
                    self.exclusions.append({"split": split, "corpus": "release", "key": key,
                                            "function": "", "reason": record})
                    continue
                rt = bc.clean_release_task(record, key)
                name = rt.fn.name if rt.fn else ""
                if rt.defect or rt.fn is None:
                    self.exclusions.append({"split": split, "corpus": "release", "key": key,
                                            "function": name, "idx": rt.idx,
                                            "reason": rt.defect or "unreadable"})
                    continue
                plan = self._plan(split, rt.fn, {}, release=rt, index=i)
                if isinstance(plan, str):
                    self.exclusions.append({"split": split, "corpus": "release", "key": key,
                                            "function": name, "idx": rt.idx, "reason": plan})
                else:
                    plans.append(plan)
        return plans

    def _corpus_plans(self) -> list[dict[str, Any]]:
        src = self.source_dir()
        plans: list[dict[str, Any]] = []
        analysed: dict[str, list[bc.Function]] = {}
        names: dict[str, dict[str, list[bc.Function]]] = {}
        for split, fname in CORPORA.items():
            path = src / fname
            if not path.is_file():
                raise ConfigurationError(f"{self.name}: {path} is missing; run `medagentgym "
                                         "data pull biocoder`")
            corpus = fname.split(".")[0]
            analysed[split] = [bc.analyse(k, corpus, s) for k, s in bc.read_corpus(path)]
            names[split] = {}
            for f in analysed[split]:
                if f.name:
                    names[split].setdefault(f.name, []).append(f)
        for split, fns in analysed.items():
            by_name = names[split]
            if split == "test":
                # a test function's helper may sit in the train corpus (the same projects);
                # never the other way round: no test golden enters a train task's context
                by_name = {**names.get("train", {}), **by_name}
            for f in fns:
                plan = self._plan(split, f, by_name)
                if isinstance(plan, str):
                    self.exclusions.append({"split": split, "corpus": f.corpus, "key": f.key,
                                            "function": f.name, "reason": plan})
                else:
                    plans.append(plan)
        return plans

    def _build(self, plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = _run_in_thread(self._run_goldens(plans))
        records = []
        for plan, outcome in zip(plans, results, strict=True):
            if isinstance(outcome, str):
                entry = {"split": plan["split"], "corpus": plan["fn"].corpus,
                         "key": plan["fn"].key, "function": plan["fn"].name,
                         "reason": outcome}
                if plan.get("release") is not None:
                    entry["idx"] = plan["release"].idx
                self.exclusions.append(entry)
                continue
            records.append(self._record(plan, *outcome))
        return records

    def _plan(self, split: str, f: bc.Function, by_name: dict[str, list[bc.Function]], *,
              release: bc.ReleaseTask | None = None, index: int = 0) -> dict[str, Any] | str:
        if f.problem:
            return f.problem
        if f.n_required == 0:
            return "no required parameters: nothing to vary"
        if any(p.startswith("*") for p in f.params):
            return "variadic parameters"
        opaque = bc.opaque_params(f)
        if opaque:
            return f"takes an object or a file ({', '.join(opaque)}): no generated input"
        if release is not None:
            task_id = f"{self.name}-{split}-official-{index:04d}"
            return {"split": split, "fn": f, "ctx": bc.Context([], []), "id": task_id,
                    "context": release.context, "release": release,
                    "inputs": bc.candidate_inputs(f, task_id)}
        ctx = bc.resolve_context(f, by_name)
        if ctx.problem:
            return ctx.problem
        task_id = f"{self.name}-{split}-{f.corpus.removeprefix('python_')}-{int(f.key):04d}"
        context = bc.context_source(ctx)
        shims = bc.numpy_shims(f.source + context)
        return {"split": split, "fn": f, "ctx": ctx, "id": task_id,
                "context": (shims + "\n" + context) if shims else context,
                "inputs": bc.candidate_inputs(f, task_id)}

    async def _run_goldens(self, plans: list[dict[str, Any]]) -> list[Any]:
        from medagentgym.sandbox import open_sandbox_async

        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(plans)):
            queue.put_nowait(i)
        results: list[Any] = [None] * len(plans)

        async def worker() -> None:
            async with open_sandbox_async(preload=self.preload) as sb:
                while not queue.empty():
                    i = queue.get_nowait()
                    try:
                        results[i] = await self._hidden_cases(sb, plans[i])
                    except Exception as exc:  # one bad golden never stops the build
                        results[i] = f"build error: {type(exc).__name__}: {exc}"[:300]
                    await sb.reset()

        await asyncio.gather(*(worker() for _ in range(min(self.options.workers,
                                                           max(1, len(plans))))))
        return results

    async def _hidden_cases(self, sb: Any, plan: dict[str, Any]) -> tuple[Any, ...] | str:
        f: bc.Function = plan["fn"]
        code = plan["context"] + "\n\n" + f.source
        probes = {f"c{i}": bc.call_expr(f.name, args) for i, args in enumerate(plan["inputs"])}
        runs = []
        for order in (probes, dict(reversed(probes.items()))):
            # the second run calls in reverse order: a value that depends on what ran before
            # (an unseeded random generator, a cache) differs, and the input is dropped
            res = await sb.execute(code, timeout=30, probes=order, probe_timeout=20)
            if res.status != "ok":
                return f"the golden's context does not run offline ({res.error or res.status})"
            runs.append(res.probes or {})
        kept = []
        raising: list[Any] = []
        for i, args in enumerate(plan["inputs"]):
            a, b = runs[0].get(f"c{i}"), runs[1].get(f"c{i}")
            if a is None or b is None:
                continue
            if not a.ok or not b.ok:
                kind = raised_type(a.error)
                if not a.ok and not b.ok and kind in RAISES and kind == raised_type(b.error):
                    raising.append((args, {"raises": kind}))
                continue
            if a.type != b.type or canonical(a.value) != canonical(b.value):
                continue
            if len(canonical(a.value)) > MAX_OUTPUT_CHARS or not faithful(a.type, a.value):
                continue
            if bc.FILE_DIR + "/" + bc.FILE_PREFIX in canonical(a.value):
                continue  # the staged file's path is no value to compare
            kept.append((args, {"value": a.value, "type": a.type}))
        # one hidden case may expect a specific exception when too few inputs return
        fill = raising[:1] if len(kept) == HIDDEN else []
        if len(kept) + len(fill) < HIDDEN + 1:
            return (f"the golden returns on {len(kept)} of {len(plan['inputs'])} generated "
                    f"inputs (needs {HIDDEN + 1})")
        # the visible example, then hidden cases spread over distinct outputs
        visible = kept[0]
        rest = kept[1:]
        by_out: dict[str, list[Any]] = {}
        for case in rest:
            by_out.setdefault(canonical(case[1]), []).append(case)
        hidden: list[Any] = list(fill)
        while len(hidden) < HIDDEN and any(by_out.values()):
            for group in by_out.values():
                if group and len(hidden) < HIDDEN:
                    hidden.append(group.pop(0))
        # a file task whose every hidden output is the staged file's size, first line or
        # content tells nothing apart from reading the file: swap in a case where it is not
        if hidden and all(_shortcut(c) for c in hidden if "raises" not in c[1]):
            better = [c for group in by_out.values() for c in group if not _shortcut(c)]
            if not better:
                return ("a staged file's size, first line or content gives every output "
                        "(reading the file is the whole test)")
            hidden[-1] = better[0]
        outs = {canonical(c[1]) for c in hidden if "raises" not in c[1]}
        if len(outs) < 2:
            return "the golden returns the same value on every generated input"
        if outs == {canonical(visible[1])}:
            return "every hidden output equals the visible example's"
        return visible, hidden

    def _record(self, plan: dict[str, Any], visible: Any, hidden: list[Any]) -> dict[str, Any]:
        f: bc.Function = plan["fn"]
        category = bc.category_of(f)
        stub = bc.prompt_stub(f)
        example = f"{bc.call_expr(f.name, visible[0])}  ->  {visible[1]['value']!r}"
        release: bc.ReleaseTask | None = plan.get("release")
        published = (f"Task (as published):\n{release.problem.strip()}\n\n"
                     if release is not None and release.problem.strip() else "")
        goal = (f"{published}"
                f"Implement the Python function `{f.name}` below (its body is elided): it must "
                f"behave as its signature, docstring and context say.\n\nContext (the "
                f"file-level imports and helpers the function may use; it is NOT preloaded: "
                f"include what you need in your code):\n```python\n"
                f"{plan['context'] or '# (none)'}\n```\n\nFunction:\n```python\n{stub}```\n\n"
                f"Example call (its value as JSON): {example}\n\n{_method_note(f)}"
                f"Define `{f.name}` in your "
                f"code; it is called on hidden inputs after your code runs and its return "
                f"values are compared with the reference implementation's.")
        task = Task(
            id=plan["id"], dataset=self.name, category=category, split=plan["split"],
            goal=goal, allowed_actions=self.allowed_actions,
            provenance=Provenance(
                source=("MedAgentGym BioCoder release" if release is not None
                        else f"BioCoder {f.corpus}"), licence=LICENCE,
                original_id=(release.idx if release is not None else f"{f.corpus}:{f.key}")),
            metadata={"function": f.name, "params": f.params, "corpus": f.corpus,
                      "corpus_key": f.key, "helpers": [h.name for h in plan["ctx"].helpers],
                      "context": plan["context"], "example": {"args": visible[0],
                                                              **visible[1]}},
        )
        solution = (plan["context"] + "\n\n" if plan["context"] else "") + f.source
        truth = GroundTruth(kind="probe_values", solution=solution, value={
            "function": f.name,
            "cases": [{"args": args, **out} for args, out in hidden]})
        return self.record(task, truth)

    # -- prompting --------------------------------------------------------------------
    def example_code(self, task: Task) -> str | None:
        return ("def gc_fraction(seq):\n"
                "    return (seq.count('G') + seq.count('C')) / len(seq)\n"
                "print(gc_fraction('ACGT'))")

    def instructions(self, task: Task) -> str:
        return ("You are a bioinformatics programmer. Write Python that defines the requested "
                "function (numpy, pandas, scipy and Biopython are available; there is no "
                "network). Nothing needs to be stored in `answer`: after each execution of "
                "your code the function is called on hidden inputs and its return values are "
                "compared with the reference's (floats within 1e-6 relative; all hidden "
                "inputs must match).")

    # -- grading ----------------------------------------------------------------------
    def probes(self, task: Task, stage: int = 0) -> dict[str, str] | None:
        spec = task.truth.value
        return {f"h{i}": bc.call_expr(spec["function"], case["args"])
                for i, case in enumerate(spec["cases"])}

    async def grade(self, ctx: Any) -> Grade:
        spec = ctx.task.truth.value
        if not isinstance(spec, dict) or not spec.get("cases"):
            return Grade.wrong("the task has no hidden cases")
        probes = ctx.probes
        cases = spec["cases"]
        ok = sum(_case_matches(c, probes.get(f"h{i}")) for i, c in enumerate(cases))
        failed = [p for p in (probes.get(f"h{i}") for i in range(len(cases)))
                  if p is not None and not p.ok]
        if ok == len(cases):
            return Grade.right(f"all {len(cases)} hidden cases match")
        why = f"{ok} of {len(cases)} hidden cases match"
        if not probes:
            why = f"`{spec.get('function')}` was not called (no probe values)"
        elif failed:
            err = str(failed[0].error or "")[:200].split(":")[0]
            why += f"; {len(failed)} raised or could not be called ({err})"
        return Grade.wrong(why)


def _read_release(path: Path) -> list[dict[str, Any] | str]:
    """The records of a release task file (bounded): a dict per line, or why a line is
    unusable."""
    import gzip

    opener: Any = gzip.open if path.name.endswith(".gz") else open
    out: list[dict[str, Any] | str] = []
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if len(out) >= MAX_RELEASE_TASKS:
                break
            if not line.strip():
                continue
            if len(line) > MAX_RELEASE_LINE:
                out.append("the line is too long")
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                out.append("the line is not JSON")
                continue
            out.append(rec if isinstance(rec, dict) else "the line is not a JSON object")
    return out


_ROLE_NOTES = {
    "file": "the path of a text file written for the call (in /tmp)",
    "namespace": "a stand-in object (a `types.SimpleNamespace`) carrying the attributes "
                 "the function reads",
    "logger": "a `logging.Logger`",
}


def _method_note(f: bc.Function) -> str:
    roles = {p: r for p, r in bc.param_roles(f).items() if r in _ROLE_NOTES}
    params = "".join(f"`{p}` is {_ROLE_NOTES[r]}. " for p, r in roles.items())
    params = f"In the calls, {params}\n\n" if params else ""
    if f.self_attrs is None:
        return params
    me = f.params[0]
    attrs = ", ".join(f"`{a}`" for a in f.self_attrs) or "none"
    return (f"`{f.name}` is a method of a class that is not shown: define it as a top-level "
            f"function whose first parameter is `{me}`. It is called with a stand-in object "
            f"(a `types.SimpleNamespace`) carrying the attributes the method reads "
            f"({attrs}).\n\n{params}")


def _run_in_thread(coro: Any) -> Any:
    return run_in_thread(coro, "biocoder-build")

