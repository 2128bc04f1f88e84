"""The analysis queries of a wave and variant, rendered from the spec's templates."""

from __future__ import annotations

from collections.abc import Mapping

from slmops.api.v1alpha1.edgerollout import (
    AnalysisSpec,
    MetricSpec,
    WaveStatus,
)
from slmops.domain.promql import TemplateError, render
from slmops.domain.rollout.draft import Draft


def metric_spec(analysis: AnalysisSpec | None, name: str) -> MetricSpec | None:
    if analysis is None:
        return None
    return next((m for m in analysis.metrics if m.name == name), None)


def query_variables(draft: Draft, wave: WaveStatus, variant: str | None) -> dict[str, str]:
    hardware_class = next(
        (
            p.hardware_class
            for p in draft.canary_placement.values()
            if p.variant == variant and p.hardware_class
        ),
        variant or "",
    )
    return {
        "rollout": draft.world.name,
        "namespace": draft.world.namespace,
        "revision": draft.canary or "",
        "stableRevision": draft.stable or "",
        "variant": variant or "",
        "hardwareClass": hardware_class,
        "wave": wave.name,
    }


def try_render(template: str, variables: Mapping[str, str]) -> str:
    try:
        return render(template, variables)
    except TemplateError:
        return template
