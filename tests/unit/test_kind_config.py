"""kind-config.yaml: a kind cluster whose workers look like the simulator's edge fleet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from slmops.api.v1alpha1.common import LabelSelector
from slmops.api.v1alpha1.slmmodel import SLMModel
from slmops.domain.selectors import matches
from slmops.testbed.simulator.profiles import (
    HARDWARE_CLASS_LABEL,
    PROFILES,
    node_labels,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EDGE_ROLE_LABEL = "node-role.slmops.io/edge"
ARCH_LABEL = "kubernetes.io/arch"
# Labels the kubelet sets itself (arch, os, hostname) or only the simulator carries.
NOT_FROM_CONFIG = {
    ARCH_LABEL,
    "kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "kubernetes.io/hostname",
    "slmops.io/simulated",
}
# The kubelet refuses to start with a --node-labels key in kubernetes.io / k8s.io unless it
# is one of these or lives under kubelet.kubernetes.io / node.kubernetes.io (NodeRestriction's
# rule, k8s.io/kubelet/pkg/apis/well_known_labels.go).
KUBELET_LABELS = {
    "kubernetes.io/hostname",
    "kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.kubernetes.io/zone",
    "failure-domain.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
}
KUBELET_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")
NODE_KEYS = {"role", "image", "labels", "extraMounts", "extraPortMappings", "kubeadmConfigPatches"}


def kind_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    return loaded


def workers() -> list[dict[str, str]]:
    return [node["labels"] for node in kind_config()["nodes"] if node["role"] == "worker"]


def kubelet_may_set(key: str) -> bool:
    if key in KUBELET_LABELS:
        return True
    namespace = key.split("/", 1)[0] if "/" in key else ""
    if any(namespace == ns or namespace.endswith("." + ns) for ns in KUBELET_NAMESPACES):
        return True
    return not (
        namespace in ("kubernetes.io", "k8s.io")
        or namespace.endswith((".kubernetes.io", ".k8s.io"))
    )


def sample_model() -> SLMModel:
    return SLMModel.model_validate(
        yaml.safe_load((ROOT / "manifests" / "samples" / "slmmodel-demo.yaml").read_text())
    )


def first_variant(model: SLMModel, labels: dict[str, str]) -> str | None:
    for variant in model.spec.variants:
        if matches(variant.target.node_selector, labels):
            return variant.name
    return None


def test_is_a_kind_cluster_with_one_control_plane_and_workers() -> None:
    config = kind_config()
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [node["role"] for node in config["nodes"]]
    assert roles.count("control-plane") == 1
    assert roles.count("worker") >= len(PROFILES)
    for node in config["nodes"]:
        assert set(node) <= NODE_KEYS, f"kind does not know {set(node) - NODE_KEYS}"


def test_a_worker_per_simulator_profile_with_the_simulators_labels() -> None:
    by_class = {labels[HARDWARE_CLASS_LABEL]: labels for labels in workers()}
    assert set(by_class) == set(PROFILES)
    for name, profile in PROFILES.items():
        simulated = node_labels(profile, "any", 0)
        expected = {k: v for k, v in simulated.items() if k not in NOT_FROM_CONFIG}
        actual = by_class[name]
        # Site, zone and region vary per node in the simulator too; only their presence and
        # consistency with one of the simulator's sites is fixed.
        place_keys = (
            "slmops.io/site",
            "topology.kubernetes.io/zone",
            "topology.kubernetes.io/region",
        )
        for key in place_keys:
            assert key in actual
            expected.pop(key)
        assert {k: v for k, v in actual.items() if k not in place_keys} == {
            **expected,
            EDGE_ROLE_LABEL: "true",
        }


def test_sites_are_the_simulators_sites() -> None:
    from slmops.testbed.simulator.profiles import SITES

    for labels in workers():
        place = (
            labels["slmops.io/site"],
            labels["topology.kubernetes.io/region"],
            labels["topology.kubernetes.io/zone"],
        )
        assert place in SITES


def test_every_label_is_one_a_kubelet_may_set_on_itself() -> None:
    for labels in workers():
        for key, value in labels.items():
            assert kubelet_may_set(key), f"kubelet would refuse --node-labels {key}"
            assert isinstance(value, str), f"{key}: kind wants string label values"


def test_the_samples_fleet_selector_takes_every_worker() -> None:
    rollout = yaml.safe_load((ROOT / "manifests" / "samples" / "edgerollout-demo.yaml").read_text())
    fleet = LabelSelector.model_validate(rollout["spec"]["fleet"]["selector"])
    for labels in workers():
        assert matches(fleet, labels), labels


def test_on_real_hardware_each_worker_gets_its_own_classes_variant() -> None:
    # With the arch its hardware really has, a worker must get the sample variant written for
    # its hardware class: this is what proves the labels are the right ones.
    model = sample_model()
    class_of_variant = {v.name: v.target.hardware_class or v.name for v in model.spec.variants}
    for labels in workers():
        hardware_class = labels[HARDWARE_CLASS_LABEL]
        real = {**labels, ARCH_LABEL: PROFILES[hardware_class].arch}
        variant = first_variant(model, real)
        assert variant is not None, hardware_class
        assert class_of_variant[variant] == hardware_class


@pytest.mark.parametrize("host_arch", ["amd64", "arm64"])
def test_on_kind_every_worker_gets_a_variant(host_arch: str) -> None:
    model = sample_model()
    for labels in workers():
        assert first_variant(model, {**labels, ARCH_LABEL: host_arch}) is not None


def test_every_sample_variant_schedules_on_a_kind_host_of_some_arch() -> None:
    # Arch-specific variants only match when kind runs on that arch (kind cannot fake
    # kubernetes.io/arch): each variant must be reachable on an amd64 or an arm64 host.
    model = sample_model()
    reachable = {
        first_variant(model, {**labels, ARCH_LABEL: host_arch})
        for host_arch in ("amd64", "arm64")
        for labels in workers()
    }
    assert {v.name for v in model.spec.variants} <= reachable


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        ("node-role.kubernetes.io/worker", False),
        ("kubernetes.io/role", False),
        ("feature.node.kubernetes.io/cpu-cpuid.AVX2", True),
        ("topology.kubernetes.io/zone", True),
        ("nvidia.com/gpu.present", True),
    ],
)
def test_the_kubelet_label_rule_itself(key: str, allowed: bool) -> None:
    assert kubelet_may_set(key) is allowed
