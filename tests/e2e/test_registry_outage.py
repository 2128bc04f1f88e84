"""The registry stopped during a build and during a rollout (issue 6, "Faults").

Real parts throughout: the testbed's registry (CNCF distribution) is stopped with SIGTERM and
started again on the same storage; the operator runs as a real process; build Jobs run the
real `slmops build` (quantize, evaluate, push); model servers pull by digest at start.

Build: the registry goes away in the middle of a push, detected by the upload session the
registry itself opens in its storage. Every status poll checks each artifact the model
names against the registry (our OCI client for every blob, skopeo for the manifest bytes): no
reference may point at something not wholly in the registry, and none may appear while it is
down. While down the model says RegistryUnavailable, naming the registry; the build is retried
by new Jobs (one per attempt, never duplicated), and once the registry is back the model
becomes Ready with an artifact that verifies.

Rollout: the registry goes away as the canary's first wave starts. The node cannot pull the
new revision, so it is skipped after nodeTimeoutSeconds; with every node of the wave skipped
nothing serves the canary and nothing is measured, which is never a pass: the rollout pauses
in wave 0 and every other node keeps serving stable. Once the registry is back the server
starts and the node reports Updated; the pause stays (the wave was never measured), and
`slmops promote`, as the status says, finishes the rollout on the next wave's analysis.

Source: the source is an artifact in the registry, which is down when the source is verified:
SourceUnreachable while it lasts, verified by the next attempt once it is back.

Prometheus stopped during a build is not tested: builds never talk to Prometheus.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from slmops.adapters.oci import Credentials, Reference, RegistryClient
from slmops.optimize.packaging import ModelMetadata, build_modelpack, push_modelpack
from slmops.optimize.source import directory_digest
from slmops.testbed.testbed import Testbed
from tests.e2e import rollout_support as rs
from tests.e2e.slmmodel_support import (
    apply,
    condition,
    event_reasons,
    get_json,
    jobs,
    model_manifest,
    operator_with_crds,
    pods,
    push_secret,
    wait_for_model,
)
from tests.serving.tiny_models import plain_onnx_model
from tests.support.operator import OperatorProcess

pytestmark = pytest.mark.e2e

# A side file that travels with the model (as a tokenizer would) and makes the push long
# enough (~0.5 s on loopback) for the test to stop the registry in the middle of it.
SIDE_FILE_BYTES = 128 << 20
VARIANT = "int8-avx2"


def _storage(testbed: Testbed, repository: str) -> Path:
    """Where the registry keeps a repository (distribution's filesystem driver layout)."""
    return (
        testbed.state_dir
        / "registry"
        / "storage"
        / "docker"
        / "registry"
        / "v2"
        / "repositories"
        / repository
    )


def _registry_client(testbed: Testbed) -> RegistryClient:
    access = testbed.registry
    return RegistryClient(
        access.host, credentials=Credentials(access.username, access.password), insecure=True
    )


def _skopeo_raw(testbed: Testbed, reference: str) -> bytes:
    access = testbed.registry
    completed = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            f"{access.username}:{access.password}",
            f"docker://{reference}",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return completed.stdout


@dataclass
class ArtifactAudit:
    """Every artifact reference a model's status ever named, each checked against the
    registry: by skopeo (the manifest's bytes hash to the digest) and by our client (every
    blob the manifest names is there)."""

    testbed: Testbed
    registry_down: bool = False
    verified: set[str] = field(default_factory=set)
    seen_while_down: set[str] = field(default_factory=set)

    @staticmethod
    def references(model: dict[str, Any]) -> set[str]:
        status = model.get("status") or {}
        found = {v["artifact"] for v in status.get("variants") or [] if v.get("artifact")}
        for revision in status.get("revisions") or []:
            found.update((revision.get("variants") or {}).values())
        return found

    def observe(self, model: dict[str, Any]) -> None:
        for reference in self.references(model) - self.verified:
            if self.registry_down:
                self.seen_while_down.add(reference)
            else:
                self.verify(reference)

    def verify(self, reference: str) -> None:
        parsed = Reference.parse(reference)
        assert parsed.digest, f"{reference} is not pinned by digest"
        raw = _skopeo_raw(self.testbed, reference)
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == parsed.digest, reference
        with _registry_client(self.testbed) as client:
            manifest = client.get_manifest(parsed.repository, parsed.digest)
            for blob in (manifest.config, *manifest.layers):
                assert client.blob_exists(parsed.repository, blob.digest), (reference, blob)
        self.verified.add(reference)


@dataclass
class JobLedger:
    """Every build Job seen, by name → uid: a name with two uids was created twice."""

    uids: dict[str, set[str]] = field(default_factory=dict)

    def observe(self, found: list[dict[str, Any]]) -> None:
        for job in found:
            self.uids.setdefault(job["metadata"]["name"], set()).add(job["metadata"]["uid"])


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    source = tmp_path / "outage-model"
    source.mkdir()
    shutil.copyfile(plain_onnx_model(64) / "model.onnx", source / "model.onnx")
    with (source / "embeddings.bin").open("wb") as out:
        for _ in range(SIDE_FILE_BYTES >> 20):
            out.write(os.urandom(1 << 20))
    return source


def _build_spec(testbed: Testbed, source: Path, repository: str) -> dict[str, Any]:
    return {
        "source": {
            "uri": source.as_uri(),
            "sha256": directory_digest(source),
            "format": "onnx",
            "task": "other",
        },
        "variants": [
            {
                "name": VARIANT,
                "optimize": {"precision": "int8"},
                "target": {
                    "nodeSelector": {"matchLabels": {"slmops.io/hardware-class": "x86-avx2"}}
                },
            }
        ],
        "image": {
            "registry": testbed.registry.host,
            "repository": repository,
            "insecure": True,
            "pushSecretRef": {"name": "registry-push"},
        },
        # One pod per Job: every retry seen here is the controller's, a Job of its own.
        "build": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 300,
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        },
    }


def test_registry_stopped_mid_push_is_reported_retried_and_never_half_referenced(
    testbed: Testbed, operator: OperatorProcess, kube_namespace: str, source_dir: Path
) -> None:
    operator_with_crds(testbed, operator)
    push_secret(testbed, kube_namespace, "registry-push", testbed.registry.password)
    repository = f"e2e/outage-{kube_namespace}"
    spec = _build_spec(testbed, source_dir, repository)
    audit = ArtifactAudit(testbed)
    ledger = JobLedger()
    host = testbed.registry.host

    def poll() -> dict[str, Any]:
        model = get_json(testbed, kube_namespace, "slmmodel", "outage")
        audit.observe(model)
        ledger.observe(jobs(testbed, kube_namespace, "slmops.io/role=build"))
        return model

    def wait(what: str, done: Any, timeout: float, interval: float = 0.5) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        model: dict[str, Any] = {}
        while time.monotonic() < deadline:
            model = poll()
            if done(model):
                return model
            time.sleep(interval)
        raise AssertionError(f"{what} not reached in {timeout:.0f}s: {model.get('status')}")

    apply(testbed, kube_namespace, model_manifest("outage", spec))
    uploads = _storage(testbed, repository) / "_uploads"
    stopped = False
    try:
        # The registry opens an upload session in its storage when the build starts pushing
        # a blob; stop it right then, while the bytes are on their way.
        deadline = time.monotonic() + 180
        while not (uploads.is_dir() and any(uploads.iterdir())):
            assert time.monotonic() < deadline, "the build never started pushing"
            time.sleep(0.005)
        testbed.stop_registry()
        stopped = audit.registry_down = True
        assert not (_storage(testbed, repository) / "_manifests").exists(), (
            "the push finished before the registry stopped; the test proved nothing"
        )

        down = wait(
            "RegistryUnavailable while the registry is down",
            lambda m: condition(m, "Ready").get("reason") == "RegistryUnavailable",
            timeout=60,
        )
        ready = condition(down, "Ready")
        assert ready["status"] == "False" and host in ready["message"], ready
        # It broke off in the middle of a blob's upload, and says so.
        assert "blob" in ready["message"], ready
        assert condition(down, "Reconciling")["status"] == "True"
        assert condition(down, "Stalled")["status"] == "False"
        variant = down["status"]["variants"][0]
        assert (variant["phase"], variant["reason"]) == ("Building", "RegistryUnavailable")
        assert not variant.get("artifact")

        # Still down: the controller's second attempt, a new Job, fails on the registry too.
        second = wait(
            "a second build attempt to fail while the registry is down",
            lambda m: "attempt 2 of" in condition(m, "Ready").get("message", ""),
            timeout=90,
        )
        assert host in condition(second, "Ready")["message"]
        # Nothing was stored under a tag while the registry was down, and nothing referenced.
        assert not (_storage(testbed, repository) / "_manifests").exists()
        assert audit.seen_while_down == set()
    finally:
        if stopped:
            testbed.start_registry()
    audit.registry_down = False

    final = wait(
        "Ready once the registry is back",
        lambda m: condition(m, "Ready").get("status") == "True",
        timeout=150,
    )
    variant = final["status"]["variants"][0]
    assert variant["phase"] == "Qualified" and variant["artifact"], variant
    assert variant["artifact"] in audit.verified
    assert condition(final, "Stalled")["status"] == "False"
    assert condition(final, "Reconciling")["status"] == "False"
    # The side file is in the artifact: the push that broke off was done again in full.
    with _registry_client(testbed) as client:
        manifest = client.get_manifest(repository, variant["digest"])
    assert any(layer.size == SIDE_FILE_BYTES for layer in manifest.layers)

    # Bounded retries, each a Job of its own, none created twice, one pod each; and no more
    # once the model is Ready.
    time.sleep(6)
    poll()
    builds = jobs(testbed, kube_namespace, "slmops.io/role=build")
    names = sorted(j["metadata"]["name"] for j in builds)
    assert 3 <= len(names) <= 4, names
    assert all(len(uids) == 1 for uids in ledger.uids.values()), ledger.uids
    assert set(ledger.uids) == set(names)
    attempts = sorted(int(j["metadata"]["labels"].get("slmops.io/attempt", "1")) for j in builds)
    assert attempts == list(range(1, len(names) + 1))
    assert len(pods(testbed, kube_namespace, "slmops.io/role=build")) == len(names)
    reasons = event_reasons(testbed, kube_namespace, "outage")
    assert "RegistryUnavailable" in reasons and "VariantQualified" in reasons, reasons
    print(
        f"\nbuild Jobs: {names}; artifacts verified: {sorted(audit.verified)}; "
        f"Ready message while down: {ready['message']}"
    )


def test_a_source_in_a_stopped_registry_is_retried_not_failed(
    testbed: Testbed, operator: OperatorProcess, kube_namespace: str, tmp_path: Path
) -> None:
    """The source is itself an artifact in the registry; the registry is down when the source
    is verified: SourceUnreachable while it lasts (not a failed, stalled model), verified by
    the next attempt once the registry is back."""
    operator_with_crds(testbed, operator)
    push_secret(testbed, kube_namespace, "registry-push", testbed.registry.password)
    files = tmp_path / "source"
    files.mkdir()
    shutil.copyfile(plain_onnx_model(16) / "model.onnx", files / "model.onnx")
    metadata = ModelMetadata(
        name="outage-source",
        version=kube_namespace,
        format="onnx",
        precision="fp32",
        quantization="none",
        execution_provider="cpu",
    )
    with _registry_client(testbed) as client:
        digest = push_modelpack(
            client, f"sources/{kube_namespace}", build_modelpack(files, metadata), "fp32"
        )
    host = testbed.registry.host
    spec = _build_spec(testbed, files, f"e2e/outage-{kube_namespace}")
    spec["source"] = {
        "uri": f"oci://{host}/sources/{kube_namespace}@{digest}",
        "sha256": digest.removeprefix("sha256:"),
        "format": "onnx",
        "task": "other",
    }
    spec["image"]["pullSecretRef"] = {"name": "registry-push"}
    stopped = False
    try:
        testbed.stop_registry()
        stopped = True
        apply(testbed, kube_namespace, model_manifest("far-source", spec))
        down = wait_for_model(
            testbed,
            kube_namespace,
            "far-source",
            lambda m: condition(m, "Ready").get("reason") == "SourceUnreachable",
            timeout=60,
            what="Ready=False SourceUnreachable",
        )
        verified = condition(down, "SourceVerified")
        assert verified["status"] == "Unknown" and host in verified["message"], verified
        assert condition(down, "Ready")["status"] == "False"
        assert condition(down, "Stalled")["status"] == "False"
        assert down["status"]["phase"] == "Building"
        # Down past the verify Job's own pod retry: the next attempt is a Job of its own.
        wait_for_model(
            testbed,
            kube_namespace,
            "far-source",
            lambda m: "verify attempt 1 of" in condition(m, "SourceVerified").get("message", ""),
            timeout=60,
            what="the first verify Job to fail",
        )
        assert jobs(testbed, kube_namespace, "slmops.io/role=build") == []
        testbed.start_registry()
        stopped = False
    finally:
        if stopped:
            testbed.start_registry()
    model = wait_for_model(
        testbed,
        kube_namespace,
        "far-source",
        lambda m: condition(m, "SourceVerified").get("status") == "True",
        timeout=60,
        what="SourceVerified=True once the registry is back",
    )
    assert condition(model, "Stalled")["status"] == "False"
    verifies = sorted(
        j["metadata"]["name"] for j in jobs(testbed, kube_namespace, "slmops.io/role=verify")
    )
    assert len(verifies) == 2 and verifies[1].endswith("-verify-attempt2"), verifies


# --- the registry stopped as a rollout's first wave starts -------------------------------


@pytest.fixture
def rollout_controller_only(
    testbed: Testbed, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The rollout controller alone: the test plays the model controller."""
    operator_with_crds(testbed, operator)
    with rs.rollout_controller_alone(
        testbed, operator, tmp_path_factory.mktemp("rollout-operator")
    ) as process:
        yield process


def test_registry_stopped_as_a_wave_starts_skips_the_node_and_never_promotes(
    testbed: Testbed, rollout_controller_only: OperatorProcess, kube_namespace: str
) -> None:
    # Revisions of their own: a digest a node has cached is served without the registry.
    # They differ in their first characters: workload names keep only the first ten.
    run = uuid.uuid4().hex[:8]
    stable = rs.push_revision(testbed, f"s{run}outage")
    canary = rs.push_revision(testbed, f"c{run}outage")
    namespace = kube_namespace
    rs.create_pull_secret(testbed, namespace)
    rs.create_model(testbed, namespace)
    rs.publish_model_status(testbed, namespace, stable, [])
    manifest = rs.rollout_manifest(
        "pull",
        testbed,
        # The middle wave judges the canary against stable servers still running; the last
        # has none left (and this rollout measured no stable value earlier), so it is not
        # analysed.
        waves=[
            {"name": "canary", "count": 1},
            {"name": "half", "percent": 50},
            {"name": "rest", "percent": 100, "analysis": {"skip": True}},
        ],
        strategy={"nodeTimeoutSeconds": 10},
    )
    rs.apply(testbed, namespace, manifest)
    fleet = rs.fleet_nodes(testbed)
    everyone = fleet[rs.ARM_CLASS] + fleet[rs.X86_CLASS]
    rs.wait_for(
        "every fleet node to serve the stable revision",
        lambda: (
            rs.node_revisions(testbed, namespace, "pull") == dict.fromkeys(everyone, stable.name)
        ),
        timeout=90,
        describe=lambda: rs.node_revisions(testbed, namespace, "pull"),
    )
    rs.wait_for_status(
        testbed,
        namespace,
        "pull",
        "the first rollout to be Healthy",
        lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") == stable.name,
        timeout=60,
    )

    stopped = False
    try:
        with rs.load_on(testbed, namespace, "pull", max_seconds=150) as load:
            testbed.stop_registry()
            stopped = True
            rs.publish_model_status(testbed, namespace, canary, [stable])
            planned = rs.wait_for_status(
                testbed,
                namespace,
                "pull",
                "the canary's waves",
                lambda s: s.get("canaryRevision") == canary.name and len(s.get("waves") or []) == 3,
                timeout=30,
            )
            canary_node = planned["waves"][0]["nodes"][0]
            skipped = rs.wait_for_status(
                testbed,
                namespace,
                "pull",
                "the canary node to be skipped",
                lambda s: any(
                    n["node"] == canary_node and n["state"] == "Skipped" for n in s["nodes"]
                ),
                timeout=60,
            )
            node = next(n for n in skipped["nodes"] if n["node"] == canary_node)
            assert canary.name in node["reason"] and "10s" in node["reason"], node
            assert canary_node in skipped["waves"][0]["skippedNodes"]
            # Nothing serves the canary, so nothing can be measured, and that is no verdict:
            # the wave holds, paused for a person.
            paused = rs.wait_for_status(
                testbed,
                namespace,
                "pull",
                "the rollout to pause in its first wave",
                lambda s: s.get("phase") == "Paused",
                timeout=60,
            )
            assert paused["pausedBy"] == "analysis" and paused["currentWave"] == 0
            assert "skipped" in paused["message"], paused["message"]
            assert paused["stableRevision"] == stable.name
            assert [w["phase"] for w in paused["waves"][1:]] == ["Pending", "Pending"]
            wave0 = [m for m in paused["measurements"] if m["wave"] == 0]
            assert all(m["phase"] != "Successful" for m in wave0), wave0
            serving = rs.node_revisions(testbed, namespace, "pull")
            assert canary_node not in serving, serving
            assert serving == dict.fromkeys(set(everyone) - {canary_node}, stable.name)
            # The canary's server cannot start: it is restarted, not Ready, while the
            # registry is away (the kubelet's back-off, not a loop the operator drives).
            canary_pods = [
                p
                for p in rs.serving_pods(testbed, namespace, "pull")
                if p["spec"].get("nodeName") == canary_node
                and p["metadata"]["labels"]["slmops.io/revision"] == canary.name
            ]
            assert canary_pods, "no canary pod on the canary node"
            log_text = "".join(
                path.read_text(errors="replace")
                for path in testbed.pod_logs_dir.glob(
                    f"{namespace}_{canary_pods[0]['metadata']['name']}_*.log"
                )
            )
            assert testbed.registry.host in log_text and "unreachable" in log_text, log_text[-2000:]
            time.sleep(4)
            still = rs.status_of(testbed, namespace, "pull")
            assert still["phase"] == "Paused" and still["stableRevision"] == stable.name

            testbed.start_registry()
            stopped = False
            rs.wait_for(
                "the canary server to start once the registry is back",
                lambda: (
                    rs.node_revisions(testbed, namespace, "pull").get(canary_node) == canary.name
                ),
                timeout=60,
                describe=lambda: rs.node_revisions(testbed, namespace, "pull"),
            )
            updated = rs.wait_for_status(
                testbed,
                namespace,
                "pull",
                "the skipped node to be reported Updated",
                lambda s: any(
                    n["node"] == canary_node and n["state"] == "Updated" for n in s["nodes"]
                ),
                timeout=30,
            )
            assert updated["phase"] == "Paused"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "slmops.cli",
                    "promote",
                    "pull",
                    "-n",
                    namespace,
                    "--kubeconfig",
                    str(testbed.kubeconfig),
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            final = rs.wait_for_status(
                testbed,
                namespace,
                "pull",
                "the rollout to finish once promoted",
                lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") == canary.name,
                timeout=120,
            )
    finally:
        if stopped:
            testbed.start_registry()
    assert load.stats.sent > 0
    # The canary was judged by real rounds, in the wave after the promoted one; the promoted
    # wave itself never counted a round.
    assert final["waves"][0]["successful"] == 0
    assert final["waves"][1]["successful"] == 2, final["waves"]
    passed = [m for m in final["measurements"] if m["wave"] == 1 and m["phase"] == "Successful"]
    assert passed, final["measurements"]
    rs.wait_for(
        "every node to serve the canary",
        lambda: (
            rs.node_revisions(testbed, namespace, "pull") == dict.fromkeys(everyone, canary.name)
        ),
        timeout=60,
        describe=lambda: rs.node_revisions(testbed, namespace, "pull"),
    )
