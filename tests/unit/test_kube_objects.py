"""From Kubernetes bodies to rollout facts, and status patches that say exactly what changed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from slmops.adapters.kube_objects import (
    ServerPod,
    dump_status,
    fleet_node,
    model_offers,
    model_view,
    node_serving,
    parse_action,
    server_pod,
    status_merge_patch,
)
from slmops.api.v1alpha1.edgerollout import EdgeRolloutStatus, NodeAssignment
from slmops.api.v1alpha1.slmmodel import SLMModelSpec, SLMModelStatus

pytestmark = pytest.mark.unit

MODEL_SPEC = {
    "source": {"uri": "file:///m", "sha256": "0" * 64},
    "variants": [
        {
            "name": "arm-int8",
            "target": {
                "nodeSelector": {"matchLabels": {"kubernetes.io/arch": "arm64"}},
                "hardwareClass": "rpi5",
                "resources": {"requests": {"cpu": "500m"}},
            },
        },
        {"name": "x86", "target": {"nodeSelector": {"matchLabels": {"a": "b"}}}},
    ],
    "image": {
        "registry": "127.0.0.1:5000",
        "repository": "m",
        "insecure": True,
        "pullSecretRef": {"name": "pull"},
    },
}


def _model(status: dict[str, object]) -> dict[str, object]:
    return {"spec": MODEL_SPEC, "status": status}


def test_fleet_node_reads_allocatable_memory_and_readiness() -> None:
    node = fleet_node(
        "n1",
        {"kubernetes.io/arch": "arm64"},
        {
            "allocatable": {"memory": "7680Mi"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    )
    assert node.allocatable_memory_bytes == 7680 * 1024 * 1024
    assert node.ready is True
    assert (
        fleet_node("n2", {}, {"conditions": [{"type": "Ready", "status": "Unknown"}]}).ready
        is False
    )


def _pod(
    name: str, node: str, revision: str, created: str, *, ready: bool, deleting: bool = False
) -> ServerPod:
    return server_pod(
        name,
        {"slmops.io/revision": revision, "slmops.io/variant": "v"},
        {"creationTimestamp": created, **({"deletionTimestamp": created} if deleting else {})},
        {"nodeName": node},
        {
            "phase": "Running",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": "2026-01-01T00:00:09Z",
                }
            ],
        },
    )


def test_a_node_serves_what_its_newest_live_pod_runs() -> None:
    pods = [
        _pod("old", "n1", "stable", "2026-01-01T00:00:00Z", ready=True),
        _pod("new", "n1", "canary", "2026-01-01T00:00:05Z", ready=False),
        _pod("gone", "n2", "canary", "2026-01-01T00:00:05Z", ready=True, deleting=True),
        _pod("kept", "n2", "stable", "2026-01-01T00:00:00Z", ready=True),
    ]
    serving = node_serving(pods)
    assert serving["n1"].revision == "canary" and serving["n1"].ready is False
    assert serving["n2"].revision == "stable" and serving["n2"].ready is True
    assert serving["n2"].since == datetime(2026, 1, 1, 0, 0, 9, tzinfo=UTC)


def test_model_view_offers_the_current_and_recorded_revisions() -> None:
    view = model_view(
        _model(
            {
                "phase": "Ready",
                "revision": "rev2new",
                "conditions": [{"type": "Ready", "status": "True"}],
                "variants": [
                    {"name": "arm-int8", "phase": "Qualified", "revision": "rev2new",
                     "artifact": "r/m@sha256:2", "sizeBytes": 10},
                    {"name": "x86", "phase": "Rejected", "revision": "rev2new"},
                ],
                "revisions": [
                    {"revision": "rev1old", "variants": {"arm-int8": "r/m@sha256:1",
                                                         "x86": "r/m@sha256:x"}},
                ],
            }
        ),
        None,
    )  # fmt: skip
    assert view.revision == "rev2new" and view.problem == ""
    current = {o.name: o for o in view.offers["rev2new"]}
    assert current["arm-int8"].qualified and current["arm-int8"].artifact == "r/m@sha256:2"
    assert current["arm-int8"].hardware_class == "rpi5"
    assert not current["x86"].qualified and current["x86"].hardware_class == "x86"
    older = {o.name: o for o in view.offers["rev1old"]}
    assert older["x86"].artifact == "r/m@sha256:x"
    assert view.insecure_registry and view.pull_secret == "pull"
    assert set(view.resources) == {"arm-int8"}


def test_model_view_explains_what_it_waits_for() -> None:
    assert model_view(None, None).problem == "the SLMModel does not exist"
    building = model_view(_model({"phase": "Building", "revision": "rev2new"}), None)
    assert building.revision is None and "not Ready" in building.problem
    pinned = model_view(_model({"phase": "Building"}), "rev9missing")
    assert "rev9missing" in pinned.problem
    assert "invalid" in model_view({"spec": {"variants": []}}, None).problem


def test_model_offers_keep_spec_order() -> None:
    offers = model_offers(
        SLMModelSpec.model_validate(MODEL_SPEC),
        SLMModelStatus.model_validate({"revision": "r1abcdef", "variants": []}),
    )
    assert [o.name for o in offers["r1abcdef"]] == ["arm-int8", "x86"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc123:promote", ("abc123", "promote")),
        (" id : promote-full ", ("id", "promote-full")),
        ("promote", None),
        (":promote", None),
        ("id:", None),
    ],
)
def test_parse_action(value: str, expected: tuple[str, str] | None) -> None:
    assert parse_action({"slmops.io/action": value}) == expected
    assert parse_action({}) is None


def test_merge_patch_sets_changes_and_nulls_what_disappeared() -> None:
    old = {"phase": "Progressing", "abort": {"metric": "m", "query": "q"}, "waves": [1], "x": 1}
    new = {"phase": "RolledBack", "abort": {"metric": "m"}, "waves": [1]}
    assert status_merge_patch(new, old) == {
        "phase": "RolledBack",
        "abort": {"query": None},
        "x": None,
    }
    assert status_merge_patch(new, new) == {}


def test_dump_status_leaves_out_empty_strings_and_none() -> None:
    status = EdgeRolloutStatus(nodes=[NodeAssignment(node="n1")], message="")
    dumped = dump_status(status)
    assert "message" not in dumped and "abort" not in dumped
    assert dumped["nodes"] == [{"node": "n1", "state": "Stable"}]
    assert EdgeRolloutStatus.model_validate(dumped) == status
