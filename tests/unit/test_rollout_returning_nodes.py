"""Nodes lost mid-wave and returning: skipped, reported, and brought to the right revision.

The rule under test: a node the rollout skipped stays `Skipped` (and counted in
status.skippedCount) until it is seen ready on the revision it should serve; it serves the
canary while the rollout is in flight, the new stable after a promotion and the old stable
after a rollback; and a wave's analysis only queries variants that something of the wave
(not skipped from it) serves the canary on.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from slmops.api.v1alpha1.edgerollout import NodeAssignment
from slmops.domain import conditions as cond
from slmops.domain.rollout import PlannedQuery
from tests.unit.rollout_world import Reading, Run, make_spec

pytestmark = pytest.mark.unit

# default_fleet under these waves: wave-0 arm-0 x86-0, wave-1 arm-1 x86-1, wave-2 the rest.
PAIRED_WAVES = [{"count": 2}, {"count": 4}, {"percent": 100}]


def started(lost: set[str], **spec: object) -> Run:
    """r1 stable everywhere, then r2 started with `lost` offline from the beginning."""
    run = Run(make_spec(**spec))
    run.settle("r1")
    run.model_revision = "r2"
    run.offline |= lost
    return run


def recording(run: Run, reading: Reading = (0.1, 0.1, None, 100.0)) -> list[tuple[int, str]]:
    """Record every (wave, variant) the controller is asked to measure."""
    asked: list[tuple[int, str]] = []

    def measure(planned: PlannedQuery) -> Reading:
        asked.append((planned.wave, planned.variant))
        return reading

    run.measure = measure
    return asked


def node(run: Run, name: str) -> NodeAssignment:
    return next(n for n in run.status.nodes if n.node == name)


def healthy_on(revision: str) -> Callable[[Run], bool]:
    return lambda r: r.status.phase == "Healthy" and r.status.stable_revision == revision


def test_a_skipped_node_stays_reported_after_promotion_until_it_serves_the_new_stable() -> None:
    run = started({"x86-1"}, strategy={"waves": PAIRED_WAVES})
    run.run_until(healthy_on("r2"), seconds=10)
    lost = node(run, "x86-1")
    assert lost.state == "Skipped"
    assert "rollout of r2" in lost.reason and "node offline" in lost.reason
    assert "gets revision r2 when it returns" in lost.reason
    assert run.status.skipped_count == 1
    assert "except 1 skipped (x86-1)" in run.status.message
    ready = cond.find(run.status.conditions, "Ready")
    assert ready is not None and ready.status == "True" and "x86-1" in ready.message
    complete = [m for _, r, m in run.events if r == "RolloutComplete"]
    assert "skipped nodes x86-1 get it when they return" in complete[-1]
    # Level-triggered: however long it stays away, it stays reported, on the new stable.
    for _ in range(5):
        decision = run.step(60)
        assert decision.desired["x86-1"] == "r2"
        assert node(run, "x86-1").state == "Skipped"
    run.offline.clear()
    run.run_until(lambda r: node(r, "x86-1").state == "Stable")
    back = node(run, "x86-1")
    assert back.reason == "" and back.wave is None and back.revision == "r2"
    assert run.status.skipped_count == 0
    assert run.status.message == "all assigned nodes serve revision r2"
    assert "NodeReturned" in run.reasons()


def test_a_node_returning_after_its_wave_passed_gets_the_canary_while_in_flight() -> None:
    run = started({"x86-1"}, strategy={"waves": PAIRED_WAVES}, analysis={"count": 3})
    run.run_until(lambda r: r.status.current_wave == 2, seconds=10)
    assert node(run, "x86-1").state == "Skipped"
    assert run.status.waves[1].skipped_nodes == ["x86-1"]
    run.offline.clear()
    decision = run.step()
    # It was switched: back online it runs the canary, whichever wave is current.
    assert decision.desired["x86-1"] == "r2"
    run.step()
    assert node(run, "x86-1").state == "Updated"
    assert run.status.skipped_count == 0
    run.run_until(healthy_on("r2"))
    assert node(run, "x86-1").state == "Stable"


def test_a_variant_whose_nodes_in_the_wave_were_all_skipped_is_not_queried() -> None:
    run = started({"x86-1"}, strategy={"waves": PAIRED_WAVES})
    asked = recording(run)
    run.run_until(healthy_on("r2"), seconds=10)
    assert {variant for wave, variant in asked if wave == 1} == {"arm"}
    assert {variant for wave, variant in asked if wave in (0, 2)} == {"arm", "x86"}
    assert run.status.waves[1].successful == 2
    assert run.status.paused_by is None


def test_a_node_returning_while_its_wave_analyses_does_not_join_that_waves_analysis() -> None:
    run = started({"x86-0"}, analysis={"count": 4}, strategy={"waves": PAIRED_WAVES})
    asked = recording(run)
    run.run_until(lambda r: r.status.waves[0].successful >= 1, seconds=10)
    run.offline.clear()
    run.run_until(lambda r: node(r, "x86-0").state == "Updated")
    assert run.serving["x86-0"].revision == "r2" and run.serving["x86-0"].ready
    run.run_until(lambda r: r.status.waves[0].phase == "Succeeded")
    assert {variant for wave, variant in asked if wave == 0} == {"arm"}
    assert run.status.waves[0].successful == 4


def test_a_wave_whose_every_node_was_skipped_passes_on_the_earlier_analysis() -> None:
    run = started({"arm-1", "x86-1"}, strategy={"waves": PAIRED_WAVES})
    asked = recording(run)
    run.run_until(healthy_on("r2"), seconds=10)
    assert not [a for a in asked if a[0] == 1]
    wave = run.status.waves[1]
    assert wave.phase == "Succeeded" and wave.successful == 0
    assert sorted(wave.skipped_nodes) == ["arm-1", "x86-1"]
    not_analyzed = [(t, m) for t, r, m in run.events if r == "WaveNotAnalyzed"]
    assert len(not_analyzed) == 1
    assert not_analyzed[0][0] == "Warning" and "wave-1" in not_analyzed[0][1]
    assert run.status.skipped_count == 2


def test_a_first_wave_whose_every_node_was_skipped_waits_for_a_person() -> None:
    run = started({"arm-0", "x86-0"}, strategy={"waves": PAIRED_WAVES})
    asked = recording(run)
    run.run_until(lambda r: r.status.phase == "Paused", seconds=10)
    assert run.status.paused_by == "analysis" and run.status.current_wave == 0
    assert "no earlier wave has measured r2" in run.status.message
    assert "slmops promote" in run.status.message
    assert asked == []
    for _ in range(5):
        run.step(60)
    assert run.status.phase == "Paused" and asked == []
    run.action = ("on", "promote")
    run.run_until(healthy_on("r2"), seconds=10)
    assert {wave for wave, _ in asked} == {1, 2}
    assert run.status.skipped_count == 2


def test_a_node_skipped_in_a_rolled_back_rollout_gets_the_old_stable_when_it_returns() -> None:
    run = started({"x86-0"}, strategy={"waves": PAIRED_WAVES})
    run.measure = lambda planned: (0.5 if planned.variant == "arm" else 0.1, 0.1, None, 100.0)
    run.run_until(lambda r: r.status.phase == "RolledBack", seconds=10)
    lost = node(run, "x86-0")
    assert lost.state == "Skipped"
    assert "rollout of r2, which was rolled back" in lost.reason
    assert "gets revision r1 when it returns" in lost.reason
    assert run.decisions[-1].desired["x86-0"] == "r1"
    assert node(run, "arm-0").state == "RolledBack"
    # An offline node cannot report back: the rollback completes without it, and says so.
    run.step()
    assert run.status.rollback_completed_at is not None
    assert "except 1 skipped (x86-0)" in run.status.message
    assert run.status.skipped_count == 1
    run.offline.clear()
    run.run_until(lambda r: node(r, "x86-0").state != "Skipped")
    assert node(run, "x86-0").state == "RolledBack"
    assert node(run, "x86-0").reason == "was Skipped"
    assert run.serving["x86-0"].revision == "r1" and run.serving["x86-0"].ready
    assert run.status.message == "rolled back: every touched node serves r1 again"
    assert run.status.skipped_count == 0 and run.status.phase == "RolledBack"


def test_a_node_skipped_in_a_withdrawn_rollout_returns_to_stable() -> None:
    run = started({"x86-0"}, strategy={"waves": PAIRED_WAVES})
    run.run_until(lambda r: node(r, "x86-0").state == "Skipped", seconds=10)
    run.model_revision = "r1"
    decision = run.step()
    assert run.status.phase == "Healthy" and run.status.canary_revision is None
    assert decision.desired["x86-0"] == "r1"
    lost = node(run, "x86-0")
    assert lost.state == "Skipped" and "which was withdrawn" in lost.reason
    run.offline.clear()
    run.run_until(lambda r: node(r, "x86-0").state == "Stable")
    assert run.status.skipped_count == 0


def test_a_new_rollout_plans_a_node_still_away_like_any_other() -> None:
    run = started({"x86-1"}, strategy={"waves": PAIRED_WAVES})
    run.run_until(healthy_on("r2"), seconds=10)
    run.model_revision = "r3"
    run.step()
    planned = node(run, "x86-1")
    assert planned.state == "Stable" and planned.wave == 1
    run.run_until(lambda r: r.status.current_wave == 2, seconds=10)
    again = node(run, "x86-1")
    assert again.state == "Skipped" and "revision r3" in again.reason


def test_an_invalid_spec_keeps_a_skipped_node_on_the_stable_revision() -> None:
    run = started({"x86-1"}, strategy={"waves": PAIRED_WAVES})
    run.run_until(healthy_on("r2"), seconds=10)
    # Its pod is not known (deleted while the node was away): the status alone decides.
    del run.serving["x86-1"]
    bad = run.spec.model_dump(by_alias=True)
    bad["analysis"]["metrics"][0]["successCondition"] = "result <= stabel"
    run.spec = type(run.spec).model_validate(bad)
    decision = run.step()
    assert decision.desired["x86-1"] == "r2"
