"""Parsing the paper's JSON actions: ``{"action": NAME, "params": {...}}``.

The environment accepts a dict or a string (what a model writes). Strings may wrap the JSON
in a code fence or surround it with prose; anything that cannot be read becomes an
:class:`~medagentgym.errors.AgentError` whose message tells the agent how to fix it. (The
LLM-side parser of the agents issue handles more: native tool calls, code in triple quotes.)

Replies are untrusted: at most :data:`MAX_ACTION_CHARS` characters are read, JSON nested
deeper than :data:`MAX_JSON_DEPTH` is refused before it is decoded (:func:`json_depth`), and
every step is linear in the reply, so no reply raises anything but ``AgentError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from itertools import islice
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from medagentgym.errors import AgentError
from medagentgym.graders.bounds import bound_answer, short_repr
from medagentgym.types import Action

MAX_ACTION_CHARS = 1_000_000  # the longest reply read (what the gym's text spaces hold)
MAX_JSON_DEPTH = 100  # the deepest JSON read (an answer may be 64 deep)
MAX_TRIES = 64  # fenced blocks and object starts tried in one reply

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Action)
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_OBJECT_START = re.compile(r"\{\s*[\"}]")

FORMAT_HINT = (
    'Reply with exactly one JSON object: {"action": "<name>", "params": {...}}, for example '
    '{"action": "validate_code", "params": {"code": "import pandas as pd\\nprint(pd.__version__)"}}.'
)


def json_depth(text: str, start: int = 0, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep the JSON value at ``start`` nests ``[``/``{`` (strings skipped); linear.

    The scan stops at the end of that value, or as soon as it is deeper than ``limit``. It
    reads strings as JSON does, so a decoder never recurses deeper than this says.
    """
    depth = deepest = 0
    for m in _TOKENS.finditer(text, start):
        c = text[m.start()]
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif c in "]}":
            depth -= 1
            if depth <= 0:
                break
        elif depth == 0:
            break  # a string at the top: the value ends there
    return deepest


class _TooDeep(ValueError):
    pass


def loads_bounded(text: str, start: int = 0, *, strict: bool = True) -> Any:
    """The JSON value at ``start`` (and nothing after it when ``start`` is 0).

    ``ValueError`` when the text is not JSON or nests deeper than :data:`MAX_JSON_DEPTH`;
    never ``RecursionError``.
    """
    if json_depth(text, start) > MAX_JSON_DEPTH:
        raise _TooDeep(f"nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        if start == 0:
            return json.loads(text, strict=strict)
        return json.JSONDecoder(strict=strict).raw_decode(text, start)[0]
    except RecursionError:
        raise _TooDeep(f"nested more than {MAX_JSON_DEPTH} levels deep") from None


def _fenced(text: str) -> list[str]:
    """The bodies of the first fenced blocks (```json or ```) that hold a ``{...}``."""
    out, pos = [], 0
    for _ in range(MAX_TRIES):
        opening = text.find("```", pos)
        closing = text.find("```", opening + 3) if opening != -1 else -1
        if closing == -1:
            break
        body = text[opening + 3 : closing]
        body = (body[4:] if body.startswith("json") else body).strip()
        if body.startswith("{") and body.endswith("}"):
            out.append(body)
        pos = closing + 3
    return out


def _extract_json(text: str) -> Any:
    if len(text) > MAX_ACTION_CHARS:
        raise AgentError(f"Your reply is {len(text):,} characters long; at most "
                         f"{MAX_ACTION_CHARS:,} are read. {FORMAT_HINT}")
    text = text.strip()
    too_deep = False
    candidates: list[tuple[str, int]] = [(text, 0)]
    candidates += [(body, 0) for body in _fenced(text)]
    # the first balanced {...} that parses
    candidates += [(text, m.start()) for m in islice(_OBJECT_START.finditer(text), MAX_TRIES)]
    for candidate, start in candidates:
        try:
            return loads_bounded(candidate, start)
        except _TooDeep:
            too_deep = True
        except ValueError:
            continue
    if too_deep:
        raise AgentError(f"Your reply nests JSON more than {MAX_JSON_DEPTH} levels deep. "
                         f"{FORMAT_HINT}")
    raise AgentError(f"Could not find a JSON action in your reply. {FORMAT_HINT}")


def _plain_json(raw: Any) -> Any:
    """An action given as an object, if it is plain JSON data within the reply's bounds."""
    _, why = bound_answer(raw, max_depth=MAX_JSON_DEPTH, max_str=MAX_ACTION_CHARS)
    if why is not None:
        why = why.removeprefix("the answer cannot be graded: ")
        raise AgentError(f"The action cannot be read: {why}. {FORMAT_HINT}")
    try:
        json.dumps(raw)
    except (TypeError, ValueError, RecursionError):
        raise AgentError(f"The action must be plain JSON data (objects, arrays, strings, "
                         f"numbers, true/false/null). {FORMAT_HINT}") from None
    return raw


class CustomAction(BaseModel):
    """An action a task family adds (``TaskFamily.actions()``): its name and its params."""

    action: str
    params: dict[str, Any] = Field(default_factory=dict)


def parse_action(raw: str | dict[str, Any], extra: Collection[str] = ()) -> Any:
    """The typed action, or :class:`AgentError` with a message for the agent. Names in
    ``extra`` (a family's own actions) parse to :class:`CustomAction`."""
    obj = _extract_json(raw) if isinstance(raw, str) else _plain_json(raw)
    if not isinstance(obj, dict):
        raise AgentError(f"The action must be a JSON object, got {type(obj).__name__}. {FORMAT_HINT}")
    name = obj.get("action")
    if not isinstance(name, str):
        raise AgentError(f'The JSON object needs an "action" field. {FORMAT_HINT}')
    params = obj.get("params", {k: v for k, v in obj.items() if k != "action"})
    if not isinstance(params, dict):
        raise AgentError(f'"params" must be a JSON object. {FORMAT_HINT}')
    if name in extra:
        return CustomAction(action=name, params=params)
    try:
        return _ADAPTER.validate_python({"action": name, **params})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"][1:]) or "action"
            problems.append(f"{loc}: {err['msg']}")
        if any(e["type"] == "union_tag_invalid" for e in exc.errors()):
            valid = ", ".join(["request_info", "validate_code", "debug", "terminal", "submit",
                               *extra])
            return_msg = f"Unknown action {short_repr(name, 80)}. Valid actions: {valid}."
            raise AgentError(f"{return_msg} {FORMAT_HINT}") from None
        raise AgentError(f"Invalid parameters for {name!r}: {'; '.join(problems)}.") from None
