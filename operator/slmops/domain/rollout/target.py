"""Which revision the fleet heads for: start it, supersede the one in flight, or cancel."""

from __future__ import annotations

from slmops.domain import conditions as cond
from slmops.domain.placement import place
from slmops.domain.rollout.draft import (
    WAITING_POLL_SECONDS,
    Draft,
    hold_skipped,
    place_revisions,
    reset_nodes,
    settle_returned,
)
from slmops.domain.rollout.planning import start_first_rollout, start_rollout
from slmops.domain.rollout.world import World


def target_revision(world: World) -> str | None:
    """The revision the fleet should end on: the pinned one, else the model's current."""
    return world.spec.model.revision or world.model_revision


def follow_target(draft: Draft) -> None:
    target = target_revision(draft.world)
    if target is None or target not in draft.world.offers:
        if draft.canary is None and draft.stable is None:
            draft.phase = "Pending"
            draft.message = (
                f"waiting for SLMModel {draft.world.spec.model.name} to be Ready"
                if target is None
                else f"waiting for the variants of revision {target}"
            )
            draft.requeue.append(WAITING_POLL_SECONDS)
        return
    if target not in (draft.stable, draft.canary) and not _placeable(draft, target):
        return
    if draft.canary is None and draft.stable is None:
        start_first_rollout(draft, target)
    elif draft.canary is None and draft.stable != target:
        start_rollout(draft, target, "RolloutStarted", f"rolling out revision {target}")
    elif draft.canary is not None and draft.canary != target:
        if target == draft.stable:
            _cancel(draft)
        elif draft.phase == "RolledBack":
            start_rollout(draft, target, "RolloutStarted", f"rolling out revision {target}")
        else:
            start_rollout(
                draft,
                target,
                "Superseded",
                f"revision {target} supersedes {draft.canary}: nodes on {draft.canary} return"
                f" to {draft.stable}, {target} starts from the first wave",
            )


def _placeable(draft: Draft, revision: str) -> bool:
    """Whether the revision can run anywhere; if not, say why and start nothing.

    A revision that places no node would take every server off the fleet when it became
    stable (say, every variant was Rejected), so it waits for a person instead.
    """
    world = draft.world
    placements = place(world.nodes, world.spec.fleet.selector, world.offers[revision])
    if any(p.variant is not None for p in placements):
        return True
    reasons = sorted({p.reason for p in placements}) or ["no node matches spec.fleet.selector"]
    draft.blocked = f"revision {revision} cannot run on any fleet node: {'; '.join(reasons[:3])}"
    if draft.stable is None and draft.canary is None:
        draft.phase = "Pending"
        draft.message = draft.blocked
    previous = cond.find(world.status.conditions, "Stalled")
    if previous is None or previous.reason != "NoPlacement":
        draft.event("Warning", "NoPlacement", draft.blocked)
    draft.requeue.append(WAITING_POLL_SECONDS)
    return False


def _cancel(draft: Draft) -> None:
    """The target went back to the stable revision: every node returns to it."""
    old = draft.canary
    ended_earlier = draft.phase == "RolledBack"
    draft.canary = None
    place_revisions(draft)
    reset_nodes(draft, keep_skipped=True)
    draft.current_wave = None
    draft.paused_by = None
    draft.pause_started_at = None
    draft.phase = "Healthy"
    if old is not None and not ended_earlier:
        hold_skipped(draft, old, ", which was withdrawn")
    else:
        # Held since the rollback, with the same revision to get: their reasons stand.
        settle_returned(draft)
    draft.message = f"revision {old} withdrawn; the fleet stays on {draft.stable}"
    draft.event("Normal", "RolloutCancelled", draft.message)
