"""A wave's analysis rounds: counted against its limits until the wave passes, pauses or aborts.

What a wave measures: each metric once per variant that has a node of the wave serving the
canary and not skipped from it (measured_variants). Nodes lost mid-wave change that:

- A variant whose every node in the wave was skipped is not queried: nothing of the wave
  serves it, so its query could only return no data and pause the rollout for nothing.
- A skipped node that returns while its wave is still analysing serves the canary (it was
  switched) but does not bring its variant into that wave's analysis, on purpose: the
  wave's rounds were counted without it, and a variant joining late would pass on fewer
  rounds than `count`. Its requests still count wherever its variant is measured anyway.
- A wave where no node is left to measure (every one skipped) ends as an empty wave does:
  it passes without analysis (and pauses after it if it says so), with a WaveNotAnalyzed
  warning, when an earlier wave of this rollout passed a real round, since the revision has
  been judged and this wave exposed it to no node. When nothing has judged the revision
  yet (it is the first analysed wave), passing would spread an unmeasured revision, so the
  rollout pauses for a person: `slmops promote` goes on without this wave's analysis,
  `slmops abort` rolls back. A later `resume` finds the same empty wave and pauses again.
"""

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


def measured_variants(draft: Draft, wave: WaveStatus) -> list[str]:
    """The variants the wave's analysis measures (see the module docstring)."""
    skipped = set(wave.skipped_nodes)
    return sorted(
        {
            node.variant
            for name, node in draft.nodes.items()
            if node.wave == wave.index
            and node.state == "Updated"
            and node.variant
            and name not in skipped
        }
    )


def analyze(draft: Draft, wave: WaveStatus) -> bool:
    if not analysis_applies(draft, wave):
        return pass_wave(draft, wave)
    if not measured_variants(draft, wave):
        return _nothing_to_measure(draft, wave)
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


def _nothing_to_measure(draft: Draft, wave: WaveStatus) -> bool:
    """Every node of the wave was skipped: pass it like an empty wave if the revision has
    been judged by an earlier wave, else pause for a person."""
    if any(earlier.successful > 0 for earlier in draft.waves[: wave.index]):
        draft.event(
            "Warning",
            "WaveNotAnalyzed",
            f"{wave.name}: every node was skipped, so nothing serves {draft.canary} to"
            " measure; the wave passes on the earlier waves' analysis",
        )
        return pass_wave(draft, wave)
    pause_rollout(
        draft,
        "analysis",
        f"{wave.name}: every node was skipped and no earlier wave has measured"
        f" {draft.canary}; `slmops promote` to go on without this wave's analysis,"
        " or `slmops abort`",
    )
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
