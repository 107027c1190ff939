"""Typed answer grading: normalisation, SQL result multisets, numbers, dates, cheats."""

from __future__ import annotations

import datetime as dt
import math
import random

import pytest

from medagentgym.graders import (
    GradeResult,
    date_match,
    exact_match,
    normalize_scalar,
    numeric_match,
    sql_result_match,
    values_equal,
)

# --------------------------------------------------------------------------- normalize_scalar


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        (float("nan"), None),
        ("", None),
        ("   ", None),
        ("None", None),
        ("NaN", None),
        ("null", None),
        ("5", 5),
        (" 5 ", 5),
        ("+5", 5),
        ("-12", -12),
        ("5.00", 5.0),
        ("5.", 5.0),
        (".5", 0.5),
        ("-1e3", -1000.0),
        (7, 7),
        (7.25, 7.25),
        (True, True),
        ("true", True),
        ("Yes", True),
        ("FALSE", False),
        ("no", False),
        ("0389", "0389"),  # ICD-9 code: a leading zero keeps it a string
        ("V3000", "v3000"),
        ("  Hello   World ", "hello world"),
        ("F", "f"),  # a gender, not a boolean
        ("1_000", "1_000"),  # Python's float() would accept this; we do not
        ("inf", "inf"),
        ("2105-12-31", dt.date(2105, 12, 31)),
        ("2105-12-31 23:59:00", dt.datetime(2105, 12, 31, 23, 59)),
        ("2105-12-31T23:59:00", dt.datetime(2105, 12, 31, 23, 59)),
        ("2105-12-31t23:59", dt.datetime(2105, 12, 31, 23, 59)),
        ("2105-12-31 23:59:00.5", dt.datetime(2105, 12, 31, 23, 59, 0, 500000)),
        ("2105-12-31T23:59:00.000000000", dt.datetime(2105, 12, 31, 23, 59)),
        ("2105-12-31T23:59:00+00:00", dt.datetime(2105, 12, 31, 23, 59)),
        ("2105-12-31T23:59:00Z", dt.datetime(2105, 12, 31, 23, 59)),
        ("2105/1/2", dt.date(2105, 1, 2)),
        ("12/31/2105", dt.date(2105, 12, 31)),
        ("31/12/2105", dt.date(2105, 12, 31)),  # day-first only when month-first is impossible
        ("02/05/2022", dt.date(2022, 2, 5)),  # ambiguous: US month-first
        ("2105-13-01", "2105-13-01"),  # not a date
        ("12:30", "12:30"),
        (dt.datetime(2105, 1, 1, tzinfo=dt.UTC), dt.datetime(2105, 1, 1)),
        (b"abc", "abc"),
    ],
)
def test_normalize_scalar(raw, expected):
    got = normalize_scalar(raw)
    assert got == expected
    assert type(got) is type(expected)


def test_normalize_scalar_case_sensitive_and_containers():
    assert normalize_scalar(" Aspirin ", case_sensitive=True) == "Aspirin"
    with pytest.raises(TypeError):
        normalize_scalar([1])
    with pytest.raises(TypeError):
        normalize_scalar({"a": 1})


def test_normalize_scalar_numpy_types():
    np = pytest.importorskip("numpy")
    assert normalize_scalar(np.int64(3)) == 3
    assert type(normalize_scalar(np.int64(3))) is int
    assert normalize_scalar(np.float32(0.5)) == 0.5
    assert normalize_scalar(np.bool_(True)) is True
    assert normalize_scalar(np.float64("nan")) is None


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("5", 5, True),
        (5, 5.0, True),
        ("5.00", 5, True),
        (0.1 + 0.2, 0.3, True),
        (1 / 3, 0.333333333, True),
        (1 / 3, 0.3333, False),
        (36.666666666667, 36.67, False),
        (1e-12, 0.0, True),  # absolute tolerance
        (1e-6, 0.0, False),
        (10000032, 10000041, False),  # integers compare exactly, even when large
        (10000032, 10000032.0, True),
        (10000032, 10000035.5, False),  # an int tightens the relative tolerance
        (5, 5.0000001, False),
        (2.0, 2.0000001, True),
        (float("inf"), float("inf"), True),
        (float("inf"), 1e308, False),
        (True, 1, True),
        (False, 0, True),
        (True, "yes", True),
        ("no", 0.0, True),
        (True, 5, False),  # no truthiness
        (True, "5", False),
        (False, None, False),
        (None, "", True),
        (None, float("nan"), True),
        (None, 0, False),
        ("2105-12-31", "2105-12-31 00:00:00", True),
        ("2105-12-31", "2105-12-31T00:00", True),
        ("2105-12-31", "2105-12-31 10:00:00", False),
        ("2105-12-31 23:59:00", "2105-12-31 23:59", True),
        ("2105-12-31 23:59:00", "12/31/2105 23:59", True),
        ("ASPIRIN", " aspirin", True),
        ("aspirin 81mg", "aspirin", False),
        ("5 years", 5, False),
        ("The answer is 5", 5, False),
        ("0389", 389, False),
        ("0389", "0389", True),
        ("2105-12-31", 2105, False),
    ],
)
def test_values_equal(a, b, equal):
    assert values_equal(a, b) is equal
    assert values_equal(b, a) is equal


def test_values_equal_tolerance_is_configurable():
    assert not values_equal(36.666666, 36.67)
    assert values_equal(36.666666, 36.67, rel_tol=1e-3)
    assert not values_equal("Aspirin", "aspirin", case_sensitive=True)


# --------------------------------------------------------------------------- sql_result_match


def _ok(result: GradeResult) -> bool:
    assert isinstance(result, GradeResult)
    assert result.score == (1.0 if result.correct else 0.0)
    assert result.reason and "\n" not in result.reason
    return result.correct


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        (5, [(5,)]),
        ("5", [(5,)]),
        (5.0, [(5,)]),
        ([5], [(5,)]),
        ([[5]], [(5,)]),
        ((5,), [(5,)]),
        ({"count": 5}, [(5,)]),
        ([{"count(*)": 5}], [(5,)]),
        ("5.00", [("5",)]),
        (True, [(1,)]),  # COUNT(*) > 0 in SQLite
        ("no", [(0,)]),
        ("Aspirin", [("ASPIRIN",)]),
        ("2105-12-31T23:59:00", [("2105-12-31 23:59:00",)]),
        ("2105-12-31", [("2105-12-31 00:00:00",)]),
        (36.666666666666664, [(36.666666666667,)]),
        # one column, many rows: flat list, list of 1-tuples, records, order-insensitive
        (["b", "a", "c"], [("a",), ("b",), ("c",)]),
        ([["c"], ["a"], ["b"]], [("a",), ("b",), ("c",)]),
        ([{"drug": "a"}, {"drug": "c"}, {"drug": "b"}], [("a",), ("b",), ("c",)]),
        ([["a", "b", "c"]], [("a",), ("b",), ("c",)]),  # a list holding one column
        ({"drug": ["a", "b", "c"]}, [("a",), ("b",), ("c",)]),  # DataFrame.to_dict("list")
        (["a", "a", "b"], [("a",), ("b",), ("a",)]),
        # many columns
        ([("x", 1), ("y", 2)], [("y", 2), ("x", 1)]),
        ([["x", 1.0], ["y", "2"]], [("x", 1), ("y", 2)]),
        ([{"name": "x", "n": 1}, {"name": "y", "n": 2}], [("x", 1), ("y", 2)]),
        ([{"index": 7, "name": "x", "n": 1}], [("x", 1)]),  # pandas added the index
        ({"name": "x", "n": 1}, [("x", 1)]),  # one row as a dict
        (["x", 1], [("x", 1)]),  # one row as a flat list
        ({"x": 1, "y": 2}, [("x", 1), ("y", 2)]),  # Series.to_dict(): (key, value) rows
        ([["x", "y"], [1, 2]], [("x", 1), ("y", 2)]),  # a list of columns
        ({"name": {"0": "x", "1": "y"}, "n": {"0": 1, "1": 2}}, [("x", 1), ("y", 2)]),
        # nulls inside a result
        ([None, 3], [(None,), (3,)]),
        ([float("nan"), 3], [(None,), (3,)]),
    ],
)
def test_sql_result_match_accepts(pred, gold):
    assert _ok(sql_result_match(pred, gold)), sql_result_match(pred, gold)


@pytest.mark.parametrize("pred", [None, [], "", float("nan"), [None], {}, [[None]], "None"])
@pytest.mark.parametrize("gold", [[], [(None,)], [(None, None)]])
def test_empty_gold_matches_empty_answers(pred, gold):
    assert _ok(sql_result_match(pred, gold))


@pytest.mark.parametrize("pred", [0, [0], "0", ["x"], False])
def test_empty_gold_rejects_values(pred):
    assert not _ok(sql_result_match(pred, []))


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        (None, [(5,)]),
        ([], [(5,)]),
        ("15", [("5",)]),
        (15, [(5,)]),
        (6, [(5,)]),
        ("5", [("15",)]),
        ([4, 5, 6], [(5,)]),  # a list of candidates holding the gold
        ([5, 5], [(5,)]),  # duplicates matter in a multiset
        ("The answer is 5", [(5,)]),  # the gold as a substring
        ("[5]", [(5,)]),
        ("(5,)", [(5,)]),
        ("aspirin 81 mg", [("aspirin",)]),
        (["a", "b", "c", "d"], [("a",), ("b",), ("c",)]),  # a superset of rows
        (["a", "b"], [("a",), ("b",), ("c",)]),  # a subset
        ([("x", 1), ("y", 2), ("z", 3)], [("x", 1), ("y", 2)]),
        ([("x", 1, "extra")], [("x", 1)]),  # extra columns
        ([{"subject_id": 1, "gender": "F"}], [("F",)]),  # the whole record
        ([("x", 2)], [("x", 1)]),
        ([(1, "x")], [("x", 1)]),  # by value order
        (True, [(5,)]),
        (1, [(True,)] * 2),
        ({"a": 1, "b": 2}, [(1,), (2,)]),  # values of a dict are one row, not a column
        (10000041, [(10000032,)]),
        ("2105-12-31 10:00:00", [("2105-12-31",)]),
        (["2105-12-31"], [("2105-12-30",)]),
    ],
)
def test_sql_result_match_rejects(pred, gold):
    assert not _ok(sql_result_match(pred, gold))


def test_the_published_cheats_earn_nothing():
    golds = [[(5,)], [(0,)], [(999,)], [("5",)], [(1,), (2,)], [(3.5,)], [("M",)]]
    cheats = [
        list(range(1000)),
        " ".join(str(i) for i in range(1000)),
        [str(i) for i in range(1000)],
        [[i] for i in range(1000)],
        {str(i): i for i in range(1000)},
        0,
        None,
    ]
    for gold in golds:
        for cheat in cheats:
            if cheat == 0 and gold == [(0,)]:
                continue  # the honest answer to that one
            assert not _ok(sql_result_match(cheat, gold)), (cheat, gold)


def test_scalar_gold_is_one_row():
    assert _ok(sql_result_match("5", 5))
    assert _ok(sql_result_match("abc", "ABC"))
    assert not _ok(sql_result_match(["a", "b", "c"], "abc"))
    assert _ok(sql_result_match({"n": 1, "x": "a"}, {"n": 1, "x": "a"}))


def test_ordered_and_distinct():
    gold = [("a",), ("b",), ("a",)]
    assert _ok(sql_result_match(["a", "b", "a"], gold, ordered=True))
    assert not _ok(sql_result_match(["a", "a", "b"], gold, ordered=True))
    assert not _ok(sql_result_match(["a", "b"], gold))
    assert _ok(sql_result_match(["b", "a"], gold, distinct=True))
    assert not _ok(sql_result_match(["b", "a", "c"], gold, distinct=True))


def test_tolerance_matching_is_one_to_one():
    # 1.0000001 is close to both gold values; a greedy pairing could consume the wrong one
    gold = [(1.0000001,), (1.0000015,)]
    assert _ok(sql_result_match([1.0000008, 1.0000001], gold, rel_tol=1e-6))
    assert not _ok(sql_result_match([1.0000001, 1.0000001], gold, rel_tol=1e-7))


def test_large_results_match_quickly():
    rng = random.Random(1)
    gold = [(i, f"name {i}", rng.random() * 100) for i in range(5000)]
    pred = [{"id": i, "name": f"NAME {i}", "v": v + 1e-9} for i, _, v in gold]
    rng.shuffle(pred)
    assert _ok(sql_result_match(pred, gold))
    pred[17]["v"] += 1
    assert not _ok(sql_result_match(pred, gold))


def test_random_shapes_roundtrip():
    """Seeded property test: every faithful rendering of the gold rows is accepted and
    every single-cell corruption is rejected."""
    rng = random.Random(20240601)

    def cell(kind):
        if kind == "int":
            return rng.randint(-1000, 10**8)
        if kind == "float":
            return rng.uniform(-1e4, 1e4)
        if kind == "str":
            return (
                "".join(rng.choice("abcdefg XYZ") for _ in range(rng.randint(1, 8))).strip() or "q"
            )
        return (
            f"21{rng.randint(0, 99):02d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} 10:00:00"
        )

    for _ in range(200):
        kinds = [rng.choice(["int", "float", "str", "date"]) for _ in range(rng.randint(1, 3))]
        gold = [tuple(cell(k) for k in kinds) for _ in range(rng.randint(1, 6))]
        names = [f"c{i}" for i in range(len(kinds))]
        renderings = [
            [list(r) for r in gold],
            [dict(zip(names, r, strict=True)) for r in gold],
            {n: [r[i] for r in gold] for i, n in enumerate(names)},
            [tuple(str(v) for v in r) for r in gold],
        ]
        if len(kinds) == 1:
            renderings.append([r[0] for r in gold])
        for rendering in renderings:
            if isinstance(rendering, list):
                rng.shuffle(rendering)
            assert _ok(sql_result_match(rendering, gold)), (rendering, gold)
        bad = [list(r) for r in gold]
        i, j = rng.randrange(len(bad)), rng.randrange(len(kinds))
        value = bad[i][j]
        if isinstance(value, str) and value[0].isdigit():
            bad[i][j] = value.replace("10:00", "11:00")
        elif isinstance(value, str):
            bad[i][j] = value + "x"
        else:
            bad[i][j] = value + 1
        assert not _ok(sql_result_match(bad, gold)), (bad, gold)


def test_reason_never_quotes_the_gold():
    secret = "zyxwvut"
    for pred in [None, "abc", ["abc", "def"], [("abc", 1)], 42]:
        result = sql_result_match(pred, [(secret,)])
        assert not result.correct
        assert secret not in result.reason
        assert secret in result.detail
    result = numeric_match(1.0, 123.456789, 117.0, 129.0)
    assert "123.456789" not in result.reason and "117" not in result.reason


def test_reason_explains_the_shape():
    result = sql_result_match([("a", 1, 2)], [("a", 1)])
    assert "3 column" in result.reason and "2 column" in result.reason
    result = sql_result_match(list(range(10)), [(5,)])
    assert "10 row" in result.reason


# --------------------------------------------------------------------------- numeric_match


@pytest.mark.parametrize(
    ("pred", "gold", "lower", "upper", "correct"),
    [
        (12.3, 12.3, None, None, True),
        ("12.3", 12.3, None, None, True),
        ([12.3], 12.3, None, None, True),
        ({"score": 12.3}, 12.3, None, None, True),
        (12.3000001, 12.3, None, None, True),
        (12.31, 12.3, None, None, False),
        (12.0, 12.3, 11.685, 12.915, True),
        (11.685, 12.3, 11.685, 12.915, True),  # inclusive
        (12.915, 12.3, 11.685, 12.915, True),
        (12.92, 12.3, 11.685, 12.915, False),
        (0, 12.3, 11.685, 12.915, False),  # the published `or` accepted this
        (1e9, 12.3, 11.685, 12.915, False),
        (-5.0, -5.0, -4.75, -5.25, True),  # bounds of a negative answer, swapped
        (-4.8, -5.0, -5.25, -4.75, True),
        (5.0, -5.0, -5.25, -4.75, False),
        (True, 1, None, None, False),  # a boolean is not a number
        ("twelve", 12, None, None, False),
        ("12 points", 12, None, None, False),
        (None, 12, None, None, False),
        (float("nan"), 12, None, None, False),
        ([1, 2], 1, None, None, False),
        (13, None, 10, 15, True),
        (16, None, 10, 15, False),
        (100, None, 10, None, True),  # explicit one-sided bound, no gold
        (12.5, 12.3, 12.0, None, False),  # one bound: the other side is the gold
        (12.1, 12.3, 12.0, None, True),
    ],
)
def test_numeric_match(pred, gold, lower, upper, correct):
    assert _ok(numeric_match(pred, gold, lower, upper)) is correct


def test_numeric_match_tolerances_and_errors():
    assert _ok(numeric_match(0.805, 0.8, rel_tol=0.01))
    assert not _ok(numeric_match(0.82, 0.8, rel_tol=0.01))
    assert _ok(numeric_match(101, 100, abs_tol=1))
    with pytest.raises(ValueError):
        numeric_match(1)
    with pytest.raises(ValueError):
        numeric_match(1, "abc")


def test_constant_zero_fails_medcalc_style_bounds():
    rng = random.Random(3)
    passed = 0
    for _ in range(500):
        gold = rng.choice([-1, 1]) * rng.uniform(0.1, 500)
        passed += numeric_match(0, gold, gold * 0.95, gold * 1.05).correct
    assert passed == 0


# --------------------------------------------------------------------------- exact / date


@pytest.mark.parametrize(
    ("pred", "gold", "correct"),
    [
        ("Yes", True, True),
        (True, "yes", True),
        (False, True, False),
        ("5", 5, True),
        (5.0000001, 5.0, False),  # exact: no tolerance
        ([3], 3, True),
        (["a", "b"], ["A", "b"], True),
        (["b", "a"], ["a", "b"], False),
        (["a"], ["a", "b"], False),
        ("abc", "abcd", False),
        ([[1]], 1, True),
    ],
)
def test_exact_match(pred, gold, correct):
    assert _ok(exact_match(pred, gold)) is correct


def test_exact_match_case_sensitive():
    assert not _ok(exact_match("Aspirin", "aspirin", case_sensitive=True))
    assert _ok(exact_match("Aspirin", "Aspirin ", case_sensitive=True))


@pytest.mark.parametrize(
    ("pred", "gold", "ignore_time", "correct"),
    [
        ("2022-02-05", "02/05/2022", None, True),
        ("02/05/2022", "2022-02-05", None, True),
        (dt.date(2022, 2, 5).isoformat(), "2022-02-05", None, True),
        ("2022-02-05T14:00:00", "2022-02-05", None, True),  # gold has no time: dates only
        ("2022-02-05T14:00:00", "2022-02-05", False, False),
        ("2022-02-05", "2022-02-05 00:00:00", None, True),
        ("2022-02-05 13:00", "2022-02-05 14:00:00", None, False),
        ("2022-02-05 13:00", "2022-02-05 14:00:00", True, True),
        ("2022-02-06", "2022-02-05", None, False),
        (["2022-02-05"], "2022-02-05", None, True),
        ("5 Feb 2022", "2022-02-05", None, True),
        ("February 5, 2022", "2022-02-05", None, True),
        ("Feb 2022", "2022-02-05", None, False),
        ("6 Feb 2022", "2022-02-05", None, False),
        (20220205, "2022-02-05", None, False),
        (None, "2022-02-05", None, False),
    ],
)
def test_date_match(pred, gold, ignore_time, correct):
    assert _ok(date_match(pred, gold, ignore_time=ignore_time)) is correct


def test_date_match_rejects_non_date_gold():
    with pytest.raises(ValueError):
        date_match("2022-02-05", "soon")


def test_grade_result_model():
    r = GradeResult.right("ok")
    assert r.correct and r.score == 1.0
    assert GradeResult.model_validate_json(r.model_dump_json()) == r
    assert math.isclose(GradeResult.wrong("no").score, 0.0)
