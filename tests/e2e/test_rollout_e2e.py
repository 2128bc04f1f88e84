"""EdgeRollout end to end on the testbed (issue 4, "done when").

Real kube-apiserver, scheduler and DaemonSet controller; simulator nodes running real
`slmops serve` processes that pull real ModelPack artifacts from the testbed registry; real
Prometheus scraping them; load sent with tritonclient; the operator as a real process. The
test plays only the SLMModel controller: it writes the model's status naming artifacts it
really pushed (so the operator runs with SLMOPS_CONTROLLERS=edgerollout).

Two hardware classes (rpi5 → variant arm-int8, x86-vnni → variant x86-fp32), two nodes each.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from slmops.testbed.testbed import Testbed
from tests.e2e import rollout_support as rs
from tests.support.operator import OperatorProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STABLE = "e2e0001stable"
CANARY = "e2e0002canary"
NEWER = "e2e0003newer"

THREE_WAVES = [
    {"name": "canary", "count": 1},
    {"name": "half", "percent": 50},
    # Tests about other things skip the last wave's analysis to stay short.
    {"name": "rest", "percent": 100, "analysis": {"skip": True}},
]
# The same, with the last wave analysed too: when no stable server of a variant is left, the
# stable value measured last (in an earlier wave) is the baseline.
ANALYSED_WAVES = [*THREE_WAVES[:2], {"name": "rest", "percent": 100}]


@pytest.fixture(scope="module")
def revisions(testbed: Testbed) -> dict[str, rs.Revision]:
    return {name: rs.push_revision(testbed, name) for name in (STABLE, CANARY, NEWER)}


@pytest.fixture(scope="module")
def rollout_operator(
    testbed: Testbed, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """Only the rollout controller runs while these tests do: the shared operator (all
    controllers) is stopped for the module and started again afterwards."""
    testbed.kubectl("apply", "-f", str(ROOT / "crds"))
    testbed.kubectl("wait", "--for", "condition=established", "crd", "--all", "--timeout=60s")
    with rs.rollout_controller_alone(
        testbed, operator, tmp_path_factory.mktemp("rollout-operator")
    ) as process:
        yield process


@pytest.fixture
def cluster(
    testbed: Testbed, kube_namespace: str, rollout_operator: OperatorProcess
) -> Iterator[tuple[Testbed, str, OperatorProcess]]:
    rs.create_pull_secret(testbed, kube_namespace)
    rs.create_model(testbed, kube_namespace)
    yield testbed, kube_namespace, rollout_operator
    if rollout_operator.process is None or rollout_operator.process.poll() is not None:
        rollout_operator.start()


def _deploy_stable(
    testbed: Testbed,
    namespace: str,
    revisions: dict[str, rs.Revision],
    name: str,
    **manifest: Any,
) -> None:
    """The first rollout: the stable revision everywhere at once (nothing to compare with)."""
    rs.publish_model_status(testbed, namespace, revisions[STABLE], [])
    rs.apply(testbed, namespace, rs.rollout_manifest(name, testbed, **manifest))
    rs.wait_for_status(
        testbed,
        namespace,
        name,
        "the first rollout to be Healthy on the stable revision",
        lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") == STABLE,
        timeout=90,
    )
    fleet = rs.fleet_nodes(testbed)
    everyone = fleet[rs.ARM_CLASS] + fleet[rs.X86_CLASS]
    rs.wait_for(
        "every fleet node to serve the stable revision",
        lambda: rs.node_revisions(testbed, namespace, name) == dict.fromkeys(everyone, STABLE),
        timeout=60,
        describe=lambda: rs.node_revisions(testbed, namespace, name),
    )


def _publish_canary(testbed: Testbed, namespace: str, revisions: dict[str, rs.Revision]) -> None:
    rs.publish_model_status(testbed, namespace, revisions[CANARY], [revisions[STABLE]])


def _wave_nodes(status: dict[str, Any], index: int) -> list[str]:
    return list(status["waves"][index]["nodes"])


def _planned(testbed: Testbed, namespace: str, name: str) -> dict[str, Any]:
    return rs.wait_for_status(
        testbed,
        namespace,
        name,
        "the canary's waves to be planned",
        lambda s: s.get("canaryRevision") == CANARY and len(s.get("waves") or []) == 3,
        timeout=30,
    )


def _event_reasons(testbed: Testbed, namespace: str, rollout: str) -> set[str]:
    events = rs.kube_json(testbed, "-n", namespace, "get", "events")["items"]
    return {
        e["reason"]
        for e in events
        if e["involvedObject"].get("kind") == "EdgeRollout"
        and e["involvedObject"].get("name") == rollout
    }


def _seconds_between(earlier: str, later: str) -> float:
    parse = datetime.fromisoformat
    return (
        parse(later.replace("Z", "+00:00")) - parse(earlier.replace("Z", "+00:00"))
    ).total_seconds()


def test_a_good_revision_goes_through_three_waves_across_two_hardware_classes(
    cluster: tuple[Testbed, str, OperatorProcess], revisions: dict[str, rs.Revision]
) -> None:
    testbed, namespace, _ = cluster
    _deploy_stable(testbed, namespace, revisions, "good", waves=ANALYSED_WAVES)
    with rs.load_on(testbed, namespace, "good", max_seconds=180) as load:
        _publish_canary(testbed, namespace, revisions)
        planned = _planned(testbed, namespace, "good")
        classes = {n["node"]: n["hardwareClass"] for n in planned["nodes"]}
        first_two = _wave_nodes(planned, 0) + _wave_nodes(planned, 1)
        assert {classes[n] for n in first_two} == {rs.ARM_CLASS, rs.X86_CLASS}, planned["waves"]
        final = rs.wait_for_status(
            testbed,
            namespace,
            "good",
            "the canary to become stable",
            lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") == CANARY,
            timeout=150,
            capture_as=("Healthy", "good-revision-stable"),
        )
    assert load.stats.sent > 0 and load.stats.failed < load.stats.sent
    assert [w["phase"] for w in final["waves"]] == ["Succeeded"] * 3
    # Waves 0 and 1 passed real analysis rounds measured on both variants.
    measured = {
        (m["wave"], m["variant"])
        for m in final["measurements"]
        if m["phase"] == "Successful" and m["metric"] == "p95-latency"
    }
    wave0_variants = {n["variant"] for n in final["nodes"] if n["node"] in first_two[:1]}
    assert wave0_variants <= {v for w, v in measured if w == 0}
    assert {v for w, v in measured if w in (0, 1)} == {rs.ARM_VARIANT, rs.X86_VARIANT}
    assert [w["successful"] for w in final["waves"]] == [2, 2, 2]
    conditions = {c["type"]: c["status"] for c in final["conditions"]}
    assert conditions["Ready"] == "True" and conditions["Stalled"] == "False"
    everyone = list(classes)
    rs.wait_for(
        "every node to serve the new revision",
        lambda: rs.node_revisions(testbed, namespace, "good") == dict.fromkeys(everyone, CANARY),
        timeout=60,
        describe=lambda: rs.node_revisions(testbed, namespace, "good"),
    )
    # One workload per variant is left, on the new revision: the stable ones are gone.
    daemonsets = rs.kube_json(testbed, "-n", namespace, "get", "daemonsets")["items"]
    assert sorted(d["metadata"]["labels"]["slmops.io/revision"] for d in daemonsets) == [
        CANARY,
        CANARY,
    ]


def test_a_slow_revision_is_caught_in_its_first_wave_and_every_touched_node_rolls_back(
    cluster: tuple[Testbed, str, OperatorProcess],
    revisions: dict[str, rs.Revision],
    record_property: Any,
) -> None:
    testbed, namespace, _ = cluster
    _deploy_stable(
        testbed,
        namespace,
        revisions,
        "slow",
        waves=THREE_WAVES,
        # A slow server serves few requests; let two of them be enough for a verdict.
        analysis={"minSampleCount": 2, "inconclusiveLimit": 3},
    )
    slowed: list[str] = []
    try:
        with rs.load_on(testbed, namespace, "slow", max_seconds=120):
            _publish_canary(testbed, namespace, revisions)
            planned = _planned(testbed, namespace, "slow")
            canary_nodes = _wave_nodes(planned, 0)
            rs.wait_for_status(
                testbed,
                namespace,
                "slow",
                "the first wave to start switching",
                # Slow the canary's nodes as soon as the wave starts: waiting until it is
                # analysing races the analysis itself on a loaded machine (two rounds can pass
                # before the test acts). The stable pods being replaced there are going away.
                lambda s: s["waves"][0]["phase"] in ("Progressing", "Analyzing", "Failed"),
                timeout=60,
                capture_as=("Progressing", "first-wave-started"),
            )
            # The new revision is slow on this hardware: every request takes ~10x longer.
            for node in canary_nodes:
                testbed.simulator.slow_down(node, 10)
                slowed.append(node)
            rs.wait_for_status(
                testbed,
                namespace,
                "slow",
                "the abort decision",
                lambda s: s.get("phase") == "RolledBack",
                timeout=90,
            )
            # The slowness belonged to the revision, not to the node: the stable server
            # that comes back runs at full speed.
            for node in slowed:
                testbed.simulator.slow_down(node, 1)
            final = rs.wait_for_status(
                testbed,
                namespace,
                "slow",
                "every touched node back on stable",
                lambda s: bool(s.get("rollbackCompletedAt")),
                timeout=60,
                capture_as=("Degraded", "slow-revision-rolled-back"),
            )
    finally:
        for node in slowed:
            testbed.simulator.slow_down(node, 1)
    abort = final["abort"]
    assert abort["metric"] == "p95-latency" and abort["wave"] == 0
    assert abort["value"] > abort["stableValue"]
    assert "slmops_request_duration_seconds_bucket" in abort["query"]
    assert CANARY in abort["query"] and STABLE in abort["stableQuery"]
    assert final["waves"][1]["phase"] == "Pending" and final["waves"][2]["phase"] == "Pending"
    conditions = {c["type"]: c["status"] for c in final["conditions"]}
    assert conditions["Stalled"] == "True" and conditions["Ready"] == "False"
    fleet = rs.fleet_nodes(testbed)
    everyone = fleet[rs.ARM_CLASS] + fleet[rs.X86_CLASS]
    assert rs.node_revisions(testbed, namespace, "slow") == dict.fromkeys(everyone, STABLE)
    rs.wait_for(
        "the abort and the rollback as Kubernetes events",
        lambda: (
            {"RolloutAborted", "RollbackComplete"} <= _event_reasons(testbed, namespace, "slow")
        ),
        timeout=30,
        describe=lambda: _event_reasons(testbed, namespace, "slow"),
    )
    failing = [m for m in final["measurements"] if m["phase"] == "Failed"]
    breach_to_decision = _seconds_between(failing[-1]["at"], abort["at"])
    decision_to_rollback = _seconds_between(final["decisionAt"], final["rollbackCompletedAt"])
    record_property("breach_to_decision_seconds", breach_to_decision)
    record_property("decision_to_rollback_complete_seconds", decision_to_rollback)
    print(
        f"\nbreach → decision {breach_to_decision:.0f} s, decision → rollback complete "
        f"{decision_to_rollback:.0f} s (status timestamps, 1 s resolution)"
    )


def test_no_traffic_with_on_no_data_inconclusive_pauses_and_never_promotes(
    cluster: tuple[Testbed, str, OperatorProcess], revisions: dict[str, rs.Revision]
) -> None:
    testbed, namespace, _ = cluster
    _deploy_stable(
        testbed,
        namespace,
        revisions,
        "quiet",
        waves=THREE_WAVES,
        analysis={"onNoData": "Inconclusive", "inconclusiveLimit": 1},
    )
    _publish_canary(testbed, namespace, revisions)
    paused = rs.wait_for_status(
        testbed,
        namespace,
        "quiet",
        "the rollout to pause for lack of data",
        lambda s: s.get("phase") == "Paused",
        timeout=60,
        capture_as=("Suspended", "no-traffic-inconclusive"),
    )
    assert paused["pausedBy"] == "analysis"
    assert paused["currentWave"] == 0
    inconclusive = [m for m in paused["measurements"] if m["phase"] == "Inconclusive"]
    assert len(inconclusive) >= 2, paused["measurements"]
    # Several analysis intervals later it still has not moved.
    time.sleep(6)
    later = rs.status_of(testbed, namespace, "quiet")
    assert later["phase"] == "Paused" and later["currentWave"] == 0
    assert later["waves"][1]["phase"] == "Pending"
    canary_nodes = set(_wave_nodes(later, 0))
    serving = rs.node_revisions(testbed, namespace, "quiet")
    assert {n for n, r in serving.items() if r == CANARY} <= canary_nodes


def test_prometheus_stopped_mid_analysis_holds_the_wave_and_it_continues_after_restart(
    cluster: tuple[Testbed, str, OperatorProcess], revisions: dict[str, rs.Revision]
) -> None:
    testbed, namespace, _ = cluster
    _deploy_stable(
        testbed,
        namespace,
        revisions,
        "blind",
        waves=THREE_WAVES,
        # Errors never pass; a generous limit lets this test see the wave held, not aborted.
        # Windows longer than the outage: a restarted Prometheus has staleness markers on
        # every series, and range functions read across them where instant lookups do not.
        metrics=[rs.p95_metric(window="30s")],
        analysis={
            "consecutiveErrorLimit": 1000,
            "count": 3,
            "sampleCountQuery": (
                'sum(max_over_time(slmops_request_duration_seconds_count{namespace="{{namespace}}",'
                'slmops_io_rollout="{{rollout}}",slmops_io_revision="{{revision}}",'
                'slmops_io_variant="{{variant}}"}[30s]))'
            ),
        },
    )
    stopped = False
    try:
        with rs.load_on(testbed, namespace, "blind", max_seconds=200):
            _publish_canary(testbed, namespace, revisions)
            rs.wait_for_status(
                testbed,
                namespace,
                "blind",
                "the first wave's first successful round",
                lambda s: bool(s.get("waves")) and s["waves"][0]["successful"] >= 1,
                timeout=60,
            )
            testbed.stop_prometheus()
            stopped = True
            held = rs.wait_for_status(
                testbed,
                namespace,
                "blind",
                "errors to be recorded while Prometheus is down",
                lambda s: s["waves"][0]["consecutiveErrors"] >= 2,
                timeout=30,
            )
            assert held["currentWave"] == 0 and held["phase"] != "Healthy"
            errors = [m for m in held["measurements"] if m["phase"] == "Error"]
            assert errors and "unreachable" in errors[-1]["message"]
            time.sleep(4)
            still = rs.status_of(testbed, namespace, "blind")
            assert still["currentWave"] == 0 and still["waves"][0]["phase"] == "Analyzing"
            testbed.start_prometheus()
            stopped = False
            final = rs.wait_for_status(
                testbed,
                namespace,
                "blind",
                "the rollout to finish after Prometheus is back",
                lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") == CANARY,
                timeout=150,
            )
    finally:
        if stopped:
            testbed.start_prometheus()
    # The wave passed on three real successful rounds, none of them while Prometheus was down.
    assert final["waves"][0]["successful"] == 3, (final["waves"], final["measurements"])


def _daemonset_nodes(testbed: Testbed, namespace: str, rollout: str) -> dict[str, set[str]]:
    """Revision → the nodes its DaemonSets' node affinity names (what the operator asked for)."""
    daemonsets = rs.kube_json(
        testbed, "-n", namespace, "get", "daemonsets", "-l", f"slmops.io/rollout={rollout}"
    )["items"]
    nodes: dict[str, set[str]] = {}
    for daemonset in daemonsets:
        affinity = daemonset["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
        terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        revision = daemonset["metadata"]["labels"]["slmops.io/revision"]
        for term in terms:
            for expression in term["matchExpressions"]:
                nodes.setdefault(revision, set()).update(expression["values"])
    return nodes


def test_a_node_taken_offline_mid_wave_is_skipped_and_gets_the_new_stable_when_it_returns(
    cluster: tuple[Testbed, str, OperatorProcess], revisions: dict[str, rs.Revision]
) -> None:
    testbed, namespace, _ = cluster
    _deploy_stable(
        testbed,
        namespace,
        revisions,
        "offline",
        waves=[
            {"name": "canary", "count": 1},
            {"name": "more", "count": 3},
            {"name": "rest", "percent": 100, "analysis": {"skip": True}},
        ],
        strategy={"nodeTimeoutSeconds": 8},
    )
    offline: str | None = None
    try:
        with rs.load_on(testbed, namespace, "offline", max_seconds=180):
            _publish_canary(testbed, namespace, revisions)
            planned = _planned(testbed, namespace, "offline")
            classes = {n["node"]: n["hardwareClass"] for n in planned["nodes"]}
            # A node of the class the first wave already runs: its variant keeps a canary
            # server to measure while the offline node is skipped.
            first_class = classes[_wave_nodes(planned, 0)[0]]
            offline = next(n for n in _wave_nodes(planned, 1) if classes[n] == first_class)
            # Offline once the first wave has measured the stable revision on that class: the
            # node may be the last stable server of its class, and that measurement is the
            # baseline the analysis falls back on while the node is gone.
            rs.wait_for_status(
                testbed,
                namespace,
                "offline",
                "a first successful round",
                lambda s: s["waves"][0]["successful"] >= 1,
                timeout=60,
            )
            testbed.simulator.take_offline(offline)
            wave_done = rs.wait_for_status(
                testbed,
                namespace,
                "offline",
                "the second wave to complete without the offline node",
                lambda s: s["waves"][1]["phase"] == "Succeeded",
                timeout=120,
            )
            node = next(n for n in wave_done["nodes"] if n["node"] == offline)
            assert node["state"] == "Skipped" and node["reason"], node
            final = rs.wait_for_status(
                testbed,
                namespace,
                "offline",
                "the rollout to finish without the offline node",
                lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") == CANARY,
                timeout=150,
            )
        assert offline in final["waves"][1]["skippedNodes"]
        assert final["waves"][1]["phase"] == "Succeeded"
        # The wave's analysis measured only what its other node serves: no round of it asked
        # for the variant whose only node in the wave was away.
        other = next(n for n in _wave_nodes(planned, 1) if n != offline)
        measured = {m["variant"] for m in final["measurements"] if m["wave"] == 1}
        assert measured == {next(n["variant"] for n in final["nodes"] if n["node"] == other)}
        # Still reported after the promotion, and already assigned the new stable revision.
        away = next(n for n in final["nodes"] if n["node"] == offline)
        assert away["state"] == "Skipped", away
        assert f"gets revision {CANARY} when it returns" in away["reason"], away
        assert final["skippedCount"] == 1 and offline in final["message"]
        assert offline in _daemonset_nodes(testbed, namespace, "offline")[CANARY]
        # (Its old stable pod may still look ready until the node lifecycle controller has
        # marked the node NotReady; what matters is that nothing serves the new one there.)
        assert rs.node_revisions(testbed, namespace, "offline").get(offline) != CANARY
        testbed.simulator.bring_online(offline)
        offline_now, offline = offline, None
        back = rs.wait_for_status(
            testbed,
            namespace,
            "offline",
            "the returned node to be seen ready on the new stable revision",
            lambda s: (
                s.get("skippedCount") == 0
                and next(n for n in s["nodes"] if n["node"] == offline_now)["state"] == "Stable"
            ),
            timeout=90,
        )
    finally:
        if offline is not None:
            testbed.simulator.bring_online(offline)
    assert rs.node_revisions(testbed, namespace, "offline")[offline_now] == CANARY
    assert back["phase"] == "Healthy" and back["stableRevision"] == CANARY
    assert back["message"] == f"all assigned nodes serve revision {CANARY}"
    rs.wait_for(
        "the node's return as a Kubernetes event",
        lambda: "NodeReturned" in _event_reasons(testbed, namespace, "offline"),
        timeout=30,
        describe=lambda: _event_reasons(testbed, namespace, "offline"),
    )


def test_an_operator_killed_during_a_wave_is_restarted_and_finishes_the_rollout(
    cluster: tuple[Testbed, str, OperatorProcess], revisions: dict[str, rs.Revision]
) -> None:
    testbed, namespace, operator = cluster
    _deploy_stable(testbed, namespace, revisions, "crash", waves=THREE_WAVES)
    with rs.load_on(testbed, namespace, "crash", max_seconds=180):
        _publish_canary(testbed, namespace, revisions)
        before = rs.wait_for_status(
            testbed,
            namespace,
            "crash",
            "the second wave's analysis",
            lambda s: bool(s.get("waves")) and s["waves"][1]["phase"] == "Analyzing",
            timeout=90,
        )
        operator.kill()
        time.sleep(3)
        operator.start()
        final = rs.wait_for_status(
            testbed,
            namespace,
            "crash",
            "the restarted operator to finish the rollout",
            lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") == CANARY,
            timeout=150,
        )
    # Nothing applied twice: the waves kept their start times, and the first wave's verdict
    # (taken before the crash) was neither lost nor counted again.
    for index in (0, 1):
        assert final["waves"][index]["startedAt"] == before["waves"][index]["startedAt"]
    assert final["waves"][0]["successful"] == before["waves"][0]["successful"] == 2
    assert final["waves"][1]["successful"] == 2
    assert final["waves"][1]["successful"] >= before["waves"][1]["successful"]


def test_a_newer_revision_supersedes_the_one_in_flight(
    cluster: tuple[Testbed, str, OperatorProcess], revisions: dict[str, rs.Revision]
) -> None:
    testbed, namespace, _ = cluster
    _deploy_stable(testbed, namespace, revisions, "newer", waves=THREE_WAVES)
    with rs.load_on(testbed, namespace, "newer", max_seconds=180):
        _publish_canary(testbed, namespace, revisions)
        rs.wait_for_status(
            testbed,
            namespace,
            "newer",
            "the first wave's analysis of the canary",
            lambda s: bool(s.get("waves")) and s["waves"][0]["phase"] == "Analyzing",
            timeout=60,
        )
        rs.publish_model_status(
            testbed, namespace, revisions[NEWER], [revisions[CANARY], revisions[STABLE]]
        )
        rs.wait_for_status(
            testbed,
            namespace,
            "newer",
            "the newer revision to take over",
            lambda s: s.get("canaryRevision") == NEWER,
            timeout=30,
        )
        final = rs.wait_for_status(
            testbed,
            namespace,
            "newer",
            "the newer revision to become stable",
            lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") == NEWER,
            timeout=150,
        )
    assert [w["phase"] for w in final["waves"]] == ["Succeeded"] * 3
    fleet = rs.fleet_nodes(testbed)
    everyone = fleet[rs.ARM_CLASS] + fleet[rs.X86_CLASS]
    rs.wait_for(
        "every node to serve the newer revision, none the superseded one",
        lambda: rs.node_revisions(testbed, namespace, "newer") == dict.fromkeys(everyone, NEWER),
        timeout=60,
        describe=lambda: rs.node_revisions(testbed, namespace, "newer"),
    )
    labels = rs.kube_json(testbed, "-n", namespace, "get", "daemonsets")["items"]
    assert {d["metadata"]["labels"]["slmops.io/revision"] for d in labels} == {NEWER}
