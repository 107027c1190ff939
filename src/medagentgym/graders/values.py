"""Typed answer grading: compare the value an agent stored in ``answer`` with the gold answer.

The sandbox hands the grader plain JSON: ``None``, ``bool``, ``int``, ``float``, ``str``,
lists and dicts (a DataFrame arrives as a list of row dicts, a Series as a list, datetimes as
ISO strings). Everything here is a pure function of those values.

Normalisation (:func:`normalize_scalar`) decides what "the same value" means:

* **null** — ``None``, NaN, ``""`` (or only whitespace) and the words ``none``, ``null``,
  ``nan``, ``nat`` (any case) are all null.
* **numbers** — ints, floats and numeric strings (``"5"``, ``" 5.00 "``, ``"-1e3"``) are
  numbers. A string with a leading zero (``"0389"``, an ICD-9 code) stays a string, so codes
  never collapse onto numbers. Floats compare with a relative tolerance (default ``1e-6``) and
  an absolute one (default ``1e-9``). When one side is an *integer* (an ``int`` or a string
  written without a fraction or exponent) the relative tolerance tightens to ``1e-9`` and two
  integers must be equal: otherwise an 8-digit identifier would "match" its neighbours.
* **booleans** — ``True``/``False`` and the words ``true``/``false``/``yes``/``no``.
  A boolean equals the *number* 1 or 0 exactly (SQLite has no boolean type: ``COUNT(*) > 0``
  returns 1/0), never any other number, so ``True`` does not match a count of 5. Answering
  ``True`` therefore earns exactly what answering ``1`` earns, no more. Single letters
  (``"y"``, ``"f"``…) stay strings: ``"F"`` is a gender.
* **dates** — ``YYYY-MM-DD``, ``YYYY/MM/DD`` and ``MM/DD/YYYY`` (``DD/MM/YYYY`` when the
  first number cannot be a month), optionally followed by ``[ T]HH:MM[:SS[.ffffff]]`` and a
  UTC offset (the offset is dropped: the wall-clock time is compared), are read directly;
  every other common written form — month names (``"January 10, 2104 13:59"``,
  ``"10 Jan 2104"``, ``"Mon, 10-Jan-2104 1:59 PM"``), ``DD.MM.YYYY``-style separators — is
  read by ``dateutil`` when the text names a four-digit year, a month and a day (a month and a
  year alone, or a bare year, stay strings). A date without a time equals the same date at
  midnight; a time must be written with a colon or am/pm to count.
* **strings** — whitespace is trimmed and collapsed and the case is folded (unless
  ``case_sensitive``). A string never equals a number or a date: ``"The answer is 5"`` is not
  ``5``.

Agent input never makes a grader raise: an answer over the size and depth budget of
:func:`medagentgym.graders.bounds.bound_answer` is graded wrong, numeric strings longer than
400 characters stay strings, and integers beyond the float range compare exactly.

Every grader returns a :class:`GradeResult`. Its ``reason`` is one line that may be shown to
the agent: it explains how the answer was read and why it failed, but never quotes the gold
answer (it may reveal the *shape* of the expected result, such as its number of columns).
``detail`` is for the host (failure analysis, logs) and may quote the gold answer.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dateutil import parser as _dateutil

from medagentgym.graders.bounds import (
    MAX_ITEMS,
    MAX_NUMBER_CHARS,
    bound_answer,
    short_repr,
    to_float,
)
from medagentgym.types import Grade

__all__ = [
    "DEFAULT_ABS_TOL",
    "DEFAULT_REL_TOL",
    "GradeResult",
    "date_match",
    "ehr_answer_match",
    "exact_match",
    "normalize_scalar",
    "numeric_match",
    "sql_result_match",
    "values_equal",
]

DEFAULT_REL_TOL = 1e-6
DEFAULT_ABS_TOL = 1e-9
INT_REL_TOL = 1e-9  # relative tolerance whenever one side is an integer
_KUHN_LIMIT = 60  # rows left after exact matching above which matching turns greedy
_DETAIL_CHARS = 400
_EPOCH = dt.datetime(1970, 1, 1)

Scalar = None | bool | int | float | str | dt.date | dt.datetime


GradeResult = Grade  # the verdict type is shared with trajectories (medagentgym.types)


# --------------------------------------------------------------------------- normalisation

_WS = re.compile(r"\s+")
_NULL_WORDS = frozenset({"none", "null", "nan", "nat"})
_TRUE_WORDS = frozenset({"true", "yes"})
_FALSE_WORDS = frozenset({"false", "no"})
_NUMBER = re.compile(
    r"[+-]?(?:(?:0|[1-9]\d*)(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?",
)
_INTEGER = re.compile(r"[+-]?(?:0|[1-9]\d*)")
_TIME = (
    r"(?:[ T](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:[.,](?P<F>\d+))?)?)?"
    r"(?:\s*(?:Z|UTC|[+-]\d{2}(?::?\d{2})?))?"
)
_YMD = re.compile(r"(?P<y>\d{4})[-/](?P<m>\d{1,2})[-/](?P<d>\d{1,2})" + _TIME, re.IGNORECASE)
_MDY = re.compile(r"(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})" + _TIME, re.IGNORECASE)


def _parse_date(s: str) -> dt.date | None:
    match = _YMD.fullmatch(s)
    candidates: list[tuple[str, str]] = []
    if match:
        candidates.append(("m", "d"))
    else:
        match = _MDY.fullmatch(s)
        if not match:
            return None
        candidates += [("m", "d"), ("d", "m")]  # US first; day-first when that is impossible
    g = match.groupdict()
    for month_key, day_key in candidates:
        try:
            date = dt.date(int(g["y"]), int(g[month_key]), int(g[day_key]))
        except ValueError:
            continue
        if g["H"] is None:
            return date
        frac = (g["F"] or "")[:6].ljust(6, "0")
        try:
            return dt.datetime(
                date.year, date.month, date.day,
                int(g["H"]), int(g["M"]), int(g["S"] or 0), int(frac),
            )  # fmt: skip
        except ValueError:
            return None
    return None


_MONTH_NAME = re.compile(
    r"(?<![a-z])(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?(?![a-z])",
    re.IGNORECASE,
)
_YEAR4 = re.compile(r"(?<!\d)\d{4}(?!\d)")
_CLOCK = re.compile(
    r"(?<!\d)\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s*[ap]\.?m\.?(?![a-z]))?"
    r"|(?<!\d)\d{1,2}\s*[ap]\.?m\.?(?![a-z])",
    re.IGNORECASE,
)
_DAY_TOKEN = re.compile(r"(?<![\d.])\d{1,2}(?:st|nd|rd|th)?(?![\d.])", re.IGNORECASE)
_NUMERIC_DATE = re.compile(
    r"(?<!\d)(?:\d{1,2}([./-])\d{1,2}\1\d{4}|\d{4}([./-])\d{1,2}\2\d{1,2})(?!\d)"
)
_WORD_DATE_CHARS = 80  # longer text is never read as a date
_DATEUTIL_DEFAULT = dt.datetime(2000, 1, 1)


def _parse_written_date(s: str) -> dt.date | None:
    """A date (or date and time) written in any other common form, read by ``dateutil``.

    Only text that names exactly one four-digit year, a month (by name, or as part of a
    ``D/M/YYYY``-style group) and a day is tried, so that ``"may"``, ``"jan 2104"`` or a drug
    name with a number never become dates; the year read must be the one written."""
    if len(s) > _WORD_DATE_CHARS:
        return None
    years = _YEAR4.findall(s)
    if len(years) != 1:
        return None
    has_time = _CLOCK.search(s) is not None
    rest = _YEAR4.sub(" ", _CLOCK.sub(" ", s), count=1)
    if _MONTH_NAME.search(rest):
        if len(_DAY_TOKEN.findall(_MONTH_NAME.sub(" ", rest))) != 1:
            return None
    elif not _NUMERIC_DATE.search(s):
        return None
    try:
        value = _dateutil.parse(s, default=_DATEUTIL_DEFAULT, ignoretz=True)
    except Exception:  # any parser failure means "not a date"
        return None
    if not isinstance(value, dt.datetime) or value.year != int(years[0]):
        return None
    return value if has_time else value.date()


def _normalize_str(s: str, case_sensitive: bool) -> Scalar:
    s = _WS.sub(" ", s).strip()
    if not s:
        return None
    folded = s.casefold()
    if folded in _NULL_WORDS:
        return None
    if folded in _TRUE_WORDS:
        return True
    if folded in _FALSE_WORDS:
        return False
    if s[0] in "+-.0123456789" and len(s) <= MAX_NUMBER_CHARS and _NUMBER.fullmatch(s):
        if _INTEGER.fullmatch(s):
            return int(s)
        value = float(s)
        return value if math.isfinite(value) else None
    if s[0].isdigit():
        date = _parse_date(s)
        if date is not None:
            return date
    if len(s) <= _WORD_DATE_CHARS and _YEAR4.search(s):
        date = _parse_written_date(s)
        if date is not None:
            return date
    return s if case_sensitive else folded


def normalize_scalar(x: Any, *, case_sensitive: bool = False) -> Scalar:
    """Return the canonical comparable form of one scalar value.

    The result is ``None`` (null), a ``bool``, an ``int``, a finite-or-infinite ``float``, a
    ``datetime.date`` (no time given), a naive ``datetime.datetime`` or a normalised ``str``;
    see the module docstring for the rules. Containers raise :class:`TypeError`.
    """
    if x is None:
        return None
    if isinstance(x, str):
        return _normalize_str(x, case_sensitive)
    if isinstance(x, bool):
        return x
    if type(x).__name__ == "bool_":  # numpy.bool_ without importing numpy
        return bool(x)
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real):
        value = to_float(x)
        if value is None and x == x:  # not NaN: beyond the float range
            return math.inf if x > 0 else -math.inf
        return value
    if isinstance(x, dt.datetime):
        if x.tzinfo is not None:
            x = x.replace(tzinfo=None)
        return x
    if isinstance(x, dt.date):
        return x
    if isinstance(x, bytes | bytearray):
        return _normalize_str(bytes(x).decode("utf-8", errors="replace"), case_sensitive)
    if isinstance(x, Mapping | list | tuple | set | frozenset):
        raise TypeError(f"not a scalar: {type(x).__name__}")
    return _normalize_str(str(x), case_sensitive)


def _kind(v: Scalar) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "num"
    if isinstance(v, dt.date):
        return "date"
    return "str"


def _as_datetime(d: dt.date) -> dt.datetime:
    return d if isinstance(d, dt.datetime) else dt.datetime(d.year, d.month, d.day)


def _numbers_equal(a: float, b: float, rel_tol: float, abs_tol: float) -> bool:
    a_int, b_int = isinstance(a, int), isinstance(b, int)
    if a_int and b_int:
        return a == b
    if a_int or b_int:
        rel_tol = min(rel_tol, INT_REL_TOL)
    return _close(a, b, rel_tol, abs_tol)


def _close(a: float, b: float, rel_tol: float, abs_tol: float) -> bool:
    """:func:`math.isclose`, also for integers beyond the float range (exact there)."""
    fa, fb = to_float(a), to_float(b)
    if fa is None or fb is None or math.isinf(fa) or math.isinf(fb):
        return a == b  # Python compares int and float exactly, without overflow
    return math.isclose(fa, fb, rel_tol=rel_tol, abs_tol=abs_tol)


def _equal_normalized(a: Scalar, b: Scalar, rel_tol: float, abs_tol: float) -> bool:
    ka, kb = _kind(a), _kind(b)
    if ka == kb:
        if ka == "num":
            return _numbers_equal(a, b, rel_tol, abs_tol)  # type: ignore[arg-type]
        if ka == "date":
            return _as_datetime(a) == _as_datetime(b)  # type: ignore[arg-type]
        return a == b
    if {ka, kb} == {"bool", "num"}:
        flag, num = (a, b) if ka == "bool" else (b, a)
        return num == int(flag)  # type: ignore[arg-type]
    return False


def values_equal(
    a: Any,
    b: Any,
    *,
    rel_tol: float = DEFAULT_REL_TOL,
    abs_tol: float = DEFAULT_ABS_TOL,
    case_sensitive: bool = False,
) -> bool:
    """Whether two scalars are the same value after :func:`normalize_scalar`."""
    return _equal_normalized(
        normalize_scalar(a, case_sensitive=case_sensitive),
        normalize_scalar(b, case_sensitive=case_sensitive),
        rel_tol,
        abs_tol,
    )


def _hash_key(v: Scalar) -> Any:
    """A hashable key such that equal keys imply equal values (not the converse)."""
    if v is None:
        return ("n",)
    if isinstance(v, bool):
        return ("x", int(v))
    if isinstance(v, int):
        return ("x", v)
    if isinstance(v, float):
        if math.isfinite(v) and v.is_integer():
            return ("x", int(v))
        return ("f", v)
    if isinstance(v, dt.date):
        return ("d", _as_datetime(v))
    return ("s", v)


# --------------------------------------------------------------------------- helpers


def _short(value: Any, limit: int = 120) -> str:
    return short_repr(value, limit)


def _describe(value: Any) -> str:
    """How the grader read a predicted value, without echoing it in full."""
    if value is None:
        return "None"
    if isinstance(value, Mapping):
        return f"a dict with {len(value)} key(s)"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, str):
        return f"the string {_short(value, 60)}"
    return f"{type(value).__name__} {_short(value, 60)}"


def _is_container(x: Any) -> bool:
    return isinstance(x, Mapping | list | tuple)


def _unwrap_single(x: Any) -> Any:
    """``[5]``, ``[[5]]``, ``{"n": 5}`` and ``[{"n": 5}]`` all mean ``5``."""
    for _ in range(8):
        if isinstance(x, list | tuple) and len(x) == 1:
            x = x[0]
        elif isinstance(x, Mapping) and len(x) == 1:
            x = next(iter(x.values()))
        else:
            break
    return x


# --------------------------------------------------------------------------- SQL results


def _row_of(elem: Any) -> tuple:
    if isinstance(elem, Mapping):
        return tuple(elem.values())
    if isinstance(elem, list | tuple):
        return tuple(elem)
    return (elem,)


def _interpretations(pred: Any, width: int | None) -> list[tuple[str, list[tuple]]]:
    """The ways a predicted value can be read as a list of rows (each with a description)."""
    if pred is None:
        return [("None", [])]
    if isinstance(pred, Mapping):
        if not pred:
            return [("an empty dict", [])]
        values = list(pred.values())
        out: list[tuple[str, list[tuple]]] = []
        if all(isinstance(v, list | tuple) for v in values) and len({len(v) for v in values}) == 1:
            out.append(("a dict of columns", list(zip(*values, strict=True))))
        elif all(isinstance(v, Mapping) for v in values) and len({tuple(v) for v in values}) == 1:
            out.append(("a dict of columns", list(zip(*(v.values() for v in values), strict=True))))
        out.append(("a dict read as one row", [tuple(values)]))
        if width == 2:
            out.append(("a dict read as (key, value) rows", list(pred.items())))
        return out
    if not isinstance(pred, list | tuple):
        return [("a single value", [(pred,)])]
    if not pred:
        return [("an empty list", [])]
    rows = [_row_of(e) for e in pred]
    out = [("a list of rows", rows)]
    flat = not any(_is_container(e) for e in pred)
    if width and width > 1 and flat and len(pred) == width:
        out.append(("a list read as one row", [tuple(pred)]))
    if width == 1 and len(pred) == 1 and isinstance(pred[0], list | tuple):
        out.append(("a list holding one column", [(x,) for x in pred[0]]))
    if (
        width
        and width > 1
        and len(pred) == width
        and all(isinstance(e, list | tuple) for e in pred)
        and len({len(e) for e in pred}) == 1
    ):
        out.append(("a list of columns", list(zip(*pred, strict=True))))
    if width and all(isinstance(e, Mapping) for e in pred):
        first = next(iter(pred[0]), None)
        if first in ("index", "level_0") and all(len(e) == width + 1 for e in pred):
            out.append(("records without their pandas index", [r[1:] for r in rows]))
    return out


def _normalize_row(row: tuple, case_sensitive: bool) -> tuple:
    out = []
    for cell in row:
        cell = _unwrap_single(cell)
        try:
            out.append(normalize_scalar(cell, case_sensitive=case_sensitive))
        except TypeError:
            out.append(repr(cell))  # a nested container never equals a gold scalar
    return tuple(out)


def _rows_equal(a: tuple, b: tuple, rel_tol: float, abs_tol: float) -> bool:
    return len(a) == len(b) and all(
        _equal_normalized(x, y, rel_tol, abs_tol) for x, y in zip(a, b, strict=True)
    )


def _multiset_match(
    gold: list[tuple], pred: list[tuple], rel_tol: float, abs_tol: float
) -> tuple[bool, int]:
    """Match rows one-to-one; return (all matched, number of gold rows left unmatched).

    With more ``pred`` rows than ``gold`` rows, "all matched" means ``gold`` is a
    sub-multiset of ``pred``."""
    by_key: dict[Any, list[int]] = {}
    for i, row in enumerate(pred):
        by_key.setdefault(tuple(_hash_key(v) for v in row), []).append(i)
    used = [False] * len(pred)
    rest_gold: list[tuple] = []
    for row in gold:
        slots = by_key.get(tuple(_hash_key(v) for v in row))
        if slots:
            used[slots.pop()] = True
        else:
            rest_gold.append(row)
    if not rest_gold:
        return True, 0
    rest_pred = [row for row, u in zip(pred, used, strict=True) if not u]
    rest_gold.sort(key=_sort_key)
    rest_pred.sort(key=_sort_key)
    if len(rest_gold) > len(rest_pred):
        return False, len(rest_gold) - len(rest_pred)
    if len(rest_gold) == len(rest_pred) and all(
        _rows_equal(g, p, rel_tol, abs_tol) for g, p in zip(rest_gold, rest_pred, strict=True)
    ):
        return True, 0  # sorted orders line up: the usual case when only floats differ
    if len(rest_gold) <= _KUHN_LIMIT:
        # small: a maximum bipartite matching (tolerant equality is not transitive)
        adjacency = [
            [j for j, p in enumerate(rest_pred) if _rows_equal(g, p, rel_tol, abs_tol)]
            for g in rest_gold
        ]
        owner = [-1] * len(rest_pred)

        def augment(i: int, seen: list[bool]) -> bool:
            for j in adjacency[i]:
                if not seen[j]:
                    seen[j] = True
                    if owner[j] < 0 or augment(owner[j], seen):
                        owner[j] = i
                        return True
            return False

        missing = sum(not augment(i, [False] * len(rest_pred)) for i in range(len(rest_gold)))
        return missing == 0, missing
    # large: greedy over both sorted lists; a match is usually at the front of what is left
    free = list(range(len(rest_pred)))
    for g in rest_gold:
        for pos, j in enumerate(free):
            if _rows_equal(g, rest_pred[j], rel_tol, abs_tol):
                del free[pos]
                break
        else:
            return False, 1  # one unmatched gold row is enough to fail
    return True, 0


def _sort_key(row: tuple) -> tuple:
    out = []
    for v in row:
        if v is None:
            out.append((0, 0.0, ""))
        elif isinstance(v, bool | int | float):
            f = to_float(int(v) if isinstance(v, bool) else v)
            out.append((1, f if f is not None else (math.inf if v > 0 else -math.inf), ""))
        elif isinstance(v, dt.date):
            out.append((2, (_as_datetime(v) - _EPOCH).total_seconds(), ""))
        else:
            out.append((3, 0.0, v))
    return tuple(out)


def _all_null(rows: Iterable[tuple]) -> bool:
    return all(all(v is None for v in row) for row in rows)


def sql_result_match(
    predicted: Any,
    gold_rows: Sequence[Any],
    *,
    ordered: bool = False,
    distinct: bool = False,
    rel_tol: float = DEFAULT_REL_TOL,
    abs_tol: float = DEFAULT_ABS_TOL,
    case_sensitive: bool = False,
    allow_dedup: bool = False,
    any_column_order: bool = False,
    top_n: int | None = None,
    ranks: Sequence[int] | None = None,
) -> GradeResult:
    """Compare an agent's ``answer`` with the rows of the gold SQL query.

    ``gold_rows`` is what ``sqlite3`` returned (a list of tuples; bare scalars are read as
    1-tuples). The rows are compared as a multiset after :func:`normalize_scalar` (as a
    sequence when ``ordered``; as a set when ``distinct``). The answer may be a scalar, a
    one-element list, a flat list (one column, or one row when its length is the number of
    gold columns), a list of lists/tuples, a list of dicts (DataFrame records, read by value
    order; a leading ``index`` column that pandas added is dropped when it is the only extra
    one), a dict (one row; ``{key: value}`` rows when gold has two columns; a dict of equal-length
    lists is a table of columns). A gold result that is empty or only NULLs is matched by
    ``None``, ``[]``, ``""``, NaN or NULL rows.

    Also accepted, when asked for (the EHR datasets do: :func:`ehr_answer_match`):

    * ``allow_dedup`` — the gold's distinct rows, each once (the answer a person gives when
      the gold SQL repeats a row; never for questions that ask for a count);
    * ``any_column_order`` — the same rows with the columns in another order (up to
      :data:`MAX_PERMUTED_COLUMNS` columns);
    * ``top_n`` with ``ranks`` (the dense rank of each gold row, as EHRSQL's
      ``dense_rank() ... <= N`` computes it, so the gold may hold more than N rows) — exactly
      N rows that some tie-breaking puts first (every row ranked above the N-th row's rank
      group, and the rest from that group), or every row up to and including that group.

    Nothing else is accepted: not a superset, not a list of candidates, not a string that
    contains the answer.
    """
    if isinstance(gold_rows, str | bytes | Mapping) or not isinstance(gold_rows, Sequence):
        gold_rows = [gold_rows]  # a bare scalar (or one row as a dict) is one row
    gold = [_normalize_row(_row_of(r), case_sensitive) for r in gold_rows]
    budget = max(MAX_ITEMS, 4 * sum(len(r) + 1 for r in gold))  # a large gold result fits
    predicted, why = bound_answer(predicted, max_items=budget)
    if why is not None:
        return GradeResult.wrong(f"wrong: {why}")
    widths = {len(r) for r in gold}
    width = widths.pop() if len(widths) == 1 else None
    readings = _interpretations(predicted, width)

    if _all_null(gold):
        for how, rows in readings:
            if _all_null(_normalize_row(r, case_sensitive) for r in rows):
                return GradeResult.right(
                    f"correct: the expected result is empty and the answer ({how}) is empty"
                )
        return GradeResult.wrong(
            f"wrong: the expected result is empty (no rows) but the answer is "
            f"{_describe(predicted)}",
            detail=f"gold={_short(list(gold_rows), _DETAIL_CHARS)}",
        )

    if predicted is None:
        return GradeResult.wrong(
            "wrong: `answer` is None (or was not set) but the expected result is not empty",
            detail=f"gold={_short(list(gold_rows), _DETAIL_CHARS)}",
        )

    mode = "in order" if ordered else ("as a set" if distinct else "as a multiset")
    gold_cmp = _dedupe(gold) if distinct else gold
    targets = _targets(gold_cmp, ordered=ordered or distinct, allow_dedup=allow_dedup,
                       top_n=top_n, ranks=ranks)
    sizes = {t.size for t in targets}
    best: tuple[int, str] | None = None  # (rank, reason): the most informative failure
    for how, rows in readings:
        bad_width = sorted({len(r) for r in rows} - {width}) if width is not None else []
        if bad_width:
            reason = (
                f"wrong: the answer was read as {how} with {bad_width[0]} column(s), "
                f"but the expected result has {width} column(s)"
            )
            best = min(best or (3, reason), (3, reason))
            continue
        if not distinct and len(rows) not in sizes:  # cheap: before any normalisation
            reason = (
                f"wrong: the answer was read as {how} ({_shape(rows)}); the expected "
                f"result has a different number of rows"
            )
            best = min(best or (2, reason), (2, reason))
            continue
        pred = [_normalize_row(r, case_sensitive) for r in rows]
        if distinct:
            pred = _dedupe(pred)
            if len(pred) not in sizes:
                reason = (
                    f"wrong: the answer was read as {how} ({_shape(pred)}); the expected "
                    f"result has a different number of rows"
                )
                best = min(best or (2, reason), (2, reason))
                continue
        orders = [None]
        if any_column_order and width is not None and 1 < width <= MAX_PERMUTED_COLUMNS:
            orders += [p for p in itertools.permutations(range(width)) if p != tuple(range(width))]
        for order in orders:
            cand = pred if order is None else [tuple(r[i] for i in order) for r in pred]
            for target in targets:
                if target.size != len(cand):
                    continue
                if target.accepts(cand, ordered, rel_tol, abs_tol):
                    cols = "" if order is None else ", with its columns in another order"
                    return GradeResult.right(
                        f"correct: the answer ({how}{cols}) matches {target.label} {mode}"
                    )
        reason = (
            f"wrong: the answer was read as {how} ({_shape(pred)}), the right shape, but its "
            f"values do not match the expected result ({mode})"
        )
        best = min(best or (1, reason), (1, reason))
    assert best is not None
    return GradeResult.wrong(
        best[1],
        detail=(
            f"gold={_short(list(gold_rows), _DETAIL_CHARS // 2)} "
            f"pred={_short(predicted, _DETAIL_CHARS // 2)}"
        ),
    )


MAX_PERMUTED_COLUMNS = 4  # column orders tried: at most 4! = 24


def ehr_answer_match(
    predicted: Any, gold_rows: Sequence[Any], grading: Mapping[str, Any] | None = None
) -> GradeResult:
    """:func:`sql_result_match` as the EHR question-answering datasets grade.

    ``grading`` is what the task builder stored with the gold
    (:func:`medagentgym.tasks.ehrsql_instances.grading_spec`): ``count`` (the question asks
    for a count, so repeated rows are information), ``top_n`` and ``ranks`` (a tied "top N"
    question). Columns may come in any order; a de-duplicated answer is accepted unless the
    question asks for a count (or nothing says it does not); "top N" accepts exactly N rows
    of the tied set as well as the whole set. A malformed ``grading`` is ignored."""
    spec = grading if isinstance(grading, Mapping) else {}
    top_n = spec.get("top_n")
    ranks = spec.get("ranks")
    return sql_result_match(
        predicted,
        gold_rows,
        allow_dedup=spec.get("count") is False,
        any_column_order=True,
        top_n=top_n if isinstance(top_n, int) else None,
        ranks=ranks if isinstance(ranks, list | tuple) else None,
    )


class _Target:
    """One acceptable form of the gold: ``rows`` exactly (as a multiset, or in order), or —
    for a tied "top N" — ``size`` rows holding every row of ``required`` and the rest from
    ``pool``."""

    def __init__(self, label: str, rows: list[tuple], *, pool: list[tuple] | None = None,
                 size: int | None = None) -> None:
        self.label = label
        self.rows = rows
        self.pool = pool
        self.size = len(rows) if size is None else size

    def accepts(self, pred: list[tuple], ordered: bool, rel_tol: float, abs_tol: float) -> bool:
        if self.pool is None:
            if ordered:
                return all(
                    _rows_equal(g, p, rel_tol, abs_tol)
                    for g, p in zip(self.rows, pred, strict=True)
                )
            return _multiset_match(self.rows, pred, rel_tol, abs_tol)[0]
        # top N with ties: the required rows are all there, and every row is a gold row
        return (
            _multiset_match(self.rows, pred, rel_tol, abs_tol)[0]
            and _multiset_match(pred, self.rows + self.pool, rel_tol, abs_tol)[0]
        )


def _targets(gold: list[tuple], *, ordered: bool, allow_dedup: bool, top_n: int | None,
             ranks: Sequence[int] | None) -> list[_Target]:
    targets = [_Target("the expected result", gold)]
    if allow_dedup and not ordered:
        distinct_rows = _dedupe(gold)
        if len(distinct_rows) < len(gold):
            targets.append(_Target("the expected result without its repeated rows",
                                   distinct_rows))
    if (
        top_n is None or ranks is None or ordered or isinstance(top_n, bool)
        or not isinstance(top_n, int) or top_n < 1 or len(ranks) != len(gold)
        or len(gold) <= top_n
        or not all(isinstance(r, int) and not isinstance(r, bool) for r in ranks)
    ):
        return targets
    groups: dict[int, list[tuple]] = {}
    for row, rank in zip(gold, ranks, strict=True):
        groups.setdefault(rank, []).append(row)
    above: list[tuple] = []
    for rank in sorted(groups):
        group = groups[rank]
        if len(above) + len(group) >= top_n:
            if len(above) + len(group) == top_n:
                targets.append(_Target(f"the top {top_n} rows", above + group))
            else:
                targets.append(_Target(
                    f"{top_n} rows of the expected top-{top_n} result (ties broken either way)",
                    above, pool=group, size=top_n))
                if len(above) + len(group) < len(gold):
                    targets.append(_Target(f"the top {top_n} rows with their ties",
                                           above + group))
            break
        above += group
    return targets


def _shape(rows: list[tuple]) -> str:
    widths = sorted({len(r) for r in rows})
    cols = "/".join(map(str, widths)) if widths else "0"
    return f"{len(rows)} row(s) x {cols} column(s)"


def _dedupe(rows: list[tuple]) -> list[tuple]:
    seen: set = set()
    out = []
    for row in rows:
        key = tuple(_hash_key(v) for v in row)
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


# --------------------------------------------------------------------------- scalar graders


def numeric_match(
    pred: Any,
    gold: Any = None,
    lower: float | None = None,
    upper: float | None = None,
    *,
    rel_tol: float = DEFAULT_REL_TOL,
    abs_tol: float = DEFAULT_ABS_TOL,
) -> GradeResult:
    """Whether ``pred`` is the number ``gold``, or lies in ``[lower, upper]`` (inclusive).

    With both bounds, both must hold (never one *or* the other); bounds given the wrong way
    round (``lower > upper``, as ±5% of a negative number gives) are swapped. With one bound
    only, the other side is ``gold`` within the tolerance, or unbounded when there is no gold.
    Without bounds, ``pred`` must equal ``gold`` within ``rel_tol``/``abs_tol``
    (:func:`math.isclose`). ``pred`` may be a number, a numeric string or a one-element
    container; booleans, NaN and non-numeric strings are wrong.
    """
    pred, why = bound_answer(pred)
    if why is not None:
        return GradeResult.wrong(f"wrong: {why}")
    value = _unwrap_single(pred)
    try:
        num = normalize_scalar(value)
    except TypeError:
        num = None
    if isinstance(num, bool) or not isinstance(num, int | float):
        return GradeResult.wrong(
            f"wrong: expected a number but the answer is {_describe(pred)}",
            detail=f"gold={gold!r} bounds=[{lower!r}, {upper!r}]",
        )
    gold_num: float | None = None
    if gold is not None:
        gold_value = normalize_scalar(_unwrap_single(gold))
        if isinstance(gold_value, bool) or not isinstance(gold_value, int | float):
            raise ValueError(f"gold answer is not a number: {gold!r}")
        gold_num = gold_value
    detail = f"pred={_short(num)} gold={gold!r} bounds=[{lower!r}, {upper!r}]"
    if lower is None and upper is None:
        if gold_num is None:
            raise ValueError("numeric_match needs a gold value or bounds")
        if _close(num, gold_num, rel_tol, abs_tol):
            return GradeResult.right("correct: the number matches the expected value", detail)
        return GradeResult.wrong(
            f"wrong: the number {_short(num, 60)} does not match the expected value", detail
        )
    if gold_num is not None and math.isfinite(gold_num):
        slack = max(rel_tol * abs(gold_num), abs_tol)
        lo = float(lower) if lower is not None else gold_num - slack
        hi = float(upper) if upper is not None else gold_num + slack
    else:
        lo = float(lower) if lower is not None else -math.inf
        hi = float(upper) if upper is not None else math.inf
    if lo > hi:
        lo, hi = hi, lo
    if lo <= num <= hi:
        return GradeResult.right("correct: the number lies within the accepted range", detail)
    return GradeResult.wrong(
        f"wrong: the number {_short(num, 60)} lies outside the accepted range", detail
    )


def exact_match(
    pred: Any,
    gold: Any,
    *,
    case_sensitive: bool = False,
) -> GradeResult:
    """Whether ``pred`` equals ``gold`` exactly after normalisation (no numeric tolerance).

    ``"5"``, ``5`` and ``5.0`` are equal; ``"Yes"`` and ``True`` are equal. A list gold is
    compared element by element, in order; a scalar gold accepts a one-element container.
    """
    pred, why = bound_answer(pred)
    if why is not None:
        return GradeResult.wrong(f"wrong: {why}")
    if isinstance(gold, list | tuple):
        if not isinstance(pred, list | tuple):
            pred = [pred]
        if len(pred) != len(gold):
            return GradeResult.wrong(
                f"wrong: the answer has {len(pred)} item(s); the expected answer has "
                f"a different number of items",
                detail=f"pred={_short(pred)} gold={_short(gold)}",
            )
        for p, g in zip(pred, gold, strict=True):
            if not _scalar_exact(p, g, case_sensitive):
                return GradeResult.wrong(
                    "wrong: the items do not match the expected answer",
                    detail=f"pred={_short(pred)} gold={_short(gold)}",
                )
        return GradeResult.right("correct: every item matches the expected answer")
    if _scalar_exact(_unwrap_single(pred), gold, case_sensitive):
        return GradeResult.right("correct: the answer matches the expected value")
    return GradeResult.wrong(
        f"wrong: the answer ({_describe(pred)}) does not match the expected value",
        detail=f"pred={_short(pred)} gold={_short(gold)}",
    )


def _scalar_exact(p: Any, g: Any, case_sensitive: bool) -> bool:
    try:
        return _equal_normalized(
            normalize_scalar(_unwrap_single(p), case_sensitive=case_sensitive),
            normalize_scalar(_unwrap_single(g), case_sensitive=case_sensitive),
            0.0,
            0.0,
        )
    except TypeError:
        return False


def date_match(pred: Any, gold: Any, *, ignore_time: bool | None = None) -> GradeResult:
    """Whether ``pred`` is the date (or date and time) ``gold``.

    Both sides go through :func:`normalize_scalar`. ``ignore_time=None`` (default) compares
    only the calendar dates when ``gold`` has no time of day, and the full timestamps
    otherwise (a date alone then equals midnight).
    """
    g = normalize_scalar(_unwrap_single(gold))
    if not isinstance(g, dt.date):
        raise ValueError(f"gold answer is not a date: {gold!r}")
    pred, why = bound_answer(pred)
    if why is not None:
        return GradeResult.wrong(f"wrong: {why}")
    value = _unwrap_single(pred)
    try:
        p = normalize_scalar(value)
    except TypeError:
        p = None
    detail = f"pred={_short(pred)} gold={gold!r}"
    if not isinstance(p, dt.date):
        return GradeResult.wrong(
            f"wrong: expected a date but the answer is {_describe(pred)}", detail
        )
    if ignore_time is None:
        ignore_time = not isinstance(g, dt.datetime)
    if ignore_time:
        same = _as_datetime(p).date() == _as_datetime(g).date()
    else:
        same = _as_datetime(p) == _as_datetime(g)
    if same:
        return GradeResult.right("correct: the date matches the expected date", detail)
    return GradeResult.wrong(
        f"wrong: the date {p.isoformat()} does not match the expected date", detail
    )
