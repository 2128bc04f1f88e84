"""A small, safe expression language for analysis conditions (never `eval`).

    condition  := or
    or         := and (("or" | "||") and)*
    and        := not (("and" | "&&") not)*
    not        := ("not" | "!") not | comparison
    comparison := sum [("<" | "<=" | ">" | ">=" | "==" | "!=") sum]
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | primary
    primary    := NUMBER | NAME | FUNC "(" sum ("," sum)* ")" | "(" condition ")"
                | "true" | "false"

Numbers are floats (1, 0.5, 1e-3); names are the measurement's values (`result`, and
`stable` for the stable revision's); functions are abs, min and max. Types are checked
when the text is compiled, so `result + (stable > 1)` and a condition that is a number
are refused before the rollout starts, with the column of the problem.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

MAX_LENGTH = 1024
MAX_DEPTH = 64
DEFAULT_NAMES = frozenset({"result", "stable"})

Kind = Literal["number", "bool"]
Value = float | bool


class ExpressionError(ValueError):
    """A condition outside the grammar; column is 1-based."""

    def __init__(self, text: str, column: int, problem: str) -> None:
        super().__init__(f"{problem} at column {column} of {text!r}")
        self.column = column
        self.problem = problem


class EvaluationError(ValueError):
    """A condition that cannot be evaluated with these values (division by zero, missing name)."""


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|==|!=|&&|\|\||[-+*/<>(),!])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    column: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ExpressionError(text, position + 1, f"unexpected character {text[position]!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, match.group(), position + 1))
        position = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


_Eval = Callable[[Mapping[str, float]], Value]
_WORD_OPS = {"and": "and", "or": "or", "not": "not", "&&": "and", "||": "or", "!": "not"}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_FUNCTIONS: dict[str, tuple[int, int | None]] = {"abs": (1, 1), "min": (2, None), "max": (2, None)}


@dataclass(frozen=True)
class _Node:
    kind: Kind
    run: _Eval


class _Parser:
    def __init__(self, text: str, allowed: frozenset[str]) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0
        self.allowed = allowed
        self.names: set[str] = set()

    def fail(self, token: _Token, problem: str) -> ExpressionError:
        return ExpressionError(self.text, token.column, problem)

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def word(self) -> str | None:
        token = self.token
        if token.kind == "op" and token.text in _WORD_OPS:
            return _WORD_OPS[token.text]
        if token.kind == "name" and token.text in ("and", "or", "not"):
            return token.text
        return None

    def take(self) -> _Token:
        token = self.token
        self.index += 1
        return token

    def expect(self, text: str) -> None:
        if self.token.text != text or self.token.kind != "op":
            found = self.token.text or "end of text"
            raise self.fail(self.token, f"expected {text!r} but found {found!r}")
        self.take()

    def need(self, node: _Node, kind: Kind, token: _Token, what: str) -> _Node:
        if node.kind != kind:
            raise self.fail(token, f"{what} needs a {kind}, not a {node.kind}")
        return node

    def parse(self) -> _Node:
        node = self.condition()
        if self.token.kind != "end":
            raise self.fail(self.token, f"unexpected {self.token.text!r}")
        return node

    def condition(self) -> _Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(self.token, f"nesting deeper than {MAX_DEPTH}")
        try:
            return self.disjunction()
        finally:
            self.depth -= 1

    def disjunction(self) -> _Node:
        start = self.token
        left = self.conjunction()
        while self.word() == "or":
            operator = self.take()
            right = self.conjunction()
            a = self.need(left, "bool", start, "'or'").run
            b = self.need(right, "bool", operator, "'or'").run
            left = _Node("bool", _either(a, b))
        return left

    def conjunction(self) -> _Node:
        start = self.token
        left = self.negation()
        while self.word() == "and":
            operator = self.take()
            right = self.negation()
            a = self.need(left, "bool", start, "'and'").run
            b = self.need(right, "bool", operator, "'and'").run
            left = _Node("bool", _both(a, b))
        return left

    def negation(self) -> _Node:
        if self.word() == "not":
            operator = self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(operator, f"nesting deeper than {MAX_DEPTH}")
            operand = self.negation()
            self.depth -= 1
            inner = self.need(operand, "bool", operator, "'not'").run
            return _Node("bool", lambda env: not inner(env))
        return self.comparison()

    def comparison(self) -> _Node:
        start = self.token
        left = self.sum()
        if self.token.kind == "op" and self.token.text in _COMPARE:
            operator = self.take()
            right = self.sum()
            if self.token.kind == "op" and self.token.text in _COMPARE:
                raise self.fail(self.token, "chained comparisons are ambiguous; use 'and'")
            compare = _COMPARE[operator.text]
            a = self.need(left, "number", start, f"{operator.text!r}").run
            b = self.need(right, "number", operator, f"{operator.text!r}").run
            return _Node("bool", lambda env: compare(float(a(env)), float(b(env))))
        return left

    def sum(self) -> _Node:
        start = self.token
        left = self.product()
        while self.token.kind == "op" and self.token.text in "+-":
            operator = self.take()
            right = self.product()
            a = self.need(left, "number", start, f"{operator.text!r}").run
            b = self.need(right, "number", operator, f"{operator.text!r}").run
            if operator.text == "+":
                left = _Node("number", _arithmetic(_add, a, b))
            else:
                left = _Node("number", _arithmetic(_subtract, a, b))
        return left

    def product(self) -> _Node:
        start = self.token
        left = self.unary()
        while self.token.kind == "op" and self.token.text in "*/":
            operator = self.take()
            right = self.unary()
            a = self.need(left, "number", start, f"{operator.text!r}").run
            b = self.need(right, "number", operator, f"{operator.text!r}").run
            if operator.text == "*":
                left = _Node("number", _arithmetic(_multiply, a, b))
            else:
                left = _Node("number", _arithmetic(_divide, a, b))
        return left

    def unary(self) -> _Node:
        if self.token.kind == "op" and self.token.text == "-":
            operator = self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(operator, f"nesting deeper than {MAX_DEPTH}")
            operand = self.unary()
            self.depth -= 1
            inner = self.need(operand, "number", operator, "'-'").run
            return _Node("number", lambda env: -float(inner(env)))
        return self.primary()

    def primary(self) -> _Node:
        token = self.token
        if token.kind == "number":
            self.take()
            number = float(token.text)
            if not math.isfinite(number):
                raise self.fail(token, f"number {token.text} is out of range")
            return _Node("number", lambda env: number)
        if token.kind == "op" and token.text == "(":
            self.take()
            inner = self.condition()
            self.expect(")")
            return inner
        if token.kind == "name":
            return self.name(token)
        found = token.text or "end of text"
        raise self.fail(token, f"expected a number, name or '(' but found {found!r}")

    def name(self, token: _Token) -> _Node:
        self.take()
        if token.text in ("true", "false"):
            truth = token.text == "true"
            return _Node("bool", lambda env: truth)
        if token.text in _FUNCTIONS:
            return self.call(token)
        if token.text in ("and", "or", "not"):
            raise self.fail(token, f"{token.text!r} needs an operand before it")
        if token.text not in self.allowed:
            raise self.fail(
                token,
                f"unknown name {token.text!r}; known: {', '.join(sorted(self.allowed))}"
                f" and functions {', '.join(sorted(_FUNCTIONS))}",
            )
        self.names.add(token.text)
        key = token.text

        def lookup(env: Mapping[str, float]) -> float:
            if key not in env:
                raise EvaluationError(f"no value for {key!r}")
            return float(env[key])

        return _Node("number", lookup)

    def call(self, function: _Token) -> _Node:
        self.expect("(")
        arguments: list[_Eval] = []
        while True:
            start = self.token
            arguments.append(self.need(self.sum(), "number", start, f"{function.text}()").run)
            if self.token.kind == "op" and self.token.text == ",":
                self.take()
                continue
            break
        self.expect(")")
        low, high = _FUNCTIONS[function.text]
        if len(arguments) < low or (high is not None and len(arguments) > high):
            expected = f"{low}" if low == high else f"at least {low}"
            raise self.fail(
                function, f"{function.text}() takes {expected} arguments, got {len(arguments)}"
            )
        if function.text == "abs":
            only = arguments[0]
            return _Node("number", lambda env: abs(float(only(env))))
        pick = min if function.text == "min" else max
        return _Node("number", lambda env: pick(float(a(env)) for a in arguments))


def _either(a: _Eval, b: _Eval) -> _Eval:
    return lambda env: bool(a(env)) or bool(b(env))


def _both(a: _Eval, b: _Eval) -> _Eval:
    return lambda env: bool(a(env)) and bool(b(env))


def _arithmetic(operation: Callable[[float, float], float], a: _Eval, b: _Eval) -> _Eval:
    return lambda env: operation(float(a(env)), float(b(env)))


def _add(a: float, b: float) -> float:
    return a + b


def _subtract(a: float, b: float) -> float:
    return a - b


def _multiply(a: float, b: float) -> float:
    return a * b


def _divide(a: float, b: float) -> float:
    if b == 0:
        raise EvaluationError("division by zero")
    return a / b


@dataclass(frozen=True)
class Condition:
    """A compiled condition: parse once, evaluate for every measurement."""

    text: str
    names: frozenset[str]
    _run: _Eval

    def evaluate(self, env: Mapping[str, float]) -> bool:
        """The truth of the condition; raises EvaluationError when it has none.

        A NaN value compares false with everything, as in PromQL: callers that must not
        pass on NaN treat it as missing data before evaluating.
        """
        try:
            return bool(self._run(env))
        except OverflowError as error:
            raise EvaluationError(f"arithmetic overflow: {error}") from error


def compile_condition(text: str, names: Iterable[str] = DEFAULT_NAMES) -> Condition:
    """Compile text into a Condition; raises ExpressionError naming the column."""
    return _compile(text, frozenset(names))


@lru_cache(maxsize=512)
def _compile(text: str, allowed: frozenset[str]) -> Condition:
    if len(text) > MAX_LENGTH:
        raise ExpressionError(text[:40] + "…", MAX_LENGTH + 1, f"longer than {MAX_LENGTH}")
    if not text.strip():
        raise ExpressionError(text, 1, "empty condition")
    parser = _Parser(text, allowed)
    root = parser.parse()
    if root.kind != "bool":
        raise ExpressionError(
            text, 1, "a condition must be true or false, e.g. 'result < 0.5', not a number"
        )
    return Condition(text, frozenset(parser.names), root.run)
