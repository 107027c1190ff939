"""Make any trajectory storable: text that encodes, values that serialise, bounded sizes.

Much of a trajectory is agent-made or comes from outside (model output, observations,
exception messages, answers, metadata) and may hold anything: lone surrogates
(``"\\ud800"``, which UTF-8 cannot encode), objects JSON cannot hold, NaN, huge integers,
deep nesting. :func:`encode_line` turns a trajectory into one JSON line that is known to read
back, changing only what could not be stored:

* unpaired surrogates become U+FFFD (a split pair is joined into its character);
* a string longer than ``MAX_TEXT`` characters (256 Ki) keeps its head and tail around a
  marker: far above what an episode legitimately holds in one string (the env shows at most
  4,000 characters of execution feedback; a model reply is bounded by its token limit);
* a container with more than ``MAX_ITEMS`` (100,000) entries is cut; one nested deeper than
  ``MAX_DEPTH`` (64) levels is replaced by a marker string;
* NaN and infinities become ``null`` (``0.0`` where the schema needs a number); an integer
  over ``MAX_INT_BITS`` (4,000) bits becomes a hex string (Python refuses to print ints of
  more than 4,300 digits);
* bytes are decoded (invalid UTF-8 replaced), sets become lists, any other object its
  ``repr`` (or a placeholder when even that fails).

A line is ``MAX_LINE`` (64 MiB) at most: a bigger one is encoded again with tight bounds.
The number of values changed for size is kept in ``metadata["store_truncated"]``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import islice
from typing import Any

from pydantic import BaseModel

from medagentgym.types import Trajectory

MAX_TEXT = 256 * 1024
MAX_ITEMS = 100_000
MAX_DEPTH = 64
MAX_INT_BITS = 4000
MAX_LINE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    text: int = MAX_TEXT
    items: int = MAX_ITEMS
    depth: int = MAX_DEPTH


DEFAULT = Limits()
TIGHT = Limits(text=4000, items=1000, depth=16)


def clean_text(s: str, limit: int = MAX_TEXT) -> str:
    """``s`` as a plain ``str`` that encodes as UTF-8, at most about ``limit`` characters."""
    return _Cleaner(Limits(text=limit)).text(s)


def clean(value: Any, limits: Limits = DEFAULT) -> Any:
    """``value`` as plain JSON data (dict, list, str, int, float, bool, None); never raises."""
    return _Cleaner(limits).value(value, 0)


def encode_line(traj: Trajectory) -> str:
    """``traj`` as one JSON line (no newline) that :meth:`Trajectory.model_validate_json`
    reads back. Raises only if even the cleaned record does not validate (a bug)."""
    line = _encode(traj, DEFAULT)
    if len(line) > MAX_LINE:
        line = _encode(traj, TIGHT)
    Trajectory.model_validate_json(line)
    return line


def _encode(traj: Trajectory, limits: Limits) -> str:
    cleaner = _Cleaner(limits)
    data = cleaner.value(_plain(traj), 0)
    _fix_numbers(data)
    if cleaner.cut:
        meta = data.setdefault("metadata", {})
        if isinstance(meta, dict):
            meta["store_truncated"] = cleaner.cut
    return json.dumps(data, ensure_ascii=False, allow_nan=False)


def _plain(traj: Trajectory) -> Any:
    try:
        return traj.model_dump(mode="json", fallback=_repr, warnings=False)
    except Exception:  # nesting deeper than pydantic serialises, a repr that raises, ...
        return traj.model_dump(mode="python", warnings=False)


def _fix_numbers(data: Any) -> None:
    """The schema's float fields cannot be ``null``: a NaN there is stored as ``0.0``."""
    if not isinstance(data, dict):
        return
    fields: list[tuple[Any, tuple[str, ...]]] = [(data, ("reward", "duration_s", "started_at"))]
    for step in data.get("steps") or ():
        if isinstance(step, dict):
            fields.append((step, ("reward", "duration_s")))
            fields.append((step.get("grade"), ("score",)))
    for obj, keys in fields:
        if isinstance(obj, dict):
            for key in keys:
                if key in obj and obj[key] is None:
                    obj[key] = 0.0


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


class _Cleaner:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.cut = 0

    def text(self, s: str) -> str:
        if type(s) is not str:
            s = str.__str__(s)
        limit = self.limits.text
        if len(s) > limit:
            self.cut += 1
            half = limit // 2
            s = (f"{s[:half]}\n...[{len(s) - 2 * half} characters cut by the trajectory "
                 f"store]...\n{s[len(s) - half:]}")
        if not s.isascii():
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:
                s = s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return s

    def key(self, k: Any) -> str:
        if isinstance(k, str):
            return self.text(k)
        if k is None or isinstance(k, bool | int | float):
            return self.text(json.dumps(self.value(k, 0)))
        return self.text(_repr(k))

    def value(self, v: Any, depth: int) -> Any:
        try:
            return self._value(v, depth)
        except Exception:  # a hostile __iter__, __len__, keys() ...
            return f"<unstorable {type(v).__name__}>"

    def _value(self, v: Any, depth: int) -> Any:
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, int):
            v = int.__index__(v)
            return v if v.bit_length() <= MAX_INT_BITS else hex(v)
        if isinstance(v, float):
            v = float.__float__(v)
            return v if math.isfinite(v) else None
        if isinstance(v, bytes | bytearray | memoryview):
            return self.text(bytes(v).decode("utf-8", "replace"))
        if isinstance(v, BaseModel):
            v = v.model_dump(mode="python", warnings=False)
        if isinstance(v, dict | list | tuple | set | frozenset):
            if depth >= self.limits.depth:
                self.cut += 1
                return f"<{type(v).__name__} nested deeper than {self.limits.depth} levels>"
            if len(v) > self.limits.items:
                self.cut += 1
            if isinstance(v, dict):
                items = islice(v.items(), self.limits.items)
                return {self.key(k): self.value(x, depth + 1) for k, x in items}
            return [self.value(x, depth + 1) for x in islice(v, self.limits.items)]
        return self.text(_repr(v))
