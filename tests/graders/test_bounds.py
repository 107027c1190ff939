"""The shared bounds for agent values: budgets, conversions that never raise, bounded repr."""

from __future__ import annotations

import datetime as dt
import math
import sys
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from tests.graders.hostile import HOSTILE, deep_list, hostile

from medagentgym.graders import bound_answer, short_repr, to_float, to_int
from medagentgym.graders.bounds import MAX_DEPTH, MAX_ITEMS, MAX_STR_CHARS


def _id(value: object) -> str:
    return short_repr(value, 24)


@pytest.mark.parametrize("value", [
    None, True, 5, -2.5, "text", b"x", [1, [2, {"a": None}]], (1, 2), {1, 2},
    {"rows": [{"n": 1}]}, dt.date(2020, 1, 2), np.float64(1.5), np.int64(3), np.bool_(True),
    Decimal("1.5"), Fraction(1, 3), deep_list(MAX_DEPTH), list(range(MAX_ITEMS)),
    "x" * MAX_STR_CHARS, 10**400, {(1, 2): "odd key"},
], ids=_id)
def test_values_within_budget_pass_unchanged(value):
    out, why = bound_answer(value)
    assert why is None and out is value


@pytest.mark.parametrize(("value", "words"), [
    (deep_list(MAX_DEPTH + 1), "nested more than"),
    (deep_list(100_000), "nested more than"),
    (list(range(MAX_ITEMS + 1)), "items"),
    ({i: i for i in range(MAX_ITEMS)}, "items"),
    ("x" * (MAX_STR_CHARS + 1), "characters"),
    (["x" * MAX_STR_CHARS] * 50, "characters in all"),
    (10**5000, "digits"),
    ({10**5000: 1}, "digits"),
    (object(), "type 'object'"),
    (hostile("cycle"), "nested more than"),
], ids=_id)
def test_values_over_budget_are_refused_with_a_reason(value, words):
    out, why = bound_answer(value)
    assert out is None and why and words in why


def test_bounds_are_configurable():
    assert bound_answer([[1]], max_depth=1)[1]
    assert bound_answer([1, 2, 3], max_items=2)[1]
    assert bound_answer("xyz", max_str=2)[1]
    assert bound_answer(list(range(10)), max_items=10)[1] is None


@pytest.mark.parametrize(("value", "expected"), [
    (5, 5.0), (-2.5, -2.5), (" 5.00 ", 5.0), ("-1e3", -1000.0), ("1e400", math.inf),
    (math.inf, math.inf), (np.float32(0.5), 0.5), (Fraction(1, 4), 0.25),
    (True, None), (None, None), (math.nan, None), ("nan", None), ("abc", None), ([5], None),
    (10**400, None), (-(10**400), None), ("1" * 5000, None), (Fraction(10**400, 3), None),
    (complex(1, 2), None), ("-" * 100_000 + "1", None), (Decimal("1e999999"), None),
], ids=_id)
def test_to_float_never_raises(value, expected):
    assert to_float(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (14, 14), (14.0, 14), (" 14 ", 14), ("+3", 3), ("0389", 389), (np.int64(7), 7),
    (10**400, 10**400), ("9" * 400, int("9" * 400)),
    (True, None), (14.5, None), (math.inf, None), (math.nan, None), ("14.0", None),
    ("1" * 5000, None), ("", None), (None, None), ([14], None), (10.0**300 * 10**10, None),
], ids=_id)
def test_to_int_never_raises(value, expected):
    assert to_int(value) == expected


def test_to_int_respects_the_lowest_int_digit_limit():
    saved = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        assert to_int("9" * 400) == int("9" * 400)
        assert to_int("9" * 700) is None
        assert short_repr(10**600, 30).endswith("...")
    finally:
        sys.set_int_max_str_digits(saved)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_short_repr_is_bounded_for_every_hostile_value(name):
    text = short_repr(hostile(name), 80)
    assert 0 < len(text) <= 80
    text.encode("utf-8")  # surrogates come out escaped


def test_short_repr_of_small_values_is_their_repr():
    for value in ([1, "a", None], {"a": (1, 2.5)}, "it's", 10**100):
        assert short_repr(value, 1000) == repr(value)
    assert short_repr("x" * 500, 20) == repr("x" * 500)[:17] + "..."
