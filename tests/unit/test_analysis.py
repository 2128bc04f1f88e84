from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slmops.api.v1alpha1.edgerollout import AnalysisSpec, Measurement, MetricSpec, WaveStatus
from slmops.domain.analysis import AnalysisLimits, judge, round_phase, tally

pytestmark = pytest.mark.unit


def policy(**overrides: Any) -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {"prometheus": {"address": "http://127.0.0.1:9090"}, **overrides}
    )


def metric(success: str = "result <= 1.2 * stable", **overrides: Any) -> MetricSpec:
    return MetricSpec.model_validate(
        {"name": "p95", "query": "q", "successCondition": success, **overrides}
    )


def test_error_is_never_a_pass() -> None:
    verdict = judge(metric("result < 100"), 1.0, 1.0, "connection refused", 1000, policy())
    assert verdict.phase == "Error" and "connection refused" in verdict.message


def test_too_few_samples_is_inconclusive_with_the_count() -> None:
    verdict = judge(metric(), 1.0, 1.0, None, 3, policy(minSampleCount=20))
    assert verdict.phase == "Inconclusive"
    assert "only 3 requests" in verdict.message and "20 needed" in verdict.message
    missing = judge(metric(), 1.0, 1.0, None, None, policy(minSampleCount=20))
    assert "only 0 requests" in missing.message


@pytest.mark.parametrize(
    ("rollout_policy", "metric_policy", "expected"),
    [
        ("Inconclusive", None, "Inconclusive"),
        ("Fail", None, "Failed"),
        ("Pass", None, "Successful"),
        ("Inconclusive", "Pass", "Successful"),
        ("Pass", "Fail", "Failed"),
    ],
)
def test_no_data_follows_the_policy_metric_first(
    rollout_policy: str, metric_policy: str | None, expected: str
) -> None:
    chosen = metric(onNoData=metric_policy) if metric_policy else metric()
    for value, stable in ((None, 1.0), (math.nan, 1.0), (1.0, None), (1.0, math.nan)):
        verdict = judge(chosen, value, stable, None, None, policy(onNoData=rollout_policy))
        assert verdict.phase == expected, (value, stable)
        assert "no data" in verdict.message


def test_absolute_conditions_do_not_need_the_stable_value() -> None:
    assert judge(metric("result < 0.01"), 0.001, None, None, None, policy()).phase == "Successful"


def test_success_only_false_is_failed_with_both_values() -> None:
    verdict = judge(metric(), 0.5, 0.1, None, None, policy())
    assert verdict.phase == "Failed"
    assert "result=0.5, stable=0.1" in verdict.message and "does not hold" in verdict.message


def test_with_a_failure_condition_the_middle_is_inconclusive() -> None:
    chosen = metric("result < 1", failureCondition="result > 2")
    assert judge(chosen, 0.5, None, None, None, policy()).phase == "Successful"
    assert judge(chosen, 1.5, None, None, None, policy()).phase == "Inconclusive"
    assert judge(chosen, 2.5, None, None, None, policy()).phase == "Failed"


def test_failure_condition_wins_when_both_hold() -> None:
    chosen = metric("result < 10", failureCondition="result > 2")
    assert judge(chosen, 5, None, None, None, policy()).phase == "Failed"


def test_a_condition_that_cannot_be_evaluated_is_an_error() -> None:
    verdict = judge(metric("result / stable < 2"), 1.0, 0.0, None, None, policy())
    assert verdict.phase == "Error" and "division by zero" in verdict.message


def measurement(phase: str, metric_name: str = "p95", variant: str = "x86") -> Measurement:
    return Measurement(
        metric=metric_name,
        wave=0,
        variant=variant,
        phase=phase,
        at="2026-01-01T00:00:00Z",
    )


LIMITS = AnalysisLimits(
    count=3,
    failure_limit=1,
    inconclusive_limit=1,
    consecutive_error_limit=2,
    interval_seconds=10,
    initial_delay_seconds=0,
)


def test_round_phase_is_the_worst() -> None:
    assert round_phase([measurement("Successful"), measurement("Error")]) == "Error"
    assert round_phase([measurement("Error"), measurement("Failed")]) == "Failed"
    assert round_phase([measurement("Inconclusive"), measurement("Successful")]) == "Inconclusive"
    assert round_phase([]) is None


def run(phases: list[str]) -> list[str]:
    wave = WaveStatus(index=0, name="w")
    kinds: list[str] = []
    for phase in phases:
        outcome = tally(wave, [measurement(phase)], LIMITS)
        wave = outcome.wave
        kinds.append(outcome.kind)
    return kinds


def test_limits() -> None:
    assert run(["Successful", "Successful", "Successful"]) == ["Continue", "Continue", "Passed"]
    assert run(["Failed", "Failed"]) == ["Continue", "Abort"]
    assert run(["Inconclusive", "Inconclusive"]) == ["Continue", "Pause"]
    assert run(["Error", "Error", "Error"]) == ["Continue", "Continue", "Abort"]
    # A non-error round resets the error streak; errors count no round.
    assert run(["Error", "Error", "Successful", "Error", "Error", "Successful", "Successful"]) == [
        "Continue",
        "Continue",
        "Continue",
        "Continue",
        "Continue",
        "Continue",
        "Passed",
    ]
    # A failed round within its limit counts towards count; an inconclusive one does not
    # (no data is never progress), so the wave needs one more judged round.
    assert run(["Failed", "Inconclusive", "Successful"]) == ["Continue", "Continue", "Continue"]
    assert run(["Failed", "Inconclusive", "Successful", "Successful"])[-1] == "Passed"


def test_silence_never_passes_a_wave() -> None:
    generous = replace(LIMITS, count=2, failure_limit=5, inconclusive_limit=10)
    wave = WaveStatus(index=0, name="w")
    kinds = []
    for _ in range(11):
        outcome = tally(wave, [measurement("Inconclusive")], generous)
        wave = outcome.wave
        kinds.append(outcome.kind)
    assert "Passed" not in kinds and kinds[-1] == "Pause"


def test_failures_alone_never_pass_a_wave() -> None:
    tolerant = replace(LIMITS, count=2, failure_limit=5, inconclusive_limit=0)
    wave = WaveStatus(index=0, name="w")
    for _ in range(3):
        outcome = tally(wave, [measurement("Failed")], tolerant)
        wave = outcome.wave
        assert outcome.kind == "Continue"


def test_abort_names_the_culprit() -> None:
    wave = WaveStatus(index=0, name="w", failed=1)
    outcome = tally(
        wave, [measurement("Successful"), measurement("Failed", "errors", "arm")], LIMITS
    )
    assert outcome.kind == "Abort" and outcome.culprit is not None
    assert outcome.culprit.metric == "errors" and "metric errors on arm" in outcome.reason


@given(st.lists(st.sampled_from(["Error", "Inconclusive", "Failed"]), max_size=30))
def test_rounds_without_a_success_or_with_only_errors_never_pass_early(phases: list[str]) -> None:
    kinds = run(phases)
    errors_only = all(p == "Error" for p in phases)
    if errors_only:
        assert "Passed" not in kinds
    for index, kind in enumerate(kinds):
        if kind in ("Abort", "Pause"):
            break
        counted = sum(1 for p in phases[: index + 1] if p != "Error")
        assert (kind == "Passed") == (counted >= LIMITS.count)


@given(
    value=st.floats(allow_nan=True, allow_infinity=True) | st.none(),
    stable=st.floats(allow_nan=True, allow_infinity=True) | st.none(),
    error=st.text(min_size=1, max_size=10),
    samples=st.floats(min_value=0, max_value=1e6) | st.none(),
)
def test_no_prometheus_error_is_ever_successful(
    value: float | None, stable: float | None, error: str, samples: float | None
) -> None:
    for on_no_data in ("Inconclusive", "Pass", "Fail"):
        verdict = judge(metric(), value, stable, error, samples, policy(onNoData=on_no_data))
        assert verdict.phase == "Error"
