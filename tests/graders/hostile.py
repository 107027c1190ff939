"""Hostile answers, and synthetic tasks of every registered dataset family, shared by the
grader and environment tests: whatever an agent stores in ``answer`` is graded (wrong), and
never crashes the host — a crash would be booked as an infrastructure error and excused."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import cache
from typing import Any

from medagentgym.tasks import registry
from medagentgym.types import ALL_ACTIONS, GroundTruth, Provenance, Task


def deep_list(depth: int, leaf: Any = None) -> list:
    """``[[[...]]]`` nested ``depth`` deep, built without recursion."""
    root = cur = []
    for _ in range(depth - 1):
        nxt: list = []
        cur.append(nxt)
        cur = nxt
    if leaf is not None:
        cur.append(leaf)
    return root


def deep_dict(depth: int) -> dict:
    root = cur = {}
    for _ in range(depth - 1):
        nxt: dict = {}
        cur["a"] = nxt
        cur = nxt
    return root


def _cycle() -> list:
    a: list = []
    a.append(a)
    return a


HOSTILE: dict[str, Callable[[], Any]] = {
    "digits_5000": lambda: "1" * 5000,
    "int_1e400": lambda: 10**400,
    "neg_int_1e400": lambda: -(10**400),
    "int_5000_digits": lambda: 10**5000,
    "inf_in_list": lambda: [math.inf, 3],
    "dashes_then_1": lambda: "-" * 100_000 + "1",
    "nan": lambda: math.nan,
    "nan_in_list": lambda: [math.nan],
    "inf": lambda: math.inf,
    "neg_inf": lambda: -math.inf,
    "str_1e400": lambda: "1e400",
    "long_decimal_str": lambda: "9" * 400 + ".5",
    "deep_list_100k": lambda: deep_list(100_000),
    "deep_dict_100k": lambda: deep_dict(100_000),
    "deep_list_65": lambda: deep_list(65, "x"),
    "deep_list_60": lambda: deep_list(60, "x"),
    "cycle": _cycle,
    "wide_list_1m": lambda: list(range(1_000_000)),
    "wide_dict_300k": lambda: {str(i): i for i in range(300_000)},
    "rows_100k": lambda: [[i] for i in range(100_000)],
    "surrogate": lambda: "\ud800",
    "surrogates_in_list": lambda: ["\ud800", "\udfff"],
    "surrogate_key": lambda: {"\ud800": "x"},
    "huge_str": lambda: "x" * 5_000_000,
    "weeks_100k_digits": lambda: "1" * 100_000 + " weeks 1 day",
    "odd_keys": lambda: {(1, 2): "a", None: "b", 3.5: "c", frozenset({1}): "d"},
    "int_keys": lambda: {10**400: "a", 2: "b"},
    "bool_true": lambda: True,
    "bool_false": lambda: False,
    "bool_list": lambda: [True, False],
    "bytes": lambda: b"\xff\xfe" * 10,
    "set": lambda: {1, 2},
    "complex": lambda: complex(1, 2),
    "object": object,
    "decimal_huge": lambda: Decimal("1e999999"),
    "fraction_huge": lambda: Fraction(10**400, 3),
    "parens": lambda: "(" * 10_000 + ")" * 10_000,
    "literal_type_error": lambda: "{[]: 1}",
    "weeks_huge_int": lambda: {"weeks": 10**400, "days": 1},
    "weeks_digit_str": lambda: {"weeks": "1" * 5000, "days": "1"},
    "weeks_digit_list": lambda: ["1" * 5000, "2"],
    "weeks_inf": lambda: [math.inf, 1],
    "weeks_tuple_str": lambda: "(" + "9" * 5000 + ", 1)",
    "date_digits": lambda: "1" * 5000 + "/01/2020",
    "date_bad": lambda: "9999-99-99",
    "nul": lambda: "5\x00",
    "sql_text": lambda: "SELECT 5",
}


@cache
def hostile(name: str) -> Any:
    """The hostile value ``name`` (built once: some are large)."""
    return HOSTILE[name]()


def _task(dataset: str, i: int, truth: GroundTruth, **metadata: Any) -> Task:
    return Task(id=f"{dataset}-hostile-{i}", dataset=dataset, category="hostile", split="test",
                goal="What is the answer?", allowed_actions=ALL_ACTIONS[:4],
                provenance=Provenance(source="synthetic test task"),
                metadata=metadata).with_truth(truth)


def _ehr(dataset: str, family: Any) -> list[tuple[Task, int, Any]]:
    drugs = [("aspirin", 2.5), ("heparin", 1.0)]
    if family.mode == "sequence":
        truth = GroundTruth(kind="sequence", value=[[(7,)], drugs])
        task = _task(dataset, 0, truth, questions=["How many?", "Which drugs?"])
        return [(task, 0, [[7]]), (task, 1, [list(r) for r in drugs])]
    top = [("a",), ("b",), ("c",), ("d",), ("e",)]  # a tied "top 3" (EHRSQL dense_rank)
    top_spec = {"count": False, "top_n": 3, "ranks": [1, 1, 2, 2, 3]}
    repeated = [("aspirin",), ("aspirin",), ("heparin",)]
    return [
        (_task(dataset, 0, GroundTruth(kind="sql_rows", value=[(7,)])), 0, [[7]]),
        (_task(dataset, 1, GroundTruth(kind="sql_rows", value=drugs)), 0, [list(r) for r in drugs]),
        (_task(dataset, 2, GroundTruth(kind="sql_rows", value=None), is_impossible=True), 0, None),
        (_task(dataset, 3, GroundTruth(kind="sql_rows", value=top, extra={"grading": top_spec})),
         0, ["a", "b", "c"]),
        (_task(dataset, 4, GroundTruth(kind="sql_rows", value=repeated,
                                       extra={"grading": {"count": False}})),
         0, ["aspirin", "heparin"]),
    ]


def _medcalc(dataset: str, family: Any) -> list[tuple[Task, int, Any]]:
    return [
        (_task(dataset, 0, GroundTruth(kind="numeric", value=7.0,
                                       extra={"lower": 6.65, "upper": 7.35})), 0, 7.0),
        (_task(dataset, 1, GroundTruth(kind="date", value="09/23/2014")), 0, "09/23/2014"),
        (_task(dataset, 2, GroundTruth(kind="weeks_days", value=[14, 1])), 0, [14, 1]),
    ]


def _npower(dataset: str, family: Any) -> list[tuple[Task, int, Any]]:
    return [
        (_task(dataset, 0, GroundTruth(kind="sample_size", value=64)), 0, 64),
        (_task(dataset, 1, GroundTruth(kind="power", value=0.8)), 0, 0.8),
    ]


# --- families graded by probes (issue 14) ---------------------------------------------------


@dataclass(frozen=True)
class ProbeAnswer:
    """What the probes of an execution returned, by probe name: (value, Python type name).
    A gold for families graded by probes; a hostile value is given to every probe instead."""

    values: dict[str, tuple[Any, str]]


def probe_gold(family: Any, task: Task, stage: int = 0) -> ProbeAnswer | None:
    """The probe values the reference returns on a real task (None: not a probe family)."""
    if type(family).__name__ == "BioCoderFamily":
        return ProbeAnswer({f"h{i}": (c["value"], c["type"])
                            for i, c in enumerate(task.truth.value["cases"])})
    return None


def _biocoder(dataset: str, family: Any) -> list[tuple[Task, int, Any]]:
    cases = [{"args": ["'ACGT'"], "value": 0.5, "type": "float"},
             {"args": ["'GGCA'"], "value": [0.75, "GC"], "type": "tuple"},
             {"args": ["'AT'"], "value": "ACGT", "type": "str"},
             {"args": ["'G'"], "value": {"G": 3}, "type": "dict"},
             {"args": ["''"], "value": 7, "type": "int"}]
    truth = GroundTruth(kind="probe_values", value={"function": "gc", "cases": cases},
                        solution="def gc(seq):\n    return 0\n")
    task = _task(dataset, 0, truth, function="gc", params=["seq"], context="",
                 example={"args": ["'C'"], "value": 1.0, "type": "float"})
    return [(task, 0, ProbeAnswer({f"h{i}": (c["value"], c["type"])
                                   for i, c in enumerate(cases)}))]


def _medagentbench(dataset: str, family: Any) -> list[tuple[Task, int, Any]]:
    """Answer-only MedAgentBench cases (an MRN lookup, an age, a latest value): graded with
    an empty write log, so the gold is the answer alone."""
    out = []
    for i, (case, gold) in enumerate((
            ({"type": 1, "answer": "S6534835"}, "S6534835"),
            ({"type": 2, "answer": 67}, 67),
            ({"type": 4, "answer": 2.3}, 2.3))):
        if case["type"] == 1:
            truth = GroundTruth(kind="service_state", value=case)
        else:
            truth = GroundTruth(kind="numeric", value=case["answer"],
                                extra={"lower": case["answer"], "upper": case["answer"],
                                       "case": case})
        out.append((_task(dataset, i, truth), 0, gold))
    return out


@dataclass(frozen=True)
class FileAnswer:
    """Files the agent left in /workspace, by path: a gold for families graded from files."""

    files: dict[str, bytes]


def _perfect_predictions(truth: dict[str, Any]) -> bytes:
    """A predictions.csv that ranks every test row by its true label (ML families)."""
    cols, kind = truth["columns"], truth["kind"]
    lines = ["key," + ",".join(cols)]
    for key, y in zip(truth["test_keys"], truth["test_y"], strict=True):
        if kind == "binary":
            row = [float(y)]
        elif kind == "multiclass":
            row = [float(y == j) for j in range(len(cols))]
        else:
            row = [float(v) for v in y]
        lines.append(key + "," + ",".join(str(v) for v in row))
    return ("\n".join(lines) + "\n").encode()


def file_gold(family: Any, task: Task) -> FileAnswer | None:
    """The files a correct agent leaves on a real task (None: not a file family)."""
    if type(family).__name__ == "MlEhrFamily":
        return FileAnswer({"predictions.csv": _perfect_predictions(task.truth.value)})
    return None


def as_file_bytes(value: Any) -> bytes | None:
    """A hostile value written as a file's content (None: no file)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    try:
        text = value if isinstance(value, str) else repr(value)
        return text[:4_000_000].encode("utf-8", "surrogatepass")
    except (RecursionError, ValueError, MemoryError):
        return None


class StandInFiles:
    """The sandbox's files as a grader reads them: a :class:`FileAnswer`'s, else the
    (hostile) value itself as the content of every file."""

    def __init__(self, value: Any) -> None:
        self.value = value

    async def read_file(self, path: str, *, max_bytes: int = 1024**2) -> bytes:
        from medagentgym.sandbox.base import SandboxFileError

        if isinstance(self.value, FileAnswer):
            data = self.value.files.get(path)
        else:
            data = as_file_bytes(self.value)
        if data is None:
            raise SandboxFileError(f"{path}: no such file")
        if len(data) > max_bytes:
            raise SandboxFileError(f"{path} is larger than {max_bytes} bytes")
        return data


def _mlehr(dataset: str, family: Any) -> list[tuple[Task, int, Any]]:
    keys, y = ["k0", "k1", "k2", "k3", "k4", "k5"], [0, 1, 0, 1, 1, 0]
    truth_value = {"kind": "binary", "columns": ["p"], "outputs": ["p"], "test_keys": keys,
                   "val_keys": keys, "test_y": y, "val_y": y,
                   "n": {"train": 10, "val": 6, "test": 6}, "ref_auroc": 0.9,
                   "epsilon": 0.05, "chance_margin": 0.2, "threshold": 0.85,
                   "best_auroc": None, "best_note": "", "loose": False}
    truth = GroundTruth(kind="workspace_file", value=truth_value, solution="")
    gold = FileAnswer({"predictions.csv": _perfect_predictions(truth_value)})
    return [(_task(dataset, 0, truth, kind="binary", columns=["p"]), 0, gold)]


class NoWrites:
    """Stands in for a family service whose state graders read: nothing was written."""

    writes: list = []  # noqa: RUF012 (read-only here)


def stand_in_services(family: Any) -> dict[str, Any]:
    """Services for grading outside an episode (graders read their state only)."""
    if type(family).__name__ == "MedAgentBenchFamily":
        return {"fhir": NoWrites()}
    return {}


def _ehrcon(dataset: str, family: Any) -> list[tuple[Task, int, Any]]:
    """EHRCon: the answer is {"inconsistent": bool, "n_fields": int}, graded on the flag."""
    golds = ({"inconsistent": True, "n_fields": 2}, {"inconsistent": False, "n_fields": 0})
    return [(_task(dataset, i, GroundTruth(kind="consistency", value=gold)), 0, gold)
            for i, gold in enumerate(golds)]


def _mimic_iv(dataset: str, family: Any) -> list[tuple[Task, int, Any]]:
    """EHRSQL-2024 on MIMIC-IV: the EHR answer contract (sql_rows, abstention)."""
    drugs = [("aspirin", 2.5), ("heparin", 1.0)]
    return [
        (_task(dataset, 0, GroundTruth(kind="sql_rows", value=[(7,)])), 0, [[7]]),
        (_task(dataset, 1, GroundTruth(kind="sql_rows", value=drugs)), 0, [list(r) for r in drugs]),
        (_task(dataset, 2, GroundTruth(kind="sql_rows", value=None), is_impossible=True), 0, None),
    ]


def _biodsbench(dataset: str, family: Any) -> list[tuple[Task, int, Any]]:
    """BioDSBench in real-data mode (expectations stored with the task): a number within a
    tolerance, a set of genes, a label."""
    from medagentgym.tasks.biodsbench_probes import Probe

    probes = [Probe(name="p0", expr="n_patients", cmp="close", tol=1e-6).to_json(),
              Probe(name="p1", expr="genes", cmp="set").to_json(),
              Probe(name="p2", expr="label", cmp="equal").to_json()]
    expected = {"p0": 120, "p1": ["KRAS", "TP53"], "p2": "high"}
    truth = GroundTruth(kind="probe_values", value={"mode": "real", "probes": probes,
                                                    "expected": expected},
                        solution="n_patients = 120\ngenes = ['TP53', 'KRAS']\nlabel = 'high'\n")
    task = _task(dataset, 0, truth)
    return [(task, 0, ProbeAnswer({"p0": (120, "int"), "p1": (["TP53", "KRAS"], "list"),
                                   "p2": ("high", "str")}))]


BUILDERS = {"EhrSqlFamily": _ehr, "MimicIvFamily": _mimic_iv, "BioDSBenchFamily": _biodsbench, "MedCalcFamily": _medcalc, "NPowerFamily": _npower,
            "BioCoderFamily": _biocoder, "MedAgentBenchFamily": _medagentbench,
            "MlEhrFamily": _mlehr, "EhrConFamily": _ehrcon}


def synthetic_tasks(dataset: str) -> list[tuple[Task, int, Any]]:
    """(task, stage, the gold answer as an agent would store it) for each kind of ground
    truth the dataset's family grades; no data files needed."""
    family = registry.get_family(dataset)
    builder = BUILDERS.get(type(family).__name__)
    assert builder is not None, (
        f"{dataset}: family {type(family).__name__} has no synthetic tasks in "
        "tests/graders/hostile.py; add its kinds of ground truth there")
    return builder(dataset, family)
