"""Which variant each fleet node serves, decided from its hardware labels and memory.

A node gets the first variant, in the model's list order, whose hardware target matches
its labels, that is Qualified for the revision and that fits the node. A node nothing fits
is reported with a reason a person can act on; it never gets a pod that cannot run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from slmops.api.v1alpha1.common import LabelSelector
from slmops.domain.selectors import describe, matches

MIB = 1024 * 1024
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
"""GPU feature discovery's label: memory of one GPU in MiB."""


@dataclass(frozen=True)
class FleetNode:
    """A node as placement sees it."""

    name: str
    labels: Mapping[str, str]
    allocatable_memory_bytes: int
    ready: bool


@dataclass(frozen=True)
class VariantOffer:
    """A variant of one model revision, as far as placement needs to know it."""

    name: str
    hardware_class: str
    selector: LabelSelector
    qualified: bool
    artifact: str | None
    model_bytes: int | None
    runtime_overhead_mib: int
    gpu_memory_mib: int | None


@dataclass(frozen=True)
class NodePlacement:
    """The variant a node serves, or why it serves none."""

    node: str
    variant: str | None
    hardware_class: str | None
    reason: str


def place(
    nodes: Sequence[FleetNode], fleet: LabelSelector, variants: Sequence[VariantOffer]
) -> list[NodePlacement]:
    """One placement per fleet node, sorted by node name."""
    fleet_nodes = sorted((n for n in nodes if matches(fleet, n.labels)), key=lambda n: n.name)
    return [_place_node(node, variants) for node in fleet_nodes]


def _place_node(node: FleetNode, variants: Sequence[VariantOffer]) -> NodePlacement:
    refusals: list[str] = []
    for offer in variants:
        if not matches(offer.selector, node.labels):
            continue
        refusal = refusal_reason(node, offer)
        if refusal is None:
            return NodePlacement(node.name, offer.name, offer.hardware_class, "")
        refusals.append(refusal)
    if not refusals:
        wanted = "; ".join(f"{v.name}: {describe(v.selector)}" for v in variants)
        reason = f"no variant targets this node's labels (targets: {wanted or 'none'})"
    else:
        reason = "; ".join(refusals)
    return NodePlacement(node.name, None, None, reason)


def refusal_reason(node: FleetNode, offer: VariantOffer) -> str | None:
    """Why a matching variant cannot run on the node, or None when it can."""
    if not offer.qualified or offer.artifact is None:
        return f"variant {offer.name} matches but is not Qualified for this revision"
    if offer.model_bytes is not None:
        needed = offer.model_bytes + offer.runtime_overhead_mib * MIB
        if needed > node.allocatable_memory_bytes:
            return (
                f"variant {offer.name} needs {_mib(needed)} MiB (model {_mib(offer.model_bytes)}"
                f" MiB + runtime {offer.runtime_overhead_mib} MiB) but the node has"
                f" {_mib(node.allocatable_memory_bytes)} MiB allocatable"
            )
    if offer.gpu_memory_mib is not None:
        label = node.labels.get(GPU_MEMORY_LABEL)
        if label is None:
            return (
                f"variant {offer.name} needs {offer.gpu_memory_mib} MiB of GPU memory but the"
                f" node has no {GPU_MEMORY_LABEL} label"
            )
        try:
            gpu_mib = int(label)
        except ValueError:
            return f"variant {offer.name}: node label {GPU_MEMORY_LABEL}={label!r} is not a number"
        if gpu_mib < offer.gpu_memory_mib:
            return (
                f"variant {offer.name} needs {offer.gpu_memory_mib} MiB of GPU memory but the"
                f" node has {gpu_mib} MiB"
            )
    return None


def _mib(value: int) -> int:
    return -(-value // MIB)


def assigned(placements: Sequence[NodePlacement]) -> dict[str, NodePlacement]:
    """Placements of the nodes that got a variant, by node name."""
    return {p.node: p for p in placements if p.variant is not None}
