"""Shared, serialisable data models: tasks, actions, steps and trajectories.

Everything written to disk or sent over the wire is one of these pydantic models. A
:class:`Task` is what the agent may know about a problem; its :class:`GroundTruth` is held
on the host only (a private attribute, never serialised with the task, never mounted into
the sandbox).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

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


class GroundTruth(BaseModel):
    """The verifiable answer of a task. Host-side only."""

    kind: str = Field(description="how to grade: 'sql_rows', 'sequence', 'numeric', ...")
    value: Any = None
    solution: str | list[str] | None = Field(
        None, description="reference code (the oracle runs it); one per stage for sequences")
    extra: dict[str, Any] = Field(default_factory=dict)


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
