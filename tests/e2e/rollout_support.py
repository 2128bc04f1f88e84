"""What the rollout e2e tests share: real artifacts in the testbed registry, an SLMModel whose
status the test writes (playing the model controller), the operator with only the rollout
controller, tritonclient load against the real model servers, and waiting on status.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slmops.adapters.oci import Credentials, RegistryClient
from slmops.demo.traffic import Traffic, ready_servers
from slmops.optimize.packaging import ModelMetadata, build_modelpack, push_modelpack
from slmops.testbed.testbed import Testbed
from tests.serving.tiny_models import TINY, genai_model
from tests.support.capture import capture
from tests.support.operator import OperatorProcess

MODEL = "tinylm"
REPOSITORY = "e2e/tinylm"
PULL_SECRET = "registry-pull"
ARM_VARIANT = "arm-int8"
X86_VARIANT = "x86-fp32"
ARM_CLASS = "rpi5"
X86_CLASS = "x86-vnni"


def variant_dirs() -> dict[str, Path]:
    """The tiny decoder the runtime tests use, exported per variant."""
    return {ARM_VARIANT: genai_model(TINY, "int8"), X86_VARIANT: genai_model(TINY, "fp32")}


@dataclass
class Revision:
    name: str
    artifacts: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


def push_revision(testbed: Testbed, revision: str) -> Revision:
    """Push every variant as a ModelPack for `revision` (the version in the config makes
    each revision's manifest, and so its digest, distinct)."""
    access = testbed.registry
    client = RegistryClient(
        access.host, credentials=Credentials(access.username, access.password), insecure=True
    )
    pushed = Revision(revision)
    for variant, directory in variant_dirs().items():
        precision = "int8" if "int8" in variant else "fp32"
        pack = build_modelpack(
            directory,
            ModelMetadata(
                name=f"{MODEL}-{variant}",
                version=revision,
                format="onnx",
                precision=precision,
                quantization="dynamic" if precision == "int8" else "none",
                execution_provider="cpu",
            ),
        )
        digest = push_modelpack(client, REPOSITORY, pack, f"{variant}-{revision}")
        pushed.artifacts[variant] = f"{access.host}/{REPOSITORY}@{digest}"
        pushed.sizes[variant] = pack.size_bytes
    return pushed


def kube_json(testbed: Testbed, *args: str) -> Any:
    return json.loads(testbed.kubectl(*args, "-o", "json").stdout)


def apply(testbed: Testbed, namespace: str, manifest: dict[str, Any]) -> None:
    testbed.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(manifest))


def create_pull_secret(testbed: Testbed, namespace: str) -> None:
    access = testbed.registry
    auth = base64.b64encode(f"{access.username}:{access.password}".encode()).decode()
    config = {"auths": {access.host: {"auth": auth}}}
    apply(
        testbed,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": PULL_SECRET},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
        },
    )


def create_model(testbed: Testbed, namespace: str) -> None:
    apply(
        testbed,
        namespace,
        {
            "apiVersion": "slmops.io/v1alpha1",
            "kind": "SLMModel",
            "metadata": {"name": MODEL},
            "spec": {
                "source": {"uri": "file:///models/tinylm", "sha256": "0" * 64},
                "variants": [
                    {
                        "name": ARM_VARIANT,
                        "optimize": {"precision": "int8"},
                        "target": {
                            "nodeSelector": {
                                "matchLabels": {"slmops.io/hardware-class": ARM_CLASS}
                            },
                            "hardwareClass": ARM_CLASS,
                        },
                    },
                    {
                        "name": X86_VARIANT,
                        "optimize": {"precision": "fp32"},
                        "target": {
                            "nodeSelector": {
                                "matchLabels": {"slmops.io/hardware-class": X86_CLASS}
                            },
                            "hardwareClass": X86_CLASS,
                        },
                    },
                ],
                "image": {
                    "registry": testbed.registry.host,
                    "repository": REPOSITORY,
                    "insecure": True,
                    "pullSecretRef": {"name": PULL_SECRET},
                },
            },
        },
    )


def publish_model_status(
    testbed: Testbed, namespace: str, current: Revision, history: list[Revision]
) -> None:
    """Write the SLMModel status the model controller would write once `current` is built
    and qualified (history: older revisions, newest first)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {
        "observedGeneration": 1,
        "phase": "Ready",
        "revision": current.name,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "VariantsQualified",
                "message": "test plays the model controller",
                "lastTransitionTime": now,
                "observedGeneration": 1,
            }
        ],
        "variants": [
            {
                "name": variant,
                "phase": "Qualified",
                "revision": current.name,
                "artifact": artifact,
                "digest": artifact.split("@", 1)[1],
                "sizeBytes": current.sizes[variant],
            }
            for variant, artifact in current.artifacts.items()
        ],
        "revisions": [
            {"revision": r.name, "variants": r.artifacts, "sizes": r.sizes}
            for r in [current, *history]
        ],
    }
    testbed.kubectl(
        "-n",
        namespace,
        "patch",
        "slmmodel",
        MODEL,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def rollout_operator(testbed: Testbed, log_dir: Path) -> OperatorProcess:
    """The operator with only the rollout controller: the test plays the model controller."""
    return OperatorProcess(
        testbed.kubeconfig,
        log_dir,
        {"SLMOPS_CONTROLLERS": "edgerollout", "PYTHONWARNINGS": "ignore"},
    )


@contextmanager
def rollout_controller_alone(
    testbed: Testbed, operator: OperatorProcess, log_dir: Path
) -> Iterator[OperatorProcess]:
    """The rollout controller alone while the block runs: the shared operator (all
    controllers) is stopped meanwhile and started again afterwards."""
    operator.stop()
    process = rollout_operator(testbed, log_dir)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        operator.start()


def fleet_nodes(testbed: Testbed) -> dict[str, list[str]]:
    return {
        ARM_CLASS: sorted(testbed.simulator.node_names(ARM_CLASS)),
        X86_CLASS: sorted(testbed.simulator.node_names(X86_CLASS)),
    }


def p95_metric(factor: float = 3.0, window: str = "10s") -> dict[str, Any]:
    selector = (
        'namespace="{{namespace}}",slmops_io_rollout="{{rollout}}",slmops_io_variant="{{variant}}"'
    )
    return {
        "name": "p95-latency",
        "query": (
            "histogram_quantile(0.95, sum by (le) (rate(slmops_request_duration_seconds_bucket{"
            + selector
            + ',slmops_io_revision="{{revision}}",endpoint="infer"}['
            + window
            + "])))"
        ),
        # Relative to stable on the same variant, with a small absolute floor so that
        # millisecond jitter between two tiny servers is not a regression.
        "successCondition": f"result <= {factor} * stable + 0.02",
    }


def rollout_manifest(
    name: str,
    testbed: Testbed,
    *,
    waves: list[dict[str, Any]],
    metrics: list[dict[str, Any]] | None = None,
    analysis: dict[str, Any] | None = None,
    strategy: dict[str, Any] | None = None,
    serving: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec_analysis = {
        "prometheus": {"address": testbed.prometheus_url},
        "intervalSeconds": 2,
        "count": 2,
        # Discovery (file_sd) plus the first scrapes of a new server take a few seconds.
        "initialDelaySeconds": 8,
        "minSampleCount": 5,
        "consecutiveErrorLimit": 2,
        "sampleCountQuery": (
            'sum(slmops_request_duration_seconds_count{namespace="{{namespace}}",'
            'slmops_io_rollout="{{rollout}}",slmops_io_revision="{{revision}}",'
            'slmops_io_variant="{{variant}}"})'
        ),
        "metrics": metrics if metrics is not None else [p95_metric()],
        **(analysis or {}),
    }
    return {
        "apiVersion": "slmops.io/v1alpha1",
        "kind": "EdgeRollout",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": MODEL},
            "fleet": {
                "selector": {
                    "matchExpressions": [
                        {
                            "key": "slmops.io/hardware-class",
                            "operator": "In",
                            "values": [ARM_CLASS, X86_CLASS],
                        }
                    ]
                }
            },
            "serving": {"port": 8000, "maxConcurrency": 2, **(serving or {})},
            "strategy": {
                "maxUnavailable": 2,
                "nodeTimeoutSeconds": 60,
                "progressDeadlineSeconds": 600,
                "waves": waves,
                **(strategy or {}),
            },
            "analysis": spec_analysis,
        },
    }


def get_rollout(testbed: Testbed, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = kube_json(testbed, "-n", namespace, "get", "edgerollout", name)
    return found


def status_of(testbed: Testbed, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = get_rollout(testbed, namespace, name).get("status") or {}
    return status


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float,
    interval: float = 0.5,
    describe: Callable[[], Any] | None = None,
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = describe() if describe else None
            raise TimeoutError(f"waited {timeout}s for {what}; last state: {detail}")
        time.sleep(interval)


def wait_for_status(
    testbed: Testbed,
    namespace: str,
    name: str,
    what: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float,
    capture_as: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Poll the rollout's status until `predicate`; `capture_as` = (Argo CD health, case)
    saves the object as a health-check fixture when SLMOPS_CAPTURE_STATUS=1."""
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        nonlocal last
        last = status_of(testbed, namespace, name)
        return last if predicate(last) else None

    def describe() -> Any:
        return {
            key: last.get(key)
            for key in ("phase", "message", "currentWave", "waves", "nodes", "pausedBy", "abort")
        } | {"measurements": (last.get("measurements") or [])[-6:]}

    result: dict[str, Any] = wait_for(what, check, timeout, describe=describe)
    if capture_as is not None:
        capture(get_rollout(testbed, namespace, name), *capture_as)
    return result


def serving_pods(testbed: Testbed, namespace: str, rollout: str) -> list[dict[str, Any]]:
    pods = kube_json(testbed, "-n", namespace, "get", "pods", "-l", f"slmops.io/rollout={rollout}")
    items: list[dict[str, Any]] = pods["items"]
    return items


def node_revisions(testbed: Testbed, namespace: str, rollout: str) -> dict[str, str]:
    """Node → revision of its ready, live server pod (what really serves)."""
    result: dict[str, str] = {}
    for pod in serving_pods(testbed, namespace, rollout):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod.get("status", {}).get("conditions", [])
        )
        node = pod["spec"].get("nodeName")
        if ready and node:
            result[node] = pod["metadata"]["labels"]["slmops.io/revision"]
    return result


@contextmanager
def load_on(
    testbed: Testbed, namespace: str, rollout: str, max_seconds: float = 300
) -> Iterator[Traffic]:
    """Bounded tritonclient load on every ready server of a rollout (the demo's own traffic)."""

    def targets() -> list[str]:
        return ready_servers(serving_pods(testbed, namespace, rollout), 8000)

    load = Traffic(targets, MODEL, max_tokens=2, max_seconds=max_seconds).start()
    try:
        yield load
    finally:
        load.stop()
