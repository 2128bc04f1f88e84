"""SLMModel failure paths on the testbed, with the operator as a real process.

A wrong sha256 must stop everything before any build Job exists; refused registry
credentials must end in a clear condition naming the Secret, not in a loop of new Jobs.
Both use a small file as the source: what is checked here is the controller, the Jobs and the
real `slmops build` process the simulator runs for them, not the model pipeline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from slmops.optimize.source import file_sha256
from tests.e2e.slmmodel_support import (
    apply,
    condition,
    event_reasons,
    jobs,
    model_manifest,
    operator_with_crds,
    pods,
    push_secret,
    wait_for_model,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def crds(testbed: Any, operator: Any) -> None:
    operator_with_crds(testbed, operator)


@pytest.fixture
def small_source(tmp_path: Path) -> Path:
    # The simulator runs the build as a local process, so a local file is what a node would
    # have on its disk.
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not really a model, but the controller only needs its digest" * 100)
    return path


def _spec(testbed: Any, source: Path, sha256: str, secret: str | None) -> dict[str, Any]:
    image: dict[str, Any] = {
        "registry": testbed.registry.host,
        "repository": "e2e/failures",
        "insecure": True,
    }
    if secret:
        image["pushSecretRef"] = {"name": secret}
    return {
        "source": {"uri": f"file://{source}", "sha256": sha256, "format": "onnx", "task": "other"},
        "variants": [
            {
                "name": "int8-avx2",
                "optimize": {"precision": "int8"},
                "target": {
                    "nodeSelector": {"matchLabels": {"slmops.io/hardware-class": "x86-avx2"}}
                },
            }
        ],
        "image": image,
        "build": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": 300,
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        },
    }


def test_wrong_sha256_is_not_verified_and_builds_nothing(
    testbed: Any, operator: Any, crds: None, kube_namespace: str, small_source: Path
) -> None:
    apply(
        testbed,
        kube_namespace,
        model_manifest("wrong-digest", _spec(testbed, small_source, "0" * 64, None)),
    )
    model = wait_for_model(
        testbed,
        kube_namespace,
        "wrong-digest",
        lambda m: condition(m, "SourceVerified").get("status") == "False",
        timeout=120,
        what="SourceVerified=False",
        capture_as=("Degraded", "source-digest-mismatch"),
    )
    verified = condition(model, "SourceVerified")
    assert verified["reason"] == "SourceDigestMismatch"
    assert "0" * 64 in verified["message"] and file_sha256(small_source) in verified["message"]
    assert condition(model, "Ready")["status"] == "False"
    assert condition(model, "Stalled")["status"] == "True"
    assert model["status"]["phase"] == "Failed"
    assert model["status"]["observedGeneration"] == model["metadata"]["generation"]
    # Only the verify Job ever existed; give a wrongly eager controller time to misbehave.
    time.sleep(8)
    assert jobs(testbed, kube_namespace, "slmops.io/role=build") == []
    assert len(jobs(testbed, kube_namespace, "slmops.io/role=verify")) == 1
    assert "SourceDigestMismatch" in event_reasons(testbed, kube_namespace, "wrong-digest")


def test_refused_credentials_give_a_clear_condition_not_a_loop(
    testbed: Any, operator: Any, crds: None, kube_namespace: str, small_source: Path
) -> None:
    push_secret(testbed, kube_namespace, "registry-push", "not-the-password")
    spec = _spec(testbed, small_source, file_sha256(small_source), "registry-push")
    apply(testbed, kube_namespace, model_manifest("bad-creds", spec))
    model = wait_for_model(
        testbed,
        kube_namespace,
        "bad-creds",
        lambda m: condition(m, "Ready").get("status") == "False",
        timeout=180,
        what="Ready=False",
    )
    assert condition(model, "SourceVerified")["status"] == "True"
    ready = condition(model, "Ready")
    assert ready["reason"] == "RegistryAuthFailed", ready
    assert "registry-push" in ready["message"]
    assert testbed.registry.password not in str(model["status"])
    variant = model["status"]["variants"][0]
    assert (variant["phase"], variant["reason"]) == ("Failed", "RegistryAuthFailed")
    assert condition(model, "VariantsBuilt")["status"] == "False"
    assert condition(model, "Stalled")["status"] == "True"
    assert condition(model, "Reconciling")["status"] == "False"

    builds = jobs(testbed, kube_namespace, "slmops.io/role=build")
    assert len(builds) == 1
    job_uid = builds[0]["metadata"]["uid"]
    attempts = len(pods(testbed, kube_namespace, "slmops.io/role=build"))
    assert attempts <= spec["build"]["backoffLimit"] + 1
    # The same Job, no new pods, no new Jobs a while later: not a crash loop.
    time.sleep(10)
    again = jobs(testbed, kube_namespace, "slmops.io/role=build")
    assert [j["metadata"]["uid"] for j in again] == [job_uid]
    assert len(pods(testbed, kube_namespace, "slmops.io/role=build")) == attempts
    assert "RegistryAuthFailed" in event_reasons(testbed, kube_namespace, "bad-creds")

    # Fixing the Secret and editing the spec (a new generation, same revision) retries the
    # failed build; with a source that is no model it now gets past the registry and fails
    # in the build itself, which proves the credentials were used.
    testbed.kubectl("delete", "secret", "registry-push", "-n", kube_namespace)
    push_secret(testbed, kube_namespace, "registry-push", testbed.registry.password)
    revision = model["status"]["revision"]
    spec["build"]["activeDeadlineSeconds"] = 301
    apply(testbed, kube_namespace, model_manifest("bad-creds", spec))
    model = wait_for_model(
        testbed,
        kube_namespace,
        "bad-creds",
        lambda m: (
            (m.get("status") or {}).get("variants", [{}])[0].get("phase") == "Failed"
            and m["status"]["variants"][0].get("reason") != "RegistryAuthFailed"
        ),
        timeout=180,
        what="a retried build that gets past the registry",
    )
    assert model["status"]["revision"] == revision
    retried = jobs(testbed, kube_namespace, "slmops.io/role=build")
    assert len(retried) == 1 and retried[0]["metadata"]["uid"] != job_uid


def test_a_spec_the_schema_lets_through_but_that_makes_no_sense_is_reported(
    testbed: Any, operator: Any, crds: None, kube_namespace: str, small_source: Path
) -> None:
    spec = _spec(testbed, small_source, file_sha256(small_source), None)
    # Two variants with one name: structural schemas (Kubernetes 1.20 has no CEL) accept it.
    spec["variants"].append(dict(spec["variants"][0]))
    apply(testbed, kube_namespace, model_manifest("twins", spec))
    model = wait_for_model(
        testbed,
        kube_namespace,
        "twins",
        lambda m: condition(m, "Ready").get("reason") == "InvalidSpec",
        timeout=60,
        what="Ready=False InvalidSpec",
    )
    ready = condition(model, "Ready")
    assert ready["status"] == "False"
    assert "int8-avx2" in ready["message"] and "unique" in ready["message"]
    assert condition(model, "Stalled")["status"] == "True"
    assert jobs(testbed, kube_namespace) == []
