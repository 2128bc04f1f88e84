"""How a revision's rollout begins: its waves planned, or all at once for the first."""

from __future__ import annotations

from collections.abc import Sequence

from slmops.api.v1alpha1.edgerollout import (
    EdgeRolloutSpec,
    NodeAssignment,
    WaveStatus,
)
from slmops.domain.placement import FleetNode, NodePlacement, VariantOffer, place
from slmops.domain.rollout.draft import Draft, place_revisions, reset_nodes, set_node
from slmops.domain.waves import PlannedWave, plan_waves


def preview_plan(
    spec: EdgeRolloutSpec, nodes: Sequence[FleetNode], offers: Sequence[VariantOffer]
) -> tuple[list[NodePlacement], list[PlannedWave]]:
    """Placement and waves a rollout of a revision with these offers would use (`slmops plan`)."""
    placements = place(nodes, spec.fleet.selector, offers)
    labels = {n.name: n.labels for n in nodes}
    return placements, plan_waves(placements, labels, spec.strategy.waves)


def start_first_rollout(draft: Draft, revision: str) -> None:
    """The first revision: nothing to compare with, so every node switches at once."""
    draft.canary = revision
    place_revisions(draft)
    reset_nodes(draft)
    for name, node in draft.nodes.items():
        if node.variant is not None:
            set_node(draft, name, state="Switching", switched_at=draft.now)
    draft.waves = []
    draft.current_wave = None
    draft.phase = "Progressing"
    draft.message = f"first rollout: every node switches to {revision}"
    draft.measurements = []
    draft.abort = None
    draft.rollback_completed_at = None
    draft.progressed()
    draft.event(
        "Normal",
        "FirstRollout",
        f"revision {revision} goes to all {len(_assigned(draft))} assigned nodes at once"
        " (no stable revision to compare with)",
    )


def start_rollout(draft: Draft, revision: str, reason: str, message: str) -> None:
    draft.canary = revision
    place_revisions(draft)
    reset_nodes(draft)
    spec = draft.world.spec
    labels = {n.name: n.labels for n in draft.world.nodes}
    fleet = [draft.canary_placement[n] for n in sorted(draft.canary_placement)]
    planned = plan_waves(fleet, labels, spec.strategy.waves)
    draft.waves = [WaveStatus(index=w.index, name=w.name, nodes=list(w.nodes)) for w in planned]
    for wave in planned:
        for name in wave.nodes:
            set_node(draft, name, wave=wave.index)
    draft.current_wave = 0
    draft.phase = "Progressing"
    draft.paused_by = None
    draft.pause_started_at = None
    draft.abort = None
    draft.rollback_completed_at = None
    draft.measurements = []
    draft.message = message
    draft.progressed()
    summary = ", ".join(f"{w.name} ({len(w.nodes)} nodes)" for w in planned)
    draft.event("Normal", reason, f"{message}; waves: {summary}")
    for wave in planned:
        if wave.note:
            draft.event("Warning", "EmptyWave", f"{wave.name} has no nodes: {wave.note}")


def _assigned(draft: Draft) -> list[NodeAssignment]:
    return [n for n in draft.nodes.values() if n.variant is not None]
