from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slmops.domain.expression import (
    MAX_DEPTH,
    EvaluationError,
    ExpressionError,
    compile_condition,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("result < 0.5", {"result": 0.4}, True),
        ("result <= 1.2 * stable", {"result": 1.2, "stable": 1.0}, True),
        ("result <= 1.2 * stable", {"result": 1.3, "stable": 1.0}, False),
        ("result > 1 and result < 3", {"result": 2}, True),
        ("result > 1 && result > 3 || result == 2", {"result": 2}, True),
        ("not result > 1", {"result": 2}, False),
        ("!(result > 1)", {"result": 0}, True),
        ("abs(result - stable) / stable < 0.1", {"result": 1.05, "stable": 1}, True),
        ("max(result, stable, 3) == 3", {"result": 1, "stable": 2}, True),
        ("min(result, 2) != 2", {"result": 1}, True),
        ("-result < -1", {"result": 2}, True),
        ("result < 1e-3", {"result": 0.0001}, True),
        ("true", {}, True),
        ("false or result >= .5", {"result": 0.5}, True),
        ("2 - 1 - 1 == 0", {}, True),  # left associative
        ("8 / 4 / 2 == 1", {}, True),
        ("1 + 2 * 3 == 7", {}, True),
    ],
)
def test_evaluates(text: str, env: dict[str, float], expected: bool) -> None:
    assert compile_condition(text).evaluate(env) is expected


def test_names_are_reported_for_relative_conditions() -> None:
    assert compile_condition("result <= 1.2 * stable").names == {"result", "stable"}
    assert compile_condition("result < 1").names == {"result"}


@pytest.mark.parametrize(
    ("text", "column", "problem"),
    [
        ("result +", 9, "expected a number"),
        ("result", 1, "must be true or false"),
        ("resutl < 1", 1, "unknown name 'resutl'"),
        ("1 < 2 < 3", 7, "chained comparisons"),
        ("(result > 1) + 1", 1, "needs a number, not a bool"),
        ("result > 1 and 2", 12, "needs a bool, not a number"),
        ("result < 1)", 11, "unexpected ')'"),
        ("(result < 1", 12, "expected ')'"),
        ("abs(result, 2) > 1", 1, "abs() takes 1 arguments"),
        ("max(result) > 1", 1, "max() takes at least 2 arguments"),
        ("result.real > 1", 7, "unexpected character '.'"),
        ("result[0] > 1", 7, "unexpected character '['"),
        ("'a' == 'a'", 1, "unexpected character"),
        ("", 1, "empty condition"),
        ("1e999 > 1", 1, "out of range"),
        ("and result > 1", 1, "needs an operand"),
    ],
)
def test_rejects_with_the_column(text: str, column: int, problem: str) -> None:
    with pytest.raises(ExpressionError) as raised:
        compile_condition(text)
    assert raised.value.column == column
    assert problem in str(raised.value)


def test_deep_nesting_is_refused_not_a_crash() -> None:
    with pytest.raises(ExpressionError, match="nesting deeper"):
        compile_condition("(" * (MAX_DEPTH + 5) + "result > 1" + ")" * (MAX_DEPTH + 5))
    with pytest.raises(ExpressionError, match="nesting deeper"):
        compile_condition("not " * (MAX_DEPTH + 5) + "result > 1")
    with pytest.raises(ExpressionError, match="longer than"):
        compile_condition("result > 1 and " * 100 + "true")


def test_evaluation_errors_are_explicit() -> None:
    with pytest.raises(EvaluationError, match="division by zero"):
        compile_condition("result / stable > 1").evaluate({"result": 1, "stable": 0})
    with pytest.raises(EvaluationError, match="no value for 'stable'"):
        compile_condition("result < stable").evaluate({"result": 1})


def test_nan_compares_false_as_in_promql() -> None:
    assert compile_condition("result < 1").evaluate({"result": math.nan}) is False


@pytest.mark.parametrize(
    "attack",
    [
        "__import__('os').system('touch {marker}')",
        "open('{marker}', 'w')",
        "result.__class__.__bases__ > 1",
        "(lambda: 1)() > 0",
        "exec('x=1') or true",
        "[x for x in ()] or true",
        "result if true else 1",
        "eval(\"open('{marker}','w')\") or true",
        "result < 1; open('{marker}', 'w')",
        "getattr(result, 'x') > 1",
    ],
)
def test_never_executes_python(attack: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(ExpressionError):
        compile_condition(attack.format(marker=marker)).evaluate({"result": 1, "stable": 1})
    assert not marker.exists()


def compiles_or_fails_cleanly(text: str) -> None:
    try:
        condition = compile_condition(text)
    except ExpressionError as error:
        assert 1 <= error.column <= len(text) + 1
        return
    with contextlib.suppress(EvaluationError):
        assert isinstance(condition.evaluate({"result": 1.5, "stable": 2.0}), bool)


@given(st.text(max_size=60))
def test_any_text_compiles_or_fails_with_an_expression_error(text: str) -> None:
    compiles_or_fails_cleanly(text)


@given(st.text(alphabet="result stable0123456789.+-*/<>=!()andort,absminx&|", max_size=40))
def test_grammar_shaped_noise_compiles_or_fails_cleanly(text: str) -> None:
    compiles_or_fails_cleanly(text)


# A reference: random arithmetic in the grammar, evaluated by Python's own operators.
numbers = st.integers(min_value=-20, max_value=20).map(str) | st.sampled_from(["result", "stable"])


def arithmetic(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return numbers
    inner = arithmetic(depth - 1)
    return st.one_of(
        inner,
        st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda e: f"abs({e})"),
        st.tuples(inner, inner).map(lambda t: f"max({t[0]}, {t[1]})"),
        st.tuples(inner, inner).map(lambda t: f"min({t[0]}, {t[1]})"),
        inner.map(lambda e: f"-({e})"),
    )


@given(
    left=arithmetic(2),
    operator=st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
    right=arithmetic(2),
    result=st.integers(min_value=-5, max_value=5),
    stable=st.integers(min_value=-5, max_value=5),
)
def test_agrees_with_a_reference_evaluation(
    left: str, operator: str, right: str, result: int, stable: int
) -> None:
    text = f"{left} {operator} {right}"
    reference = eval(  # the test oracle, over generated arithmetic only
        text,
        {"__builtins__": {}, "abs": abs, "min": min, "max": max},
        {"result": result, "stable": stable},
    )
    assert compile_condition(text).evaluate({"result": result, "stable": stable}) is reference
