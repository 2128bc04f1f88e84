"""What a rollout decision reads (the observed world) and what it returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from slmops.api.v1alpha1.edgerollout import (
    EdgeRolloutSpec,
    EdgeRolloutStatus,
    Measurement,
)
from slmops.domain.placement import FleetNode, VariantOffer

Event = tuple[str, str, str]


@dataclass(frozen=True)
class NodeServing:
    """What a node actually runs for this rollout (from its pod)."""

    revision: str | None
    ready: bool
    since: datetime | None = None


@dataclass(frozen=True)
class World:
    """Everything a decision depends on; the controller gathers it, decide() judges it."""

    now: datetime
    generation: int
    spec: EdgeRolloutSpec
    status: EdgeRolloutStatus
    model_revision: str | None
    """The SLMModel's current revision once it is Ready (None while it builds)."""
    offers: Mapping[str, Sequence[VariantOffer]]
    """Per revision (the stable, the canary and the target at least), its variants."""
    nodes: Sequence[FleetNode]
    node_revision: Mapping[str, NodeServing]
    """Node name → what it serves for this rollout; absent: nothing."""
    measurements: Sequence[Measurement] | None = None
    """A fresh round (from measurement_from), when decide() asked for one."""
    action: tuple[str, str] | None = None
    """(id, action) from the slmops.io/action annotation."""
    name: str = ""
    namespace: str = ""


@dataclass(frozen=True)
class Decision:
    """The new status and what the controller must make true."""

    status: EdgeRolloutStatus
    desired: Mapping[str, str]
    """Node → revision it must serve; nodes absent here serve nothing of this rollout."""
    events: list[Event] = field(default_factory=list)
    """(type, reason, message) of the transitions this decision made."""
    measure_now: bool = False
    """A round is due: call plan_round, measure, and decide again with the measurements."""
    requeue_after: float | None = None
    """Seconds until decide must run again even if nothing changes (None: on change only)."""
    variants: Mapping[str, str] = field(default_factory=dict)
    """Node → the variant of the revision in desired."""
