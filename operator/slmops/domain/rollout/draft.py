"""The status being computed, and the per-node assignments every step edits."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from slmops.api.v1alpha1.edgerollout import (
    AbortReason,
    Measurement,
    NodeAssignment,
    RolloutPhase,
    SLMOpsAction,
    WaveSpec,
    WaveStatus,
)
from slmops.domain import conditions as cond
from slmops.domain.placement import NodePlacement, place
from slmops.domain.rollout.world import Event, World

# How often to look again while waiting for something no watch event reports (a model
# becoming Ready is a watch event in most controllers, but cheap insurance).
WAITING_POLL_SECONDS = 30.0
# Pods becoming ready arrive as watch events; this only bounds the wait if one is lost.
SWITCHING_POLL_SECONDS = 10.0
# Node states meaning the rollout has sent the node (or tried to send it) to the canary.
TOUCHED = ("Switching", "Updated", "Skipped")


@dataclass
class Draft:
    """The status being computed (the API models are frozen)."""

    world: World
    now: str
    phase: RolloutPhase
    message: str
    stable: str | None
    canary: str | None
    current_wave: int | None
    paused_by: str | None
    pause_started_at: str | None
    waves: list[WaveStatus]
    nodes: dict[str, NodeAssignment]
    measurements: list[Measurement]
    abort: AbortReason | None
    last_action: SLMOpsAction | None
    last_progress_at: str | None
    decision_at: str | None
    rollback_completed_at: str | None
    stable_placement: dict[str, NodePlacement]
    canary_placement: dict[str, NodePlacement]
    events: list[Event] = field(default_factory=list)
    requeue: list[float] = field(default_factory=list)
    measure_now: bool = False
    invalid: str | None = None
    invalid_reason: str = "InvalidSpec"
    blocked: str | None = None
    deadline_exceeded: bool = False

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def at(self, offset_seconds: float, since: str | None) -> float:
        """Seconds from now until `since + offset` (negative when past)."""
        if since is None:
            return 0.0
        due = _parse(since) + timedelta(seconds=offset_seconds)
        return (due - self.world.now).total_seconds()

    @property
    def in_flight(self) -> bool:
        return self.canary is not None and self.phase in ("Pending", "Progressing", "Paused")

    def wave(self) -> WaveStatus | None:
        if self.current_wave is None or not 0 <= self.current_wave < len(self.waves):
            return None
        return self.waves[self.current_wave]

    def set_wave(self, wave: WaveStatus) -> None:
        self.waves[wave.index] = wave

    def progressed(self) -> None:
        self.last_progress_at = self.now


def new_draft(world: World) -> Draft:
    status = world.status
    now = cond.now_rfc3339(world.now)
    draft = Draft(
        world=world,
        now=now,
        phase=status.phase,
        message=status.message,
        stable=status.stable_revision,
        canary=status.canary_revision,
        current_wave=status.current_wave,
        paused_by=status.paused_by,
        pause_started_at=status.pause_started_at,
        waves=list(status.waves),
        nodes={},
        measurements=list(status.measurements),
        abort=status.abort,
        last_action=status.last_action,
        last_progress_at=status.last_progress_at,
        decision_at=status.decision_at,
        rollback_completed_at=status.rollback_completed_at,
        stable_placement={},
        canary_placement={},
    )
    place_revisions(draft)
    return draft


def place_revisions(draft: Draft) -> None:
    """Recompute placements for the stable and canary revisions; keep each node's progress."""
    world = draft.world
    fleet = world.spec.fleet.selector

    def placements(revision: str | None) -> dict[str, NodePlacement]:
        if revision is None:
            return {}
        return {p.node: p for p in place(world.nodes, fleet, world.offers.get(revision, ()))}

    draft.stable_placement = placements(draft.stable)
    draft.canary_placement = placements(draft.canary)
    focus = draft.canary_placement if draft.canary is not None else draft.stable_placement
    previous = {n.node: n for n in world.status.nodes}
    fleet_nodes = sorted(
        set(draft.stable_placement) | set(draft.canary_placement)
        or {p.node for p in place(world.nodes, fleet, ())}
    )
    nodes: dict[str, NodeAssignment] = {}
    for name in fleet_nodes:
        placement = focus.get(name) or draft.stable_placement.get(name)
        serving = world.node_revision.get(name)
        before = previous.get(name)
        if placement is None or placement.variant is None:
            reason = placement.reason if placement is not None else "not placed yet"
            state = before.state if before and before.state in (*TOUCHED, "RolledBack") else None
            nodes[name] = NodeAssignment(
                node=name,
                state=state or "Unassigned",
                reason=reason,
                revision=serving.revision if serving else None,
                wave=before.wave if before else None,
                switched_at=before.switched_at if before else None,
            )
            continue
        nodes[name] = NodeAssignment(
            node=name,
            variant=placement.variant,
            hardware_class=placement.hardware_class,
            wave=before.wave if before else None,
            revision=serving.revision if serving else None,
            state=before.state if before and before.state != "Unassigned" else "Stable",
            reason=before.reason if before and before.state != "Unassigned" else "",
            switched_at=before.switched_at if before else None,
        )
    draft.nodes = nodes


def set_node(draft: Draft, name: str, **changes: object) -> None:
    draft.nodes[name] = draft.nodes[name].model_copy(update=changes)


def reset_nodes(draft: Draft, *, keep_skipped: bool = False) -> None:
    """Every node back to where a rollout starts from: Stable, or Unassigned with its reason.

    keep_skipped (a rollout that ended): Skipped nodes stay as they are, for hold_skipped.
    A new rollout plans every node afresh, so a node still away is switched in its wave
    like any other and skipped again after its timeout.
    """
    for name, node in draft.nodes.items():
        if keep_skipped and node.state == "Skipped" and node.variant is not None:
            continue
        state = "Stable" if node.variant is not None else "Unassigned"
        draft.nodes[name] = node.model_copy(
            update={"state": state, "wave": None, "switched_at": None}
            | ({"reason": ""} if state == "Stable" else {})
        )


def hold_skipped(draft: Draft, rolled_out: str, ending: str = "") -> None:
    """The rollout of `rolled_out` ended: its Skipped nodes stay Skipped (and counted) until
    they are seen ready on the stable revision, their reason saying which one they get.

    Relabelling them Stable would claim they serve a revision nobody has seen them serve.
    `ending` says how the rollout ended when it was not promoted (", which was rolled back").
    """
    fleet = {n.name: n for n in draft.world.nodes}
    for name, node in draft.nodes.items():
        if node.state != "Skipped":
            continue
        cause = "node offline" if name in fleet and not fleet[name].ready else "not ready in time"
        set_node(
            draft,
            name,
            reason=f"skipped during the rollout of {rolled_out}{ending} ({cause});"
            f" gets revision {draft.stable} when it returns",
        )
    settle_returned(draft)


def settle_returned(draft: Draft) -> None:
    """Skipped nodes of a rollout that ended, seen ready on the stable revision, are done.

    Level-triggered: whenever the node is observed serving the stable revision, whatever
    happened while it was away. After a rollback it becomes RolledBack like every other
    node the rollback returned; otherwise Stable.
    """
    rolled_back = draft.phase == "RolledBack"
    for name, node in list(draft.nodes.items()):
        serving = draft.world.node_revision.get(name)
        if node.state != "Skipped" or draft.stable is None or serving is None:
            continue
        if serving.revision != draft.stable or not serving.ready:
            continue
        if rolled_back:
            set_node(draft, name, state="RolledBack", reason="was Skipped")
        else:
            set_node(draft, name, state="Stable", reason="", wave=None, switched_at=None)
        draft.event(
            "Normal",
            "NodeReturned",
            f"{name} serves revision {draft.stable}; it had been skipped during a rollout",
        )


def skipped_nodes(draft: Draft) -> list[str]:
    return sorted(name for name, node in draft.nodes.items() if node.state == "Skipped")


def heads_for_canary(draft: Draft, node: NodeAssignment) -> bool:
    """Whether the node must run the canary: the rollout sent it there and has not ended.

    After a rollback (the canary is still recorded) every node, skipped ones included,
    returns to stable.
    """
    return draft.canary is not None and draft.phase != "RolledBack" and node.state in TOUCHED


def settled_message(draft: Draft) -> str:
    """Healthy's message (the same text whichever decision writes it: no status churn)."""
    return f"all assigned nodes serve revision {draft.stable}" + except_skipped(draft)


def except_skipped(draft: Draft) -> str:
    """The tail of a settled message that names the nodes still away (empty if none)."""
    skipped = skipped_nodes(draft)
    if not skipped:
        return ""
    return f" except {len(skipped)} skipped ({name_list(skipped)}), which get it when they return"


def name_list(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + ("…" if len(names) > limit else "")


def wave_nodes(draft: Draft, index: int, state: str) -> list[str]:
    if not 0 <= index < len(draft.waves):
        return []
    return [
        name
        for name in draft.waves[index].nodes
        if name in draft.nodes
        and draft.nodes[name].state == state
        and draft.nodes[name].variant is not None
    ]


def spec_of_wave(draft: Draft, index: int) -> WaveSpec:
    waves = draft.world.spec.strategy.waves
    # The spec may have lost waves since the plan was made; the last one stands in.
    return waves[min(index, len(waves) - 1)]


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
