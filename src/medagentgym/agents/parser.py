"""Reading an action out of what a model wrote.

Models rarely reply with exactly one strict JSON object. This parser accepts, in order:

1. a native tool call (``{"name": "validate_code", "arguments": "{...}"}``, or a generic
   tool whose arguments hold the paper's ``{"action": ..., "params": ...}``);
2. the paper's JSON — bare, in a code fence, or with prose around it — read leniently:
   raw newlines inside strings, code in Python triple quotes (``"code": \"\"\"...\"\"\"``),
   trailing commas, invalid backslash escapes (``\\d`` in a regex), Python literals;
   flat (``{"action": "validate_code", "code": ...}``), keyed by the action name
   (``{"validate_code": {"code": ...}}``) or tool-shaped (``{"name": ..., "arguments": ...}``);
3. when no JSON action is present, a fenced Python block, read as ``validate_code`` (the
   model clearly meant to run it; ``code_fallback=False`` turns this off).

The result is the canonical JSON text the environment receives; failures raise
:class:`ActionParseError` (an :class:`~medagentgym.errors.AgentError`) whose message tells
the model how to fix its reply — and nothing else: replies longer than
:data:`~medagentgym.env.actions.MAX_ACTION_CHARS` are refused, JSON deeper than
:data:`~medagentgym.env.actions.MAX_JSON_DEPTH` is never decoded, and the search for objects
and fences is bounded, so no reply can make the parser recurse or take quadratic time.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from medagentgym.env.actions import (
    FORMAT_HINT,
    MAX_ACTION_CHARS,
    MAX_JSON_DEPTH,
    MAX_TRIES,
    json_depth,
    loads_bounded,
)
from medagentgym.errors import AgentError
from medagentgym.graders.bounds import short_repr
from medagentgym.types import ALL_ACTIONS

_PARAM_KEYS = ("params", "parameters", "arguments", "args", "action_input", "input")
# possessive header (3.11+): a fence whose first line is not closed within 200 characters is
# not a fence, and a failed fence costs at most that much (no quadratic rescans)
_FENCE = re.compile(r"```[ \t]*+([\w+-]*+)[^\n]{0,200}+\n(.*?)```", re.DOTALL)
_TRIPLE = re.compile(r'("""|\'\'\')(.*?)\1', re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_PY_LANGS = {"python", "py", "python3", "ipython"}
MAX_SCAN_STEPS = 200_000  # braces and quotes visited while looking for {...} in one reply
MAX_SPANS = 10_000  # {...} spans read as JSON in one reply
_SPECIAL = re.compile(r"[\"'{}]")
_QUOTE = re.compile(r'"')
_QUOTE_OR_BACKSLASH = re.compile(r'["\\]')
_STRING_BODY = {q: re.compile(rf"[^{q}\\]*(?:\\.[^{q}\\]*)*", re.DOTALL) for q in "\"'"}


class ActionParseError(AgentError):
    """No action could be read from the model's reply."""


@dataclass(frozen=True)
class ParsedAction:
    name: str
    params: dict[str, Any]
    source: str  # tool_call | json | fence | embedded | code_block
    tool_call_id: str | None = None

    @property
    def action(self) -> dict[str, Any]:
        return {"action": self.name, "params": self.params}

    @property
    def text(self) -> str:
        """The canonical JSON the environment receives."""
        return json.dumps(self.action, ensure_ascii=False)

    @property
    def key(self) -> str:
        """A normalised form for comparing actions (loop detection)."""
        return json.dumps({"a": self.name, "p": _normalise(self.params)}, sort_keys=True,
                          ensure_ascii=False)


def _normalise(value: Any) -> Any:
    if isinstance(value, str):
        return "\n".join(line.rstrip() for line in value.strip().splitlines())
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


# ------------------------------------------------------------------------------ entry


def parse_reply(content: str | None, tool_calls: Sequence[Any] | None = None, *,
                code_fallback: bool = True, truncated: bool = False) -> ParsedAction:
    """The action in a model reply (``content`` with reasoning already removed)."""
    if tool_calls:
        return _from_tool_call(tool_calls[0])
    text = content or ""
    _check_length(text)
    for source, obj in _candidates(text):
        parsed = _as_action(obj, source)
        if parsed is not None:
            return parsed
    if code_fallback:
        code = _python_block(text)
        if code is not None:
            return ParsedAction("validate_code", {"code": code}, "code_block")
    if not text.strip():
        raise ActionParseError(f"Your reply was empty. {FORMAT_HINT}")
    if truncated:
        raise ActionParseError("Your reply was cut off before the action was complete (the "
                               "answer hit the token limit). Reply with a shorter action. "
                               + FORMAT_HINT)
    raise ActionParseError(f"Could not find a JSON action in your reply. {FORMAT_HINT}")


def _check_length(text: str) -> None:
    if len(text) > MAX_ACTION_CHARS:
        raise ActionParseError(f"Your reply is {len(text):,} characters long; at most "
                               f"{MAX_ACTION_CHARS:,} are read. {FORMAT_HINT}")


def _from_tool_call(call: Any) -> ParsedAction:
    if isinstance(call, Mapping):
        fn = call.get("function", call)
        name, args, call_id = fn.get("name", ""), fn.get("arguments", ""), call.get("id")
    else:
        name, args, call_id = call.name, call.arguments, getattr(call, "id", None)
    if not isinstance(name, str):
        name = short_repr(name, 80)
    if isinstance(args, str):
        _check_length(args)
        obj = _lenient_json(args) if args.strip() else {}
        if obj is None:
            raise ActionParseError(f"The arguments of your {short_repr(name, 80)} tool call are "
                                   f"not valid JSON. {FORMAT_HINT}")
    else:
        obj = args or {}
    if not isinstance(obj, dict):
        raise ActionParseError(f"Tool call arguments must be a JSON object. {FORMAT_HINT}")
    if name in ALL_ACTIONS:
        params = obj.get("params") if isinstance(obj.get("params"), dict) else obj
        return ParsedAction(name, dict(params), "tool_call", call_id)
    parsed = _as_action(obj, "tool_call")
    if parsed is None:
        raise ActionParseError(f"Unknown tool {short_repr(name, 80)}. Call one of: "
                               f"{', '.join(ALL_ACTIONS)}.")
    return ParsedAction(parsed.name, parsed.params, "tool_call", call_id)


def _as_action(obj: Any, source: str) -> ParsedAction | None:
    """The action an object describes, if it describes one."""
    if not isinstance(obj, dict):
        return None
    name = obj.get("action")
    if isinstance(name, dict):  # {"action": {"name": ..., "params": ...}}
        return _as_action({"action": name.get("name"), **{k: v for k, v in name.items() if k != "name"}}, source)
    if isinstance(name, str) and name.strip():
        rest = {k: v for k, v in obj.items() if k != "action"}
        for key in _PARAM_KEYS:
            if key in rest:
                value = rest[key]
                if isinstance(value, str):
                    value = _lenient_json(value)
                if isinstance(value, dict):
                    return ParsedAction(name.strip(), value, source)
        return ParsedAction(name.strip(), rest, source)
    tool_name = obj.get("name") or obj.get("tool") or obj.get("function")
    if isinstance(tool_name, str) and tool_name in ALL_ACTIONS:
        for key in _PARAM_KEYS:
            value = obj.get(key)
            if isinstance(value, str):
                value = _lenient_json(value)
            if isinstance(value, dict):
                return ParsedAction(tool_name, value, source)
    if len(obj) == 1:
        (key, value), = obj.items()
        if key in ALL_ACTIONS and isinstance(value, dict):
            return ParsedAction(key, value, source)
    return None


# ------------------------------------------------------------------------ candidates


def _candidates(text: str) -> Iterator[tuple[str, Any]]:
    budget = [MAX_SCAN_STEPS]  # shared by every search for {...} in this reply
    whole = _lenient_json(text.strip()) if text.strip().startswith(("{", "[")) else None
    if isinstance(whole, list):
        for item in whole:
            yield "json", item
    elif whole is not None:
        yield "json", whole
    for m in islice(_FENCE.finditer(text), MAX_TRIES):
        body = m.group(2).strip()
        if body.startswith("{"):
            obj = _lenient_json(body)
            if obj is not None:
                yield "fence", obj
            else:
                for snippet in _balanced_objects(body, budget):
                    obj = _lenient_json(snippet)
                    if obj is not None:
                        yield "fence", obj
    for snippet in _balanced_objects(text, budget):
        obj = _lenient_json(snippet)
        if obj is not None:
            yield "embedded", obj


def _balanced_objects(text: str, budget: list[int] | None = None) -> Iterator[str]:
    """Every top-level ``{...}`` span, skipping braces inside (triple-)quoted strings.

    At most :data:`MAX_SPANS` spans, and the scans share a budget of :data:`MAX_SCAN_STEPS`
    braces and quotes: a reply of many unclosed braces (each one a scan to the end) would
    otherwise take quadratic time.
    """
    i, n, found = 0, len(text), 0
    budget = budget if budget is not None else [MAX_SCAN_STEPS]
    while i < n and budget[0] > 0 and found < MAX_SPANS:
        start = text.find("{", i)
        if start == -1:
            return
        end = _match(text, start, budget)
        if end is None:
            i = start + 1
            continue
        found += 1
        yield text[start:end + 1]
        i = end + 1


def _match(text: str, start: int, budget: list[int]) -> int | None:
    """The index of the ``}`` that closes the ``{`` at ``start`` (``None``: unclosed)."""
    depth, i, n = 0, start, len(text)
    while budget[0] > 0:
        budget[0] -= 1
        m = _SPECIAL.search(text, i)
        if m is None:
            return None
        i = m.start()
        c = text[i]
        if c in "\"'":
            triple = text[i:i + 3]
            if triple in ('"""', "'''"):
                close = text.find(triple, i + 3)
                if close == -1:
                    return None
                i = close + 3
                continue
            if c == "'" and depth > 0 and not _opens_python_string(text, i):
                i += 1  # an apostrophe in prose or code, not a quote
                continue
            j = _STRING_BODY[c].match(text, i + 1).end()
            if j >= n or text[j] != c:
                return None  # unterminated
            i = j + 1
            continue
        if c == "{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _opens_python_string(text: str, i: int) -> bool:
    """A single quote opens a string when it follows ``{``, ``:``, ``,`` or ``[``."""
    j = i - 1
    while j >= 0 and text[j] in " \t\r\n":
        j -= 1
    return j >= 0 and text[j] in "{:,["


def _lenient_json(text: str) -> Any:
    """``text`` as JSON, tolerating what models get wrong; ``None`` if it cannot be read.

    JSON deeper than :data:`MAX_JSON_DEPTH` is ``None``; so is a Python literal that is not
    plain JSON data (a set, bytes), which the environment could not receive."""
    if json_depth(text) > MAX_JSON_DEPTH:
        return None
    attempts = [text]
    fixed = _TRIPLE.sub(lambda m: json.dumps(m.group(2)), text)
    if fixed != text:
        attempts.append(fixed)
    for candidate in list(attempts):
        no_commas = _TRAILING_COMMA.sub(r"\1", candidate)
        if no_commas != candidate:
            attempts.append(no_commas)
    for candidate in list(attempts):
        escaped = _fix_escapes(candidate)
        if escaped != candidate:
            attempts.append(escaped)
    for candidate in attempts:
        try:
            return loads_bounded(candidate, strict=False)
        except ValueError:
            continue
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _python_literal_with_json_words(text)
    return value if isinstance(value, dict | list) and _is_json_data(value) else None


def _is_json_data(value: Any) -> bool:
    """Whether a Python literal is JSON data (no sets, bytes, complex numbers)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _fix_escapes(text: str) -> str:
    """Double backslashes that start no JSON escape (``\\d`` → ``\\\\d``), in strings only."""
    out, pos, i, n, in_str = [], 0, 0, len(text), False
    while True:
        m = (_QUOTE_OR_BACKSLASH if in_str else _QUOTE).search(text, i)
        if m is None:
            break
        j = m.start()
        if text[j] == '"':
            in_str = not in_str
            i = j + 1
        elif j + 1 < n:
            if text[j + 1] not in '"\\/bfnrtu':
                out += [text[pos:j], "\\"]  # one more backslash before this one
                pos = j
            i = j + 2
        else:
            break
    out.append(text[pos:])
    return "".join(out)


def _python_literal_with_json_words(text: str) -> Any:
    """A Python-style dict that also uses JSON's ``true/false/null``."""
    if not re.search(r"\b(true|false|null)\b", text):
        return None
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None

    class _Words(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> Any:
            mapping = {"true": True, "false": False, "null": None}
            if node.id in mapping:
                return ast.copy_location(ast.Constant(mapping[node.id]), node)
            return node

    try:
        value = ast.literal_eval(_Words().visit(tree))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict | list) and _is_json_data(value) else None


def _python_block(text: str) -> str | None:
    """The first fenced block labelled as Python (or unlabelled and code-like)."""
    for m in islice(_FENCE.finditer(text), MAX_TRIES):
        lang, body = m.group(1).lower(), m.group(2)
        if lang in _PY_LANGS or (lang == "" and not body.lstrip().startswith(("{", "["))):
            code = body.strip("\n")
            if code.strip():
                return code
    return None
