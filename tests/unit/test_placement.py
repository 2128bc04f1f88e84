from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slmops.api.v1alpha1.common import LabelSelector
from slmops.domain.placement import MIB, FleetNode, VariantOffer, place

pytestmark = pytest.mark.unit

EDGE = LabelSelector(match_labels={"edge": "true"})
GIB = 1024 * MIB


def offer(
    name: str,
    labels: dict[str, str],
    *,
    qualified: bool = True,
    size_mib: int = 500,
    overhead: int = 256,
    gpu: int | None = None,
) -> VariantOffer:
    return VariantOffer(
        name=name,
        hardware_class=f"{name}-class",
        selector=LabelSelector(match_labels=labels),
        qualified=qualified,
        artifact=f"r/m@sha256:{name}" if qualified else None,
        model_bytes=size_mib * MIB,
        runtime_overhead_mib=overhead,
        gpu_memory_mib=gpu,
    )


def node(name: str, memory_gib: float = 8, **labels: str) -> FleetNode:
    return labelled(name, labels, memory_gib)


def labelled(name: str, labels: dict[str, str], memory_gib: float = 8) -> FleetNode:
    return FleetNode(name, {"edge": "true", **labels}, int(memory_gib * GIB), True)


def test_first_matching_variant_in_list_order_wins() -> None:
    variants = [offer("gpu", {"gpu": "true"}, gpu=4000), offer("cpu", {})]
    nodes = [labelled("b", {"gpu": "true", "nvidia.com/gpu.memory": "8000"}), node("a")]
    placed = place(nodes, EDGE, variants)
    assert [(p.node, p.variant, p.hardware_class) for p in placed] == [
        ("a", "cpu", "cpu-class"),
        ("b", "gpu", "gpu-class"),
    ]


def test_nodes_outside_the_fleet_are_not_placed() -> None:
    outsider = FleetNode("x", {"edge": "false"}, 8 * GIB, True)
    assert place([outsider, node("a")], EDGE, [offer("cpu", {})])[0].node == "a"
    assert len(place([outsider], EDGE, [offer("cpu", {})])) == 0


def test_a_variant_that_does_not_fit_falls_through_to_the_next_and_says_why() -> None:
    variants = [offer("big", {}, size_mib=3000), offer("small", {}, size_mib=100)]
    placed = place([node("a", memory_gib=2)], EDGE, variants)
    assert placed[0].variant == "small"
    nothing = place([node("a", memory_gib=2)], EDGE, variants[:1])[0]
    assert nothing.variant is None
    assert "needs 3256 MiB (model 3000 MiB + runtime 256 MiB)" in nothing.reason
    assert "2048 MiB allocatable" in nothing.reason


def test_gpu_memory_is_checked_against_the_gpu_label() -> None:
    variant = offer("gpu", {"gpu": "true"}, gpu=16000)
    small = labelled("a", {"gpu": "true", "nvidia.com/gpu.memory": "8192"})
    unlabeled = node("b", gpu="true")
    garbled = labelled("c", {"gpu": "true", "nvidia.com/gpu.memory": "lots"})
    reasons = {p.node: p.reason for p in place([small, unlabeled, garbled], EDGE, [variant])}
    assert "needs 16000 MiB of GPU memory but the node has 8192 MiB" in reasons["a"]
    assert "no nvidia.com/gpu.memory label" in reasons["b"]
    assert "is not a number" in reasons["c"]


def test_an_unqualified_variant_is_never_placed() -> None:
    placed = place([node("a")], EDGE, [offer("int4", {}, qualified=False)])[0]
    assert placed.variant is None and "not Qualified" in placed.reason


def test_no_matching_variant_names_the_targets() -> None:
    placed = place([node("a")], EDGE, [offer("arm", {"arch": "arm64"})])[0]
    assert placed.variant is None
    assert "no variant targets" in placed.reason and "arm: arch=arm64" in placed.reason


@given(
    memories=st.lists(st.integers(min_value=0, max_value=16 * 1024), min_size=1, max_size=20),
    sizes=st.lists(st.integers(min_value=1, max_value=8 * 1024), min_size=1, max_size=4),
)
def test_a_placed_variant_always_fits(memories: list[int], sizes: list[int]) -> None:
    nodes = [FleetNode(f"n{i:02}", {"edge": "true"}, m * MIB, True) for i, m in enumerate(memories)]
    variants = [offer(f"v{i}", {}, size_mib=s) for i, s in enumerate(sizes)]
    placed = place(nodes, EDGE, variants)
    assert [p.node for p in placed] == sorted(n.name for n in nodes)
    size_of = {v.name: v.model_bytes for v in variants}
    for p, n in zip(placed, sorted(nodes, key=lambda n: n.name), strict=True):
        if p.variant is not None:
            assert (size_of[p.variant] or 0) + 256 * MIB <= n.allocatable_memory_bytes
        else:
            assert p.reason
            assert all((s or 0) + 256 * MIB > n.allocatable_memory_bytes for s in size_of.values())
