"""The EdgeRollout decision: one pure, level-triggered function from the world to a status.

(Interface first; the body follows.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from slmops.api.v1alpha1.edgerollout import EdgeRolloutSpec, EdgeRolloutStatus, Measurement
from slmops.domain.placement import FleetNode, VariantOffer

ACTIONS = ("promote", "promote-full", "pause", "resume", "abort", "retry")
MEASUREMENTS_PER_METRIC = 10


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
    offers: Mapping[str, Sequence[VariantOffer]]
    nodes: Sequence[FleetNode]
    node_revision: Mapping[str, NodeServing]
    measurements: Sequence[Measurement] | None = None
    action: tuple[str, str] | None = None
    name: str = ""
    namespace: str = ""


@dataclass(frozen=True)
class Decision:
    """The new status and what the controller must make true."""

    status: EdgeRolloutStatus
    desired: Mapping[str, str]
    events: list[tuple[str, str, str]] = field(default_factory=list)
    measure_now: bool = False
    requeue_after: float | None = None
    variants: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedQuery:
    """One measurement the controller must take for the current round."""

    metric: str
    variant: str
    hardware_class: str
    query: str
    stable_query: str | None
    sample_query: str | None


def decide(world: World) -> Decision:
    raise NotImplementedError


def plan_round(world: World) -> list[PlannedQuery]:
    raise NotImplementedError


def measurement_from(
    world: World,
    planned: PlannedQuery,
    *,
    value: float | None,
    stable_value: float | None,
    error: str | None,
    samples: float | None,
) -> Measurement:
    raise NotImplementedError
