"""The SLMModel story on the testbed: the demo model, four variants, real builds.

The operator runs as a real process; the real scheduler places one build Job per variant on
a node of its hardware class; the simulator runs `slmops build` for each as a real process
(onnxruntime-genai export, evaluation against fp32, ModelPack push to the real registry); the
real job controller completes the Jobs; the operator reads the results from the pods'
termination messages. skopeo, an independent client, checks that the artifacts exist and that
their digests are the ones in status.

One budget is set so that one variant cannot meet it: the size limit lies below half of the
fp32 checkpoint, which fp16 (two bytes per weight) cannot reach while int4 and int8 do. That
variant must be Rejected, with the size in the reason, and the others still deployable.

Then the same spec applied again, and an edit that leaves the revision alone, build nothing;
a changed recipe builds a new revision while the old one's artifacts stay listed and pullable.

Evaluation repeats and new tokens are kept small: this checks the controller and the
pipeline end to end, not the figures (tests/benchmarks measures those).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from slmops.optimize.demo_model import ensure_demo_model
from slmops.optimize.source import directory_digest
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

pytestmark = pytest.mark.e2e

HARDWARE_CLASS = "slmops.io/hardware-class"
BUILD_TIMEOUT = 1500.0


def _variant(name: str, hardware: str, optimize: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "optimize": optimize,
        "target": {"nodeSelector": {"matchLabels": {HARDWARE_CLASS: hardware}}},
    }


def _fp32_mib(checkpoint: Path) -> float:
    return sum(p.stat().st_size for p in checkpoint.glob("*.safetensors")) / 2**20


def _skopeo_raw(testbed: Any, reference: str) -> bytes:
    registry = testbed.registry
    completed = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            f"{registry.username}:{registry.password}",
            f"docker://{reference}",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return completed.stdout


def test_four_variants_are_built_where_they_will_run_and_judged(
    testbed: Any, operator: Any, kube_namespace: str
) -> None:
    operator_with_crds(testbed, operator)
    checkpoint = ensure_demo_model()
    size_limit = round(_fp32_mib(checkpoint) * 0.45, 2)
    push_secret(testbed, kube_namespace, "registry-push", testbed.registry.password)
    spec: dict[str, Any] = {
        "source": {
            "uri": f"file://{checkpoint}",
            "sha256": directory_digest(checkpoint),
            "format": "huggingface",
        },
        "variants": [
            _variant("int4-vnni", "x86-vnni", {"precision": "int4"}),
            _variant("int8-avx2", "x86-avx2", {"precision": "int8"}),
            _variant("fp16-orin", "jetson-orin", {"precision": "fp16"}),
            _variant(
                "int4-pruned-rpi",
                "rpi5",
                {
                    "precision": "int4",
                    "pruning": {"method": "structured", "mlpChannelFraction": 0.25},
                },
            ),
        ],
        "evaluation": {
            "maxPerplexityIncreasePercent": 25.0,
            "maxSizeMiB": size_limit,
            "maxNewTokens": 16,
            "repeats": 2,
        },
        "image": {
            "registry": testbed.registry.host,
            "repository": f"e2e/demo-{kube_namespace}",
            "insecure": True,
            "pushSecretRef": {"name": "registry-push"},
        },
        "build": {
            "activeDeadlineSeconds": 1500,
            "backoffLimit": 0,
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        },
    }
    manifest = model_manifest("demo", spec)
    started = time.monotonic()
    apply(testbed, kube_namespace, manifest)

    # The operator dies while the builds run; the one that replaces it finds their Jobs by
    # name and label instead of starting them again.
    deadline = time.monotonic() + 300
    while len(building := jobs(testbed, kube_namespace, "slmops.io/role=build")) < 4:
        assert time.monotonic() < deadline, "the four build Jobs were never created"
        time.sleep(1)
    build_uids = sorted(j["metadata"]["uid"] for j in building)
    operator.kill()
    operator.start()

    model = wait_for_model(
        testbed,
        kube_namespace,
        "demo",
        lambda m: condition(m, "Reconciling").get("status") == "False",
        timeout=BUILD_TIMEOUT,
        what="all variants decided",
        capture_as=("Healthy", "variants-built-one-rejected"),
    )
    elapsed = time.monotonic() - started
    print(f"\nfour variants built and judged in {elapsed:.0f}s")
    assert (
        sorted(j["metadata"]["uid"] for j in jobs(testbed, kube_namespace, "slmops.io/role=build"))
        == build_uids
    )
    assert len(jobs(testbed, kube_namespace, "slmops.io/role=verify")) == 1
    status = model["status"]
    revision = status["revision"]
    variants = {v["name"]: v for v in status["variants"]}
    for v in variants.values():
        print(
            f"{v['name']}: {v['phase']} ({v['reason']}) size={v.get('sizeBytes')} "
            f"tok/s={v.get('tokensPerSecond')} speedup={v.get('speedup')} "
            f"ppl+%={v.get('perplexityDeltaPercent')} on {v.get('measuredOn')}: {v['message']}"
        )
    assert list(variants) == [v["name"] for v in spec["variants"]]
    for variant in variants.values():
        assert variant["phase"] in ("Qualified", "Rejected"), variant
        assert variant["reason"] and variant["message"], variant
        assert variant["revision"] == revision

    # The variant that cannot meet the size budget is rejected, saying so with numbers.
    fp16 = variants["fp16-orin"]
    assert (fp16["phase"], fp16["reason"]) == ("Rejected", "BudgetExceeded"), fp16
    assert "MiB" in fp16["message"]
    assert "digest" not in fp16  # never pushed
    assert variants["int4-vnni"]["phase"] == "Qualified", variants["int4-vnni"]
    assert condition(model, "VariantsQualified")["reason"] == "BudgetExceeded"
    assert "fp16-orin" in condition(model, "VariantsQualified")["message"]
    assert condition(model, "Ready")["status"] == "True"
    assert condition(model, "SourceVerified")["status"] == "True"
    assert condition(model, "VariantsBuilt")["status"] == "True"
    assert status["phase"] == "Ready"

    # Each build ran on a node of its variant's hardware class, and says where it measured.
    build_pods = pods(testbed, kube_namespace, "slmops.io/role=build")
    nodes = {n["metadata"]["name"]: n for n in get_json(testbed, "default", "nodes")["items"]}
    wanted = {v["name"]: v["target"]["nodeSelector"]["matchLabels"] for v in spec["variants"]}
    for pod in build_pods:
        name = pod["metadata"]["labels"]["slmops.io/variant"]
        node = nodes[pod["spec"]["nodeName"]]
        assert node["metadata"]["labels"][HARDWARE_CLASS] == wanted[name][HARDWARE_CLASS]
        assert pod["spec"]["nodeName"] in variants[name]["measuredOn"]

    # The artifacts exist and their digests are the ones in status (skopeo, by tag).
    qualified = [v for v in variants.values() if v["phase"] == "Qualified"]
    for variant in qualified:
        assert variant["artifact"].endswith("@" + variant["digest"])
        assert variant["sizeBytes"] > 0 and variant["tokensPerSecond"] > 0
        assert variant["compressionRatio"] > 1.0
        raw = _skopeo_raw(
            testbed,
            f"{testbed.registry.host}/{spec['image']['repository']}:{variant['name']}-{revision}",
        )
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == variant["digest"]
        assert json.loads(raw)["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
        by_digest = _skopeo_raw(testbed, variant["artifact"])
        assert by_digest == raw
    assert status["revisions"][0]["revision"] == revision
    assert status["revisions"][0]["variants"] == {v["name"]: v["artifact"] for v in qualified}
    reasons = event_reasons(testbed, kube_namespace, "demo")
    assert {"SourceVerified", "BuildStarted", "VariantQualified", "VariantRejected"} <= set(reasons)

    # Re-applying the same spec builds nothing new; neither does an edit that leaves the
    # revision alone (here: the build deadline).
    job_uids = sorted(j["metadata"]["uid"] for j in jobs(testbed, kube_namespace))
    pod_count = len(pods(testbed, kube_namespace))
    before = get_json(testbed, kube_namespace, "slmmodel", "demo")["metadata"]["generation"]
    apply(testbed, kube_namespace, manifest)
    time.sleep(6)
    assert get_json(testbed, kube_namespace, "slmmodel", "demo")["metadata"]["generation"] == before
    assert sorted(j["metadata"]["uid"] for j in jobs(testbed, kube_namespace)) == job_uids
    spec["build"]["activeDeadlineSeconds"] = 1400
    apply(testbed, kube_namespace, model_manifest("demo", spec))
    generation = get_json(testbed, kube_namespace, "slmmodel", "demo")["metadata"]["generation"]
    model = wait_for_model(
        testbed,
        kube_namespace,
        "demo",
        lambda m: m.get("status", {}).get("observedGeneration") == generation,
        timeout=60,
        what="the edited generation observed",
    )
    time.sleep(6)
    assert model["status"]["revision"] == revision
    assert sorted(j["metadata"]["uid"] for j in jobs(testbed, kube_namespace)) == job_uids
    assert len(pods(testbed, kube_namespace)) == pod_count
    assert condition(model, "Ready")["status"] == "True"

    # A changed recipe is a new revision: its Jobs replace the old ones, and the old
    # revision's artifacts stay listed and stay in the registry (what a rollback pins).
    spec["variants"] = [spec["variants"][0]]
    spec["variants"][0]["optimize"] = {"precision": "int4", "int4": {"blockSize": 64}}
    apply(testbed, kube_namespace, model_manifest("demo", spec))
    model = wait_for_model(
        testbed,
        kube_namespace,
        "demo",
        lambda m: (
            m.get("status", {}).get("revision") not in (None, revision)
            and condition(m, "Reconciling").get("status") == "False"
        ),
        timeout=BUILD_TIMEOUT,
        what="the new revision settled",
    )
    status = model["status"]
    assert status["phase"] == "Ready", status
    assert [v["name"] for v in status["variants"]] == ["int4-vnni"]
    assert [r["revision"] for r in status["revisions"]] == [status["revision"], revision]
    old = status["revisions"][1]["variants"]
    assert old == {v["name"]: v["artifact"] for v in qualified}
    for artifact in old.values():
        assert _skopeo_raw(testbed, artifact)
    labels = {j["metadata"]["labels"]["slmops.io/revision"] for j in jobs(testbed, kube_namespace)}
    deadline = time.monotonic() + 30
    while labels != {status["revision"]} and time.monotonic() < deadline:
        time.sleep(1)
        labels = {
            j["metadata"]["labels"]["slmops.io/revision"] for j in jobs(testbed, kube_namespace)
        }
    assert labels == {status["revision"]}
    assert "NewRevision" in event_reasons(testbed, kube_namespace, "demo")
