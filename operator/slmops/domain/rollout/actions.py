"""A person's requests (the slmops.io/action annotation), each applied once."""

from __future__ import annotations

from slmops.api.v1alpha1.edgerollout import (
    AbortReason,
    SLMOpsAction,
)
from slmops.domain.rollout.draft import Draft, set_node, wave_nodes
from slmops.domain.rollout.pausing import pause_rollout, resume_rollout
from slmops.domain.rollout.planning import start_rollout
from slmops.domain.rollout.rollback import abort_rollout

ACTIONS = ("promote", "promote-full", "pause", "resume", "abort", "retry")


def apply_action(draft: Draft) -> None:
    """Apply a person's request once: its id is recorded, a repeated id is ignored."""
    request = draft.world.action
    if request is None:
        return
    action_id, action = request
    if draft.last_action is not None and draft.last_action.id == action_id:
        return
    draft.last_action = SLMOpsAction(id=action_id, action=action, at=draft.now)
    outcome = _act(draft, action)
    if outcome:
        draft.event("Warning", "ActionIgnored", f"{action} ({action_id}) ignored: {outcome}")
    else:
        draft.event("Normal", "ActionApplied", f"{action} ({action_id}) applied")


def _act(draft: Draft, action: str) -> str | None:
    """Apply one action; return why it does not apply, or None when it did."""
    if action not in ACTIONS:
        return f"unknown action; use one of {', '.join(ACTIONS)}"
    if action == "retry":
        if draft.phase not in ("RolledBack", "Degraded") or draft.canary is None:
            return "only an aborted rollout can be retried"
        start_rollout(
            draft, draft.canary, "Retry", f"retrying revision {draft.canary} from the first wave"
        )
        return None
    if action == "abort":
        if draft.canary is None or draft.phase == "RolledBack":
            return "no rollout in progress"
        abort_rollout(
            draft,
            AbortReason(
                metric="user",
                wave=draft.current_wave or 0,
                message="aborted by a person (slmops abort)",
                at=draft.now,
            ),
            automatic=True,
        )
        return None
    if not draft.in_flight:
        return "no rollout in progress"
    if action == "pause":
        if draft.paused_by is not None:
            return f"already paused by {draft.paused_by}"
        pause_rollout(draft, "user", "paused by a person (slmops pause)")
        return None
    if draft.world.spec.paused:
        return "spec.paused is true: set it to false first (it is the GitOps switch)"
    if action == "resume":
        if draft.paused_by is None:
            return "not paused"
        resume_rollout(draft)
        return None
    if draft.wave() is None:
        return "no wave to promote (the first rollout switches every node at once)"
    if action == "promote":
        _promote_wave(draft)
        return None
    _promote_full(draft)
    return None


def _promote_wave(draft: Draft) -> None:
    """Finish the current wave now: its remaining nodes switch, no (more) analysis or pause."""
    wave = draft.wave()
    assert wave is not None
    for name in wave_nodes(draft, wave.index, "Stable"):
        set_node(draft, name, state="Switching", switched_at=draft.now, wave=wave.index)
    draft.paused_by = None
    draft.pause_started_at = None
    draft.phase = "Progressing"
    draft.set_wave(
        wave.model_copy(update={"phase": "Succeeded", "finished_at": wave.finished_at or draft.now})
    )
    draft.progressed()


def _promote_full(draft: Draft) -> None:
    """Every remaining node switches now; the rollout completes when they are ready."""
    for wave in draft.waves[(draft.current_wave or 0) :]:
        for name in wave_nodes(draft, wave.index, "Stable"):
            set_node(draft, name, state="Switching", switched_at=draft.now, wave=wave.index)
        draft.set_wave(
            wave.model_copy(
                update={
                    "phase": "Succeeded",
                    "started_at": wave.started_at or draft.now,
                    "finished_at": wave.finished_at or draft.now,
                }
            )
        )
    draft.current_wave = len(draft.waves) - 1
    draft.paused_by = None
    draft.pause_started_at = None
    draft.phase = "Progressing"
    draft.progressed()
