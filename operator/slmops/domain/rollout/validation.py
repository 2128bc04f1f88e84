"""The spec checks a rollout needs before it can act (admission runs them too)."""

from __future__ import annotations

from slmops.api.v1alpha1.edgerollout import (
    EdgeRolloutSpec,
)
from slmops.domain.expression import ExpressionError, compile_condition
from slmops.domain.promql import TemplateError, validate
from slmops.domain.waves import max_unavailable_count


class InvalidSpecError(ValueError):
    """A spec the rollout cannot act on; the message says which field and why."""


def validate_spec(spec: EdgeRolloutSpec) -> None:
    """Raise InvalidSpecError for conditions, templates or limits the rollout cannot use.

    Admission calls it too, so a bad spec is refused before it is stored.
    """
    problems: list[str] = []
    try:
        max_unavailable_count(1, spec.strategy.max_unavailable)
    except ValueError as error:
        problems.append(f"strategy.maxUnavailable: {error}")
    if spec.analysis is not None:
        templates = [("analysis.sampleCountQuery", spec.analysis.sample_count_query)]
        for index, metric in enumerate(spec.analysis.metrics):
            where = f"analysis.metrics[{index}] ({metric.name})"
            templates.append((f"{where}.query", metric.query))
            for label, text in (
                ("successCondition", metric.success_condition),
                ("failureCondition", metric.failure_condition),
            ):
                if text:
                    try:
                        compile_condition(text)
                    except ExpressionError as error:
                        problems.append(f"{where}.{label}: {error}")
        for where, template in templates:
            try:
                validate(template)
            except TemplateError as error:
                problems.append(f"{where}: {error}")
    if problems:
        raise InvalidSpecError("; ".join(problems))
