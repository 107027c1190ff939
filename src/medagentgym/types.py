"""Shared, serialisable data models: tasks, actions, steps and trajectories.

Everything written to disk or sent over the wire is one of these pydantic models. A
:class:`Task` is what the agent may know about a problem; its :class:`GroundTruth` is held
on the host only (a private attribute, never serialised with the task, never mounted into
the sandbox).
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

SCHEMA_VERSION = 2  # 2: the chat moved from metadata['messages'] to Trajectory.messages

ActionName = Literal["request_info", "validate_code", "debug", "terminal", "submit"]
ALL_ACTIONS: tuple[ActionName, ...] = ("request_info", "validate_code", "debug", "terminal",
                                       "submit")


class Provenance(BaseModel):
    """Where a task's data came from, so users can filter by licence and source."""

    model_config = ConfigDict(frozen=True)

    source: str = Field(description="question source, e.g. 'EHRSQL 2024-04-27 (templates)'")
    database: str = Field("", description="database build, e.g. 'synthetic seed=0 patients=100'")
    licence: str = ""
    original_id: str | None = None


#: How a task is graded: one kind per grader (``docs/architecture.md`` has the table).
#: ``sql_rows`` / ``sequence``: rows of the gold SQL, a multiset (``graders.sql_result_match``;
#: ``sequence`` holds one result per stage); ``numeric``: a number graded within
#: ``extra["lower"]`` .. ``extra["upper"]`` (``graders.numeric_match``); ``date``: a calendar
#: date; ``weeks_days``: ``[weeks, days]``; ``sample_size``: an exact whole number; ``power``:
#: a probability within a tolerance; ``probe_values``, ``workspace_file``, ``service_state``:
#: graded by the family's ``grade(ctx)`` from probe values, a file the agent wrote, or a
#: service's state (``value``: the family's hidden expectations, JSON, or None);
#: ``consistency``: EHRCon's ``{"inconsistent": bool, "n_fields": int}``, graded on the boolean.
TruthKind = Literal["sql_rows", "sequence", "numeric", "date", "weeks_days", "sample_size",
                    "power", "probe_values", "workspace_file", "service_state",
                    "consistency"]
TRUTH_KINDS: tuple[str, ...] = get_args(TruthKind)

_SCALAR = (str, int, float, bool)
_DATE_FORMATS = ("%m/%d/%Y", "%Y-%m-%d")


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, _SCALAR)


def _is_row(v: Any) -> bool:
    if isinstance(v, list | tuple):
        return all(_is_scalar(x) for x in v)
    if isinstance(v, dict):
        return all(_is_scalar(x) for x in v.values())
    return _is_scalar(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_rows(value: Any, extra: dict[str, Any]) -> str | None:
    if value is None or _is_scalar(value) or (isinstance(value, dict) and _is_row(value)):
        return None
    if isinstance(value, list | tuple) and all(_is_row(r) for r in value):
        return None
    return "value must be None, a scalar or a list of rows of scalars"


def _check_sequence(value: Any, extra: dict[str, Any]) -> str | None:
    if not isinstance(value, list | tuple) or not value:
        return "value must be a non-empty list (one result per stage)"
    for i, stage in enumerate(value):
        problem = _check_rows(stage, extra)
        if problem is not None:
            return f"stage {i}: {problem}"
    return None


def _check_numeric(value: Any, extra: dict[str, Any]) -> str | None:
    if not _is_number(value):
        return "value must be a finite number"
    if not (_is_number(extra.get("lower")) and _is_number(extra.get("upper"))):
        return "extra must give the finite limits 'lower' and 'upper'"
    return None


def _check_date(value: Any, extra: dict[str, Any]) -> str | None:
    if isinstance(value, str) and len(value) <= 40:
        for fmt in _DATE_FORMATS:
            try:
                _dt.datetime.strptime(value.strip(), fmt)
                return None
            except ValueError:
                continue
    return "value must be a date written MM/DD/YYYY or YYYY-MM-DD"


def _check_weeks_days(value: Any, extra: dict[str, Any]) -> str | None:
    if (isinstance(value, list | tuple) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
        return None
    return "value must be [weeks, days], two whole numbers >= 0"


def _check_sample_size(value: Any, extra: dict[str, Any]) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return None
    return "value must be a whole number >= 1"


def _check_power(value: Any, extra: dict[str, Any]) -> str | None:
    if _is_number(value) and 0.0 <= value <= 1.0:
        return None
    return "value must be a probability in [0, 1]"


def _check_expectations(value: Any, extra: dict[str, Any]) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return "value must be None, or the hidden expectations as a JSON object or list"


def _check_consistency(value: Any, extra: dict[str, Any]) -> str | None:
    """EHRCon: ``{"inconsistent": bool, "n_fields": int >= 0}`` (0 exactly when consistent)."""
    if not (isinstance(value, dict) and set(value) == {"inconsistent", "n_fields"}
            and isinstance(value["inconsistent"], bool) and isinstance(value["n_fields"], int)
            and not isinstance(value["n_fields"], bool) and value["n_fields"] >= 0
            and (value["n_fields"] > 0) == value["inconsistent"]):
        return 'value must be {"inconsistent": bool, "n_fields": int}, n_fields > 0 exactly when inconsistent'
    return None


_TRUTH_CHECKS: dict[str, Callable[[Any, dict[str, Any]], str | None]] = {
    "sql_rows": _check_rows, "sequence": _check_sequence, "numeric": _check_numeric,
    "date": _check_date, "weeks_days": _check_weeks_days, "sample_size": _check_sample_size,
    "power": _check_power, "probe_values": _check_expectations,
    "workspace_file": _check_expectations, "service_state": _check_expectations,
    "consistency": _check_consistency,
}
assert set(_TRUTH_CHECKS) == set(TRUTH_KINDS)


class GroundTruth(BaseModel):
    """The verifiable answer of a task. Host-side only.

    ``kind`` is one of :data:`TRUTH_KINDS`; ``value`` (and the ``extra`` fields a kind's
    grader reads) are checked for that kind when the model is built or loaded, so a grader
    never meets a gold value of the wrong shape."""

    kind: TruthKind = Field(description="how to grade: one kind per grader (TRUTH_KINDS)")
    value: Any = None
    solution: str | list[str] | None = Field(
        None, description="reference code (the oracle runs it); one per stage for sequences")
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _value_fits_kind(self) -> GroundTruth:
        problem = _TRUTH_CHECKS[self.kind](self.value, self.extra)
        if problem is not None:
            raise ValueError(f"{self.kind} ground truth: {problem}")
        if (self.kind == "sequence" and isinstance(self.solution, list)
                and len(self.solution) != len(self.value)):
            raise ValueError("sequence ground truth: one solution per stage")
        return self


class Task(BaseModel):
    """One problem instance, as the agent may see it."""

    model_config = ConfigDict(frozen=True)

    id: str
    dataset: str
    category: str
    split: str
    goal: str = Field(description="the task statement shown to the agent (user turn)")
    context: str = Field("", description="extra prompt context: tables, notes, file layout")
    inputs: dict[str, str] = Field(
        default_factory=dict, description="sandbox path -> host path, mounted read-only")
    allowed_actions: tuple[ActionName, ...] = ("validate_code", "debug", "terminal")
    provenance: Provenance
    metadata: dict[str, Any] = Field(default_factory=dict)

    _truth: GroundTruth | None = PrivateAttr(default=None)

    def with_truth(self, truth: GroundTruth) -> Task:
        self._truth = truth
        return self

    @property
    def truth(self) -> GroundTruth:
        """The ground truth (host-side). Raises if the task was loaded without one."""
        if self._truth is None:
            from medagentgym.errors import ConfigurationError

            raise ConfigurationError(f"task {self.id} has no ground truth loaded")
        return self._truth

    @property
    def has_truth(self) -> bool:
        return self._truth is not None


# ----------------------------------------------------------------------------- actions


class RequestInfo(BaseModel):
    action: Literal["request_info"] = "request_info"
    data_path: str = ""
    info_type: Literal["column_names", "column_values", "term"]
    keyterm: str = ""


class ValidateCode(BaseModel):
    action: Literal["validate_code"] = "validate_code"
    code: str


class Debug(BaseModel):
    action: Literal["debug"] = "debug"
    code: str
    error_msg: str = ""


class Terminal(BaseModel):
    action: Literal["terminal"] = "terminal"
    cmd: str


class Submit(BaseModel):
    """Final answer (``submit`` protocol): code whose ``answer`` is graded, or the value."""

    action: Literal["submit"] = "submit"
    code: str | None = None
    answer: Any = None


Action = Annotated[RequestInfo | ValidateCode | Debug | Terminal | Submit,
                   Field(discriminator="action")]


# -------------------------------------------------------------------------- trajectories


class Grade(BaseModel):
    """A grader's verdict. ``reason`` may be shown to the agent (it never quotes the gold
    answer); ``detail`` is for the host: logs and failure analysis."""

    model_config = ConfigDict(frozen=True)

    correct: bool
    score: float = Field(ge=0.0, le=1.0, description="the reward: 0/1, or a metric in [0, 1]")
    reason: str = ""
    detail: str = ""

    @classmethod
    def right(cls, reason: str, detail: str = "") -> Grade:
        return cls(correct=True, score=1.0, reason=reason, detail=detail)

    @classmethod
    def wrong(cls, reason: str, detail: str = "") -> Grade:
        return cls(correct=False, score=0.0, reason=reason, detail=detail)


class StepRecord(BaseModel):
    """One turn: what the agent wrote, what it meant, what the environment answered."""

    turn: int
    raw_action: str | None = None
    action: dict[str, Any] | None = None
    parse_error: str | None = None
    observation: str
    reward: float = 0.0
    grade: Grade | None = None
    exec_status: str | None = None
    duration_s: float = 0.0
    model_output: str | None = None
    usage: dict[str, int] | None = None


ErrorSource = Literal["agent", "model_endpoint", "sandbox", "grader", "environment"]


class EpisodeError(BaseModel):
    source: ErrorSource
    type: str
    message: str


class Trajectory(BaseModel):
    """One episode, as stored (one JSON line per episode)."""

    schema_version: int = SCHEMA_VERSION
    run_id: str = ""
    task_id: str
    dataset: str
    category: str
    split: str
    sample_index: int = 0
    agent: str = ""
    model: str | None = None
    protocol: str = "paper"
    system_prompt: str = ""
    goal: str = ""
    steps: list[StepRecord] = Field(default_factory=list)
    messages: list[dict[str, Any]] = Field(
        default_factory=list, description="the full chat as the model saw it (LLM agents)")
    reward: float = 0.0
    success: bool = False
    terminated: bool = False
    truncated: bool = False
    turns: int = 0
    error: EpisodeError | None = None
    started_at: float = Field(default_factory=time.time)
    duration_s: float = 0.0
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        """Schema 1 kept the chat in ``metadata["messages"]``."""
        if isinstance(data, dict) and not data.get("messages"):
            meta = data.get("metadata")
            if isinstance(meta, dict) and isinstance(meta.get("messages"), list):
                meta = dict(meta)
                data = {**data, "messages": meta.pop("messages"), "metadata": meta}
        return data

    @property
    def key(self) -> tuple[str, int]:
        return (self.task_id, self.sample_index)
