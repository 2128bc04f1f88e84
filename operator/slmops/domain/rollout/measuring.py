"""The controller's side of an analysis round: which queries to run, and their judgement."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from slmops.api.v1alpha1.edgerollout import (
    EdgeRolloutStatus,
    Measurement,
)
from slmops.domain import conditions as cond
from slmops.domain.analysis import judge, uses_stable
from slmops.domain.promql import render
from slmops.domain.rollout.analyzing import measured_variants
from slmops.domain.rollout.decision import decide
from slmops.domain.rollout.draft import new_draft
from slmops.domain.rollout.queries import metric_spec, query_variables
from slmops.domain.rollout.world import World


@dataclass(frozen=True)
class PlannedQuery:
    """One measurement the controller must take for the current round (queries rendered)."""

    metric: str
    variant: str
    hardware_class: str
    query: str
    stable_query: str | None
    sample_query: str | None
    wave: int = 0


def plan_round(world: World) -> list[PlannedQuery]:
    """The queries of the round decide() asked for (empty when none is due)."""
    decision = decide(replace(world, measurements=None))
    if not decision.measure_now or world.spec.analysis is None:
        return []
    status = decision.status
    wave = status.waves[status.current_wave or 0]
    draft = new_draft(replace(world, status=status, measurements=None))
    # Only variants something of the wave serves the canary on (analyzing's docstring says
    # why); decide() never asks for a round of a wave that has none.
    variants = measured_variants(draft, wave)
    analysis = world.spec.analysis
    planned: list[PlannedQuery] = []
    for metric in analysis.metrics:
        for variant in variants:
            variables = query_variables(draft, wave, variant)
            stable_query = (
                render(metric.query, variables | {"revision": status.stable_revision or ""})
                if uses_stable(metric)
                else None
            )
            planned.append(
                PlannedQuery(
                    metric=metric.name,
                    variant=variant,
                    hardware_class=variables["hardwareClass"],
                    query=render(metric.query, variables),
                    stable_query=stable_query,
                    sample_query=(
                        render(analysis.sample_count_query, variables)
                        if analysis.min_sample_count > 0
                        else None
                    ),
                    wave=wave.index,
                )
            )
    return planned


def measurement_from(
    world: World,
    planned: PlannedQuery,
    *,
    value: float | None,
    stable_value: float | None,
    error: str | None,
    samples: float | None,
) -> Measurement:
    """Judge one planned query's results into a Measurement for decide()."""
    analysis = world.spec.analysis
    metric = metric_spec(analysis, planned.metric)
    if analysis is None or metric is None:
        raise ValueError(f"metric {planned.metric!r} is not in spec.analysis.metrics")
    note = ""
    if planned.stable_query is not None and error is None and not _finite(stable_value):
        baseline = _last_stable_value(world.status, planned.metric, planned.variant)
        if baseline is not None:
            # Once a wave has switched every node of a variant, nothing serves the stable
            # revision there any more; the stable value measured earlier in this rollout is
            # the honest baseline (not "no data", which would pause the last wave).
            stable_value, note = baseline[0], f" (stable value measured at {baseline[1]})"
    verdict = judge(metric, value, stable_value, error, samples, analysis)
    return Measurement(
        metric=planned.metric,
        wave=planned.wave,
        variant=planned.variant,
        phase=verdict.phase,
        value=value,
        stable_value=stable_value,
        message=verdict.message + note,
        at=cond.now_rfc3339(world.now),
    )


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _last_stable_value(
    status: EdgeRolloutStatus, metric: str, variant: str
) -> tuple[float, str] | None:
    """The newest stable value this rollout measured for a metric on a variant."""
    for measurement in reversed(status.measurements):
        if (
            measurement.metric == metric
            and measurement.variant == variant
            and _finite(measurement.stable_value)
            and measurement.stable_value is not None
        ):
            return measurement.stable_value, measurement.at
    return None
