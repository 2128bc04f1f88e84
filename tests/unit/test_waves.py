from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slmops.api.v1alpha1.edgerollout import WaveSpec
from slmops.domain.placement import NodePlacement
from slmops.domain.waves import batch, interleave_by_class, max_unavailable_count, plan_waves

pytestmark = pytest.mark.unit


def placements(spec: dict[str, str | None]) -> list[NodePlacement]:
    """node → hardware class (None: unassigned)."""
    return [
        NodePlacement(name, cls, cls, "" if cls else "does not fit") for name, cls in spec.items()
    ]


def waves(*specs: dict[str, Any]) -> list[WaveSpec]:
    return [WaveSpec.model_validate(s) for s in specs]


FLEET = placements({"a1": "arm", "a2": "arm", "x1": "x86", "x2": "x86", "x3": "x86", "u": None})
LABELS = {
    "a1": {"site": "north"},
    "a2": {"site": "south"},
    "x1": {"site": "north"},
    "x2": {"site": "south"},
    "x3": {"site": "south"},
    "u": {"site": "north"},
}


def test_count_and_percent_are_cumulative_and_start_on_every_hardware_class() -> None:
    plan = plan_waves(FLEET, LABELS, waves({"count": 2}, {"percent": 60}, {"percent": 100}))
    assert [w.nodes for w in plan] == [("a1", "x1"), ("a2",), ("x2", "x3")]
    assert [w.name for w in plan] == ["wave-0", "wave-1", "wave-2"]


def test_percent_rounds_up() -> None:
    plan = plan_waves(FLEET, LABELS, waves({"percent": 1}, {"percent": 100}))
    assert len(plan[0].nodes) == 1


def test_selector_waves_take_matching_nodes_not_yet_planned() -> None:
    plan = plan_waves(
        FLEET,
        LABELS,
        waves(
            {"name": "first", "count": 1},
            {"name": "north", "selector": {"matchLabels": {"site": "north"}}},
            {"name": "rest", "percent": 100},
        ),
    )
    assert plan[0].nodes == ("a1",)
    assert plan[1].nodes == ("x1",)  # a1 already planned, u has no variant
    assert set(plan[2].nodes) == {"a2", "x2", "x3"}


def test_nodes_left_after_the_last_wave_join_it() -> None:
    plan = plan_waves(FLEET, LABELS, waves({"count": 1}, {"count": 2}))
    assert len(plan[-1].nodes) == 4 and plan[-1].note == ""


def test_empty_waves_are_kept_and_explained() -> None:
    plan = plan_waves(
        FLEET,
        LABELS,
        waves({"count": 5}, {"count": 3}, {"selector": {"matchLabels": {"site": "east"}}}),
    )
    assert plan[1].nodes == () and "already switch 5 of 5" in plan[1].note
    assert plan[2].nodes == () and "site=east" in plan[2].note


def test_interleaving_is_round_robin_over_classes() -> None:
    fleet = placements({"a1": "a", "a2": "a", "a3": "a", "b1": "b", "c1": "c", "c2": "c"})
    assert interleave_by_class(fleet) == ["a1", "b1", "c1", "a2", "c2", "a3"]


@pytest.mark.parametrize(
    ("total", "value", "expected"),
    [(10, 1, 1), (10, 3, 3), (10, "25%", 2), (3, "25%", 1), (10, "100%", 10), (10, "4", 4)],
)
def test_max_unavailable(total: int, value: int | str, expected: int) -> None:
    assert max_unavailable_count(total, value) == expected


@pytest.mark.parametrize("value", [0, -1, "0%", "101%", "x", "25 %", "%"])
def test_bad_max_unavailable_is_refused_clearly(value: int | str) -> None:
    with pytest.raises(ValueError, match="maxUnavailable"):
        max_unavailable_count(10, value)


classes = st.sampled_from(["arm", "x86", "gpu", None])
sites = st.sampled_from(["north", "south", "east"])
wave_spec = st.one_of(
    st.builds(lambda c: {"count": c}, st.integers(min_value=1, max_value=30)),
    st.builds(lambda p: {"percent": p}, st.integers(min_value=1, max_value=100)),
    st.builds(lambda s: {"selector": {"matchLabels": {"site": s}}}, sites),
)


@given(
    fleet=st.dictionaries(
        st.text("abcdefgh0123", min_size=1, max_size=6), st.tuples(classes, sites), max_size=25
    ),
    specs=st.lists(wave_spec, min_size=1, max_size=6),
)
def test_waves_partition_the_assigned_nodes_exactly(
    fleet: dict[str, tuple[str | None, str]], specs: list[dict[str, Any]]
) -> None:
    nodes = placements({name: cls for name, (cls, _) in fleet.items()})
    labels = {name: {"site": site} for name, (_, site) in fleet.items()}
    plan = plan_waves(nodes, labels, waves(*specs))
    planned = [n for w in plan for n in w.nodes]
    assigned = sorted(name for name, (cls, _) in fleet.items() if cls is not None)
    assert sorted(planned) == assigned  # every assigned node once, no unassigned node
    assert [w.index for w in plan] == list(range(len(specs)))
    assert plan == plan_waves(list(reversed(nodes)), labels, waves(*specs))  # deterministic
    for w, spec in zip(plan, specs, strict=True):
        assert bool(w.nodes) or bool(w.note) or w is plan[-1]
        if "count" in spec and w is not plan[-1]:
            assert sum(len(p.nodes) for p in plan[: w.index + 1]) <= max(
                spec["count"], sum(len(p.nodes) for p in plan[: w.index])
            )


@given(
    nodes=st.lists(st.text("xyz", min_size=1, max_size=3), unique=True, max_size=40),
    value=st.one_of(
        st.integers(min_value=1, max_value=50),
        st.builds(lambda p: f"{p}%", st.integers(min_value=1, max_value=100)),
    ),
)
def test_batches_cover_the_nodes_in_order_within_the_limit(
    nodes: list[str], value: int | str
) -> None:
    batches = batch(nodes, value)
    assert [n for b in batches for n in b] == nodes
    limit = max_unavailable_count(len(nodes), value)
    assert all(1 <= len(b) <= limit for b in batches)
