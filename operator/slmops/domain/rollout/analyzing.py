"""A wave's analysis rounds: counted against its limits until the wave passes, pauses or aborts."""

from __future__ import annotations

from collections.abc import Sequence

from slmops.api.v1alpha1.edgerollout import (
    Measurement,
    WaveStatus,
)
from slmops.domain.analysis import AnalysisLimits, tally
from slmops.domain.rollout.draft import Draft, spec_of_wave
from slmops.domain.rollout.pausing import pause_rollout
from slmops.domain.rollout.rollback import abort_reason, abort_rollout

MEASUREMENTS_PER_METRIC = 10


def analysis_applies(draft: Draft, wave: WaveStatus) -> bool:
    analysis = draft.world.spec.analysis
    if analysis is None or not analysis.metrics or not wave.nodes:
        return False
    override = spec_of_wave(draft, wave.index).analysis
    return not (override is not None and override.skip)


def _limits(draft: Draft, wave: WaveStatus) -> AnalysisLimits:
    analysis = draft.world.spec.analysis
    assert analysis is not None
    return AnalysisLimits.for_wave(analysis, spec_of_wave(draft, wave.index).analysis)


def analyze(draft: Draft, wave: WaveStatus) -> bool:
    if not analysis_applies(draft, wave):
        return pass_wave(draft, wave)
    limits = _limits(draft, wave)
    since = wave.last_measured_at or wave.ready_at
    delay = limits.interval_seconds if wave.last_measured_at else limits.initial_delay_seconds
    remaining = draft.at(delay, since)
    if remaining > 0:
        draft.requeue.append(remaining)
        if wave.last_measured_at is None:
            # No countdown in the message: a message that changes every second is a status
            # write every reconcile.
            draft.message = f"{wave.name}: every node is ready; analysis starts soon"
        return False
    fresh = [m for m in draft.world.measurements or () if m.wave == wave.index]
    if not fresh:
        draft.measure_now = True
        draft.requeue.append(float(limits.interval_seconds))
        draft.message = f"{wave.name}: measuring"
        return False
    fresh = [m.model_copy(update={"at": draft.now}) for m in fresh]
    outcome = tally(wave, fresh, limits)
    _record(draft, fresh)
    counted = outcome.wave.model_copy(update={"last_measured_at": draft.now})
    draft.set_wave(counted)
    if outcome.round_phase != "Error":
        draft.progressed()
    draft.message = f"{wave.name}: {outcome.reason}"
    if outcome.kind == "Abort":
        culprit = outcome.culprit
        assert culprit is not None
        abort_rollout(
            draft,
            abort_reason(draft, wave, culprit, outcome.reason),
            automatic=draft.world.spec.rollback.automatic,
        )
        return False
    if outcome.kind == "Pause":
        pause_rollout(
            draft, "analysis", f"{wave.name}: {outcome.reason}; resume or promote to continue"
        )
        return False
    if outcome.kind == "Passed":
        draft.event("Normal", "AnalysisPassed", f"{wave.name}: {outcome.reason}")
        return pass_wave(draft, counted)
    draft.requeue.append(float(limits.interval_seconds))
    if outcome.round_phase == "Error":
        draft.event("Warning", "MeasurementError", f"{wave.name}: {outcome.reason}")
    return False


def _record(draft: Draft, fresh: Sequence[Measurement]) -> None:
    """Append a round; keep the last MEASUREMENTS_PER_METRIC of each metric."""
    combined = [*draft.measurements, *fresh]
    kept: list[Measurement] = []
    seen: dict[str, int] = {}
    for measurement in reversed(combined):
        seen[measurement.metric] = seen.get(measurement.metric, 0) + 1
        if seen[measurement.metric] <= MEASUREMENTS_PER_METRIC:
            kept.append(measurement)
    draft.measurements = list(reversed(kept))[-200:]


def pass_wave(draft: Draft, wave: WaveStatus) -> bool:
    """Mark the wave passed; pause after it if its spec says so. False when pausing."""
    draft.set_wave(wave.model_copy(update={"phase": "Succeeded", "finished_at": draft.now}))
    draft.progressed()
    pause = spec_of_wave(draft, wave.index).pause
    if pause is None:
        return True
    duration = pause.duration_seconds
    pause_rollout(
        draft,
        "wave",
        f"pausing after {wave.name}"
        + (f" for {duration}s" if duration else " until slmops resume or promote"),
    )
    if duration:
        draft.requeue.append(float(duration))
    return False
