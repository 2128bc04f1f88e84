from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slmops.api.v1alpha1.common import LabelSelector, LabelSelectorRequirement
from slmops.domain.selectors import describe, matches

pytestmark = pytest.mark.unit

LABELS = {"kubernetes.io/arch": "arm64", "slmops.io/site": "a", "gpu": "true"}


def selector(
    labels: dict[str, str] | None = None, *terms: tuple[str, str, list[str]]
) -> LabelSelector:
    return LabelSelector(
        match_labels=labels or {},
        match_expressions=[
            LabelSelectorRequirement(key=k, operator=op, values=v) for k, op, v in terms
        ],
    )


@pytest.mark.parametrize(
    ("chosen", "expected"),
    [
        (selector(), True),
        (selector({"kubernetes.io/arch": "arm64"}), True),
        (selector({"kubernetes.io/arch": "amd64"}), False),
        (selector({"missing": "x"}), False),
        (selector(None, ("slmops.io/site", "In", ["a", "b"])), True),
        (selector(None, ("slmops.io/site", "In", ["b"])), False),
        (selector(None, ("slmops.io/site", "NotIn", ["b"])), True),
        (selector(None, ("slmops.io/site", "NotIn", ["a"])), False),
        (selector(None, ("absent", "NotIn", ["a"])), True),
        (selector(None, ("absent", "In", ["a"])), False),
        (selector(None, ("gpu", "Exists", [])), True),
        (selector(None, ("absent", "Exists", [])), False),
        (selector(None, ("gpu", "DoesNotExist", [])), False),
        (selector(None, ("absent", "DoesNotExist", [])), True),
        (selector({"gpu": "true"}, ("slmops.io/site", "In", ["b"])), False),
    ],
)
def test_kubernetes_semantics(chosen: LabelSelector, expected: bool) -> None:
    assert matches(chosen, LABELS) is expected


def test_describe_reads_like_kubectl() -> None:
    chosen = selector(
        {"b": "2", "a": "1"},
        ("site", "In", ["x", "y"]),
        ("zone", "NotIn", ["z"]),
        ("gpu", "Exists", []),
        ("tainted", "DoesNotExist", []),
    )
    assert describe(chosen) == "a=1,b=2,site in (x,y),zone notin (z),gpu,!tainted"
    assert describe(LabelSelector()) == "<all nodes>"


keys = st.sampled_from(["a", "b", "c"])
values = st.sampled_from(["1", "2", "3"])


@given(labels=st.dictionaries(keys, values), key=keys, chosen=st.lists(values, max_size=3))
def test_in_and_notin_are_complements_when_the_key_exists(
    labels: dict[str, str], key: str, chosen: list[str]
) -> None:
    present = matches(selector(None, (key, "In", chosen)), labels)
    absent = matches(selector(None, (key, "NotIn", chosen)), labels)
    if key in labels:
        assert present != absent
    else:
        assert not present and absent


@given(labels=st.dictionaries(keys, values), wanted=st.dictionaries(keys, values))
def test_match_labels_is_a_subset_test(labels: dict[str, str], wanted: dict[str, str]) -> None:
    assert matches(selector(wanted), labels) == (wanted.items() <= labels.items())
