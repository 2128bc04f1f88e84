"""Pausing and resuming a rollout: by a person, spec.paused, a wave's pause or analysis."""

from __future__ import annotations

from slmops.domain.rollout.draft import Draft, spec_of_wave


def pause_rollout(draft: Draft, by: str, message: str) -> None:
    draft.paused_by = by
    draft.pause_started_at = draft.now
    draft.phase = "Paused"
    draft.message = message
    wave = draft.wave()
    if wave is not None and wave.phase in ("Analyzing", "Progressing") and by == "analysis":
        draft.set_wave(wave.model_copy(update={"phase": "Paused"}))
    draft.event("Normal", "RolloutPaused", message)


def resume_rollout(draft: Draft) -> None:
    by = draft.paused_by
    draft.paused_by = None
    draft.pause_started_at = None
    draft.phase = "Progressing"
    draft.progressed()
    wave = draft.wave()
    if wave is not None and by == "analysis":
        # The limit applies afresh: the person has seen the inconclusive rounds.
        draft.set_wave(wave.model_copy(update={"phase": "Analyzing", "inconclusive": 0}))
    draft.event("Normal", "RolloutResumed", f"resumed (was paused by {by})")


def wait_in_pause(draft: Draft) -> None:
    wave = draft.wave()
    if draft.paused_by != "wave" or wave is None:
        return
    wave_spec = spec_of_wave(draft, wave.index)
    duration = wave_spec.pause.duration_seconds if wave_spec.pause else None
    if duration is None:
        return
    remaining = draft.at(duration, draft.pause_started_at)
    if remaining > 0:
        draft.requeue.append(remaining)
        return
    draft.paused_by = None
    draft.pause_started_at = None
    draft.phase = "Progressing"
    draft.progressed()
    draft.event("Normal", "PauseEnded", f"the {duration}s pause after {wave.name} ended")
