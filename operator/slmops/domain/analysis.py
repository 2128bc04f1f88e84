"""Judging measurements and tallying them into a wave's verdict.

One measurement is one metric on one variant in one round; a round's verdict is the worst
of its measurements (Failed, then Error, then Inconclusive, then Successful). Semantics
follow Argo Rollouts where they serve users and differ where its users complain:

- An error (Prometheus unreachable, a bad query, a condition that cannot be evaluated) is
  never a pass. Errors in a row beyond consecutiveErrorLimit abort; fewer hold the wave.
- An empty result (or NaN, which Prometheus returns for a rate over no requests) is not an
  error: onNoData decides (Inconclusive by default, so low traffic pauses for a person
  instead of rolling back or promoting).
- Below minSampleCount requests a measurement is Inconclusive with the count in its
  message: a p95 over three requests is noise.
- With only a successCondition, a false condition is Failed (Argo's rule). With a
  failureCondition too, Failed needs the failureCondition true; neither true is
  Inconclusive. The failureCondition is checked first, so a value that satisfies both
  fails.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from slmops.api.v1alpha1.edgerollout import (
    AnalysisOverride,
    AnalysisSpec,
    Measurement,
    MeasurementPhase,
    MetricSpec,
    NoDataPolicy,
    WaveStatus,
)
from slmops.domain.expression import EvaluationError, compile_condition

# Worst first: a failed check is evidence against the revision and must not be hidden by
# an error on another metric in the same round.
SEVERITY: tuple[MeasurementPhase, ...] = ("Failed", "Error", "Inconclusive", "Successful")


@dataclass(frozen=True)
class MeasurementVerdict:
    phase: MeasurementPhase
    message: str


def uses_stable(metric: MetricSpec) -> bool:
    """Whether the metric's conditions compare with the stable revision."""
    names = set(compile_condition(metric.success_condition).names)
    if metric.failure_condition:
        names |= compile_condition(metric.failure_condition).names
    return "stable" in names


def no_data_policy(metric: MetricSpec, policy: AnalysisSpec) -> NoDataPolicy:
    return metric.on_no_data or policy.on_no_data


def judge(  # noqa: PLR0917 -- the positional order is the published interface
    metric: MetricSpec,
    value: float | None,
    stable_value: float | None,
    error: str | None,
    samples: float | None,
    policy: AnalysisSpec,
) -> MeasurementVerdict:
    """The verdict on one measurement."""
    if error:
        return MeasurementVerdict("Error", f"query failed: {error}")
    if policy.min_sample_count > 0:
        served = 0.0 if samples is None or math.isnan(samples) else samples
        if served < policy.min_sample_count:
            return MeasurementVerdict(
                "Inconclusive",
                f"only {_number(served)} requests served by the new revision,"
                f" {policy.min_sample_count} needed before a verdict",
            )
    if value is None or math.isnan(value):
        return _no_data(no_data_policy(metric, policy), "the query returned no data")
    needs_stable = uses_stable(metric)
    if needs_stable and (stable_value is None or math.isnan(stable_value)):
        return _no_data(
            no_data_policy(metric, policy), "the stable revision's query returned no data"
        )
    env = {"result": value}
    if needs_stable and stable_value is not None:
        env["stable"] = stable_value
    shown = _shown(value, stable_value if needs_stable else None)
    try:
        if metric.failure_condition:
            if compile_condition(metric.failure_condition).evaluate(env):
                return MeasurementVerdict(
                    "Failed", f"{shown}: failureCondition {metric.failure_condition!r} holds"
                )
            if compile_condition(metric.success_condition).evaluate(env):
                return MeasurementVerdict("Successful", f"{shown}")
            return MeasurementVerdict(
                "Inconclusive",
                f"{shown}: neither {metric.success_condition!r} nor"
                f" {metric.failure_condition!r} holds",
            )
        if compile_condition(metric.success_condition).evaluate(env):
            return MeasurementVerdict("Successful", f"{shown}")
        return MeasurementVerdict(
            "Failed", f"{shown}: successCondition {metric.success_condition!r} does not hold"
        )
    except EvaluationError as problem:
        return MeasurementVerdict("Error", f"{shown}: cannot evaluate the condition: {problem}")


def _no_data(policy: NoDataPolicy, what: str) -> MeasurementVerdict:
    if policy == "Pass":
        return MeasurementVerdict("Successful", f"{what}; onNoData is Pass")
    if policy == "Fail":
        return MeasurementVerdict("Failed", f"{what}; onNoData is Fail")
    return MeasurementVerdict("Inconclusive", f"{what} (no traffic yet?); onNoData is Inconclusive")


def _number(value: float) -> str:
    return f"{value:.6g}"


def _shown(value: float, stable_value: float | None) -> str:
    text = f"result={_number(value)}"
    return text if stable_value is None else f"{text}, stable={_number(stable_value)}"


def round_phase(verdicts: Sequence[Measurement]) -> MeasurementPhase | None:
    """The worst phase among a round's measurements (None for an empty round)."""
    phases = {m.phase for m in verdicts}
    return next((p for p in SEVERITY if p in phases), None)


@dataclass(frozen=True)
class AnalysisLimits:
    """The counting rules in force for one wave."""

    count: int
    failure_limit: int
    inconclusive_limit: int
    consecutive_error_limit: int
    interval_seconds: int
    initial_delay_seconds: int

    @classmethod
    def for_wave(cls, spec: AnalysisSpec, override: AnalysisOverride | None) -> AnalysisLimits:
        return cls(
            count=(override.count if override and override.count else spec.count),
            failure_limit=spec.failure_limit,
            inconclusive_limit=spec.inconclusive_limit,
            consecutive_error_limit=spec.consecutive_error_limit,
            interval_seconds=(
                override.interval_seconds
                if override and override.interval_seconds
                else spec.interval_seconds
            ),
            initial_delay_seconds=spec.initial_delay_seconds,
        )


OutcomeKind = Literal["Continue", "Passed", "Abort", "Pause"]


@dataclass(frozen=True)
class WaveAnalysisOutcome:
    """What a round means for the wave, and the wave's counters after it."""

    kind: OutcomeKind
    reason: str
    wave: WaveStatus
    round_phase: MeasurementPhase | None
    culprit: Measurement | None = None


def tally(
    wave_status: WaveStatus, verdicts: Sequence[Measurement], limits: AnalysisLimits
) -> WaveAnalysisOutcome:
    """Count one round into the wave and say whether it continues, passes, pauses or aborts."""
    phase = round_phase(verdicts)
    if phase is None:
        return WaveAnalysisOutcome("Continue", "no measurements in this round", wave_status, None)
    culprit = next(m for m in verdicts if m.phase == phase)
    label = _label(culprit)
    wave = wave_status
    if phase == "Error":
        errors = wave.consecutive_errors + 1
        wave = replace_wave(wave, consecutive_errors=errors)
        if errors > limits.consecutive_error_limit:
            return WaveAnalysisOutcome(
                "Abort",
                f"{errors} measurement errors in a row (limit {limits.consecutive_error_limit}),"
                f" last on {label}: {culprit.message}",
                wave,
                phase,
                culprit,
            )
        return WaveAnalysisOutcome(
            "Continue",
            f"measurement error {errors} of {limits.consecutive_error_limit} tolerated on"
            f" {label}: {culprit.message}",
            wave,
            phase,
            culprit,
        )
    if phase == "Failed":
        wave = replace_wave(wave, failed=wave.failed + 1, consecutive_errors=0)
        if wave.failed > limits.failure_limit:
            return WaveAnalysisOutcome(
                "Abort",
                f"{label} failed ({wave.failed} failed, limit {limits.failure_limit}):"
                f" {culprit.message}",
                wave,
                phase,
                culprit,
            )
    elif phase == "Inconclusive":
        wave = replace_wave(wave, inconclusive=wave.inconclusive + 1, consecutive_errors=0)
        if wave.inconclusive > limits.inconclusive_limit:
            return WaveAnalysisOutcome(
                "Pause",
                f"{label} inconclusive ({wave.inconclusive}, limit"
                f" {limits.inconclusive_limit}): {culprit.message}",
                wave,
                phase,
                culprit,
            )
    else:
        wave = replace_wave(wave, successful=wave.successful + 1, consecutive_errors=0)
    # Only rounds that judged something count towards `count`: an inconclusive round (no
    # data, too few requests) within its limit means "measure again", never "one step closer
    # to promotion" — otherwise a fleet with no traffic would pass its waves on silence. And
    # a wave whose every judged round failed (failureLimit >= count) has not passed either.
    done = wave.successful + wave.failed
    if done >= limits.count and wave.successful > 0:
        return WaveAnalysisOutcome(
            "Passed",
            f"{done} of {limits.count} measurement rounds taken within limits"
            f" ({wave.successful} successful, {wave.failed} failed,"
            f" {wave.inconclusive} inconclusive)",
            wave,
            phase,
            culprit if phase != "Successful" else None,
        )
    return WaveAnalysisOutcome(
        "Continue",
        f"round {done} of {limits.count}: {phase}"
        + ("" if phase == "Successful" else f" on {label}: {culprit.message}"),
        wave,
        phase,
        culprit if phase != "Successful" else None,
    )


def replace_wave(wave: WaveStatus, **changes: object) -> WaveStatus:
    """A copy of a (frozen) wave status with some fields changed."""
    return wave.model_copy(update=changes)


def _label(measurement: Measurement) -> str:
    return (
        f"metric {measurement.metric}"
        if measurement.variant is None
        else f"metric {measurement.metric} on {measurement.variant}"
    )


__all__ = [
    "AnalysisLimits",
    "MeasurementVerdict",
    "WaveAnalysisOutcome",
    "judge",
    "no_data_policy",
    "round_phase",
    "tally",
    "uses_stable",
]
