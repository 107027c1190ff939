"""N-PowerAI: sample-size and power questions for six families of statistical tests.

A task is a word problem (``question``) of one ``task_type`` (one-sample, paired and
two-sample t-tests, one-way ANOVA, chi-square test of independence, Cox proportional
hazards) asking for a sample size or a power (``estimate_target``); the agent writes Python
(statsmodels and scipy are preloaded in the sandbox) and stores the number in ``answer``.

Grading: a sample size must be exactly the expected integer (the smallest whole number that
reaches the stated power); a power must lie within ±0.01 (absolute) of the expected value.

Sources (family option ``source``):

* ``synthetic`` — problems from :mod:`medagentgym.tasks.power.templates`, ground truth from
  :mod:`medagentgym.tasks.power.engine` (scipy), oracle code with statsmodels;
* ``official`` — the MedAgentGym release's ``data/npowerai/{train,test}_tasks.jsonl``
  registered by ``medagentgym data import medagentgym`` (read with :func:`import_official`);
  their answers are the published ones and the oracle stores that documented value;
* ``auto`` (default) — official when registered, else synthetic.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationError

from medagentgym.data import home as _home
from medagentgym.errors import ConfigurationError
from medagentgym.tasks.base import DatasetFamily, DatasetOptions
from medagentgym.tasks.family import option
from medagentgym.types import Grade, GroundTruth, Provenance, Task

CACHE_VERSION = 1
GENERATOR_VERSION = 1
POWER_TOLERANCE = 0.01
OFFICIAL_KEY = "medagentgym/npowerai"
TASK_TYPES = (
    "One-sample t-test",
    "Paired t-test",
    "Two independent samples t-test",
    "One-way ANOVA",
    "Chi-square test of independence",
    "Cox proportional-hazards model",
)


def _goal(question: str, target: str) -> str:
    if target == "size":
        contract = "Store the sample size in `answer` as a whole number (e.g. answer = 64)."
    else:
        contract = ("Store the power in `answer` as a probability between 0 and 1 "
                    "(e.g. answer = 0.82, not 82).")
    return f"{question}\n\n{contract}"


def _truth(target: str, answer: Any, solution: str, **extra: Any) -> GroundTruth:
    kind = "sample_size" if target == "size" else "power"
    value = int(answer) if kind == "sample_size" else float(answer)
    return GroundTruth(kind=kind, value=value, solution=solution, extra=extra)


def _check_record(rec: Any, where: str) -> tuple[str, str, str, Any]:
    if not isinstance(rec, dict):
        raise ConfigurationError(f"{where}: expected a JSON object per task")
    missing = [k for k in ("task_type", "estimate_target", "question", "answer") if k not in rec]
    if missing:
        raise ConfigurationError(f"{where}: missing field(s) {', '.join(missing)} "
                                 "(expected the N-PowerAI task format)")
    target = str(rec["estimate_target"]).strip().lower()
    if target not in ("size", "power"):
        raise ConfigurationError(f"{where}: estimate_target must be 'size' or 'power', "
                                 f"not {rec['estimate_target']!r}")
    answer = rec["answer"]
    if isinstance(answer, list) and answer:
        answer = answer[0]  # the release wraps a few answers in a list
    try:
        number = float(answer)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{where}: answer {answer!r} is not a number") from None
    if not math.isfinite(number) or (target == "size" and not number.is_integer()):
        raise ConfigurationError(f"{where}: answer {answer!r} is not a valid {target}")
    return str(rec["task_type"]), target, str(rec["question"]), number


def _read_records(path: Path) -> list[Any]:
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = json.loads(text)
        if not isinstance(data, list):
            raise ConfigurationError(f"{path}: expected a JSON list or JSON lines")
        return data
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                raise ConfigurationError(f"{path}:{lineno}: not valid JSON") from None
    return out


def import_official(path: str | os.PathLike[str], split: str = "test", *,
                    dataset: str = "npowerai") -> list[Task]:
    """Tasks (with ground truth) from an official N-PowerAI task file.

    The file is JSON lines (or a JSON list), optionally gzip-compressed, one object per task
    with ``task_type``, ``estimate_target`` (``size``/``power``), ``question`` and ``answer``
    (``task_id`` is the template number, not unique). The oracle solution of an imported
    task stores the documented answer: the release ships no reference code.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigurationError(f"N-PowerAI task file {path} not found")
    tasks = []
    for i, rec in enumerate(_read_records(path)):
        task_type, target, question, number = _check_record(rec, f"{path} task {i}")
        value: int | float = int(number) if target == "size" else number
        task = Task(
            id=f"{dataset}-official-{split}-{i:04d}", dataset=dataset, category=task_type,
            split=split, goal=_goal(question, target), allowed_actions=NPowerFamily.allowed_actions,
            provenance=Provenance(source="MedAgentGym release, data/npowerai",
                                  licence="unspecified (the release states no licence)",
                                  original_id=f"{path.name}:{i}"),
            metadata={"estimate_target": target, "template_id": rec.get("task_id"),
                      "question": question},
        )
        solution = f"answer = {value!r}  # the documented answer of the official task file\n"
        try:
            truth = _truth(target, value, solution, source="official")
        except ValidationError as exc:
            why = exc.errors(include_url=False)[0]["msg"]
            raise ConfigurationError(f"{path} task {i}: {why}") from None
        tasks.append(task.with_truth(truth))
    return tasks


class NPowerOptions(DatasetOptions):
    """Options of N-PowerAI."""

    source: Literal["auto", "synthetic", "official"] = option(
        "auto", "the registered official release when present (auto), or one of them")
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = option(0, "seed of the generator")
    train_size: int = option(960, "synthetic training tasks", ge=1, client_le=10_000)
    test_size: int = option(240, "synthetic test tasks", ge=1, client_le=10_000)


class NPowerFamily(DatasetFamily):
    """Sample size and power (see the module docstring)."""

    allowed_actions = ("validate_code", "debug", "terminal")
    preload = "science"
    Options: ClassVar[type[NPowerOptions]] = NPowerOptions
    cache_version = CACHE_VERSION

    options: NPowerOptions

    @property
    def source(self) -> str:
        return self.options.source

    @property
    def seed(self) -> int:
        return self.options.seed

    # -- tasks ------------------------------------------------------------------------
    def _official_record(self) -> dict[str, Any] | None:
        return _home.load_registry(self.home).get(OFFICIAL_KEY)

    def resolved_source(self) -> str:
        if self.source != "auto":
            return self.source
        return "official" if self._official_record() else "synthetic"

    def load_splits(self, split: str) -> dict[str, list[Task]]:
        if self.resolved_source() == "official":
            return {split: self._load_official(split)}
        return super().load_splits(split)

    def _load_official(self, split: str) -> list[Task]:
        rec = self._official_record()
        if not rec:
            raise ConfigurationError(
                "the official N-PowerAI tasks are not registered; run `medagentgym data import "
                "medagentgym --from DIR` (the MedAgentGym release) or use source='synthetic'")
        files = rec.get("tasks", {})
        if split not in files:
            raise ConfigurationError(f"the registered N-PowerAI release has no {split!r} split "
                                     f"(has: {', '.join(files) or 'none'})")
        return import_official(files[split]["path"], split, dataset=self.name)

    def cache_prefix(self) -> str:
        return "synthetic"

    def cache_key(self) -> dict[str, Any]:
        o = self.options
        return {"gen": GENERATOR_VERSION, "seed": o.seed, "train": o.train_size,
                "test": o.test_size}

    def cache_manifest(self) -> dict[str, Any]:
        return {"seed": self.seed, "generator_version": GENERATOR_VERSION}

    def build_records(self) -> list[dict[str, Any]]:
        try:
            from medagentgym.tasks.power import templates
        except ImportError as exc:
            raise ConfigurationError(
                f"npowerai needs scipy and statsmodels ({exc.name} is missing): "
                "pip install 'medagentgym[science]'") from None

        test = templates.generate(self.options.test_size, seed=10_000 + self.seed)
        train = templates.generate(self.options.train_size, seed=self.seed,
                                   exclude={p.question for p in test})
        records = []
        for split, problems in (("train", train), ("test", test)):
            for i, p in enumerate(problems):
                task = Task(
                    id=f"{self.name}-{split}-{i:04d}", dataset=self.name, category=p.task_type,
                    split=split, goal=_goal(p.question, p.estimate_target),
                    allowed_actions=self.allowed_actions,
                    provenance=Provenance(
                        source=f"medagentgym N-PowerAI-style generator v{GENERATOR_VERSION}",
                        database=f"seed={self.seed}", licence="Apache-2.0"),
                    metadata={"estimate_target": p.estimate_target, "setting": p.setting,
                              "question": p.question},
                )
                truth = _truth(p.estimate_target, p.answer, p.oracle, source="synthetic",
                               params=p.params)
                records.append(self.record(task, truth))
        return records

    # -- prompting --------------------------------------------------------------------
    def instructions(self, task: Task) -> str:
        return (
            "You are a biostatistician planning studies: some questions ask for the minimum "
            "sample size that reaches a given power, others for the power of a given sample "
            "size.\nWrite Python code to compute the answer; numpy, scipy and statsmodels "
            "(statsmodels.stats.power) are available.\n"
            "Store the final result in the variable `answer` as a single number: a sample "
            "size is a whole number, rounded up (the smallest size that reaches the power), "
            "counted per group, per pair or in total as the question says; a power is a "
            "probability between 0 and 1. A sample size must be exact; a power is accepted "
            f"within ±{POWER_TOLERANCE} of the expected value."
        )

    # -- grading ----------------------------------------------------------------------
    def grade_value(self, task: Task, answer: Any, *, stage: int = 0) -> Grade:
        return grade_answer(task.truth, answer)


def grade_answer(truth: GroundTruth, answer: Any) -> Grade:
    """A sample size must equal the expected integer; a power must lie within ±0.01."""
    from medagentgym.graders import numeric_match

    if truth.kind == "sample_size":
        return numeric_match(answer, int(truth.value), rel_tol=0.0, abs_tol=0.0)
    gold = float(truth.value)
    return numeric_match(answer, gold, gold - POWER_TOLERANCE, gold + POWER_TOLERANCE)
