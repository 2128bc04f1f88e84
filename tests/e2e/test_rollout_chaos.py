"""Rollouts under operator and apiserver faults (issue 6, "Faults").

A testbed of its own: real kube-apiserver, scheduler, DaemonSet controller and Prometheus,
60 simulated nodes (15 per hardware profile) with virtual pods. The test plays the model
controller (it publishes revisions into the SLMModel's status) and decides every verdict
through a gauge of its own that the real Prometheus scrapes: one series per rollout and
wave, 0 (healthy) or 1 (a breach during that wave).

1. 20 EdgeRollouts of 3 nodes each (3 waves, 3 analysis rounds 2 s apart) in flight while the
   operator, a real process, is SIGKILLed at random moments (seeded; the seed is printed
   and in every failure message; SLMOPS_CHAOS_SEED replays one) and restarted, until all
   settle. Every rollout must reach its verdict: Healthy on the new revision, or RolledBack
   with the abort naming the metric and the wave of the breach. Proof that no wave was
   applied twice comes from the cluster's own history, recorded by watches from this test
   (tests/support/rollout_history.py): each node joins and leaves each revision's
   DaemonSets exactly as often as its verdict allows, no DaemonSet is recreated, a wave's
   startedAt never changes, its successful count never drops, an abort once stored never
   changes, and no node is announced switching twice. When an abort appears the breach
   ends (its gauge goes back to 0), so a verdict lost and taken again would pass and
   promote; after the first three aborts the operator is also killed at once.
2. The apiserver stopped for 10 s mid-rollout and started again: the same operator
   process reconnects its watches and finishes the rollout, stays alive and live, and logs
   no traceback of its own code.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from slmops.adapters.kubernetes import load_api_client
from slmops.testbed.testbed import FleetSpec, Testbed
from tests.support import played_model
from tests.support.operator import OperatorProcess
from tests.support.rollout_history import (
    ClusterRecorder,
    describe,
    membership,
    recreated_workloads,
    status_regressions,
    switching_counts,
)
from tests.support.synthetic_metrics import SyntheticGauge

pytestmark = pytest.mark.e2e

PROFILES = ("rpi5", "jetson-orin", "x86-vnni", "x86-avx2")
# One variant per hardware class, named after it.
VARIANTS = {profile: profile for profile in PROFILES}
ROLLOUTS = [f"r{index:02d}" for index in range(20)]
NODES_PER_ROLLOUT = 3
NODES_PER_PROFILE = len(ROLLOUTS) // len(PROFILES) * NODES_PER_ROLLOUT
# Cumulative: one node, then two, then all three.
WAVES = [
    {"name": "w1", "count": 1},
    {"name": "w2", "count": 2},
    {"name": "w3", "percent": 100},
]
WAVE_NAMES = [str(wave["name"]) for wave in WAVES]
ANALYSIS_COUNT = 3
# Long enough for several kills while the rollouts are in flight, even on an idle machine.
ANALYSIS_INTERVAL_SECONDS = 2
BREACHED_ROLLOUTS = 6
STABLE = "chaos0001stable"
CANARY = "chaos0002canary"
GAUGE = "slmops_chaos_breach"
# Between SIGKILLs the operator lives this long (seconds, after it is live again).
LIFETIME = (2.0, 6.0)
CHAOS_BUDGET_SECONDS = 240.0
SETTLE_SECONDS = 120.0
MIN_KILLS = 4
MAX_KILLS = 15
# Kills right after an abort is stored; the others come at random moments.
KILLS_AFTER_ABORT = 3

T = TypeVar("T")


@pytest.fixture(scope="module")
def bed(request: pytest.FixtureRequest) -> Iterator[Testbed]:
    state = Path(tempfile.mkdtemp(prefix="slmops-chaos-"))
    counts = dict.fromkeys(PROFILES, NODES_PER_PROFILE)
    testbed = Testbed(state, FleetSpec(nodes_per_profile=counts, virtual_pods=True))
    failures = request.session.testsfailed
    try:
        testbed.up()
        played_model.install_crds(testbed)
        yield testbed
    finally:
        testbed.down()
        if request.session.testsfailed > failures:
            # The apiserver's audit log of the operator's requests is the first thing to read.
            print(f"\nchaos testbed logs kept in {testbed.logs_dir}")
        else:
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def gauge(bed: Testbed) -> Iterator[SyntheticGauge]:
    synthetic = SyntheticGauge(bed, GAUGE, "1 while the test breaches a wave", ("rollout", "wave"))
    yield synthetic
    synthetic.close()


def _until(what: str, check: Callable[[], T | None], timeout: float, every: float = 0.3) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout}s")
        time.sleep(every)


def _rollout(name: str, nodes: list[str], prometheus_url: str, model: str) -> dict[str, Any]:
    return {
        "apiVersion": "slmops.io/v1alpha1",
        "kind": "EdgeRollout",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": model},
            "fleet": {
                "selector": {
                    "matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": nodes}
                    ]
                }
            },
            "strategy": {
                "maxUnavailable": 1,
                # Far above an operator restart: a node must never be skipped because the
                # operator was down while its pod became ready.
                "nodeTimeoutSeconds": 120,
                "progressDeadlineSeconds": 600,
                "waves": WAVES,
            },
            "analysis": {
                "prometheus": {"address": prometheus_url},
                "intervalSeconds": ANALYSIS_INTERVAL_SECONDS,
                "count": ANALYSIS_COUNT,
                "metrics": [
                    {
                        "name": "breach",
                        "query": f'max({GAUGE}{{rollout="{{{{rollout}}}}",wave="{{{{wave}}}}"}})',
                        "successCondition": "result < 0.5",
                    }
                ],
            },
        },
    }


def _slices(bed: Testbed) -> dict[str, list[str]]:
    """Rollout → its 3 nodes, all of one hardware class (disjoint slices of the fleet)."""
    by_profile = {p: sorted(bed.simulator.node_names(p)) for p in PROFILES}
    slices = {}
    for index, name in enumerate(ROLLOUTS):
        slot = index // len(PROFILES) * NODES_PER_ROLLOUT
        slices[name] = by_profile[PROFILES[index % len(PROFILES)]][slot : slot + NODES_PER_ROLLOUT]
    return slices


def _settled(statuses: Mapping[str, Mapping[str, Any]], names: list[str]) -> bool:
    def done(status: Mapping[str, Any] | None) -> bool:
        if status is None:
            return False
        promoted = status.get("phase") == "Healthy" and status.get("stableRevision") == CANARY
        rolled_back = status.get("phase") == "RolledBack" and bool(
            status.get("rollbackCompletedAt")
        )
        return promoted or rolled_back

    return all(done(statuses.get(name)) for name in names)


def _summary(statuses: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(
        f"{name}: {s.get('phase')} wave {s.get('currentWave')} ({s.get('message')})"
        for name, s in sorted(statuses.items())
    )


def _serving(bed: Testbed, namespace: str) -> dict[tuple[str, str], set[str]]:
    """(rollout, node) → revisions of its ready, live server pods."""
    pods = played_model.kube_json(bed, "-n", namespace, "get", "pods", "-l", "slmops.io/rollout")
    found: dict[tuple[str, str], set[str]] = {}
    for pod in pods["items"]:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") or not pod["spec"].get("nodeName"):
            continue
        conditions = pod.get("status", {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            key = (meta["labels"]["slmops.io/rollout"], pod["spec"]["nodeName"])
            found.setdefault(key, set()).add(meta["labels"]["slmops.io/revision"])
    return found


_OWN_FRAME = re.compile(r'File "[^"]*/slmops/[^"]*"')


def _own_tracebacks(logs: str) -> list[str]:
    """Tracebacks in an operator log that pass through the operator's own code."""
    blocks = re.split(r"(?=Traceback \(most recent call last\))", logs)[1:]
    return [block[:2000] for block in blocks if _OWN_FRAME.search(block.split("\n\n")[0])]


def _operator(bed: Testbed, log_dir: Path) -> OperatorProcess:
    # Its own audited identity: the apiserver's audit log then says what it did, and when.
    return OperatorProcess(
        bed.operator_kubeconfig,
        log_dir,
        {"SLMOPS_CONTROLLERS": "edgerollout", "PYTHONWARNINGS": "ignore"},
    )


def test_twenty_rollouts_converge_while_the_operator_is_killed_at_random(
    bed: Testbed, gauge: SyntheticGauge, tmp_path: Path
) -> None:
    seed = int(os.environ.get("SLMOPS_CHAOS_SEED") or random.SystemRandom().randrange(10**6))
    print(f"\nchaos seed {seed} (replay: SLMOPS_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    replay = f"[chaos seed {seed}; replay with SLMOPS_CHAOS_SEED={seed}]"

    namespace, model = "chaos", "chaoslm"
    slices = _slices(bed)
    # A breach during a chosen wave; the first two come after a passed wave.
    breached = rng.sample(ROLLOUTS, BREACHED_ROLLOUTS)
    breach_wave = {
        name: (["w2", "w3"][i] if i < 2 else rng.choice(WAVE_NAMES))
        for i, name in enumerate(breached)
    }
    print(f"breaches: {dict(sorted(breach_wave.items()))}")
    for name in ROLLOUTS:
        for wave in WAVE_NAMES:
            gauge.set(1.0 if breach_wave.get(name) == wave else 0.0, rollout=name, wave=wave)
    gauge.wait_scraped(len(ROLLOUTS) * len(WAVE_NAMES))

    played_model.create_namespace(bed, namespace)
    played_model.create_model(bed, namespace, model, VARIANTS, repository=model)
    operator = _operator(bed, tmp_path / "operator")
    api = load_api_client(str(bed.kubeconfig))
    recorder = ClusterRecorder(api, namespace)
    kills: list[str] = []
    started = time.monotonic()
    operator.start()
    try:
        played_model.publish(bed, namespace, model, list(VARIANTS), model, STABLE)
        for name in ROLLOUTS:
            played_model.apply(
                bed, namespace, _rollout(name, slices[name], bed.prometheus_url, model)
            )

        def first_rollouts_done() -> bool:
            statuses = {
                item["metadata"]["name"]: item.get("status") or {}
                for item in played_model.kube_json(bed, "-n", namespace, "get", "edgerollouts")[
                    "items"
                ]
            }
            return len(statuses) == len(ROLLOUTS) and all(
                s.get("phase") == "Healthy" and s.get("stableRevision") == STABLE
                for s in statuses.values()
            )

        _until("every rollout Healthy on the first revision", first_rollouts_done, 120)
        recorder.start()
        played_model.publish(bed, namespace, model, list(VARIANTS), model, CANARY, [STABLE])

        started = time.monotonic()
        aborts_seen: set[str] = set()

        def new_aborts() -> list[str]:
            statuses = recorder.latest_statuses()
            found = {
                name
                for name, status in statuses.items()
                if status.get("abort") and status.get("canaryRevision") == CANARY
            }
            return sorted(found - aborts_seen)

        def settled() -> bool:
            return _settled(recorder.latest_statuses(), ROLLOUTS)

        while not settled() and len(kills) < MAX_KILLS:
            assert time.monotonic() - started < CHAOS_BUDGET_SECONDS, (
                f"{replay} rollouts did not settle within {CHAOS_BUDGET_SECONDS}s and"
                f" {len(kills)} kills: {_summary(recorder.latest_statuses())}"
            )
            # Each life of the operator starts working before it is killed: on a loaded
            # machine a fixed lifetime could be spent entirely starting up, and the
            # rollouts would never move.
            writes_before = len(recorder.rollouts)

            def worked(seen: int = writes_before) -> bool:
                return len(recorder.rollouts) > seen or settled()

            _until("the restarted operator to write a status", worked, 60, every=0.05)
            live_until = time.monotonic() + rng.uniform(*LIFETIME)
            why = "at random"
            while time.monotonic() < live_until and not settled():
                aborted = new_aborts()
                if aborted:
                    aborts_seen.update(aborted)
                    # The breach is over: a verdict taken again would now pass.
                    for name in aborted:
                        gauge.set(0.0, rollout=name, wave=breach_wave.get(name, "?"))
                    if sum("abort" in kill for kill in kills) < KILLS_AFTER_ABORT:
                        why = f"right after the abort of {', '.join(aborted)} was stored"
                        break
                time.sleep(0.05)
            if settled():
                break
            operator.kill()
            kills.append(f"{time.monotonic() - started:.2f}s {why}")
            time.sleep(rng.uniform(0.0, 1.0))
            operator.start()
        # Enough kills: the rollouts must now settle with the operator left alone.
        try:
            _until("every rollout to settle after the last kill", settled, SETTLE_SECONDS)
        except TimeoutError:
            pytest.fail(
                f"{replay} rollouts did not settle {SETTLE_SECONDS}s after {len(kills)} kills:"
                f" {_summary(recorder.latest_statuses())}; kills: {kills}"
            )
        for name in new_aborts():
            gauge.set(0.0, rollout=name, wave=breach_wave.get(name, "?"))
        settled_after = time.monotonic() - started
        # Settled must stay settled: a restarted operator finds nothing left to do.
        time.sleep(3)
    finally:
        operator.stop()
        recorder.stop()

    print(f"settled after {settled_after:.1f}s and {len(kills)} kills: " + "; ".join(kills))
    assert len(kills) >= MIN_KILLS, f"{replay} only {len(kills)} kills: not much chaos"
    assert not recorder.gaps, f"{replay} the recorder missed changes: {recorder.gaps}"

    # Every rollout reached its verdict.
    final = recorder.latest_statuses()
    for name in ROLLOUTS:
        status = final[name]
        breach = breach_wave.get(name)
        where = f"{replay} {name} (breach: {breach})"
        waves = status.get("waves") or []
        assert [w["name"] for w in waves] == WAVE_NAMES, f"{where}: {waves}"
        assert all(not w.get("skippedNodes") for w in waves), f"{where}: skipped {waves}"
        if breach is None:
            assert status.get("phase") == "Healthy", f"{where}: {status}"
            assert status.get("stableRevision") == CANARY, f"{where}: {status}"
            for w in waves:
                assert w["phase"] == "Succeeded", f"{where}: {w}"
                assert w["successful"] == ANALYSIS_COUNT, f"{where}: {w}"
        else:
            breach_index = WAVE_NAMES.index(breach)
            assert status.get("phase") == "RolledBack", f"{where}: {status}"
            assert status.get("stableRevision") == STABLE, f"{where}: {status}"
            assert status["abort"]["metric"] == "breach", f"{where}: {status['abort']}"
            assert status["abort"]["wave"] == breach_index, f"{where}: {status['abort']}"
            assert status.get("rollbackCompletedAt"), f"{where}: {status}"
            for w in waves[:breach_index]:
                assert w["phase"] == "Succeeded", f"{where}: {w}"
                assert w["successful"] == ANALYSIS_COUNT, f"{where}: {w}"
            assert waves[breach_index]["phase"] == "Failed", f"{where}: {waves}"
            assert all(w["phase"] == "Pending" for w in waves[breach_index + 1 :]), where

    # The status history: nothing re-applied, no verdict lost or re-taken.
    regressions = status_regressions(recorder.rollouts)
    assert not regressions, f"{replay} status history: {regressions}"

    # The DaemonSet history. The canary: each node touched joined its DaemonSet exactly
    # once (and left once, at a rollback). The stable revision: a node leaves it at most
    # once and returns at most once (at a rollback), and ends where the verdict says. (It
    # may never leave at all: killed after the canary's apply and before the now-empty stable
    # DaemonSet's deletion, the operator next went straight to the rollback.)
    timelines = membership(recorder.workloads)
    unexpected: list[str] = []
    for name in ROLLOUTS:
        breach = breach_wave.get(name)
        waves = final[name]["waves"]
        touched = {
            node
            for w in waves[: (WAVE_NAMES.index(breach) + 1) if breach else len(waves)]
            for node in w["nodes"]
        }
        assert set().union(*(w["nodes"] for w in waves)) == set(slices[name]), name
        for node in slices[name]:
            if breach is None:
                canary, stable = [False, True], [False, True, False]
            elif node in touched:
                canary, stable = [False, True, False], [False, True, False, True]
            else:
                canary, stable = [False], [False, True]
            seen = timelines.get((name, CANARY, node), [False])
            if seen != canary:
                unexpected.append(f"{name}/{node} on {CANARY}: {seen}, expected {canary}")
            seen = timelines.get((name, STABLE, node), [False])
            if seen[-1] != stable[-1] or len(seen) > len(stable):
                unexpected.append(f"{name}/{node} on {STABLE}: {seen}, at most {stable}")
    if unexpected:
        culprits = sorted({line.split("/")[0] for line in unexpected})
        histories = "\n".join(
            f"{name}:\n" + describe(recorder.workloads, recorder.rollouts, name, started)
            for name in culprits
        )
        pytest.fail(f"{replay} DaemonSet membership: {unexpected}\nkills: {kills}\n{histories}")
    canary_recreated = {
        ds: uids
        for ds, uids in recreated_workloads(recorder.workloads).items()
        if any(c.name == ds and c.revision == CANARY for c in recorder.workloads)
    }
    assert not canary_recreated, f"{replay} DaemonSets recreated: {canary_recreated}"

    # No node announced switching twice (an event can be lost with a kill, never doubled).
    events = played_model.kube_json(bed, "-n", namespace, "get", "events")["items"]
    counts = switching_counts(events)
    assert counts, f"{replay} no NodesSwitching events at all"
    twice = {key: n for key, n in counts.items() if n > 1}
    assert not twice, f"{replay} NodesSwitching repeated: {twice}"
    for (rollout, revision, node), _ in counts.items():
        assert revision == CANARY and node in slices[rollout], f"{replay} {rollout} {node}"

    # What the nodes run in the end.
    expected_serving = {
        (name, node): {STABLE if name in breach_wave else CANARY}
        for name in ROLLOUTS
        for node in slices[name]
    }
    _until(
        "every node serving its rollout's final revision only",
        lambda: _serving(bed, namespace) == expected_serving,
        60,
    )
    for index in range(1, operator.starts + 1):
        log = (operator.log_dir / f"operator-{index}.log").read_text(errors="replace")
        assert not _own_tracebacks(log), f"{replay} operator-{index}.log: {_own_tracebacks(log)}"


def test_the_operator_recovers_when_the_apiserver_restarts_mid_rollout(
    bed: Testbed, gauge: SyntheticGauge, tmp_path: Path
) -> None:
    namespace, model, name = "outage", "outagelm", "steady"
    nodes = [n for p in PROFILES for n in sorted(bed.simulator.node_names(p))[:2]]
    for wave in WAVE_NAMES:
        gauge.set(0.0, rollout=name, wave=wave)
    gauge.wait_scraped(len(ROLLOUTS) * len(WAVE_NAMES) + len(WAVE_NAMES))
    played_model.create_namespace(bed, namespace)
    played_model.create_model(bed, namespace, model, VARIANTS, repository=model)
    manifest = _rollout(name, nodes, bed.prometheus_url, model)
    manifest["spec"]["strategy"]["maxUnavailable"] = 2
    operator = _operator(bed, tmp_path / "operator")
    api = load_api_client(str(bed.kubeconfig))
    recorder = ClusterRecorder(api, namespace)
    liveness: list[bool] = []

    def status() -> dict[str, Any]:
        found: dict[str, Any] = (
            played_model.kube_json(bed, "-n", namespace, "get", "edgerollout", name).get("status")
            or {}
        )
        return found

    def live() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{operator.port}/healthz", timeout=2).is_success
        except httpx.HTTPError:
            return False

    operator.start()
    try:
        played_model.publish(bed, namespace, model, list(VARIANTS), model, STABLE)
        played_model.apply(bed, namespace, manifest)
        _until(
            "the first rollout",
            lambda: status().get("phase") == "Healthy" and status().get("stableRevision") == STABLE,
            90,
        )
        recorder.start()
        played_model.publish(bed, namespace, model, list(VARIANTS), model, CANARY, [STABLE])
        _until(
            "the first wave's analysis",
            lambda: (status().get("waves") or [{}])[0].get("phase") == "Analyzing",
            90,
            every=0.1,
        )
        bed.stop_apiserver()
        try:
            outage_ends = time.monotonic() + 10
            assert bed.kubectl("get", "ns", check=False, timeout=10).returncode != 0
            while time.monotonic() < outage_ends:
                assert operator.process is not None and operator.process.poll() is None, (
                    f"the operator exited during the outage; log: {operator.log_path}"
                )
                liveness.append(live())
                time.sleep(1)
        finally:
            bed.start_apiserver()
        final = _until(
            "the rollout to finish after the apiserver restart",
            lambda: (
                (s := status()).get("phase") == "Healthy"
                and s.get("stableRevision") == CANARY
                and s
            ),
            120,
        )
        assert operator.process is not None and operator.process.poll() is None
        _until("the operator's liveness", live, 30)
        time.sleep(2)
    finally:
        operator.stop()
        recorder.stop()

    print(f"\nliveness during the outage: {liveness}; recorder reconnects {recorder.reconnects}")
    assert operator.starts == 1
    assert [w["phase"] for w in final["waves"]] == ["Succeeded"] * len(WAVE_NAMES)
    assert all(w["successful"] == ANALYSIS_COUNT for w in final["waves"]), final["waves"]
    # No gap-free history across the restart: the new apiserver's watch cache starts at the
    # current revision and answers a resumed watch with 410, so the recorder lists again.
    # Nothing can change while it is down; what it missed is the first seconds after.
    print(f"recorder gaps: {recorder.gaps}")
    assert not status_regressions(recorder.rollouts)
    timelines = membership(recorder.workloads)
    for node in nodes:
        assert timelines.get((name, CANARY, node)) == [False, True], node
        assert timelines.get((name, STABLE, node)) == [False, True, False], node
    assert not recreated_workloads(c for c in recorder.workloads if c.revision == CANARY)
    log = operator.logs()
    assert not _own_tracebacks(log), _own_tracebacks(log)
    # The outage was seen, and waited out: a warning per failed write, then the rollout went on.
    assert "the API server did not answer" in log
