"""Condition bookkeeping, per the Kubernetes API conventions and kstatus.

Conditions are a list keyed by type. A transition time changes only when the status does,
so that a reconcile that finds nothing new writes nothing new (status write storms are how
operators melt their apiserver). kstatus reads Reconciling and Stalled as abnormal-true
conditions and Ready as the summary; Argo CD and Flux judge health from them together with
observedGeneration.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from slmops.api.v1alpha1.common import Condition, ConditionStatus


def now_rfc3339(moment: datetime | None = None) -> str:
    """A timestamp in the form Kubernetes writes (second precision, Z suffix)."""
    value = (moment or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    return value.isoformat().replace("+00:00", "Z")


def find(conditions: Iterable[Condition], condition_type: str) -> Condition | None:
    """The condition of this type, if present."""
    return next((c for c in conditions if c.type == condition_type), None)


def is_true(conditions: Iterable[Condition], condition_type: str) -> bool:
    """Whether the condition of this type is present and True."""
    found = find(conditions, condition_type)
    return found is not None and found.status == "True"


def set_condition(
    conditions: Sequence[Condition],
    condition_type: str,
    status: ConditionStatus,
    *,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[Condition]:
    """Return conditions with one condition set; keeps its transition time if unchanged."""
    previous = find(conditions, condition_type)
    transition = (
        previous.last_transition_time
        if previous is not None and previous.status == status and previous.last_transition_time
        else now
    )
    updated = Condition(
        type=condition_type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=generation,
    )
    result = [c for c in conditions if c.type != condition_type]
    result.append(updated)
    return sorted(result, key=_condition_order)


# Ready first, then kstatus' abnormal-true pair, then kind-specific ones alphabetically:
# the order people read them in, and a stable order so equal lists compare equal.
_LEADING = ("Ready", "Reconciling", "Stalled")


def _condition_order(condition: Condition) -> tuple[int, str]:
    if condition.type in _LEADING:
        return (_LEADING.index(condition.type), "")
    return (len(_LEADING), condition.type)


def first_sight(
    conditions: Sequence[Condition], generation: int | None, now: str
) -> list[Condition]:
    """Conditions for an object the operator has not judged yet at this generation."""
    if (ready := find(conditions, "Ready")) and ready.observed_generation == generation:
        return list(conditions)
    updated = set_condition(
        conditions,
        "Ready",
        "Unknown",
        reason="Reconciling",
        message="The operator has seen this generation and is working on it.",
        generation=generation,
        now=now,
    )
    return set_condition(
        updated,
        "Reconciling",
        "True",
        reason="NewGeneration",
        message=f"Reconciling generation {generation}.",
        generation=generation,
        now=now,
    )


def as_status(conditions: Iterable[Condition]) -> list[dict[str, object]]:
    """Conditions as they go into a status patch (camelCase, no empty fields)."""
    return [c.model_dump(by_alias=True, exclude_none=True) for c in conditions]
