"""Moving the rollout on, one wave transition at a time, until the canary becomes stable."""

from __future__ import annotations

from slmops.api.v1alpha1.edgerollout import (
    WaveStatus,
)
from slmops.domain import conditions as cond
from slmops.domain.rollout.analyzing import analyze
from slmops.domain.rollout.draft import (
    Draft,
    hold_skipped,
    place_revisions,
    reset_nodes,
    settled_message,
    skipped_nodes,
)
from slmops.domain.rollout.pausing import pause_rollout, resume_rollout, wait_in_pause
from slmops.domain.rollout.switching import switch_wave


def advance(draft: Draft) -> None:
    if draft.canary is None:
        if draft.stable is not None and draft.phase != "Pending":
            draft.phase = "Healthy"
            draft.message = draft.blocked or settled_message(draft)
        return
    if not draft.in_flight:
        return
    spec = draft.world.spec
    if draft.paused_by == "spec" and not spec.paused:
        resume_rollout(draft)
    if spec.paused and draft.paused_by != "spec":
        draft.paused_by = None
        pause_rollout(draft, "spec", "paused by spec.paused")
    if draft.paused_by is not None:
        wait_in_pause(draft)
        if draft.paused_by is not None:
            return
    if draft.stable is None:
        _advance_first(draft)
        return
    # Each pass makes at most one transition of the current wave; a wave has four phases
    # and there are at most 50 waves, so this bound is never the reason to stop.
    for _ in range(4 * (len(draft.waves) + 2)):
        if not _step(draft):
            return


def _advance_first(draft: Draft) -> None:
    switching = [n for n in draft.nodes.values() if n.state == "Switching"]
    if switching:
        draft.message = (
            f"first rollout of {draft.canary}: waiting for {len(switching)} nodes to be ready"
        )
        return
    _promote(draft)


def _step(draft: Draft) -> bool:
    """One transition of the current wave; False when the rollout must wait."""
    wave = draft.wave()
    if wave is None:
        _promote(draft)
        return False
    if wave.phase == "Pending":
        draft.set_wave(wave.model_copy(update={"phase": "Progressing", "started_at": draft.now}))
        draft.progressed()
        draft.event(
            "Normal", "WaveStarted", f"{wave.name} started: {len(wave.nodes)} nodes to switch"
        )
        return True
    if wave.phase == "Progressing":
        return switch_wave(draft, wave)
    if wave.phase in ("Analyzing", "Paused"):
        return analyze(draft, wave)
    if wave.phase == "Succeeded":
        return _next_wave(draft, wave)
    return False


def _next_wave(draft: Draft, wave: WaveStatus) -> bool:
    if wave.index + 1 < len(draft.waves):
        draft.current_wave = wave.index + 1
        return True
    switching = [n for n in draft.nodes.values() if n.state == "Switching"]
    if switching:
        draft.message = f"waiting for {len(switching)} nodes to be ready before completing"
        return False
    _promote(draft)
    return False


def _promote(draft: Draft) -> None:
    revision = draft.canary
    draft.stable = revision
    draft.canary = None
    draft.current_wave = None
    draft.paused_by = None
    draft.pause_started_at = None
    draft.phase = "Healthy"
    draft.decision_at = draft.now
    draft.progressed()
    place_revisions(draft)
    reset_nodes(draft, keep_skipped=True)
    if revision is not None:
        hold_skipped(draft, revision)
    skipped = skipped_nodes(draft)
    draft.message = settled_message(draft)
    draft.event(
        "Normal",
        "RolloutComplete",
        f"revision {revision} is stable"
        + (f"; skipped nodes {', '.join(skipped)} get it when they return" if skipped else ""),
    )


def check_deadline(draft: Draft) -> None:
    if not draft.in_flight or draft.paused_by is not None:
        return
    deadline = draft.world.spec.strategy.progress_deadline_seconds
    if draft.last_progress_at is None:
        return
    remaining = draft.at(deadline, draft.last_progress_at)
    if remaining <= 0:
        draft.deadline_exceeded = True
        previous = cond.find(draft.world.status.conditions, "Stalled")
        if previous is None or previous.reason != "ProgressDeadlineExceeded":
            draft.event(
                "Warning",
                "ProgressDeadlineExceeded",
                f"no progress for {deadline}s: {draft.message}",
            )
    else:
        draft.requeue.append(remaining)
