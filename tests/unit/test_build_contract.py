"""The build contract: termination message size, tags, exit codes, ONNX budgets."""

from __future__ import annotations

import pytest

from slmops.api.v1alpha1.slmmodel import EvaluationSpec
from slmops.optimize.build import exit_code_for, onnx_budgets
from slmops.optimize.contract import BudgetVerdict, BuildRequest, BuildResult, Reason

pytestmark = pytest.mark.unit

REQUEST = {
    "revision": "abc123",
    "model": "demo",
    "source": {"uri": "file:///m.onnx", "sha256": "a" * 64, "format": "onnx"},
    "variant": {
        "name": "int8-cpu",
        "optimize": {"precision": "int8"},
        "target": {"nodeSelector": {"matchLabels": {"kubernetes.io/arch": "amd64"}}},
    },
    "image": {"registry": "127.0.0.1:5000", "repository": "models/demo", "insecure": True},
}


def test_request_round_trips_and_names_its_tag() -> None:
    request = BuildRequest.model_validate(REQUEST)
    assert request.tag() == "int8-cpu-abc123"
    wire = request.model_dump_json(by_alias=True, exclude_none=True)
    assert len(wire) < 1024
    assert BuildRequest.model_validate_json(wire) == request
    pinned = BuildRequest.model_validate({**REQUEST, "artifactTag": "custom"})
    assert pinned.tag() == "custom"


def test_termination_message_fits_and_keeps_the_digest() -> None:
    digest = "sha256:" + "f" * 64
    result = BuildResult(
        variant="int8-cpu",
        revision="abc123",
        phase="Rejected",
        reason=Reason.BUDGET_EXCEEDED,
        message="x" * 3000,
        digest=digest,
        speedup=1.5,
        budgets=[
            BudgetVerdict(name=f"b{i}", passed=False, limit=1, actual=2, message="y" * 300)
            for i in range(10)
        ],
    )
    message = result.to_termination_message()
    assert len(message.encode()) <= 4096
    parsed = BuildResult.model_validate_json(message)
    assert parsed.digest == digest and parsed.speedup == 1.5
    assert all(b.message == "" for b in parsed.budgets)
    small = BuildResult(phase="Verified", reason=Reason.SOURCE_VERIFIED, message="ok")
    assert BuildResult.model_validate_json(small.to_termination_message()) == small


@pytest.mark.parametrize(
    ("phase", "reason", "code"),
    [
        ("Qualified", Reason.BUDGETS_MET, 0),
        ("Rejected", Reason.BUDGET_EXCEEDED, 0),
        ("Verified", Reason.SOURCE_VERIFIED, 0),
        ("Failed", Reason.REGISTRY_UNAVAILABLE, 1),
        ("Failed", Reason.BUILD_FAILED, 1),
        ("Failed", Reason.SOURCE_DIGEST_MISMATCH, 2),
        ("Failed", Reason.REGISTRY_AUTH_FAILED, 2),
    ],
)
def test_exit_codes(phase: str, reason: str, code: int) -> None:
    assert exit_code_for(BuildResult(phase=phase, reason=reason)) == code  # type: ignore[arg-type]


def test_onnx_budgets() -> None:
    measured = {
        "size_bytes": 22 * 1024 * 1024,
        "speedup": 1.6,
        "next_token_agreement": 0.8,
        "output_cosine": 0.985,
    }
    spec = EvaluationSpec.model_validate(
        {"maxSizeMiB": 20, "minSpeedup": 1.5, "minNextTokenAgreement": 0.97}
    )
    verdicts = {v.name: v for v in onnx_budgets(spec, "feature-extraction", measured)}
    assert not verdicts["maxSizeMiB"].passed
    assert verdicts["maxSizeMiB"].message == "size 22.0 MiB > 20.0 MiB"
    assert verdicts["minSpeedup"].passed
    # An encoder is judged on output cosine similarity ...
    assert verdicts["minNextTokenAgreement"].passed
    # ... a generative model on argmax (next-token) agreement.
    generative = {v.name: v for v in onnx_budgets(spec, "text-generation", measured)}
    assert not generative["minNextTokenAgreement"].passed
    assert onnx_budgets(EvaluationSpec(), "feature-extraction", measured) == []


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("runtime/slmops:1.0", "127.0.0.1:5000/runtime/slmops:1.0"),
        ("runtime@sha256:" + "c" * 64, "127.0.0.1:5000/runtime@sha256:" + "c" * 64),
        ("127.0.0.1:5000/runtime/slmops:1.0", "127.0.0.1:5000/runtime/slmops:1.0"),
        ("registry.example.com/runtime:1", "registry.example.com/runtime:1"),
    ],
)
def test_runtime_base_image_defaults_to_the_model_registry(base: str, expected: str) -> None:
    from slmops.optimize.build import _base_reference

    image = {**REQUEST["image"], "runtimeBaseImage": base}  # type: ignore[dict-item]
    request = BuildRequest.model_validate({**REQUEST, "image": image})
    assert str(_base_reference(request)) == expected
