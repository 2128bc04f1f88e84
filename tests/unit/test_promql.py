from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slmops.domain.promql import VARIABLES, TemplateError, escape, render, validate, variables_in

pytestmark = pytest.mark.unit

ALL = {
    "rollout": "demo",
    "namespace": "edge",
    "revision": "abc12345",
    "stableRevision": "def67890",
    "variant": "int4-cpu",
    "hardwareClass": "x86-vnni",
    "wave": "canary",
}


def test_renders_every_variable_with_or_without_spaces() -> None:
    template = (
        'sum(rate(x{namespace="{{namespace}}", rollout="{{ rollout }}", rev="{{revision}}",'
        ' stable="{{stableRevision}}", variant="{{variant}}", hw="{{hardwareClass}}",'
        ' wave="{{wave}}"}[1m]))'
    )
    assert variables_in(template) == set(VARIABLES)
    assert render(template, ALL) == (
        'sum(rate(x{namespace="edge", rollout="demo", rev="abc12345", stable="def67890",'
        ' variant="int4-cpu", hw="x86-vnni", wave="canary"}[1m]))'
    )


def test_promql_braces_are_left_alone() -> None:
    assert render("rate(x{a='b'}[5m])", ALL) == "rate(x{a='b'}[5m])"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("x{a='{{revison}}'}", "unknown template variable {{revison}} at character 5"),
        ("x{a='{{revision}'}", "unclosed '{{' at character 5"),
        ("x{a='{{revision'}", "unclosed '{{' at character 5"),
        ("x{a='{{}}'}", "empty placeholder"),
        ("x{a='{{rev-ision}}'}", "malformed placeholder"),
    ],
)
def test_bad_templates_name_the_problem(template: str, problem: str) -> None:
    with pytest.raises(TemplateError) as raised:
        validate(template)
    assert problem in str(raised.value)


def test_a_variable_without_a_value_is_an_error_not_an_empty_matcher() -> None:
    with pytest.raises(TemplateError, match="has no value"):
        render("x{v='{{variant}}'}", {"rollout": "demo"})


_LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _unescape(text: str) -> str:
    return re.sub(
        r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)), text
    )


@given(value=st.text(max_size=40))
def test_a_value_can_never_leave_its_string_literal(value: str) -> None:
    rendered = render('up{variant="{{variant}}", job="x"}', {**ALL, "variant": value})
    literals = _LITERAL.findall(rendered)
    assert literals[0] == escape(value)
    assert _unescape(literals[0]) == value
    assert literals[1] == "x"  # the matcher after it is intact
    assert rendered.startswith('up{variant="') and rendered.endswith('", job="x"}')


@given(st.text(max_size=60))
def test_any_template_validates_or_raises_a_template_error(template: str) -> None:
    try:
        validate(template)
    except TemplateError:
        return
    assert variables_in(template) <= VARIABLES
