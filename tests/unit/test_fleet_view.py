from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slmops.api.v1alpha1.common import LabelSelector
from slmops.controllers.fleet_view import FleetView
from slmops.domain.placement import FleetNode
from slmops.domain.selectors import matches

pytestmark = pytest.mark.unit

SITE_A = LabelSelector(match_labels={"site": "a"})
SITE_B = LabelSelector(match_labels={"site": "b"})


def node(name: str, site: str, *, ready: bool = True) -> FleetNode:
    return FleetNode(name, {"site": site}, 4 << 30, ready)


def indexed(view: FleetView, index: dict[str, list[FleetNode]], *nodes: FleetNode) -> None:
    """As kopf does it: the handler sees the node first, then the index stores it."""
    for each in nodes:
        view.observe(each)
        index[each.name] = [each]


Index = dict[str, list[FleetNode]]


def names(nodes: list[FleetNode]) -> list[str]:
    return sorted(n.name for n in nodes)


def test_matches_only_the_selected_nodes() -> None:
    view, index = FleetView(), Index()
    indexed(view, index, node("n1", "a"), node("n2", "b"), node("n3", "a"))
    assert names(view.matching(SITE_A, index)) == ["n1", "n3"]
    assert names(view.matching(SITE_B, index)) == ["n2"]


def test_an_unchanged_node_keeps_the_remembered_match() -> None:
    view, index = FleetView(), Index()
    indexed(view, index, node("n1", "a"), node("n2", "b"))
    first = view.matching(SITE_A, index)
    # A heartbeat: the same FleetNode again.
    indexed(view, index, node("n1", "a"))
    assert view.matching(SITE_A, index) is first


def test_a_relabelled_node_moves_between_selectors() -> None:
    view, index = FleetView(), Index()
    indexed(view, index, node("n1", "a"), node("n2", "b"))
    assert names(view.matching(SITE_A, index)) == ["n1"]
    indexed(view, index, node("n1", "b"))
    assert names(view.matching(SITE_A, index)) == []
    assert names(view.matching(SITE_B, index)) == ["n1", "n2"]


def test_a_changed_readiness_is_seen() -> None:
    view, index = FleetView(), Index()
    indexed(view, index, node("n1", "a"))
    assert view.matching(SITE_A, index)[0].ready
    indexed(view, index, node("n1", "a", ready=False))
    assert not view.matching(SITE_A, index)[0].ready


def test_a_deleted_node_is_gone_without_a_handler_call() -> None:
    view, index = FleetView(), Index()
    indexed(view, index, node("n1", "a"), node("n2", "a"))
    assert names(view.matching(SITE_A, index)) == ["n1", "n2"]
    del index["n1"]
    assert names(view.matching(SITE_A, index)) == ["n2"]


def test_a_node_the_index_does_not_hold_yet_appears_once_it_does() -> None:
    view, index = FleetView(), Index()
    indexed(view, index, node("n1", "a"))
    assert names(view.matching(SITE_A, index)) == ["n1"]
    # The handler ran, a reconcile came before kopf stored the node.
    view.observe(node("n2", "a"))
    assert names(view.matching(SITE_A, index)) == ["n1"]
    index["n2"] = [node("n2", "a")]
    assert names(view.matching(SITE_A, index)) == ["n1", "n2"]


def test_a_node_returning_equal_while_another_goes_is_seen() -> None:
    view, index = FleetView(), Index()
    indexed(view, index, node("n1", "a"), node("n2", "a"))
    del index["n2"]
    assert names(view.matching(SITE_A, index)) == ["n1"]
    # Same size as before, and n2 is equal to what was remembered of it.
    del index["n1"]
    indexed(view, index, node("n2", "a"))
    assert names(view.matching(SITE_A, index)) == ["n2"]


@given(
    st.lists(
        st.tuples(st.sampled_from(["n1", "n2", "n3", "n4"]), st.sampled_from(["a", "b", "-"])),
        max_size=30,
    )
)
def test_always_what_a_full_scan_of_the_index_finds(
    events: list[tuple[str, str]],
) -> None:
    """Any sequence of adds, relabels and deletes ('-'), with a lookup after some."""
    view, index = FleetView(), Index()
    for step, (name, site) in enumerate(events):
        if site == "-":
            index.pop(name, None)
        else:
            indexed(view, index, node(name, site))
        if step % 3 == 1:
            # Several changes between lookups, as between two reconciles.
            continue
        for selector in (SITE_A, SITE_B):
            expected = [n for store in index.values() for n in store if matches(selector, n.labels)]
            assert names(view.matching(selector, index)) == names(expected)
