"""Playing the model controller: an SLMModel whose status the test itself writes.

Rollout tests and benchmarks with virtual pods run the rollout controller alone
(`SLMOPS_CONTROLLERS=edgerollout`); building real variants would only cost time. The test
creates the SLMModel and publishes revisions into its status as the model controller does
once every variant is qualified and pushed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from slmops.testbed.testbed import Testbed

CRDS = Path(__file__).resolve().parents[2] / "crds"
REGISTRY = "127.0.0.1:5000"
SIZE_BYTES = 1_000_000


def install_crds(bed: Testbed) -> None:
    bed.kubectl("apply", "-f", str(CRDS))
    bed.kubectl("wait", "--for", "condition=established", "crd", "--all", "--timeout=60s")


def create_namespace(bed: Testbed, namespace: str) -> None:
    """The namespace, once its `default` ServiceAccount exists (pods need it)."""
    bed.kubectl("create", "namespace", namespace)
    deadline = time.monotonic() + 30
    while bed.kubectl("-n", namespace, "get", "sa", "default", check=False).returncode:
        if time.monotonic() > deadline:
            raise TimeoutError(f"service account default in {namespace} never appeared")
        time.sleep(0.2)


def apply(bed: Testbed, namespace: str, manifest: Mapping[str, Any]) -> None:
    bed.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(dict(manifest)))


def create_model(
    bed: Testbed, namespace: str, name: str, variants: Mapping[str, str], repository: str
) -> None:
    """An SLMModel with one variant per hardware class (`variants`: variant → class)."""
    apply(
        bed,
        namespace,
        {
            "apiVersion": "slmops.io/v1alpha1",
            "kind": "SLMModel",
            "metadata": {"name": name},
            "spec": {
                "source": {"uri": f"file:///{repository}", "sha256": "0" * 64},
                "variants": [
                    {
                        "name": variant,
                        "target": {
                            "nodeSelector": {
                                "matchLabels": {"slmops.io/hardware-class": hardware_class}
                            },
                            "hardwareClass": hardware_class,
                        },
                    }
                    for variant, hardware_class in variants.items()
                ],
                "image": {"registry": REGISTRY, "repository": repository, "insecure": True},
            },
        },
    )


def artifact(repository: str, revision: str, variant: str) -> str:
    # Virtual pods pull nothing; the reference only has to be well-formed and distinct.
    digest = hashlib.sha256(f"{repository}/{revision}/{variant}".encode()).hexdigest()
    return f"{REGISTRY}/{repository}/{variant}@sha256:{digest}"


def model_status(
    variants: Sequence[str], repository: str, current: str, history: Sequence[str]
) -> dict[str, Any]:
    """The status the model controller writes once `current` is qualified and pushed."""
    return {
        "phase": "Ready",
        "revision": current,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "VariantsQualified",
                "message": "the test plays the model controller",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
        "variants": [
            {
                "name": variant,
                "phase": "Qualified",
                "revision": current,
                "artifact": artifact(repository, current, variant),
                "sizeBytes": SIZE_BYTES,
            }
            for variant in variants
        ],
        "revisions": [
            {
                "revision": revision,
                "variants": {v: artifact(repository, revision, v) for v in variants},
                "sizes": dict.fromkeys(variants, SIZE_BYTES),
            }
            for revision in [current, *history]
        ],
    }


def publish(
    bed: Testbed,
    namespace: str,
    name: str,
    variants: Sequence[str],
    repository: str,
    current: str,
    history: Sequence[str] = (),
) -> None:
    """Make `current` the model's Ready revision; `history` stays listed (newest first)."""
    status = model_status(variants, repository, current, history)
    bed.kubectl(
        "-n",
        namespace,
        "patch",
        "slmmodel",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def kube_json(bed: Testbed, *args: str) -> Any:
    return json.loads(bed.kubectl(*args, "-o", "json").stdout)
