"""Workload manifests: golden files for the whole shape, plus the properties that matter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from slmops.api.v1alpha1.common import EnvVar, ResourceRequirements
from slmops.api.v1alpha1.edgerollout import ServingSpec
from slmops.controllers.edgerollout import network_policies_enabled
from slmops.domain.workloads import (
    NodeVariant,
    Owner,
    RuntimeOptions,
    ServerWorkload,
    daemonset_manifest,
    group_workloads,
    network_policy_manifest,
    pod_labels,
    registry_port,
    service_manifest,
    workload_name,
)

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden" / "workloads"
OWNER = Owner(name="demo", uid="0f9e8d7c-0000-4000-8000-000000000001")
WORKLOAD = ServerWorkload(
    rollout="demo",
    namespace="edge",
    model="tinylm",
    variant="arm-int4",
    hardware_class="rpi5",
    revision="abcdef0123456789",
    artifact="127.0.0.1:5000/models/tinylm@sha256:" + "a" * 64,
    nodes=("edge-b", "edge-a"),
    resources=ResourceRequirements(requests={"cpu": "500m", "memory": "512Mi"}),
)


def _golden(name: str, manifest: dict[str, Any]) -> None:
    path = GOLDEN / name
    rendered = yaml.safe_dump(manifest, sort_keys=True)
    if os.environ.get("SLMOPS_UPDATE_GOLDEN") == "1":
        path.write_text(rendered)
    assert rendered == path.read_text(), f"{path} differs; SLMOPS_UPDATE_GOLDEN=1 rewrites it"


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = manifest["spec"]["template"]["spec"]["containers"][0]
    return container


def test_daemonset_golden_with_pull_secret_and_plain_http() -> None:
    manifest = daemonset_manifest(
        WORKLOAD,
        ServingSpec(port=8100, threads=2, env=[EnvVar(name="EXTRA", value="1")]),
        RuntimeOptions(
            image="ghcr.io/slmops/slmops-runtime:0.1.0",
            registry_plain_http=True,
            pull_secret="registry-pull",
        ),
        OWNER,
    )
    _golden("daemonset.yaml", manifest)


def test_service_golden() -> None:
    _golden("service.yaml", service_manifest("demo", "edge", 8100, OWNER))


def test_network_policy_golden() -> None:
    _golden("networkpolicy.yaml", network_policy_manifest("demo", "edge", 8100, [5000, 443], OWNER))


def test_network_policy_lets_in_only_the_serving_port_and_out_only_dns_and_registries() -> None:
    policy = network_policy_manifest("demo", "edge", 8100, [5000, 443, 5000], OWNER)
    spec = policy["spec"]
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["metadata"]["ownerReferences"] == [OWNER.reference()]
    # Both directions are listed, so whatever no rule allows is denied both ways.
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8100}]}]
    dns, registries = spec["egress"]
    assert dns == {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    assert registries == {
        "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 5000}]
    }
    # No rule has peers: none could name the registry's host, and ingress takes any client.
    assert not [rule for rule in spec["ingress"] + spec["egress"] if {"to", "from"} & set(rule)]


def test_network_policy_selects_every_server_of_the_rollout_and_only_those() -> None:
    selector = network_policy_manifest("demo", "edge", 8000, [443], OWNER)["spec"]["podSelector"]
    other_revision = ServerWorkload(**{**WORKLOAD.__dict__, "revision": "0123456789abcdef"})
    for workload in (WORKLOAD, other_revision):
        assert selector["matchLabels"].items() <= pod_labels(workload).items()
    other_rollout = ServerWorkload(**{**WORKLOAD.__dict__, "rollout": "other"})
    assert not selector["matchLabels"].items() <= pod_labels(other_rollout).items()
    # A pod someone else labelled with the rollout is not ours to confine.
    assert not selector["matchLabels"].items() <= {"slmops.io/rollout": "demo"}.items()


def test_network_policy_before_any_artifact_allows_only_dns_out() -> None:
    spec = network_policy_manifest("demo", "edge", 8000, [], OWNER)["spec"]
    assert [rule["ports"][0]["port"] for rule in spec["egress"]] == [53]


@pytest.mark.parametrize(
    ("artifact", "plain_http", "port"),
    [
        ("127.0.0.1:5000/models/tinylm@sha256:" + "a" * 64, False, 5000),
        ("oci://registry.example.com/models/tinylm@sha256:" + "a" * 64, False, 443),
        ("registry.example.com/models/tinylm", True, 80),
        ("[fd00::1]:5001/models/tinylm", False, 5001),
        ("[fd00::1]/models/tinylm", True, 80),
        ("registry.local:notaport/models/tinylm", False, 443),
    ],
)
def test_registry_port_is_the_explicit_one_or_the_schemes_default(
    artifact: str, plain_http: bool, port: int
) -> None:
    assert registry_port(artifact, plain_http=plain_http) == port


@pytest.mark.parametrize(
    ("value", "enabled"),
    [("", True), ("true", True), ("1", True), ("False", False), ("off", False), ("0", False)],
)
def test_network_policies_switch(value: str, enabled: bool) -> None:
    assert network_policies_enabled({"SLMOPS_NETWORK_POLICY": value}) is enabled
    assert network_policies_enabled({}) is True


def test_network_policies_switch_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="SLMOPS_NETWORK_POLICY='maybe': expected true or false"):
        network_policies_enabled({"SLMOPS_NETWORK_POLICY": "maybe"})


def test_daemonset_pins_exactly_its_nodes_and_labels_pods_for_analysis() -> None:
    manifest = daemonset_manifest(
        WORKLOAD, ServingSpec(), RuntimeOptions(image="x/slmops-runtime:1"), OWNER
    )
    template = manifest["spec"]["template"]
    terms = template["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["edge-a", "edge-b"]}
            ]
        }
    ]
    labels = template["metadata"]["labels"]
    assert labels["slmops.io/rollout"] == "demo"
    assert labels["slmops.io/revision"] == WORKLOAD.revision
    assert labels["slmops.io/variant"] == "arm-int4"
    assert labels["slmops.io/hardware-class"] == "rpi5"
    assert manifest["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    # Template changes must not restart pods on nodes that stay (see module docstring).
    assert manifest["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid


def test_daemonset_runs_serve_with_the_digest_and_a_restricted_security_context() -> None:
    manifest = daemonset_manifest(
        WORKLOAD, ServingSpec(), RuntimeOptions(image="x/slmops-runtime:1"), OWNER
    )
    container = _container(manifest)
    command = container["command"]
    assert command[:4] == ["slmops", "serve", "--model", f"oci://{WORKLOAD.artifact}"]
    assert command[command.index("--host") + 1] == "$(POD_IP)"
    assert command[command.index("--port") + 1] == "8000"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["SLMOPS_REVISION"]["value"] == WORKLOAD.revision
    assert "SLMOPS_REGISTRY_AUTH_FILE" not in env
    assert "SLMOPS_REGISTRY_PLAIN_HTTP" not in env
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    pod_security = manifest["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}}


def test_serving_resources_override_the_variant() -> None:
    override = ResourceRequirements(limits={"memory": "1Gi"})
    manifest = daemonset_manifest(
        WORKLOAD, ServingSpec(resources=override), RuntimeOptions(image="i"), OWNER
    )
    assert _container(manifest)["resources"] == {"limits": {"memory": "1Gi"}}


def test_a_workload_without_nodes_is_refused() -> None:
    empty = ServerWorkload(**{**WORKLOAD.__dict__, "nodes": ()})
    with pytest.raises(ValueError, match="no nodes"):
        daemonset_manifest(empty, ServingSpec(), RuntimeOptions(image="i"), OWNER)


def test_names_are_dns_labels_and_distinct_when_shortened() -> None:
    assert workload_name("demo", "arm-int4", "abcdef0123456789").startswith(
        "demo-arm-int4-abcdef0123-"
    )
    # Readable parts alike, names apart: revisions sharing a prefix, dashes moved between parts.
    assert workload_name("demo", "v", "r2-good-one") != workload_name("demo", "v", "r2-good-two")
    assert workload_name("a-b", "c", "r1") != workload_name("a", "b-c", "r1")
    long_rollout = "r" * 60
    first = workload_name(long_rollout, "v", "a" * 40)
    second = workload_name(long_rollout, "v", "a" * 10 + "b" * 30)
    assert len(first) <= 63 and len(second) <= 63
    assert first != second


def test_group_workloads_one_per_variant_and_revision_and_reports_unservable_nodes() -> None:
    variants = {
        "n1": NodeVariant("arm-int4", "rpi5"),
        "n2": NodeVariant("arm-int4", "rpi5"),
        "n3": NodeVariant("x86-int8", "x86-vnni"),
    }
    artifacts = {
        ("rev1stable", "arm-int4"): "reg/m@sha256:1",
        ("rev2canary", "arm-int4"): "reg/m@sha256:2",
        ("rev1stable", "x86-int8"): "reg/m@sha256:3",
    }
    workloads, problems = group_workloads(
        rollout="demo",
        namespace="edge",
        model="m",
        desired={"n1": "rev1stable", "n2": "rev2canary", "n3": "rev2canary", "n4": "rev1stable"},
        node_variants=variants,
        artifacts=artifacts,
    )
    assert [(w.variant, w.revision, w.nodes) for w in workloads] == [
        ("arm-int4", "rev1stable", ("n1",)),
        ("arm-int4", "rev2canary", ("n2",)),
    ]
    assert problems == [
        "node n3: variant x86-int8 has no artifact for revision rev2canary",
        "node n4 has no variant assigned",
    ]
