"""A small fleet and a loop that plays the controller, for the rollout decision tests.

The loop does what the controller does between calls of decide(): it asks for a round of
measurements when one is due, lets every node serve what `desired` says (ready at once,
unless the node is offline), and moves the clock. It also checks, at every step, that
decide() is idempotent and survives a round trip of its status through JSON (an operator
restart reads the status back from the apiserver).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from slmops.api.v1alpha1.common import LabelSelector
from slmops.api.v1alpha1.edgerollout import EdgeRolloutSpec, EdgeRolloutStatus, Measurement
from slmops.domain.placement import FleetNode, VariantOffer
from slmops.domain.rollout import (
    Decision,
    NodeServing,
    PlannedQuery,
    World,
    decide,
    measurement_from,
    plan_round,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GIB = 1024**3
MIB = 1024**2
HW = "hardware.slmops.io/class"
SITE = "slmops.io/site"
EDGE = "node-role.slmops.io/edge"


def fleet_node(name: str, hw: str = "x86", site: str = "a", *, ready: bool = True) -> FleetNode:
    return FleetNode(name, {EDGE: "true", HW: hw, SITE: site}, 8 * GIB, ready)


def default_fleet() -> list[FleetNode]:
    return [
        *(fleet_node(f"x86-{i}", "x86", "a" if i < 3 else "b") for i in range(6)),
        *(fleet_node(f"arm-{i}", "arm", "a" if i < 2 else "b") for i in range(4)),
    ]


def offers_for(revision: str) -> list[VariantOffer]:
    return [
        VariantOffer(
            name=hw,
            hardware_class=hw,
            selector=LabelSelector(match_labels={HW: hw}),
            qualified=True,
            artifact=f"registry.local/models/demo@sha256:{revision}",
            model_bytes=200 * MIB,
            runtime_overhead_mib=256,
            gpu_memory_mib=None,
        )
        for hw in ("arm", "x86")
    ]


P95 = {
    "name": "p95-latency",
    "query": (
        "histogram_quantile(0.95, sum by (le) (rate(slmops_request_duration_seconds_bucket{"
        'namespace="{{namespace}}", slmops_io_rollout="{{rollout}}",'
        ' slmops_io_revision="{{revision}}", slmops_io_variant="{{variant}}"}[1m])))'
    ),
    "successCondition": "result <= 1.2 * stable",
}


def make_spec(**overrides: Any) -> EdgeRolloutSpec:
    body: dict[str, Any] = {
        "model": {"name": "demo"},
        "fleet": {"selector": {"matchLabels": {EDGE: "true"}}},
        "strategy": {
            "maxUnavailable": 2,
            "nodeTimeoutSeconds": 60,
            "waves": [{"name": "canary", "count": 2}, {"percent": 50}, {"percent": 100}],
        },
        "analysis": {
            "prometheus": {"address": "http://127.0.0.1:9090"},
            "intervalSeconds": 10,
            "count": 2,
            "metrics": [P95],
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return EdgeRolloutSpec.model_validate(body)


Reading = tuple[float | None, float | None, str | None, float | None]
"""value, stable value, error, samples"""


def healthy_reading(planned: PlannedQuery) -> Reading:
    return (0.10, 0.10, None, 100.0)


@dataclass
class Run:
    """A rollout driven step by step, as the controller would."""

    spec: EdgeRolloutSpec
    nodes: list[FleetNode] = field(default_factory=default_fleet)
    model_revision: str | None = "r1"
    status: EdgeRolloutStatus = field(default_factory=EdgeRolloutStatus)
    serving: dict[str, NodeServing] = field(default_factory=dict)
    now: datetime = T0
    generation: int = 1
    measure: Callable[[PlannedQuery], Reading] = healthy_reading
    action: tuple[str, str] | None = None
    offline: set[str] = field(default_factory=set)
    revisions: tuple[str, ...] = ("r1", "r2", "r3")
    custom_offers: dict[str, list[VariantOffer]] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    measured_rounds: int = 0

    def world(self, measurements: list[Measurement] | None = None) -> World:
        return World(
            now=self.now,
            generation=self.generation,
            spec=self.spec,
            status=self.status,
            model_revision=self.model_revision,
            offers={r: self.custom_offers.get(r) or offers_for(r) for r in self.revisions},
            nodes=[replace(n, ready=n.name not in self.offline) for n in self.nodes],
            # A node that went offline has no ready pod, whatever it ran before.
            node_revision={
                name: replace(serving, ready=serving.ready and name not in self.offline)
                for name, serving in self.serving.items()
            },
            measurements=measurements,
            action=self.action,
            name="demo",
            namespace="edge",
        )

    def step(self, seconds: float = 5.0) -> Decision:
        """One reconcile, then the fleet follows and the clock moves."""
        world = self.world()
        decision = decide(world)
        if decision.measure_now:
            planned = plan_round(world)
            assert planned, "decide asked for a round but plan_round has nothing to measure"
            measurements = [self.reading(world, p) for p in planned]
            world = self.world(measurements)
            decision = decide(world)
            self.measured_rounds += 1
        check_stable_under_replay(world, decision)
        self.decisions.append(decision)
        self.events.extend(decision.events)
        self.status = decision.status
        self.follow(decision.desired)
        self.now += timedelta(seconds=seconds)
        return decision

    def reading(self, world: World, planned: PlannedQuery) -> Measurement:
        value, stable, error, samples = self.measure(planned)
        return measurement_from(
            world, planned, value=value, stable_value=stable, error=error, samples=samples
        )

    def follow(self, desired: Mapping[str, str]) -> None:
        # An offline node gets its pod object but never a ready one.
        self.serving = {
            name: NodeServing(revision, name not in self.offline, self.now)
            for name, revision in desired.items()
        }

    def run_until(
        self, done: Callable[[Run], bool], steps: int = 200, seconds: float = 5.0
    ) -> None:
        for _ in range(steps):
            self.step(seconds)
            if done(self):
                return
        raise AssertionError(f"not done after {steps} steps; status: {self.status.message}")

    def settle(self, revision: str = "r1") -> None:
        """A first rollout to `revision`, finished."""
        self.model_revision = revision
        self.run_until(lambda r: r.status.phase == "Healthy")

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


def check_stable_under_replay(world: World, decision: Decision) -> None:
    """decide() again with its own status, and with that status read back from JSON, changes
    nothing: the controller can skip no-op writes and a restart continues exactly."""
    again = decide(replace(world, status=decision.status))
    assert again.status == decision.status
    assert again.desired == decision.desired
    assert again.variants == decision.variants
    assert not again.measure_now or decision.measure_now
    stored = EdgeRolloutStatus.model_validate(
        decision.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    )
    restarted = decide(replace(world, status=stored))
    assert restarted.status == decision.status
    assert restarted.desired == decision.desired


def nodes_on(run: Run, revision: str) -> set[str]:
    return {n for n, s in run.serving.items() if s.revision == revision}


def all_assigned(run: Run) -> set[str]:
    return {n.name for n in run.nodes}


def by_name(items: Iterable[Any]) -> dict[str, Any]:
    return {i.name: i for i in items}
