"""How the EHR datasets grade (``ehr_answer_match``): every equivalent way of writing the gold
is accepted — scalars vs ``[x]``/``[[x]]``, numeric strings, dates in any common written form,
the de-duplicated rows (unless a count is asked), the columns in another order, DataFrame
records under other column names, exactly N rows of a tied "top N" — and every near miss is
rejected, as are constants and sprayed candidates."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from tests.graders.hostile import HOSTILE, hostile

from medagentgym.graders import ehr_answer_match, sql_result_match

COUNT = {"count": True}
LIST = {"count": False}


def ok(pred, gold, grading=None) -> bool:
    grade = ehr_answer_match(pred, gold, grading)
    assert grade.reason.startswith("correct" if grade.correct else "wrong"), grade.reason
    return grade.correct


# --------------------------------------------------------------------------- scalars


@pytest.mark.parametrize("pred", [
    7, 7.0, "7", " 7 ", "7.0", [7], [[7]], (7,), [(7,)], {"count(*)": 7}, [{"n": 7}],
    [{"COUNT(DISTINCT subject_id)": 7}], {"n": [7]}, [["7"]],
])
def test_scalar_gold_equivalent_forms(pred):
    assert ok(pred, [[7]], COUNT)


@pytest.mark.parametrize("pred", [
    8, 6, "7 patients", "seven", [7, 7], [[7], [7]], [7, 8], None, [], "", 0, 1, True, "7,",
    list(range(1000)), [[7, 1]], {"a": 7, "b": 8}, "7 or 8", 70, 0.7,
])
def test_scalar_gold_near_misses(pred):
    assert not ok(pred, [[7]], COUNT)


@pytest.mark.parametrize(("pred", "correct"), [
    (3.14159, True), ("3.14159", True), (3.141590000001, True), ([[3.14159]], True),
    (3.1416, False), (3.14, False), ("3.14159 mg", False), (math.nan, False),
])
def test_float_tolerance(pred, correct):
    assert ok(pred, [[3.14159]], LIST) is correct


def test_yes_no_gold_reads_booleans_and_words():
    for pred in (1, True, "yes", "True", [[1]], [True]):
        assert ok(pred, [[1]], COUNT), pred
    for pred in (0, False, "no", 2, "maybe", None):
        assert not ok(pred, [[1]], COUNT), pred


# --------------------------------------------------------------------------- dates

TIMED = [["2104-01-10 13:59:00"]]
MIDNIGHT = [["2104-01-10 00:00:00"]]


@pytest.mark.parametrize("pred", [
    "2104-01-10 13:59:00", "2104-01-10T13:59", "2104-01-10 13:59:00.000",
    "01/10/2104 13:59", "2104/01/10 13:59", "January 10, 2104 13:59", "10 Jan 2104 13:59",
    "Jan 10, 2104, 1:59 PM", "10-Jan-2104 13:59:00", "Monday, January 10, 2104 13:59",
    "10 January 2104 1:59 pm", "2104-01-10T13:59:00Z", [["January 10, 2104 13:59"]],
    dt.datetime(2104, 1, 10, 13, 59), {"charttime": "10 Jan 2104 13:59"},
])
def test_timestamp_written_forms(pred):
    assert ok(pred, TIMED, LIST)


@pytest.mark.parametrize("pred", [
    "2104-01-10 13:58:00", "January 10, 2104 13:58", "10 Jan 2104 14:59", "11 Jan 2104 13:59",
    "January 10, 2104", "10 Jan 2104", "2104-01-10", "10/01/2104 13:59", "Jan 2104",
    "January 10 13:59", "2104", "10 Jan 2105 13:59", "January 10, 2104 13:59 or 13:58",
    "sometime in January 2104",
])
def test_timestamp_near_misses(pred):
    assert not ok(pred, TIMED, LIST)


@pytest.mark.parametrize(("pred", "correct"), [
    ("2104-01-10", True), ("10 Jan 2104", True), ("January 10, 2104", True),
    ("01/10/2104", True), ("Jan 10th, 2104", True), ("10.01.2104", False),
    ("January 11, 2104", False), ("January 10, 2104 00:01", False),
])
def test_date_only_written_forms(pred, correct):
    # 10.01.2104 reads month-first (October 1), as every slash form does: not January 10
    assert ok(pred, MIDNIGHT, LIST) is correct


# --------------------------------------------------------------------------- repeated rows

DRUGS = [["aspirin"], ["aspirin"], ["heparin"], ["aspirin"]]


@pytest.mark.parametrize("pred", [
    ["aspirin", "heparin"], ["heparin", "aspirin"], [["aspirin"], ["heparin"]],
    [{"drug": "aspirin"}, {"drug": "heparin"}], ["Aspirin ", "HEPARIN"],
    DRUGS, ["aspirin", "heparin", "aspirin", "aspirin"],
])
def test_deduplicated_rows_are_accepted_when_no_count_is_asked(pred):
    assert ok(pred, DRUGS, LIST)


@pytest.mark.parametrize("pred", [
    ["aspirin"], ["aspirin", "heparin", "warfarin"], ["aspirin", "aspirin", "heparin"],
    ["aspirin", "heparin", "heparin"], ["heparin"], "aspirin, heparin", ["aspirin heparin"],
])
def test_deduplication_near_misses(pred):
    assert not ok(pred, DRUGS, LIST)


def test_repeated_rows_count_when_a_count_is_asked_or_nothing_says_otherwise():
    gold = [[5], [5], [3]]
    assert ok([5, 5, 3], gold, COUNT)
    assert not ok([5, 3], gold, COUNT)
    assert not ok([5, 3], gold, None)  # no grading stored: strict
    assert not ok([5, 3], gold, {"count": "no"})  # malformed: strict
    assert not sql_result_match([5, 3], gold).correct  # the general grader stays strict


# --------------------------------------------------------------------------- columns

PEOPLE = [["f", 65, "2104-01-10 13:59:00"], ["m", 70, "2103-05-02 08:00:00"]]


@pytest.mark.parametrize("pred", [
    [[65, "f", "2104-01-10 13:59:00"], [70, "m", "2103-05-02 08:00:00"]],
    [["2103-05-02 08:00:00", 70, "M"], ["January 10, 2104 13:59", 65, "F"]],
    [{"age": 65, "gender": "f", "t": "2104-01-10 13:59"},
     {"age": 70, "gender": "m", "t": "2103-05-02 08:00"}],
    [{"AGE": 65, "SEX": "F", "WHEN": "10 Jan 2104 13:59"},
     {"AGE": 70, "SEX": "M", "WHEN": "2 May 2103 08:00"}],
    {"age": [65, 70], "gender": ["f", "m"], "when": ["2104-01-10 13:59", "2103-05-02 08:00"]},
    [{"index": 0, "age": 65, "sex": "f", "t": "2104-01-10 13:59"},
     {"index": 1, "age": 70, "sex": "m", "t": "2103-05-02 08:00"}],  # to_dict("records")
])
def test_columns_in_another_order_and_other_names(pred):
    assert ok(pred, PEOPLE, LIST)


@pytest.mark.parametrize("pred", [
    [[65, "m", "2104-01-10 13:59:00"], [70, "f", "2103-05-02 08:00:00"]],  # values swapped
    [["f", 65], ["m", 70]],  # a column missing
    [["f", 65, "2104-01-10 13:59:00", 1], ["m", 70, "2103-05-02 08:00:00", 2]],  # extra column
    [[65, "f", "2104-01-10 13:59:00"]],  # a row missing
    [["f", 65, "2104-01-10 13:59:00"], ["m", 70, "2103-05-02 08:00:00"],
     ["m", 71, "2103-05-02 08:00:00"]],
])
def test_column_near_misses(pred):
    assert not ok(pred, PEOPLE, LIST)


def test_two_column_treqs_answer_in_the_other_order():
    gold = [["m", 9], ["m", 8]]  # gender, days of stay
    assert ok([[9, "m"], [8, "m"]], gold, LIST)
    assert ok([{"days_stay": 8, "gender": "M"}, {"days_stay": 9, "gender": "M"}], gold, LIST)
    assert not ok([[9, "m"], [9, "m"]], gold, LIST)
    assert not ok([[9, "f"], [8, "m"]], gold, LIST)


# --------------------------------------------------------------------------- top N with ties

# dense ranks: a, b share rank 1; c, d share rank 2; e is rank 3 — "top 3" by dense_rank
TOP = [["a"], ["b"], ["c"], ["d"], ["e"]]
TOP_SPEC = {"count": False, "top_n": 3, "ranks": [1, 1, 2, 2, 3]}


@pytest.mark.parametrize("pred", [
    ["a", "b", "c"], ["a", "b", "d"], ["d", "a", "b"],  # exactly N, ties broken either way
    ["a", "b", "c", "d"],  # N with the tied rows of the N-th rank (rank() <= N)
    ["a", "b", "c", "d", "e"], ["e", "d", "c", "b", "a"],  # the gold itself (dense_rank <= N)
    [{"drug": "a"}, {"drug": "b"}, {"drug": "c"}],
])
def test_top_n_accepts_tie_consistent_answers(pred):
    assert ok(pred, TOP, TOP_SPEC)


@pytest.mark.parametrize("pred", [
    ["a", "c", "d"],  # leaves out b, ranked above c and d
    ["a", "b", "e"],  # e is ranked below the tied c, d
    ["a", "b"], ["a", "b", "c", "e"], ["a", "b", "c", "c"], ["c", "d", "e"],
    ["a", "b", "c", "d", "e", "f"], ["a", "b", "x"], "a, b, c", None, ["a"],
])
def test_top_n_near_misses(pred):
    assert not ok(pred, TOP, TOP_SPEC)


def test_top_n_when_the_nth_rank_ends_exactly_at_n():
    gold = [["a"], ["b"], ["c"], ["d"]]
    spec = {"count": False, "top_n": 3, "ranks": [1, 2, 2, 3]}
    assert ok(["a", "b", "c"], gold, spec) and ok(["a", "b", "c", "d"], gold, spec)
    assert not ok(["a", "b", "d"], gold, spec) and not ok(["b", "c", "d"], gold, spec)


@pytest.mark.parametrize("spec", [
    {"top_n": 3, "ranks": [1, 1]},  # ranks of another length
    {"top_n": "3", "ranks": [1, 1, 2, 2, 3]},
    {"top_n": True, "ranks": [1, 1, 2, 2, 3]},
    {"top_n": 3, "ranks": ["1", 1, 2, 2, 3]},
    {"top_n": -1, "ranks": [1, 1, 2, 2, 3]},
    {"top_n": 3, "ranks": None},
    {"top_n": 3, "ranks": {"a": 1}},
    "not a mapping", 5, None,
])
def test_malformed_top_n_specs_are_ignored(spec):
    assert ok(["a", "b", "c", "d", "e"], TOP, spec)
    assert not ok(["a", "b", "c"], TOP, spec)


# --------------------------------------------------------------------------- hostile


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize(("gold", "spec"), [
    (TOP, TOP_SPEC), (DRUGS, LIST), (PEOPLE, LIST), ([[7]], COUNT), (TIMED, LIST),
])
def test_hostile_answers_never_raise(name, gold, spec):
    grade = ehr_answer_match(hostile(name), gold, spec)
    assert grade.correct is False
    assert grade.reason and len(grade.reason) <= 1000
