"""What admission refuses beyond the CRD schema.

The schema (generated from the API models) guards types, ranges, enums, patterns and
required fields on every Kubernetes version. What it cannot say on 1.20 — cross-field
rules, PromQL template variables, conditions that do not parse, waves that cover no node,
a revision pin that does not exist — is checked here, purely, so that the webhook, the
reconcilers and `slmops plan` give the same answer. Each problem names the field in the
same dotted camelCase path the apiserver uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from slmops.api.v1alpha1.edgerollout import EdgeRolloutSpec
from slmops.api.v1alpha1.slmmodel import SLMModelSpec, SLMModelStatus
from slmops.domain import promql
from slmops.domain.expression import ExpressionError, compile_condition
from slmops.domain.selectors import describe, matches


@dataclass(frozen=True)
class Problem:
    """One reason to refuse an object."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class Review:
    """Problems refuse the object; warnings are shown to the client and let it through."""

    problems: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return "; ".join(str(p) for p in self.problems)


@dataclass(frozen=True)
class ClusterFacts:
    """What the webhook knows of the cluster (from the operator's indexes)."""

    node_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Every node's labels, by node name."""
    model_status: SLMModelStatus | None = None
    """The referenced SLMModel's status, if the model exists."""
    model_exists: bool = False


def _field_path(location: Sequence[int | str], prefix: str) -> str:
    path = prefix
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _validation_problems(error: ValidationError, prefix: str) -> list[Problem]:
    return [
        Problem(_field_path(item["loc"], prefix), item["msg"].removeprefix("Value error, "))
        for item in error.errors()
    ]


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], spec: Mapping[str, Any]) -> tuple[M | None, list[Problem]]:
    try:
        return model.model_validate(spec), []
    except ValidationError as error:
        return None, _validation_problems(error, "spec")


def review_slmmodel(spec: Mapping[str, Any]) -> Review:
    """Rules for an SLMModel spec."""
    parsed, problems = _parse(SLMModelSpec, spec)
    if parsed is None:
        return Review(tuple(problems))
    for index, variant in enumerate(parsed.variants):
        where = f"spec.variants[{index}].optimize"
        recipe = variant.optimize
        if recipe.int4 is not None and recipe.precision != "int4":
            problems.append(Problem(f"{where}.int4", f"set, but precision is {recipe.precision}"))
        if recipe.int8 is not None and recipe.precision != "int8":
            problems.append(Problem(f"{where}.int8", f"set, but precision is {recipe.precision}"))
        if recipe.pruning is not None and parsed.source.format != "huggingface":
            problems.append(
                Problem(
                    f"{where}.pruning",
                    "pruning works on Hugging Face checkpoints; spec.source.format is onnx",
                )
            )
        if recipe.int8 is not None and parsed.source.format == "huggingface":
            problems.append(
                Problem(
                    f"{where}.int8",
                    "int8 options apply to plain ONNX models; a Hugging Face checkpoint is "
                    "quantized by onnxruntime-genai's builder",
                )
            )
    return Review(tuple(problems))


def _check_template(template: str, where: str) -> list[Problem]:
    try:
        promql.validate(template)
    except promql.TemplateError as error:
        return [Problem(where, str(error))]
    return []


def _check_condition(text: str | None, where: str) -> list[Problem]:
    if text is None:
        return []
    try:
        compile_condition(text)
    except ExpressionError as error:
        return [Problem(where, str(error))]
    return []


def review_edgerollout(spec: Mapping[str, Any], facts: ClusterFacts) -> Review:
    """Rules for an EdgeRollout spec, some of them against the cluster as it is now."""
    parsed, problems = _parse(EdgeRolloutSpec, spec)
    if parsed is None:
        return Review(tuple(problems))
    warnings: list[str] = []
    if parsed.analysis is not None:
        analysis = parsed.analysis
        problems += _check_template(analysis.sample_count_query, "spec.analysis.sampleCountQuery")
        for index, metric in enumerate(analysis.metrics):
            where = f"spec.analysis.metrics[{index}]"
            problems += _check_template(metric.query, f"{where}.query")
            problems += _check_condition(metric.success_condition, f"{where}.successCondition")
            problems += _check_condition(metric.failure_condition, f"{where}.failureCondition")
    problems += _review_wave_sizes(parsed)
    fleet = {
        name: labels
        for name, labels in facts.node_labels.items()
        if matches(parsed.fleet.selector, labels)
    }
    if not fleet:
        warnings.append(
            f"no node matches spec.fleet.selector ({describe(parsed.fleet.selector)}) yet"
        )
    else:
        for index, wave in enumerate(parsed.strategy.waves):
            if wave.selector is not None and not any(
                matches(wave.selector, labels) for labels in fleet.values()
            ):
                problems.append(
                    Problem(
                        f"spec.strategy.waves[{index}].selector",
                        f"covers none of the {len(fleet)} fleet nodes ({describe(wave.selector)})",
                    )
                )
    problems += _review_pin(parsed, facts, warnings)
    return Review(tuple(problems), tuple(warnings))


def _review_wave_sizes(spec: EdgeRolloutSpec) -> list[Problem]:
    """Cumulative counts and percents must grow, or the wave switches nothing."""
    problems: list[Problem] = []
    last_count = 0
    last_percent = 0
    for index, wave in enumerate(spec.strategy.waves):
        if wave.count is not None:
            if wave.count <= last_count:
                problems.append(
                    Problem(
                        f"spec.strategy.waves[{index}].count",
                        f"{wave.count} adds no node: counts are cumulative and an earlier "
                        f"wave already reaches {last_count}",
                    )
                )
            last_count = max(last_count, wave.count)
        if wave.percent is not None:
            if wave.percent <= last_percent:
                problems.append(
                    Problem(
                        f"spec.strategy.waves[{index}].percent",
                        f"{wave.percent}% adds no node: percents are cumulative and an "
                        f"earlier wave already reaches {last_percent}%",
                    )
                )
            last_percent = max(last_percent, wave.percent)
    max_unavailable = spec.strategy.max_unavailable
    if isinstance(max_unavailable, str):
        text = max_unavailable.strip()
        digits = text.removesuffix("%")
        if not text.endswith("%") or not digits.isdigit() or not 1 <= int(digits) <= 100:
            problems.append(
                Problem(
                    "spec.strategy.maxUnavailable",
                    f"{max_unavailable!r} is neither a number nor a percentage like 25%",
                )
            )
    elif max_unavailable < 1:
        problems.append(Problem("spec.strategy.maxUnavailable", "must be at least 1"))
    return problems


def _review_pin(spec: EdgeRolloutSpec, facts: ClusterFacts, warnings: list[str]) -> list[Problem]:
    pin = spec.model.revision
    if not facts.model_exists:
        warnings.append(f"SLMModel {spec.model.name} does not exist (yet)")
        return []
    if pin is None or facts.model_status is None:
        return []
    known = {r.revision for r in facts.model_status.revisions}
    if facts.model_status.revision:
        known.add(facts.model_status.revision)
    if pin in known:
        return []
    listing = ", ".join(sorted(known)) or "none yet"
    return [
        Problem(
            "spec.model.revision",
            f"SLMModel {spec.model.name} has no revision {pin}; known: {listing}",
        )
    ]
