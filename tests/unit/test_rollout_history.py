"""The checks the chaos e2e relies on find what a buggy restart would leave behind.

Each history here is what the cluster would show if the operator re-applied a wave or lost
a verdict after a restart; each check must flag it (and pass the correct history), or the
e2e could pass on an operator that does exactly what it is meant to catch.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.rollout_history import (
    RolloutChange,
    WorkloadChange,
    membership,
    recreated_workloads,
    status_regressions,
    switching_counts,
    workload_nodes,
)

pytestmark = pytest.mark.unit

STABLE, CANARY = "rev1", "rev2"


def ds(event: str, revision: str, nodes: set[str], uid: str = "u1") -> WorkloadChange:
    return WorkloadChange(0.0, event, f"r-arm-{revision}", uid, "r", revision, frozenset(nodes))


def switch_of_two_waves() -> list[WorkloadChange]:
    """n1 then n2 go from stable to canary, once each."""
    return [
        ds("LISTED", STABLE, {"n1", "n2"}, "s1"),
        ds("ADDED", CANARY, {"n1"}, "c1"),
        ds("MODIFIED", STABLE, {"n2"}, "s1"),
        ds("MODIFIED", CANARY, {"n1", "n2"}, "c1"),
        ds("DELETED", STABLE, set(), "s1"),
    ]


def test_membership_of_a_correct_rollout() -> None:
    timelines = membership(switch_of_two_waves())
    assert timelines[("r", CANARY, "n1")] == [False, True]
    assert timelines[("r", CANARY, "n2")] == [False, True]
    assert timelines[("r", STABLE, "n1")] == [False, True, False]
    assert recreated_workloads(switch_of_two_waves()) == {}


def test_a_wave_re_applied_after_a_restart_shows_in_membership_and_uids() -> None:
    # The restarted operator replanned: the canary DaemonSet is recreated with the first
    # wave only, then the second wave is applied again.
    history = [
        *switch_of_two_waves()[:4],
        ds("DELETED", CANARY, set(), "c1"),
        ds("ADDED", CANARY, {"n1"}, "c2"),
        ds("MODIFIED", CANARY, {"n1", "n2"}, "c2"),
    ]
    timelines = membership(history)
    assert timelines[("r", CANARY, "n1")] == [False, True, False, True]
    assert recreated_workloads(history) == {f"r-arm-{CANARY}": ["c1", "c2"]}


def status(**fields: Any) -> RolloutChange:
    body = {"canaryRevision": CANARY, "stableRevision": STABLE, **fields}
    return RolloutChange(0.0, "MODIFIED", "r", body)


def wave(index: int, started: str, successful: int) -> dict[str, Any]:
    return {"index": index, "name": f"w{index}", "startedAt": started, "successful": successful}


def test_status_history_of_a_correct_rollout_has_no_regressions() -> None:
    history = [
        status(phase="Progressing", currentWave=0, waves=[wave(0, "t1", 0)]),
        status(phase="Progressing", currentWave=0, waves=[wave(0, "t1", 1)]),
        status(phase="Progressing", currentWave=1, waves=[wave(0, "t1", 2), wave(1, "t2", 0)]),
        status(phase="RolledBack", currentWave=1, abort={"metric": "m", "at": "t3"}),
        status(phase="RolledBack", currentWave=1, abort={"metric": "m", "at": "t3"}),
    ]
    assert status_regressions(history) == []


@pytest.mark.parametrize(
    ("later", "found"),
    [
        ({"phase": "Progressing", "currentWave": 0, "waves": [wave(0, "t9", 2)]}, "startedAt"),
        ({"phase": "Progressing", "currentWave": 0, "waves": [wave(0, "t1", 0)]}, "dropped"),
        ({"phase": "Progressing", "currentWave": 0, "waves": [wave(0, "t1", 2)]}, "went back"),
    ],
)
def test_a_replanned_or_reanalysed_wave_is_a_regression(later: dict[str, Any], found: str) -> None:
    history = [
        status(phase="Progressing", currentWave=1, waves=[wave(0, "t1", 2), wave(1, "t2", 0)]),
        status(**later),
    ]
    problems = status_regressions(history)
    assert any(found in problem for problem in problems), problems


def test_a_lost_or_retaken_verdict_is_a_regression() -> None:
    aborted = status(phase="RolledBack", abort={"metric": "m", "at": "t3"})
    retaken = status(phase="RolledBack", abort={"metric": "m", "at": "t4"})
    forgotten = status(phase="Progressing")
    assert any("abort" in p for p in status_regressions([aborted, retaken]))
    problems = status_regressions([aborted, forgotten])
    assert any("phase RolledBack became Progressing" in p for p in problems), problems
    # A new revision legitimately starts over.
    newer = RolloutChange(0.0, "MODIFIED", "r", {"canaryRevision": "rev3", "phase": "Progressing"})
    assert status_regressions([aborted, newer]) == []


def test_switching_events_are_counted_per_node_and_revision() -> None:
    events: list[dict[str, Any]] = [
        {
            "reason": "NodesSwitching",
            "involvedObject": {"name": "r"},
            "message": f"w1: n1 → {CANARY}",
        },
        {
            "reason": "NodesSwitching",
            "involvedObject": {"name": "r"},
            "message": f"w2: n2, n3 → {CANARY}",
            "count": 2,
        },
        {"reason": "WaveStarted", "involvedObject": {"name": "r"}, "message": "w1 started"},
    ]
    assert switching_counts(events) == {
        ("r", CANARY, "n1"): 1,
        ("r", CANARY, "n2"): 2,
        ("r", CANARY, "n3"): 2,
    }


def test_workload_nodes_reads_the_hostname_affinity() -> None:
    daemonset = {
        "spec": {
            "template": {
                "spec": {
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {
                                                "key": "kubernetes.io/hostname",
                                                "operator": "In",
                                                "values": ["n1", "n2"],
                                            }
                                        ]
                                    }
                                ]
                            }
                        }
                    }
                }
            }
        }
    }
    assert workload_nodes(daemonset) == {"n1", "n2"}
    assert workload_nodes({}) == frozenset()
