"""The demo's objects: one model with a variant per hardware class, and its rollout.

Pure builders (no I/O), so the story module reads as a sequence of steps and the objects
can be checked without a cluster.
"""

from __future__ import annotations

from typing import Any

NAMESPACE = "slmops-demo"
MODEL = "demo"
ROLLOUT = "demo"
PUSH_SECRET = "registry-push"
PULL_SECRET = "registry-pull"
HARDWARE_LABEL = "slmops.io/hardware-class"
SITE_LABEL = "slmops.io/site"
# Two classes keep the demo's builds to two per revision on a 2-core machine.
X86 = "x86-vnni"
ARM = "rpi5"
FLEET_CLASSES = (X86, ARM)


def _variant(name: str, hardware_class: str, optimize: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "optimize": optimize,
        "target": {
            "hardwareClass": hardware_class,
            "nodeSelector": {"matchLabels": {HARDWARE_LABEL: hardware_class}},
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
        },
    }


# Each revision of the story is a change of recipe, so each is a new content revision.
REVISIONS: dict[str, dict[str, dict[str, Any]]] = {
    # The first revision: int4 everywhere; it becomes stable on every node at once.
    "first": {
        X86: {"precision": "int4", "int4": {"blockSize": 32, "accuracyLevel": 4}},
        ARM: {"precision": "int4", "int4": {"blockSize": 32, "accuracyLevel": 4}},
    },
    # A good update: larger int4 blocks (smaller model, about the same speed).
    "good": {
        X86: {"precision": "int4", "int4": {"blockSize": 64, "accuracyLevel": 4}},
        ARM: {"precision": "int4", "int4": {"blockSize": 64, "accuracyLevel": 4}},
    },
    # A bad update: someone ships fp32 to the x86 class. It is accurate (it passes the
    # build's budgets) but several times slower, which only the fleet's latency shows.
    "bad": {
        X86: {"precision": "fp32"},
        ARM: {"precision": "int4", "int4": {"blockSize": 64, "accuracyLevel": 4}},
    },
}


def model_manifest(stage: str, source_uri: str, sha256: str, registry: str) -> dict[str, Any]:
    """The SLMModel at one stage of the story."""
    recipes = REVISIONS[stage]
    return {
        "apiVersion": "slmops.io/v1alpha1",
        "kind": "SLMModel",
        "metadata": {"name": MODEL, "namespace": NAMESPACE},
        "spec": {
            "source": {"uri": source_uri, "sha256": sha256, "format": "huggingface"},
            "variants": [_variant(f"{cls}", cls, recipes[cls]) for cls in FLEET_CLASSES],
            "evaluation": {
                "maxPerplexityIncreasePercent": 25.0,
                "maxNewTokens": 16,
                "repeats": 2,
            },
            "image": {
                "registry": registry,
                "repository": "demo/models",
                "insecure": True,
                "pushSecretRef": {"name": PUSH_SECRET},
                "pullSecretRef": {"name": PULL_SECRET},
            },
            "build": {
                "activeDeadlineSeconds": 1800,
                "backoffLimit": 1,
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
            },
        },
    }


def _selector(extra: str = "") -> str:
    labels = (
        'namespace="{{namespace}}",slmops_io_rollout="{{rollout}}",'
        'slmops_io_variant="{{variant}}",endpoint="infer"'
    )
    return labels + extra


def rollout_manifest(prometheus_url: str, first_site: str) -> dict[str, Any]:
    """The EdgeRollout: a canary per class, then one site, then everyone, each gated."""
    revision = ',slmops_io_revision="{{revision}}"'
    return {
        "apiVersion": "slmops.io/v1alpha1",
        "kind": "EdgeRollout",
        "metadata": {"name": ROLLOUT, "namespace": NAMESPACE},
        "spec": {
            "model": {"name": MODEL},
            "fleet": {
                "selector": {
                    "matchExpressions": [
                        {"key": HARDWARE_LABEL, "operator": "In", "values": list(FLEET_CLASSES)}
                    ]
                }
            },
            "serving": {"port": 8000, "maxConcurrency": 2, "maxQueue": 16},
            "strategy": {
                "maxUnavailable": 2,
                "nodeTimeoutSeconds": 120,
                "waves": [
                    {"name": "canary", "count": 2},
                    {
                        "name": first_site.removeprefix("store-").removeprefix("plant-"),
                        "selector": {"matchLabels": {SITE_LABEL: first_site}},
                    },
                    {"name": "everyone", "percent": 100},
                ],
            },
            "analysis": {
                "prometheus": {"address": prometheus_url},
                "intervalSeconds": 3,
                "count": 3,
                "initialDelaySeconds": 6,
                "minSampleCount": 10,
                "failureLimit": 0,
                "inconclusiveLimit": 3,
                "consecutiveErrorLimit": 4,
                "onNoData": "Inconclusive",
                "sampleCountQuery": (
                    "sum(slmops_request_duration_seconds_count{" + _selector(revision) + "})"
                ),
                "metrics": [
                    {
                        "name": "p95-latency",
                        "query": (
                            "histogram_quantile(0.95, sum by (le) (rate("
                            "slmops_request_duration_seconds_bucket{"
                            + _selector(revision)
                            + "}[15s])))"
                        ),
                        # Relative to the stable revision on the same hardware class, with a
                        # small absolute floor so millisecond jitter is not a regression.
                        "successCondition": "result <= 1.5 * stable + 0.01",
                    },
                    {
                        "name": "error-rate",
                        "query": (
                            "(sum(rate(slmops_request_errors_total{"
                            + _selector(revision + ',reason=~"model_error|overloaded"')
                            + "}[15s])) or vector(0)) / sum(rate("
                            "slmops_request_duration_seconds_count{"
                            + _selector(revision)
                            + "}[15s]))"
                        ),
                        "successCondition": "result < 0.05",
                    },
                ],
            },
            "rollback": {"automatic": True},
        },
    }
