"""The Kubernetes objects that serve a rollout, as pure functions of what should run where.

One DaemonSet per (rollout, variant, revision), pinned to an explicit list of nodes, so that
the stable and the new revision coexist node by node and a wave moves nodes from one list to
the other. One Service per rollout selects every server of it, and one NetworkPolicy per
rollout confines them (the rollout knows its serving port and its model's registry, which a
namespace-wide policy could not).

Why `updateStrategy: OnDelete`: moving a node from one DaemonSet to another changes the node
list in both pod templates. With RollingUpdate that template change would restart every pod
of the DaemonSet — every stable node, on every wave. With OnDelete the DaemonSet controller
still creates pods on nodes that joined the list and deletes pods on nodes that left it, but
leaves the pods on unchanged nodes alone.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from slmops.api.v1alpha1.common import API_VERSION, ResourceRequirements
from slmops.api.v1alpha1.edgerollout import ServingSpec

ROLLOUT_LABEL = "slmops.io/rollout"
REVISION_LABEL = "slmops.io/revision"
VARIANT_LABEL = "slmops.io/variant"
HARDWARE_CLASS_LABEL = "slmops.io/hardware-class"
MODEL_LABEL = "slmops.io/model"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "slmops-operator"
HOSTNAME_LABEL = "kubernetes.io/hostname"

SERVER_CONTAINER = "server"
CACHE_MOUNT_PATH = "/var/lib/slmops/models"
REGISTRY_AUTH_DIR = "/var/run/slmops/registry"
REGISTRY_AUTH_FILE = f"{REGISTRY_AUTH_DIR}/config.json"
# A non-root user that exists in distroless-style images; any non-zero uid works.
RUNTIME_UID = 65532

_MAX_NAME = 63


@dataclass(frozen=True)
class Owner:
    """The EdgeRollout that owns the children, so deleting it deletes them."""

    name: str
    uid: str
    kind: str = "EdgeRollout"
    api_version: str = API_VERSION

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class RuntimeOptions:
    """Operator-wide and model-wide facts the servers need."""

    image: str
    """The model server image, e.g. ghcr.io/slmops/slmops-runtime:0.1.0."""
    registry_plain_http: bool = False
    """The model's registry speaks plain HTTP (spec.image.insecure)."""
    pull_secret: str | None = None
    """A kubernetes.io/dockerconfigjson Secret the servers pull the model with."""


@dataclass(frozen=True)
class ServerWorkload:
    """One revision of one variant, to run on these nodes."""

    rollout: str
    namespace: str
    model: str
    variant: str
    hardware_class: str
    revision: str
    artifact: str
    nodes: tuple[str, ...]
    resources: ResourceRequirements | None = None
    """The variant's resources (spec.serving.resources overrides them)."""

    @property
    def name(self) -> str:
        return workload_name(self.rollout, self.variant, self.revision)


def workload_name(rollout: str, variant: str, revision: str) -> str:
    """A DNS label naming the DaemonSet: readable parts, then a hash of the whole triple.

    The hash is always there: the readable parts alone collide (revisions sharing their first
    ten characters; "a-b"+"c" and "a"+"b-c"), and a collision would make the operator patch one
    revision's DaemonSet into another's immutable selector.
    """
    digest = hashlib.sha256(f"{rollout}/{variant}/{revision}".encode()).hexdigest()[:8]
    readable = f"{rollout}-{variant}-{revision[:10]}"[: _MAX_NAME - 9].rstrip("-")
    return f"{readable}-{digest}"


def selector_labels(rollout: str, variant: str, revision: str) -> dict[str, str]:
    """The DaemonSet's selector (immutable, so exactly the triple that names it)."""
    return {ROLLOUT_LABEL: rollout, VARIANT_LABEL: variant, REVISION_LABEL: revision}


def _label_value(value: str) -> str:
    # Label values: at most 63 characters of [A-Za-z0-9._-], alphanumeric at both ends.
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", value)[:63]
    return cleaned.strip("-._")


def pod_labels(workload: ServerWorkload) -> dict[str, str]:
    return {
        **selector_labels(workload.rollout, workload.variant, workload.revision),
        HARDWARE_CLASS_LABEL: workload.hardware_class,
        MODEL_LABEL: _label_value(workload.model),
        MANAGED_BY_LABEL: MANAGED_BY,
        "app.kubernetes.io/name": "slmops-runtime",
        "app.kubernetes.io/instance": workload.rollout,
    }


def server_command(artifact: str, port: int, serving: ServingSpec) -> list[str]:
    command = [
        "slmops",
        "serve",
        "--model",
        f"oci://{artifact}",
        "--port",
        str(port),
        # Expanded by the kubelet from the env var below; binding the pod IP (not 0.0.0.0)
        # is what lets many servers share one loopback-only test machine.
        "--host",
        "$(POD_IP)",
        "--cache-dir",
        CACHE_MOUNT_PATH,
        "--max-concurrency",
        str(serving.max_concurrency),
        "--max-queue",
        str(serving.max_queue),
    ]
    if serving.threads is not None:
        command += ["--threads", str(serving.threads)]
    return command


def _resources(workload: ServerWorkload, serving: ServingSpec) -> dict[str, Any]:
    chosen = serving.resources or workload.resources
    if chosen is None:
        return {}
    dumped: dict[str, Any] = chosen.model_dump(by_alias=True, exclude_defaults=True)
    return {key: {k: str(v) for k, v in value.items()} for key, value in dumped.items() if value}


def daemonset_manifest(
    workload: ServerWorkload, serving: ServingSpec, runtime: RuntimeOptions, owner: Owner
) -> dict[str, Any]:
    """The DaemonSet running `workload` on exactly its nodes."""
    if not workload.nodes:
        raise ValueError(f"workload {workload.name} has no nodes; delete it instead of applying it")
    port = serving.port
    labels = pod_labels(workload)
    env: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "SLMOPS_MODEL_NAME", "value": workload.model},
        {"name": "SLMOPS_REVISION", "value": workload.revision},
        {"name": "SLMOPS_VARIANT", "value": workload.variant},
    ]
    if runtime.registry_plain_http:
        env.append({"name": "SLMOPS_REGISTRY_PLAIN_HTTP", "value": "1"})
    volumes: list[dict[str, Any]] = [
        {
            "name": "model-cache",
            "hostPath": {"path": serving.model_cache_path, "type": "DirectoryOrCreate"},
        },
        # The root filesystem is read-only; Python's tempfile falls back to /var/tmp when
        # /tmp is not writable. (/var/tmp rather than /tmp also keeps the testbed's
        # mount-path rewriting away from state directories that live under /tmp.)
        {"name": "scratch", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "model-cache", "mountPath": CACHE_MOUNT_PATH},
        {"name": "scratch", "mountPath": "/var/tmp"},
    ]
    if runtime.pull_secret:
        env.append({"name": "SLMOPS_REGISTRY_AUTH_FILE", "value": REGISTRY_AUTH_FILE})
        volumes.append(
            {
                "name": "registry-auth",
                "secret": {
                    "secretName": runtime.pull_secret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": "registry-auth", "mountPath": REGISTRY_AUTH_DIR, "readOnly": True})
    env += [{"name": item.name, "value": item.value} for item in serving.env]

    container: dict[str, Any] = {
        "name": SERVER_CONTAINER,
        "image": runtime.image,
        "imagePullPolicy": "IfNotPresent",
        "command": server_command(workload.artifact, port, serving),
        "env": env,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    resources = _resources(workload, serving)
    if resources:
        container["resources"] = resources

    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": workload.name,
            "namespace": workload.namespace,
            "labels": dict(labels),
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "selector": {
                "matchLabels": selector_labels(
                    workload.rollout, workload.variant, workload.revision
                )
            },
            "updateStrategy": {"type": "OnDelete"},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {
                                                # matchFields on metadata.name takes one
                                                # value per term; the hostname label
                                                # takes the whole list.
                                                "key": HOSTNAME_LABEL,
                                                "operator": "In",
                                                "values": sorted(workload.nodes),
                                            }
                                        ]
                                    }
                                ]
                            }
                        }
                    },
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 35,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUNTIME_UID,
                        "runAsGroup": RUNTIME_UID,
                        "fsGroup": RUNTIME_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def _rollout_object_metadata(rollout: str, namespace: str, owner: Owner) -> dict[str, Any]:
    """Objects of the whole rollout (not of one revision) are named after it and owned by it."""
    return {
        "name": rollout,
        "namespace": namespace,
        "labels": {ROLLOUT_LABEL: rollout, MANAGED_BY_LABEL: MANAGED_BY},
        "ownerReferences": [owner.reference()],
    }


def service_manifest(rollout: str, namespace: str, port: int, owner: Owner) -> dict[str, Any]:
    """One Service for every server of the rollout, whatever revision it runs."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _rollout_object_metadata(rollout, namespace, owner),
        "spec": {
            "selector": {ROLLOUT_LABEL: rollout},
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


# Registries whose address names no port listen on the scheme's default.
_DEFAULT_REGISTRY_PORTS = {False: 443, True: 80}


def registry_port(artifact: str, *, plain_http: bool = False) -> int:
    """The TCP port a server connects to when it pulls `artifact`
    (`[oci://]host[:port]/repository@digest`; IPv6 hosts in brackets)."""
    host = artifact.removeprefix("oci://").split("/", 1)[0]
    _, bracket, after_bracket = host.rpartition("]")
    port = after_bracket if bracket else host
    _, colon, port = port.rpartition(":")
    if colon and port.isdigit() and 0 < int(port) < 65536:
        return int(port)
    return _DEFAULT_REGISTRY_PORTS[plain_http]


def network_policy_manifest(
    rollout: str,
    namespace: str,
    serving_port: int,
    registry_ports: Iterable[int],
    owner: Owner,
) -> dict[str, Any]:
    """What the rollout's servers may do on the network: answer on the serving port (which
    also serves /metrics to Prometheus and the kubelet's probes) and reach DNS and the model
    registry, nothing else. Its pods are selected by rollout, so a wave that moves nodes
    between revisions never leaves a pod unconfined."""
    egress: list[dict[str, Any]] = [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    ]
    ports = sorted(set(registry_ports))
    if ports:
        # A port rule with no `to`: NetworkPolicy peers are IP blocks and pod selectors,
        # never host names, and the registry is named by host (resolved at pull time, often
        # to CDN addresses that change), so the destination cannot be pinned here.
        egress.append({"ports": [{"protocol": "TCP", "port": port} for port in ports]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _rollout_object_metadata(rollout, namespace, owner),
        "spec": {
            # Our label too, so that a pod of someone else's that happens to carry the
            # rollout label is not confined by a policy it never asked for.
            "podSelector": {"matchLabels": {ROLLOUT_LABEL: rollout, MANAGED_BY_LABEL: MANAGED_BY}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": serving_port}]}],
            "egress": egress,
        },
    }


@dataclass(frozen=True)
class NodeVariant:
    """What a node runs, apart from the revision: variant and hardware class."""

    variant: str
    hardware_class: str


def group_workloads(
    *,
    rollout: str,
    namespace: str,
    model: str,
    desired: Mapping[str, str],
    node_variants: Mapping[str, NodeVariant],
    artifacts: Mapping[tuple[str, str], str],
    resources: Mapping[str, ResourceRequirements] | None = None,
) -> tuple[list[ServerWorkload], list[str]]:
    """Group node → revision into one workload per (variant, revision).

    Returns the workloads and, for people, one line per node that cannot be served
    (no variant assigned or no artifact for that revision and variant); those nodes are
    left out rather than given a pod that cannot start.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    problems: list[str] = []
    for node, revision in sorted(desired.items()):
        assigned = node_variants.get(node)
        if assigned is None:
            problems.append(f"node {node} has no variant assigned")
            continue
        if (revision, assigned.variant) not in artifacts:
            problems.append(
                f"node {node}: variant {assigned.variant} has no artifact for revision {revision}"
            )
            continue
        groups.setdefault((assigned.variant, revision), []).append(node)
    classes = {nv.variant: nv.hardware_class for nv in node_variants.values()}
    workloads = [
        ServerWorkload(
            rollout=rollout,
            namespace=namespace,
            model=model,
            variant=variant,
            hardware_class=classes[variant],
            revision=revision,
            artifact=artifacts[(revision, variant)],
            nodes=tuple(nodes),
            resources=(resources or {}).get(variant),
        )
        for (variant, revision), nodes in sorted(groups.items())
    ]
    return workloads, problems
