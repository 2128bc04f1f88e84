"""The rollout's writes against the real apiserver, scheduler and DaemonSet controller.

The server image here is not one the simulator runs as a process, so its pods are only
scheduled and marked running: what is tested is where they land and which survive a change.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from slmops.adapters.kubernetes import KubeError, KubeWriter, load_api_client
from slmops.api.v1alpha1.edgerollout import ServingSpec
from slmops.domain.workloads import (
    Owner,
    RuntimeOptions,
    ServerWorkload,
    daemonset_manifest,
    service_manifest,
)
from slmops.testbed.testbed import Testbed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "registry.example/library/pause:3.2"


@pytest.fixture
def writer(testbed: Testbed) -> KubeWriter:
    return KubeWriter(load_api_client(str(testbed.kubeconfig)))


@pytest.fixture
def rollout(testbed: Testbed, kube_namespace: str) -> Owner:
    """A real EdgeRollout to own the children (the apiserver's GC deletes them with it)."""
    testbed.kubectl("apply", "-f", str(ROOT / "crds"))
    testbed.kubectl("wait", "--for", "condition=established", "crd", "--all", "--timeout=60s")
    manifest = {
        "apiVersion": "slmops.io/v1alpha1",
        "kind": "EdgeRollout",
        "metadata": {"name": "kube", "namespace": kube_namespace},
        "spec": {
            "model": {"name": "m"},
            "fleet": {"selector": {"matchLabels": {"slmops.io/simulated": "true"}}},
            "strategy": {"waves": [{"count": 1}]},
        },
    }
    created = json.loads(
        testbed.kubectl("apply", "-f", "-", "-o", "json", input=json.dumps(manifest)).stdout
    )
    return Owner(name="kube", uid=created["metadata"]["uid"])


def _pods(testbed: Testbed, namespace: str) -> dict[str, dict[str, Any]]:
    """Node → its live pod."""
    items = json.loads(testbed.kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)
    return {
        pod["spec"]["nodeName"]: pod
        for pod in items["items"]
        if pod["spec"].get("nodeName") and not pod["metadata"].get("deletionTimestamp")
    }


def _wait_nodes(testbed: Testbed, namespace: str, nodes: set[str]) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + 60
    while True:
        pods = _pods(testbed, namespace)
        if set(pods) == nodes:
            return pods
        if time.monotonic() > deadline:
            raise TimeoutError(f"pods on {sorted(pods)}, expected {sorted(nodes)}")
        time.sleep(0.5)


def _workload(namespace: str, nodes: tuple[str, ...]) -> ServerWorkload:
    return ServerWorkload(
        rollout="kube",
        namespace=namespace,
        model="m",
        variant="v",
        hardware_class="c",
        revision="rev1abcdef",
        artifact="127.0.0.1:5000/m@sha256:" + "0" * 64,
        nodes=nodes,
    )


async def test_a_daemonset_runs_on_exactly_its_nodes_and_moving_nodes_leaves_the_others_alone(
    testbed: Testbed, kube_namespace: str, writer: KubeWriter, rollout: Owner
) -> None:
    a, b, c = sorted(testbed.simulator.node_names())[:3]
    runtime = RuntimeOptions(image=IMAGE)
    serving = ServingSpec()
    assert await writer.apply(
        daemonset_manifest(_workload(kube_namespace, (a, b)), serving, runtime, rollout)
    )
    first = _wait_nodes(testbed, kube_namespace, {a, b})
    # The node list changes (b leaves, c joins): b's pod goes, c gets one, a's pod stays.
    await writer.apply(
        daemonset_manifest(_workload(kube_namespace, (a, c)), serving, runtime, rollout)
    )
    second = _wait_nodes(testbed, kube_namespace, {a, c})
    assert second[a]["metadata"]["uid"] == first[a]["metadata"]["uid"]


async def test_apply_is_idempotent_and_skips_unchanged_manifests(
    testbed: Testbed, kube_namespace: str, writer: KubeWriter, rollout: Owner
) -> None:
    service = service_manifest("kube", kube_namespace, 8000, rollout)
    assert await writer.apply(service) is True
    assert await writer.apply(service) is False  # remembered: no request at all
    stored = await writer.get("v1", "Service", kube_namespace, "kube")
    assert stored is not None
    version = stored["metadata"]["resourceVersion"]
    # A fresh writer (a restarted operator) applies again; the apiserver changes nothing.
    fresh = KubeWriter(load_api_client(str(testbed.kubeconfig)))
    assert await fresh.apply(service) is True
    again = await writer.get("v1", "Service", kube_namespace, "kube")
    assert again is not None and again["metadata"]["resourceVersion"] == version
    managers = {f["manager"] for f in again["metadata"]["managedFields"]}
    assert "slmops-operator" in managers
    assert again["metadata"]["ownerReferences"][0]["uid"] == rollout.uid
    assert await writer.delete("v1", "Service", kube_namespace, "kube") is True
    assert await writer.delete("v1", "Service", kube_namespace, "kube") is False


async def test_status_patches_set_and_remove_fields(
    testbed: Testbed, kube_namespace: str, writer: KubeWriter, rollout: Owner
) -> None:
    api = "slmops.io/v1alpha1"
    await writer.patch_status(
        api, "EdgeRollout", kube_namespace, "kube", {"phase": "Progressing", "message": "moving"}
    )
    updated = await writer.patch_status(
        api, "EdgeRollout", kube_namespace, "kube", {"phase": "Healthy", "message": None}
    )
    assert updated["status"]["phase"] == "Healthy"
    assert "message" not in updated["status"]
    # The spec is untouched by status writes (GitOps sees no drift).
    assert updated["metadata"]["generation"] == 1
    with pytest.raises(KubeError, match="404"):
        await writer.patch_status(api, "EdgeRollout", kube_namespace, "missing", {"phase": "x"})
