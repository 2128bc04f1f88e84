"""decide(): the steps of one decision, in order."""

from __future__ import annotations

from slmops.domain import conditions as cond
from slmops.domain.rollout.actions import apply_action
from slmops.domain.rollout.draft import new_draft
from slmops.domain.rollout.progress import advance, check_deadline
from slmops.domain.rollout.rollback import finish_rollback
from slmops.domain.rollout.status import decision_from
from slmops.domain.rollout.switching import observe_nodes
from slmops.domain.rollout.target import follow_target
from slmops.domain.rollout.validation import InvalidSpecError, validate_spec
from slmops.domain.rollout.world import Decision, World


def decide(world: World) -> Decision:
    """The next status and desired serving state for this world (pure and idempotent)."""
    draft = new_draft(world)
    try:
        validate_spec(world.spec)
    except InvalidSpecError as error:
        draft.invalid = str(error)
    missing = [r for r in (draft.stable, draft.canary) if r and r not in world.offers]
    if draft.invalid is None and missing and draft.phase != "RolledBack":
        # Without its variants a revision cannot be placed; deciding anyway would take the
        # servers off every node. Hold what runs until the model lists the revision again.
        draft.invalid_reason = "RevisionUnavailable"
        draft.invalid = (
            f"revision {', '.join(missing)} is not among the revisions of SLMModel"
            f" {world.spec.model.name} (its status.revisions keeps the latest 20); every node"
            " keeps what it serves until it is, or until spec.model.revision pins one that is"
        )
    if draft.invalid is None:
        held = cond.find(world.status.conditions, "Stalled")
        if held is not None and held.reason in ("InvalidSpec", "RevisionUnavailable"):
            draft.message = "resumed: the spec and revisions are usable again"
            draft.event("Normal", "Resumed", draft.message)
        observe_nodes(draft)
        apply_action(draft)
        follow_target(draft)
        advance(draft)
        finish_rollback(draft)
        check_deadline(draft)
    return decision_from(draft)
