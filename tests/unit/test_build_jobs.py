from __future__ import annotations

import json
from typing import Any

import pytest

from slmops.api.v1alpha1.slmmodel import SLMModelSpec
from slmops.domain import builds
from slmops.optimize.contract import BuildRequest

pytestmark = pytest.mark.unit

MODEL = builds.ModelRef(name="demo", namespace="ml", uid="uid-1", generation=3)
SETTINGS = builds.BuilderSettings(image="ghcr.io/slmops/slmops-builder:0.1.0")


def _spec(push_secret: bool = True) -> SLMModelSpec:
    image: dict[str, Any] = {"registry": "127.0.0.1:5000", "repository": "models/demo"}
    if push_secret:
        image["pushSecretRef"] = {"name": "registry-push"}
    return SLMModelSpec.model_validate(
        {
            "source": {"uri": "file:///models/demo", "sha256": "a" * 64},
            "variants": [
                {
                    "name": "int4-vnni",
                    "target": {
                        "nodeSelector": {
                            "matchLabels": {"slmops.io/hardware-class": "x86-vnni"},
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/arch",
                                    "operator": "In",
                                    "values": ["amd64"],
                                },
                                {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"},
                            ],
                        }
                    },
                }
            ],
            "image": image,
            "build": {
                "activeDeadlineSeconds": 900,
                "backoffLimit": 1,
                "resources": {"requests": {"cpu": 1, "memory": "2Gi"}},
            },
        }
    )


def _build_job(spec: SLMModelSpec) -> dict[str, Any]:
    return builds.build_job(
        model=MODEL,
        spec=spec,
        variant=spec.variants[0],
        revision="0123456789ab",
        request_json='{"x":1}',
        settings=SETTINGS,
    )


def test_build_job_runs_on_the_variants_hardware() -> None:
    job = _build_job(_spec())
    pod = job["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {"key": "slmops.io/hardware-class", "operator": "In", "values": ["x86-vnni"]},
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"},
            ]
        }
    ]


def test_build_job_shape() -> None:
    job = _build_job(_spec())
    assert job["metadata"]["name"] == "demo-int4-vnni-0123456789ab"
    assert job["metadata"]["labels"] == {
        "slmops.io/model": "demo",
        "slmops.io/revision": "0123456789ab",
        "slmops.io/role": "build",
        "slmops.io/variant": "int4-vnni",
        "app.kubernetes.io/managed-by": "slmops",
    }
    assert job["spec"]["template"]["metadata"]["labels"] == job["metadata"]["labels"]
    assert job["metadata"]["annotations"] == {"slmops.io/generation": "3"}
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "SLMModel",
        "demo",
        "uid-1",
        True,
    )
    assert job["spec"]["activeDeadlineSeconds"] == 900
    assert job["spec"]["backoffLimit"] == 1
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["image"] == SETTINGS.image
    assert container["command"] == ["slmops"]
    assert container["args"][:3] == ["build", "--request-json", '{"x":1}']
    assert "--verify-only" not in container["args"]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}}
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["SLMOPS_REGISTRY_AUTH_FILE"]["value"] == builds.REGISTRY_AUTH_FILE


def test_push_secret_is_mounted_as_a_docker_config_file() -> None:
    pod = _build_job(_spec())["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "registry-auth")
    assert volume["secret"]["secretName"] == "registry-push"
    assert volume["secret"]["items"] == [{"key": ".dockerconfigjson", "path": "config.json"}]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "registry-auth")
    assert mount == {
        "name": "registry-auth",
        "mountPath": builds.REGISTRY_AUTH_DIR,
        "readOnly": True,
    }


def test_no_secret_no_auth_file() -> None:
    pod = _build_job(_spec(push_secret=False))["spec"]["template"]["spec"]
    assert all(v["name"] != "registry-auth" for v in pod["volumes"])
    names = {e["name"] for e in pod["containers"][0]["env"]}
    assert "SLMOPS_REGISTRY_AUTH_FILE" not in names


def test_verify_job_only_verifies_and_carries_no_push_credentials() -> None:
    spec = _spec()
    job = builds.verify_job(
        model=MODEL, spec=spec, revision="0123456789ab", request_json="{}", settings=SETTINGS
    )
    assert job["metadata"]["name"] == "demo-0123456789ab-verify"
    assert job["metadata"]["labels"]["slmops.io/role"] == "verify"
    assert "slmops.io/variant" not in job["metadata"]["labels"]
    pod = job["spec"]["template"]["spec"]
    assert "--verify-only" in pod["containers"][0]["args"]
    assert all(v["name"] != "registry-auth" for v in pod["volumes"])
    assert "affinity" not in pod


def test_long_names_stay_valid_and_distinct() -> None:
    long_model = "m" * 60
    first = builds.build_job_name(long_model, "variant-a", "0123456789ab")
    second = builds.build_job_name(long_model, "variant-b", "0123456789ab")
    assert len(first) <= 63 and len(second) <= 63
    assert first != second
    assert builds.build_job_name(long_model, "variant-a", "0123456789ab") == first


def test_a_variant_named_verify_does_not_collide_with_the_verify_job() -> None:
    assert builds.build_job_name("demo", "verify", "0123456789ab") != builds.verify_job_name(
        "demo", "0123456789ab"
    )


def test_request_round_trips_through_the_job_args() -> None:
    spec = _spec()
    request = BuildRequest(
        revision="0123456789ab",
        model="demo",
        source=spec.source,
        variant=spec.variants[0],
        evaluation=spec.evaluation,
        image=spec.image,
    )
    text = request.model_dump_json(by_alias=True, exclude_none=True)
    job = builds.build_job(
        model=MODEL,
        spec=spec,
        variant=spec.variants[0],
        revision="0123456789ab",
        request_json=text,
        settings=SETTINGS,
    )
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    parsed = BuildRequest.model_validate(json.loads(args[args.index("--request-json") + 1]))
    assert parsed == request


def test_a_retry_is_a_job_of_its_own_labelled_with_its_attempt() -> None:
    spec = _spec()
    first = _build_job(spec)
    retry = builds.build_job(
        model=MODEL,
        spec=spec,
        variant=spec.variants[0],
        revision="0123456789ab",
        request_json='{"x":1}',
        settings=SETTINGS,
        attempt=3,
    )
    assert retry["metadata"]["name"] == "demo-int4-vnni-0123456789ab-attempt3"
    assert retry["metadata"]["name"] == builds.build_job_name(
        "demo", "int4-vnni", "0123456789ab", 3
    )
    assert retry["metadata"]["labels"] == {**first["metadata"]["labels"], "slmops.io/attempt": "3"}
    assert retry["spec"]["template"]["metadata"]["labels"] == retry["metadata"]["labels"]
    assert builds.verify_job_name("demo", "0123456789ab", 2) == "demo-0123456789ab-verify-attempt2"
    long_model = "m" * 60
    names = {builds.build_job_name(long_model, "int4", "0123456789ab", a) for a in (1, 2, 3)}
    assert len(names) == 3 and all(len(n) <= builds.MAX_NAME_LENGTH for n in names)
