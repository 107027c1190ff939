"""Bounds for values an agent controls: size and depth checks and conversions that never raise.

Everything that came from an agent (a captured ``answer``, a submitted value) goes through
:func:`bound_answer` before a grader reads it, so that no answer can make the host side crash
(``RecursionError``, ``OverflowError``, the interpreter's int-digit limit, memory) and be
booked as an infrastructure error. An answer over budget is simply graded wrong.
:func:`to_float` and :func:`to_int` convert numbers without raising; :func:`short_repr`
describes any value in bounded time and space.
"""

from __future__ import annotations

import builtins
import datetime as dt
import math
import numbers
import re
import reprlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_INT_BITS",
    "MAX_ITEMS",
    "MAX_NUMBER_CHARS",
    "MAX_STR_CHARS",
    "MAX_TOTAL_CHARS",
    "bound_answer",
    "short_repr",
    "to_float",
    "to_int",
]

MAX_DEPTH = 64  # nesting of containers (the sandbox returns at most 64 levels)
MAX_ITEMS = 250_000  # container items plus dict keys, in all
MAX_STR_CHARS = 100_000  # one string (or bytes value)
MAX_TOTAL_CHARS = 4_000_000  # all strings together (the sandbox returns at most 4 MiB)
MAX_INT_BITS = 2_000  # about 600 digits: below every int-to-str digit limit Python allows
MAX_NUMBER_CHARS = 400  # a longer numeric string is not read as a number

_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_LEAVES = (str, bytes, bytearray, bool, int, float, dt.date, numbers.Number)
_CONTAINERS = (Mapping, list, tuple, set, frozenset)


def _check(value: Any, max_items: int, max_depth: int, max_chars: int,
           max_str: int, max_bits: int) -> str | None:
    """Why ``value`` exceeds the budget (or is not gradable), else ``None``. Iterative."""
    items = chars = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, bool | float):
            continue
        if isinstance(item, int):
            if item.bit_length() > max_bits:
                return f"it holds an integer of about {int(item.bit_length() * 0.30103)} digits"
            continue
        if isinstance(item, str | bytes | bytearray):
            if len(item) > max_str:
                return f"it holds a string of {len(item):,} characters (at most {max_str:,})"
            chars += len(item)
            if chars > max_chars:
                return f"its strings hold more than {max_chars:,} characters in all"
            continue
        if isinstance(item, _CONTAINERS):
            if depth >= max_depth:
                return f"it is nested more than {max_depth} levels deep"
            items += len(item) * (2 if isinstance(item, Mapping) else 1)
            if items > max_items:
                return f"it holds more than {max_items:,} items"
            if isinstance(item, Mapping):
                for key, val in item.items():
                    stack.append((key, depth + 1))
                    stack.append((val, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in item)
            continue
        if isinstance(item, _LEAVES) or _is_numpy_bool(item):
            continue
        return f"it holds a value of type {type(item).__name__!r}, which cannot be graded"
    return None


def _is_numpy_bool(x: Any) -> bool:
    """``numpy.bool_`` (named ``bool`` in numpy 2), without importing numpy."""
    return type(x).__module__ == "numpy" and type(x).__name__ in ("bool_", "bool")


def bound_answer(value: Any, *, max_items: int = MAX_ITEMS, max_depth: int = MAX_DEPTH,
                 max_str: int = MAX_STR_CHARS) -> tuple[Any, str | None]:
    """``(value, None)`` when an agent's answer is within budget, else ``(None, reason)``.

    The budget: nesting depth, number of items, length of each string and of all strings,
    size of integers; the value must be made of JSON-like types (``None``, bools, numbers,
    strings, bytes, dates, lists, tuples, sets, dicts). The walk is iterative and stops at
    the first excess, so any value is checked in bounded time without recursion.
    """
    try:
        why = _check(value, max_items, max_depth, max(MAX_TOTAL_CHARS, max_str), max_str,
                     MAX_INT_BITS)
    except Exception as exc:  # a broken container (only host-side callers can make one)
        why = f"it could not be read ({type(exc).__name__})"
    if why is None:
        return value, None
    return None, f"the answer cannot be graded: {why}"


def to_float(x: Any) -> float | None:
    """``x`` as a float (±inf included), or ``None`` when it is not a number or does not fit.

    Booleans, NaN, containers and non-numeric strings are ``None``; so is an integer beyond
    the float range and a numeric string longer than :data:`MAX_NUMBER_CHARS`. Never raises.
    """
    if isinstance(x, bool) or x is None:
        return None
    try:
        if isinstance(x, str):
            s = x.strip()
            if len(s) > MAX_NUMBER_CHARS or not _NUMBER.fullmatch(s):
                return None
            value = float(s)
        elif isinstance(x, numbers.Real):
            value = float(x)
        else:
            return None
    except (OverflowError, ValueError, TypeError, ArithmeticError):
        return None
    return None if math.isnan(value) else value


def to_int(x: Any) -> int | None:
    """``x`` as an int when it is a whole number, else ``None``. Never raises.

    Accepts ints (not bools), integral finite floats and integer strings of at most
    :data:`MAX_NUMBER_CHARS` characters (``" 14 "``, ``"+3"``).
    """
    if isinstance(x, bool) or x is None:
        return None
    try:
        if isinstance(x, numbers.Integral):
            return int(x)
        if isinstance(x, str):
            s = x.strip()
            if len(s) > MAX_NUMBER_CHARS or not _INTEGER.fullmatch(s):
                return None
            return int(s)
        value = to_float(x)
        if value is None or not math.isfinite(value) or not value.is_integer():
            return None
        return int(value)
    except (OverflowError, ValueError, TypeError, ArithmeticError):
        return None


class _Repr(reprlib.Repr):
    """``reprlib`` with huge integers described instead of converted."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > MAX_INT_BITS:
            return f"<int of about {int(x.bit_length() * 0.30103)} digits>"
        return super().repr_int(x, level)


def short_repr(value: Any, limit: int = 120) -> str:
    """``repr(value)`` cut to ``limit`` characters, in bounded time and space; never raises.

    Small values get their exact ``repr``; large or deep ones an abbreviated one
    (``reprlib``), huge integers a description.
    """
    try:
        small = _check(value, 1000, 20, 4 * limit + 1000, 4 * limit + 1000, MAX_INT_BITS) is None
        if small:
            text = builtins.repr(value)
        else:
            r = _Repr()
            r.maxlevel, r.maxstring, r.maxother, r.maxlong = 4, limit, limit, limit
            r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = 20
            text = r.repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."
