"""The generated CRDs and the samples on a real kube-apiserver; the operator's first sight."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manifests" / "samples"


@pytest.fixture(scope="module")
def crds_installed(testbed: Any) -> None:
    testbed.kubectl("apply", "-f", str(ROOT / "crds"))
    testbed.kubectl("wait", "--for", "condition=established", "crd", "--all", "--timeout=60s")


def _apply(testbed: Any, namespace: str, document: dict[str, Any]) -> Any:
    # --validate=false: kubectl's client-side check would answer first; the point here is
    # that the apiserver itself refuses, whatever client sends the object (Argo CD, helm).
    return testbed.kubectl(
        "apply",
        "--validate=false",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(document),
        check=False,
    )


def _sample(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((SAMPLES / name).read_text())
    return document


def test_samples_apply(testbed: Any, crds_installed: None, kube_namespace: str) -> None:
    result = testbed.kubectl("apply", "-n", kube_namespace, "-f", str(SAMPLES))
    assert "slmmodel.slmops.io/demo created" in result.stdout
    assert "edgerollout.slmops.io/demo created" in result.stdout
    listed = testbed.kubectl("get", "slmops", "-n", kube_namespace, "-o", "name").stdout.split()
    assert sorted(listed) == ["edgerollout.slmops.io/demo", "slmmodel.slmops.io/demo"]


@pytest.mark.parametrize(
    ("sample", "path", "value", "message"),
    [
        ("edgerollout-demo.yaml", ["spec", "analysis", "count"], "three", "spec.analysis.count"),
        ("edgerollout-demo.yaml", ["spec", "serving", "port"], 80, "spec.serving.port"),
        (
            "edgerollout-demo.yaml",
            ["spec", "analysis", "onNoData"],
            "Maybe",
            "spec.analysis.onNoData",
        ),
        ("slmmodel-demo.yaml", ["spec", "source", "sha256"], "abc", "spec.source.sha256"),
        ("slmmodel-demo.yaml", ["spec", "variants"], [], "spec.variants"),
        ("slmmodel-demo.yaml", ["spec", "evaluation", "repeats"], 0, "spec.evaluation.repeats"),
    ],
)
def test_invalid_objects_are_rejected_naming_the_field(
    testbed: Any,
    crds_installed: None,
    kube_namespace: str,
    sample: str,
    path: list[str],
    value: Any,
    message: str,
) -> None:
    document = _sample(sample)
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    result = _apply(testbed, kube_namespace, document)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_missing_required_field_is_rejected(
    testbed: Any, crds_installed: None, kube_namespace: str
) -> None:
    document = _sample("edgerollout-demo.yaml")
    del document["spec"]["fleet"]
    result = _apply(testbed, kube_namespace, document)
    assert result.returncode != 0
    assert "spec.fleet" in result.stderr and "Required value" in result.stderr


def test_wave_with_two_sizes_is_rejected(
    testbed: Any, crds_installed: None, kube_namespace: str
) -> None:
    document = _sample("edgerollout-demo.yaml")
    document["spec"]["strategy"]["waves"][0]["percent"] = 10
    result = _apply(testbed, kube_namespace, document)
    assert result.returncode != 0
    assert "spec.strategy.waves" in result.stderr and "oneOf" in result.stderr


def test_operator_sets_the_first_condition(
    testbed: Any, crds_installed: None, kube_namespace: str, operator: Any
) -> None:
    testbed.kubectl("apply", "-n", kube_namespace, "-f", str(SAMPLES))
    deadline = time.monotonic() + 60
    statuses: dict[str, Any] = {}
    while time.monotonic() < deadline:
        for kind in ("slmmodel", "edgerollout"):
            raw = testbed.kubectl("get", kind, "demo", "-n", kube_namespace, "-o", "json").stdout
            statuses[kind] = json.loads(raw)
        if all(s.get("status", {}).get("conditions") for s in statuses.values()):
            break
        time.sleep(0.5)
    for kind, obj in statuses.items():
        status = obj.get("status", {})
        assert status.get("observedGeneration") == obj["metadata"]["generation"], (kind, status)
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["observedGeneration"] == obj["metadata"]["generation"]
        assert ready["status"] in {"Unknown", "False", "True"}
    # The operator never writes spec: the object's generation is still the one we applied.
    assert all(obj["metadata"]["generation"] == 1 for obj in statuses.values())
