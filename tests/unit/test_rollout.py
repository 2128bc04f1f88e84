"""The rollout decision, driven through whole rollouts the way the controller drives it.

Every step of every scenario also checks that decide() is idempotent and survives its
status being read back from JSON (see rollout_world.check_stable_under_replay).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from slmops.domain import conditions as cond
from slmops.domain.rollout import PlannedQuery, decide, plan_round, preview_plan
from tests.unit.rollout_world import (
    HW,
    SITE,
    Reading,
    Run,
    all_assigned,
    default_fleet,
    fleet_node,
    make_spec,
    nodes_on,
    offers_for,
)

pytestmark = pytest.mark.unit


def slow_on(hardware_class: str) -> Callable[[PlannedQuery], Reading]:
    def measure(planned: PlannedQuery) -> Reading:
        value = 0.50 if planned.variant == hardware_class else 0.10
        return (value, 0.10, None, 100.0)

    return measure


def settled(spec_overrides: dict[str, object] | None = None) -> Run:
    run = Run(make_spec(**(spec_overrides or {})))
    run.settle("r1")
    return run


def condition(run: Run, kind: str) -> tuple[str, str]:
    found = cond.find(run.status.conditions, kind)
    assert found is not None, kind
    return found.status, found.reason


def test_waiting_for_the_model_is_pending_not_an_error() -> None:
    run = Run(make_spec(), model_revision=None)
    decision = run.step()
    assert run.status.phase == "Pending"
    assert "waiting for SLMModel demo" in run.status.message
    assert decision.desired == {}
    assert decision.requeue_after is not None
    assert condition(run, "Reconciling") == ("True", "Pending")


def test_first_rollout_switches_every_node_at_once_and_becomes_stable() -> None:
    run = Run(make_spec())
    first = run.step()
    assert set(first.desired) == all_assigned(run)
    assert set(first.desired.values()) == {"r1"}
    assert first.variants["arm-0"] == "arm" and first.variants["x86-0"] == "x86"
    run.step()
    assert run.status.phase == "Healthy"
    assert run.status.stable_revision == "r1" and run.status.canary_revision is None
    assert condition(run, "Ready") == ("True", "RolloutComplete")
    assert condition(run, "Stalled")[0] == "False"
    assert condition(run, "Reconciling")[0] == "False"
    assert "FirstRollout" in run.reasons()


def test_good_revision_goes_through_every_wave_and_becomes_stable() -> None:
    run = settled()
    run.model_revision = "r2"
    run.step()
    plan = run.status.waves
    assert [w.name for w in plan] == ["canary", "wave-1", "wave-2"]
    # The first wave already covers both hardware classes.
    assert {n.split("-")[0] for n in plan[0].nodes} == {"arm", "x86"}
    assert sorted(n for w in plan for n in w.nodes) == sorted(all_assigned(run))
    touched_before_canary_passed: set[str] = set()
    while run.status.waves[0].phase != "Succeeded":
        touched_before_canary_passed |= nodes_on(run, "r2")
        run.step()
    assert touched_before_canary_passed == set(plan[0].nodes)
    run.run_until(lambda r: r.status.phase == "Healthy")
    assert run.status.stable_revision == "r2"
    assert nodes_on(run, "r2") == all_assigned(run)
    assert [w.phase for w in run.status.waves] == ["Succeeded"] * 3
    assert all(w.successful == 2 for w in run.status.waves)
    assert run.reasons().count("AnalysisPassed") == 3
    assert condition(run, "Ready") == ("True", "RolloutComplete")


def test_max_unavailable_bounds_the_nodes_switching_at_once() -> None:
    run = settled({"strategy": {"maxUnavailable": 1, "waves": [{"percent": 100}]}})
    run.model_revision = "r2"
    for _ in range(40):
        decision = run.step()
        switching = [n for n in run.status.nodes if n.state == "Switching"]
        assert len(switching) <= 1
        if run.status.phase == "Healthy":
            break
        assert decision.requeue_after is not None
    assert run.status.stable_revision == "r2"


def test_bad_revision_is_caught_in_the_first_wave_and_every_touched_node_rolls_back() -> None:
    run = settled()
    run.measure = slow_on("arm")
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.phase == "RolledBack")
    status = run.status
    canary = status.waves[0]
    assert canary.phase == "Failed" and status.current_wave == 0
    assert status.waves[1].phase == "Pending"
    abort = status.abort
    assert abort is not None
    assert abort.metric == "p95-latency" and abort.variant == "arm" and abort.wave == 0
    assert abort.value == 0.5 and abort.stable_value == 0.1
    assert abort.condition == "result <= 1.2 * stable"
    assert 'slmops_io_revision="r2"' in abort.query and 'slmops_io_variant="arm"' in abort.query
    assert abort.stable_query is not None and 'slmops_io_revision="r1"' in abort.stable_query
    assert 'namespace="edge"' in abort.query and 'slmops_io_rollout="demo"' in abort.query
    # One step: the decision that aborts already maps every node to stable.
    aborting = run.decisions[-1]
    assert set(aborting.desired.values()) == {"r1"}
    assert set(aborting.desired) == all_assigned(run)
    rolled_back = {n.node for n in status.nodes if n.state == "RolledBack"}
    assert rolled_back == set(canary.nodes)
    assert status.decision_at == abort.at
    run.step()
    assert run.status.rollback_completed_at is not None
    assert nodes_on(run, "r1") == all_assigned(run)
    assert condition(run, "Stalled") == ("True", "RolledBack")
    assert condition(run, "Ready")[0] == "False"
    assert condition(run, "Analysis") == ("False", "Failed")
    # It stays rolled back: the same revision is not retried by itself.
    for _ in range(5):
        run.step(60)
    assert run.status.phase == "RolledBack" and nodes_on(run, "r2") == set()


def test_abort_is_decided_on_the_round_that_breaks_the_limit() -> None:
    run = settled({"analysis": {"failureLimit": 1}})
    run.measure = slow_on("x86")
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.phase == "RolledBack")
    assert run.status.waves[0].failed == 2
    first = next(d for d in run.decisions if d.status.waves and d.status.waves[0].failed == 1)
    second = next(d for d in run.decisions if d.status.waves and d.status.waves[0].failed == 2)
    assert first.status.phase == "Progressing"  # one failure tolerated
    assert second.status.phase == "RolledBack"


def test_no_traffic_with_inconclusive_policy_pauses_and_never_promotes() -> None:
    run = settled()
    run.measure = lambda planned: (None, None, None, 0.0)
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.phase == "Paused")
    assert run.status.paused_by == "analysis"
    assert run.status.waves[0].phase == "Paused"
    assert condition(run, "Analysis") == ("Unknown", "Inconclusive")
    assert condition(run, "Progressing") == ("Unknown", "RolloutPaused")
    for _ in range(30):
        decision = run.step(30)
        assert not decision.measure_now
    assert run.status.phase == "Paused" and run.status.stable_revision == "r1"
    assert nodes_on(run, "r2") == set(run.status.waves[0].nodes)


def test_min_sample_count_makes_low_traffic_inconclusive_with_the_count() -> None:
    run = settled({"analysis": {"minSampleCount": 50, "inconclusiveLimit": 0}})
    run.measure = lambda planned: (0.1, 0.1, None, 7.0)
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.phase == "Paused")
    messages = [m.message for m in run.status.measurements]
    assert any("only 7 requests" in m and "50 needed" in m for m in messages)


def test_on_no_data_pass_and_fail_are_honoured_per_metric() -> None:
    passing = dict(
        name="p95-latency",
        query="q{r='{{revision}}'}",
        successCondition="result < 1",
        onNoData="Pass",
    )
    run = settled({"analysis": {"metrics": [passing]}})
    run.measure = lambda planned: (None, None, None, 10.0)
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.phase == "Healthy" and r.status.stable_revision == "r2")

    failing = {**passing, "onNoData": "Fail"}
    run = settled({"analysis": {"metrics": [failing]}})
    run.measure = lambda planned: (None, None, None, 10.0)
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.phase == "RolledBack")


def test_prometheus_errors_hold_the_wave_and_it_continues_when_they_stop() -> None:
    run = settled({"analysis": {"consecutiveErrorLimit": 5}})
    outage = {"on": True}

    def measure(planned: PlannedQuery) -> Reading:
        if outage["on"]:
            return (None, None, "connection refused", None)
        return (0.1, 0.1, None, 100.0)

    run.measure = measure
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.waves[0].consecutive_errors == 3 if r.status.waves else False)
    assert run.status.phase == "Progressing"
    assert run.status.waves[0].phase == "Analyzing"
    assert run.status.waves[0].successful == 0
    assert condition(run, "Analysis") == ("Unknown", "MeasurementError")
    outage["on"] = False
    run.run_until(lambda r: r.status.phase == "Healthy")
    assert run.status.stable_revision == "r2"


def test_errors_beyond_the_limit_abort_and_an_error_never_promotes() -> None:
    run = settled({"analysis": {"consecutiveErrorLimit": 2}})
    run.measure = lambda planned: (None, None, "HTTP 503", None)
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.phase == "RolledBack")
    assert run.status.waves[0].consecutive_errors == 3
    assert run.status.abort is not None and "3 measurement errors in a row" in (
        run.status.abort.message
    )
    assert run.status.stable_revision == "r1"


def test_an_offline_node_is_skipped_after_its_timeout_and_the_wave_completes() -> None:
    run = settled()
    run.model_revision = "r2"
    run.step()
    first_wave = run.status.waves[0].nodes
    run.offline.add(first_wave[0])
    run.run_until(lambda r: r.status.waves[0].phase != "Progressing", seconds=10)
    wave = run.status.waves[0]
    assert wave.skipped_nodes == [first_wave[0]]
    node = next(n for n in run.status.nodes if n.node == first_wave[0])
    assert node.state == "Skipped" and "60s" in node.reason and "NotReady" in node.reason
    assert ("Warning", "NodeSkipped") in [(t, r) for t, r, _ in run.events]
    run.run_until(lambda r: r.status.phase == "Healthy")
    assert run.status.stable_revision == "r2"


def test_a_skipped_node_that_comes_back_on_the_new_revision_counts_as_updated() -> None:
    run = settled()
    run.model_revision = "r2"
    run.step()
    lost = run.status.waves[0].nodes[0]
    run.offline.add(lost)
    run.run_until(lambda r: any(n.state == "Skipped" for n in r.status.nodes), seconds=10)
    run.offline.clear()
    run.step()
    run.step()
    assert next(n for n in run.status.nodes if n.node == lost).state == "Updated"


def test_wave_pause_with_a_duration_ends_by_itself() -> None:
    waves = [{"count": 2, "pause": {"durationSeconds": 120}}, {"percent": 100}]
    run = settled({"strategy": {"maxUnavailable": 5, "waves": waves}})
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.phase == "Paused")
    assert run.status.paused_by == "wave"
    paused_at = run.now
    run.run_until(lambda r: r.status.phase != "Paused", seconds=10)
    assert run.now - paused_at >= timedelta(seconds=120)
    run.run_until(lambda r: r.status.phase == "Healthy")


def test_wave_pause_without_duration_waits_for_resume_applied_once() -> None:
    waves = [{"count": 2, "pause": {}}, {"percent": 100}]
    run = settled({"strategy": {"maxUnavailable": 5, "waves": waves}})
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.phase == "Paused")
    for _ in range(10):
        run.step(600)
    assert run.status.phase == "Paused" and run.status.current_wave == 0
    run.action = ("a1", "resume")
    run.step()
    assert run.status.last_action is not None and run.status.last_action.id == "a1"
    assert run.status.current_wave == 1
    run.run_until(lambda r: r.status.phase == "Healthy")
    assert run.reasons().count("ActionApplied") == 1


def test_user_pause_holds_everything_and_resume_continues() -> None:
    run = settled()
    run.model_revision = "r2"
    run.step()
    run.action = ("p1", "pause")
    run.step()
    assert run.status.phase == "Paused" and run.status.paused_by == "user"
    switched = nodes_on(run, "r2")
    for _ in range(20):
        decision = run.step(30)
        assert not decision.measure_now
    assert nodes_on(run, "r2") == switched
    assert condition(run, "Stalled")[0] == "False"  # a pause is not stalled, however long
    run.action = ("p2", "resume")
    run.run_until(lambda r: r.status.phase == "Healthy")


def test_spec_paused_is_the_gitops_switch() -> None:
    run = settled()
    run.model_revision = "r2"
    run.step()
    run.spec = make_spec(paused=True)
    run.step()
    assert run.status.paused_by == "spec"
    run.action = ("r1", "resume")
    run.step()
    assert run.status.paused_by == "spec"
    assert ("Warning", "ActionIgnored") in [(t, r) for t, r, _ in run.events]
    run.spec = make_spec(paused=False)
    run.run_until(lambda r: r.status.phase == "Healthy")


def test_promote_skips_the_current_analysis() -> None:
    run = settled({"analysis": {"count": 50}})
    run.model_revision = "r2"
    run.run_until(lambda r: bool(r.status.waves) and r.status.waves[0].phase == "Analyzing")
    run.action = ("go", "promote")
    run.step()
    assert run.status.waves[0].phase == "Succeeded"
    assert run.status.current_wave == 1


def test_promote_full_switches_every_remaining_node_now() -> None:
    run = settled({"analysis": {"count": 50}})
    run.model_revision = "r2"
    run.step()
    run.action = ("all", "promote-full")
    decision = run.step()
    assert set(decision.desired.values()) == {"r2"}
    run.step()
    assert run.status.phase == "Healthy" and run.status.stable_revision == "r2"


def test_user_abort_rolls_back_even_without_automatic_rollback() -> None:
    run = settled({"rollback": {"automatic": False}})
    run.model_revision = "r2"
    run.step()
    run.action = ("stop", "abort")
    decision = run.step()
    assert run.status.phase == "RolledBack"
    assert set(decision.desired.values()) == {"r1"}
    assert run.status.abort is not None and run.status.abort.metric == "user"


def test_without_automatic_rollback_an_abort_holds_degraded_until_a_person_decides() -> None:
    run = settled({"rollback": {"automatic": False}})
    run.measure = slow_on("x86")
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.phase == "Degraded")
    on_new = nodes_on(run, "r2")
    assert on_new
    for _ in range(5):
        run.step(60)
    assert nodes_on(run, "r2") == on_new
    assert condition(run, "Stalled") == ("True", "RolloutAborted")
    run.action = ("back", "abort")
    run.step()
    run.step()
    assert run.status.phase == "RolledBack" and nodes_on(run, "r2") == set()
    assert run.status.rollback_completed_at is not None


def test_retry_after_a_rollback_starts_from_the_first_wave() -> None:
    run = settled()
    run.measure = slow_on("arm")
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.phase == "RolledBack")
    run.measure = lambda planned: (0.1, 0.1, None, 100.0)
    run.action = ("again", "retry")
    run.step()
    assert run.status.phase == "Progressing" and run.status.current_wave == 0
    assert run.status.abort is None
    assert all(w.phase in ("Pending", "Progressing") for w in run.status.waves)
    run.run_until(lambda r: r.status.phase == "Healthy")
    assert run.status.stable_revision == "r2"


def test_a_retry_after_a_degraded_hold_counts_nodes_already_on_the_revision_as_updated() -> None:
    run = settled({"rollback": {"automatic": False}})
    run.measure = slow_on("x86")
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.phase == "Degraded")
    held = nodes_on(run, "r2")
    assert held == set(run.status.waves[0].nodes)
    run.measure = lambda planned: (0.1, 0.1, None, 100.0)
    run.action = ("again", "retry")
    # Run.step also decides again from its own output: a node switched while it already
    # serves the revision would turn Updated on that second call, a write for nothing.
    run.step()
    states = {n.node: n.state for n in run.status.nodes}
    assert {states[name] for name in held} == {"Updated"}
    run.run_until(lambda r: r.status.phase == "Healthy")
    assert run.status.stable_revision == "r2"


def test_an_action_id_is_applied_once_even_if_the_annotation_stays() -> None:
    run = settled()
    run.model_revision = "r2"
    run.step()
    run.action = ("same", "pause")
    run.step()
    run.action = ("other", "resume")
    run.step()
    assert run.status.phase == "Progressing"
    run.action = ("other", "resume")  # still on the object, already handled
    run.step()
    run.action = ("same", "pause")  # an old id comes back: it is a new request now
    run.step()
    assert run.reasons().count("ActionApplied") == 3


def test_unknown_and_inapplicable_actions_are_recorded_and_explained() -> None:
    run = settled()
    run.action = ("x", "explode")
    run.step()
    assert run.status.last_action is not None and run.status.last_action.id == "x"
    run.action = ("y", "promote")
    run.step()
    ignored = [m for t, r, m in run.events if r == "ActionIgnored"]
    assert "unknown action" in ignored[0] and "no rollout in progress" in ignored[1]
    assert run.status.phase == "Healthy"


def test_a_newer_revision_supersedes_the_one_in_flight() -> None:
    run = settled({"analysis": {"count": 50}})
    run.model_revision = "r2"
    run.run_until(lambda r: bool(r.status.waves) and r.status.waves[0].phase == "Analyzing")
    run.action = ("go", "promote")
    run.step()
    run.run_until(lambda r: len(nodes_on(r, "r2")) > 2)
    run.model_revision = "r3"
    decision = run.step()
    assert run.status.canary_revision == "r3" and run.status.current_wave == 0
    assert "r2" not in decision.desired.values()
    assert "Superseded" in run.reasons()
    run.action = ("go2", "promote-full")
    run.run_until(lambda r: r.status.phase == "Healthy")
    assert run.status.stable_revision == "r3"


def test_the_target_returning_to_stable_cancels_the_rollout() -> None:
    run = settled()
    run.model_revision = "r2"
    run.run_until(lambda r: bool(nodes_on(r, "r2")))
    run.model_revision = "r1"
    decision = run.step()
    assert set(decision.desired.values()) == {"r1"}
    assert run.status.phase == "Healthy" and run.status.canary_revision is None


def test_a_pinned_revision_wins_over_the_models_current_one() -> None:
    run = settled()
    run.spec = make_spec(model={"name": "demo", "revision": "r3abcdef"})
    run.revisions = ("r1", "r2", "r3abcdef")
    run.model_revision = "r2"
    run.step()
    assert run.status.canary_revision == "r3abcdef"


def test_a_model_rebuilding_does_not_stop_the_rollout_in_flight() -> None:
    run = settled()
    run.model_revision = "r2"
    run.step()
    run.model_revision = None
    run.run_until(lambda r: r.status.phase == "Healthy")
    assert run.status.stable_revision == "r2"


def test_progress_deadline_marks_the_rollout_stalled() -> None:
    run = settled({"strategy": {"progressDeadlineSeconds": 60, "nodeTimeoutSeconds": 3600}})
    run.model_revision = "r2"
    run.step()
    run.offline.update(run.status.waves[0].nodes)
    run.run_until(lambda r: condition(r, "Stalled")[1] == "ProgressDeadlineExceeded")
    assert condition(run, "Stalled") == ("True", "ProgressDeadlineExceeded")
    assert condition(run, "Reconciling")[0] == "False"
    assert run.reasons().count("ProgressDeadlineExceeded") == 1


def test_an_invalid_spec_freezes_the_fleet_and_says_why() -> None:
    run = settled()
    run.model_revision = "r2"
    run.run_until(lambda r: bool(nodes_on(r, "r2")))
    before = dict(run.serving)
    bad = {**run.spec.model_dump(by_alias=True)}
    bad["analysis"]["metrics"][0]["successCondition"] = "result <= 1.2 * stabel"
    bad["analysis"]["metrics"][0]["query"] = "x{a='{{revison}}'}"
    run.spec = type(run.spec).model_validate(bad)
    decision = run.step()
    assert {n: s.revision for n, s in before.items()} == dict(decision.desired)
    assert condition(run, "Stalled") == ("True", "InvalidSpec")
    assert "unknown name 'stabel'" in run.status.message
    assert "{{revison}}" in run.status.message


def test_a_node_nothing_fits_is_reported_and_gets_no_server() -> None:
    nodes = [*default_fleet(), fleet_node("riscv-0", "riscv")]
    run = Run(make_spec(), nodes=nodes)
    run.settle("r1")
    node = next(n for n in run.status.nodes if n.node == "riscv-0")
    assert node.state == "Unassigned" and "no variant targets" in node.reason
    assert "riscv-0" not in run.serving


def test_a_node_joining_mid_rollout_serves_stable_then_the_new_revision() -> None:
    run = settled({"analysis": {"count": 3}})
    run.model_revision = "r2"
    run.step()
    run.nodes.append(fleet_node("x86-new", "x86"))
    run.step()
    assert run.serving["x86-new"].revision == "r1"
    run.run_until(lambda r: r.status.phase == "Healthy")
    assert run.serving["x86-new"].revision == "r2"


def test_selector_waves_follow_sites() -> None:
    waves = [
        {"name": "site-a", "selector": {"matchLabels": {SITE: "a"}}},
        {"name": "rest", "percent": 100},
    ]
    run = Run(make_spec(strategy={"waves": waves}))
    placements, plan = preview_plan(run.spec, run.nodes, offers_for("r2"))
    site_a = {n.name for n in run.nodes if n.labels[SITE] == "a"}
    assert set(plan[0].nodes) == site_a
    assert set(plan[1].nodes) == {p.node for p in placements} - site_a
    assert all(n.labels[HW] for n in run.nodes)


def test_measurements_are_bounded_per_metric() -> None:
    run = settled({"analysis": {"count": 30}})
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.phase == "Healthy", steps=400)
    per_metric = [m for m in run.status.measurements if m.metric == "p95-latency"]
    assert len(per_metric) == 10


def test_measurements_given_when_no_round_is_due_are_ignored() -> None:
    run = settled()
    run.model_revision = "r2"
    run.run_until(lambda r: bool(r.status.waves) and r.status.waves[0].successful == 1)
    world = run.world()
    planned = [
        PlannedQuery("p95-latency", "x86", "x86", "q", None, None, wave=0),
    ]
    stale = [
        run.reading(world, planned[0]).model_copy(update={"phase": "Failed"}),
    ]
    decision = decide(replace(world, measurements=stale))
    assert decision.status == decide(world).status
    assert plan_round(world) == []


def test_the_last_wave_compares_with_the_stable_value_measured_earlier() -> None:
    run = settled()

    def measure(planned: PlannedQuery) -> Reading:
        stable_left = any(
            s.revision == "r1" and name.startswith(planned.variant)
            for name, s in run.serving.items()
        )
        return (0.1, 0.1 if stable_left else None, None, 100.0)

    run.measure = measure
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.phase in ("Healthy", "Paused"))
    assert run.status.phase == "Healthy" and run.status.stable_revision == "r2"
    carried = [m for m in run.status.measurements if "stable value measured at" in m.message]
    assert carried and all(m.stable_value == 0.1 for m in carried)


def test_without_any_stable_baseline_a_relative_check_has_no_data() -> None:
    run = settled()
    run.measure = lambda planned: (0.1, None, None, 100.0)
    run.model_revision = "r2"
    run.run_until(lambda r: r.status.phase == "Paused")
    assert "stable revision's query returned no data" in run.status.measurements[-1].message


def test_a_stable_revision_missing_from_the_model_holds_every_node_as_it_is() -> None:
    run = settled()
    run.model_revision = "r2"
    run.run_until(lambda r: bool(nodes_on(r, "r2")))
    serving = {n: s.revision for n, s in run.serving.items()}
    run.revisions = ("r2", "r3")  # r1 fell out of the model's status.revisions
    decision = run.step()
    assert dict(decision.desired) == serving
    assert condition(run, "Stalled") == ("True", "RevisionUnavailable")
    assert "revision r1 is not among the revisions" in run.status.message
    run.revisions = ("r1", "r2", "r3")
    run.run_until(lambda r: r.status.phase == "Healthy")
    assert run.status.stable_revision == "r2"


def test_a_revision_no_node_can_run_is_not_rolled_out() -> None:
    run = settled()
    run.revisions = ("r1", "r2", "big")
    run.custom_offers["big"] = [replace(o, model_bytes=64 * 1024**3) for o in offers_for("big")]
    run.model_revision = "big"
    for _ in range(3):
        decision = run.step()
    assert set(decision.desired.values()) == {"r1"}
    assert run.status.phase == "Healthy" and run.status.canary_revision is None
    assert condition(run, "Stalled") == ("True", "NoPlacement")
    assert "cannot run on any fleet node" in run.status.message
    assert "allocatable" in run.status.message
    assert run.reasons().count("NoPlacement") == 1
