"""Graders: typed comparisons between an agent's ``answer`` and the gold answer.

A grader given agent input never raises: an answer over the size and depth budget
(:func:`bound_answer`) or of the wrong kind is graded wrong, with a reason.
"""

from medagentgym.graders.bounds import bound_answer, short_repr, to_float, to_int
from medagentgym.graders.values import (
    DEFAULT_ABS_TOL,
    DEFAULT_REL_TOL,
    GradeResult,
    date_match,
    ehr_answer_match,
    exact_match,
    normalize_scalar,
    numeric_match,
    sql_result_match,
    values_equal,
)

__all__ = [
    "DEFAULT_ABS_TOL",
    "DEFAULT_REL_TOL",
    "GradeResult",
    "bound_answer",
    "date_match",
    "ehr_answer_match",
    "exact_match",
    "normalize_scalar",
    "numeric_match",
    "short_repr",
    "sql_result_match",
    "to_float",
    "to_int",
    "values_equal",
]
