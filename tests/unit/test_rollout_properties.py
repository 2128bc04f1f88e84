"""Properties of decide() over random rollouts: random verdicts, actions, offline nodes,
new revisions and clock steps. Each step of Run also checks idempotency and restarts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmops.domain.rollout import ACTIONS
from tests.unit.rollout_world import Reading, Run, make_spec

pytestmark = pytest.mark.unit

READINGS: dict[str, Reading] = {
    "good": (0.1, 0.1, None, 100.0),
    "slow": (0.5, 0.1, None, 100.0),
    "empty": (None, None, None, 0.0),
    "error": (None, None, "connection refused", None),
}


@dataclass(frozen=True)
class Tick:
    reading: str
    action: tuple[str, str] | None
    offline: str | None
    revision: str | None
    seconds: int


ticks = st.builds(
    Tick,
    reading=st.sampled_from(sorted(READINGS)),
    action=st.none() | st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(ACTIONS)),
    offline=st.none() | st.sampled_from(["x86-0", "arm-0", "x86-4", "online"]),
    revision=st.none() | st.sampled_from(["r2", "r3"]),
    seconds=st.sampled_from([1, 5, 15, 61]),
)
specs = st.fixed_dictionaries(
    {
        "strategy": st.fixed_dictionaries(
            {
                "maxUnavailable": st.sampled_from([1, 2, "50%"]),
                "nodeTimeoutSeconds": st.sampled_from([5, 60]),
                "waves": st.sampled_from(
                    [
                        [{"count": 2}, {"percent": 100}],
                        [{"count": 1, "pause": {"durationSeconds": 30}}, {"percent": 60}],
                        [{"count": 3, "pause": {}}, {"count": 3}],
                    ]
                ),
            }
        ),
        "analysis": st.fixed_dictionaries(
            {
                "failureLimit": st.integers(0, 2),
                "inconclusiveLimit": st.integers(0, 2),
                "consecutiveErrorLimit": st.integers(0, 3),
                "count": st.integers(1, 3),
                "intervalSeconds": st.sampled_from([1, 10]),
            }
        ),
        "rollback": st.fixed_dictionaries({"automatic": st.booleans()}),
    }
)


def drive(spec: dict[str, Any], script: list[Tick]) -> Run:
    run = Run(make_spec(**spec))
    run.settle("r1")
    run.model_revision = "r2"
    for tick in script:
        run.measure = lambda planned, tick=tick: READINGS[tick.reading]  # type: ignore[misc]
        run.action = tick.action
        if tick.offline == "online":
            run.offline.clear()
        elif tick.offline:
            run.offline.add(tick.offline)
        if tick.revision:
            run.model_revision = tick.revision
        before = run.status
        observed = run.world().node_revision
        decision = run.step(tick.seconds)
        status = decision.status
        # A skipped node is reported exactly while it is not seen serving what it should; once
        # the rollout has ended, what it should serve is the stable revision.
        assert status.skipped_count == sum(n.state == "Skipped" for n in status.nodes)
        if status.canary_revision is None or status.phase == "RolledBack":
            for node in status.nodes:
                if node.state != "Skipped":
                    continue
                assert decision.desired.get(node.node) == status.stable_revision
                seen = observed.get(node.node)
                assert not (seen and seen.ready and seen.revision == status.stable_revision)
        handled = [r for _, r, _ in decision.events if r in ("ActionApplied", "ActionIgnored")]
        repeated = (
            tick.action is not None
            and before.last_action is not None
            and before.last_action.id == tick.action[0]
        )
        # A request is handled exactly once: a repeated id does nothing.
        assert len(handled) == (0 if repeated or tick.action is None else 1)
        # Nodes only ever serve the stable or the new revision of this rollout.
        assert set(decision.desired.values()) <= {status.stable_revision, status.canary_revision}
        assert set(decision.desired) <= {n.node for n in status.nodes if n.variant}
        if status.phase == "RolledBack":
            # Rollback is one step: every touched node is mapped to stable at once.
            for node in status.nodes:
                if node.state == "RolledBack" and status.stable_revision is not None:
                    assert decision.desired.get(node.node) == status.stable_revision
            assert status.canary_revision not in decision.desired.values()
    return run


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs, script=st.lists(ticks, min_size=1, max_size=25))
def test_random_rollouts_keep_their_invariants(spec: dict[str, Any], script: list[Tick]) -> None:
    drive(spec, script)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=specs,
    seconds=st.lists(st.sampled_from([1, 5, 15, 61]), min_size=5, max_size=40),
    offline=st.none() | st.sampled_from(["x86-0", "arm-0"]),
)
def test_prometheus_errors_never_lead_to_a_promotion(
    spec: dict[str, Any], seconds: list[int], offline: str | None
) -> None:
    script = [Tick("error", None, offline, None, s) for s in seconds]
    run = drive(spec, script)
    assert run.status.stable_revision == "r1"
    assert all(w.successful == 0 for w in run.status.waves)
    first = run.status.waves[0]
    assert first.phase != "Succeeded"
    assert all(w.phase == "Pending" for w in run.status.waves[1:])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs, seconds=st.lists(st.sampled_from([1, 5, 15, 61]), min_size=5, max_size=40))
def test_without_actions_at_most_max_unavailable_nodes_switch_at_once(
    spec: dict[str, Any], seconds: list[int]
) -> None:
    run = Run(make_spec(**spec))
    run.settle("r1")
    run.model_revision = "r2"
    run.offline.add("x86-0")
    limit = spec["strategy"]["maxUnavailable"]
    for step in seconds:
        run.step(step)
        switching = [n for n in run.status.nodes if n.state == "Switching"]
        wave = run.status.waves[run.status.current_wave or 0] if run.status.waves else None
        allowed = limit if isinstance(limit, int) else max(1, len(wave.nodes) // 2 if wave else 1)
        assert len(switching) <= max(allowed, 1)
