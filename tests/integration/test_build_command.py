"""`slmops build` as the build Job runs it: a real process, a real ONNX model (MiniLM), real
onnxruntime, the testbed's real registry with htpasswd auth, skopeo as the independent check."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from slmops.adapters.oci import Credentials, RegistryClient
from slmops.optimize.contract import BuildResult
from slmops.optimize.packaging import ModelMetadata, build_modelpack, push_modelpack
from slmops.testbed.registry import RegistryAccess
from slmops.testbed.testbed import Testbed
from tests.integration.minilm_onnx import minilm_onnx
from tests.integration.test_oci_registry import push_base_image, skopeo_inspect

pytestmark = pytest.mark.integration

__all__ = ["minilm_onnx"]

SLMOPS = str(Path(sys.executable).with_name("slmops"))
# Repositories unique per run: a reused testbed (SLMOPS_TESTBED_STATE) keeps its registry.
RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def registry(testbed: Testbed) -> RegistryAccess:
    return testbed.registry


@pytest.fixture(scope="module")
def minilm_sha256(minilm_onnx: Path) -> str:
    return hashlib.sha256(minilm_onnx.read_bytes()).hexdigest()


def auth_file(directory: Path, registry: RegistryAccess, password: str | None = None) -> Path:
    path = directory / f"auth-{uuid.uuid4().hex[:6]}.json"
    path.write_text(
        json.dumps(
            {
                "auths": {
                    registry.host: {
                        "username": registry.username,
                        "password": password or registry.password,
                    }
                }
            }
        )
    )
    return path


def request(
    registry: RegistryAccess,
    source_uri: str,
    sha256: str,
    *,
    repository: str,
    precision: str = "int8",
    evaluation: dict[str, Any] | None = None,
    runtime_base_image: str | None = None,
    revision: str = "r1",
) -> str:
    image: dict[str, Any] = {"registry": registry.host, "repository": repository, "insecure": True}
    if runtime_base_image:
        image["runtimeBaseImage"] = runtime_base_image
    return json.dumps(
        {
            "revision": revision,
            "model": "minilm",
            "source": {
                "uri": source_uri,
                "sha256": sha256,
                "format": "onnx",
                "task": "feature-extraction",
            },
            "variant": {
                "name": f"{precision}-cpu",
                "optimize": {"precision": precision},
                "target": {"nodeSelector": {"matchLabels": {"kubernetes.io/arch": "amd64"}}},
            },
            "evaluation": evaluation or {"repeats": 2, "minNextTokenAgreement": 0.95},
            "image": image,
        }
    )


def run_build(
    request_json: str, tmp_path: Path, auth: Path | None, *extra: str
) -> tuple[int, BuildResult, str]:
    termination = tmp_path / f"termination-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if k != "SLMOPS_REGISTRY_AUTH_FILE"}
    if auth is not None:
        env["SLMOPS_REGISTRY_AUTH_FILE"] = str(auth)
    work = tmp_path / f"work-{uuid.uuid4().hex[:6]}"
    completed = subprocess.run(
        [SLMOPS, "build", "--request-json", request_json, "--work-dir", str(work),
         "--termination-message-path", str(termination), *extra],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    message = termination.read_text()
    assert len(message.encode()) < 4096
    assert completed.stdout.strip().splitlines()[-1] == message
    return completed.returncode, BuildResult.model_validate_json(message), completed.stderr


def test_build_pushes_a_qualified_variant_once_and_then_skips(
    registry: RegistryAccess, minilm_onnx: Path, minilm_sha256: str, tmp_path: Path
) -> None:
    auth = auth_file(tmp_path, registry)
    body = request(
        registry, minilm_onnx.as_uri(), minilm_sha256, repository=f"models/minilm-a-{RUN}"
    )
    code, result, stderr = run_build(body, tmp_path, auth)
    assert code == 0, stderr
    assert (result.phase, result.reason) == ("Qualified", "BudgetsMet"), result.message
    for built in tmp_path.glob("work-*"):
        shutil.rmtree(built)
    assert (
        result.digest
        and result.artifact == f"{registry.host}/models/minilm-a-{RUN}@{result.digest}"
    )
    assert result.compression_ratio is not None and result.compression_ratio > 3.5
    assert result.output_cosine is not None and result.output_cosine > 0.95
    assert result.speedup is not None and result.speedup > 0
    assert result.measured_on and str(os.cpu_count()) in result.measured_on
    assert [b.name for b in result.budgets] == ["minNextTokenAgreement"]

    manifest = skopeo_inspect(
        registry, f"{registry.host}/models/minilm-a-{RUN}:int8-cpu-r1", raw=True
    )
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", "--creds",
         f"{registry.username}:{registry.password}", f"docker://{registry.host}/models/minilm-a-{RUN}:int8-cpu-r1"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == result.digest
    layers = manifest["layers"]
    assert [layer["annotations"]["org.cncf.model.filepath"] for layer in layers] == ["model.onnx"]  # type: ignore[index,union-attr]
    assert layers[0]["size"] == result.size_bytes  # type: ignore[index]

    # Same input, same recipe, same revision: nothing is rebuilt, the results are reported.
    code, again, stderr = run_build(body, tmp_path, auth)
    assert code == 0, stderr
    assert (again.phase, again.reason, again.skipped) == ("Qualified", "AlreadyBuilt", True)
    assert again.digest == result.digest
    assert again.compression_ratio == result.compression_ratio
    assert not list(tmp_path.glob("work-*/build")), "the skipped build must not optimize anything"


def test_impossible_budget_is_rejected_and_not_pushed(
    registry: RegistryAccess, minilm_onnx: Path, minilm_sha256: str, tmp_path: Path
) -> None:
    body = request(
        registry,
        minilm_onnx.as_uri(),
        minilm_sha256,
        repository=f"models/minilm-b-{RUN}",
        evaluation={"repeats": 2, "maxSizeMiB": 1},
    )
    code, result, _ = run_build(body, tmp_path, auth_file(tmp_path, registry))
    assert code == 0
    assert (result.phase, result.reason) == ("Rejected", "BudgetExceeded")
    assert "MiB > 1" in result.message and "not pushed" in result.message
    assert result.digest is None
    client = RegistryClient(
        registry.host, credentials=Credentials(registry.username, registry.password), insecure=True
    )
    assert client.manifest_digest(f"models/minilm-b-{RUN}", "int8-cpu-r1") is None


def test_wrong_sha256_fails_permanently_and_pushes_nothing(
    registry: RegistryAccess, minilm_onnx: Path, tmp_path: Path
) -> None:
    wrong = "0" * 64
    body = request(registry, minilm_onnx.as_uri(), wrong, repository=f"models/minilm-c-{RUN}")
    code, result, _ = run_build(body, tmp_path, auth_file(tmp_path, registry))
    assert code == 2
    assert (result.phase, result.reason) == ("Failed", "SourceDigestMismatch")
    assert f"expected {wrong}" in result.message
    code, verified, _ = run_build(body, tmp_path, None, "--verify-only")
    assert (code, verified.reason) == (2, "SourceDigestMismatch")
    client = RegistryClient(
        registry.host, credentials=Credentials(registry.username, registry.password), insecure=True
    )
    assert client.manifest_digest(f"models/minilm-c-{RUN}", "int8-cpu-r1") is None


def test_verify_only_needs_no_registry(
    minilm_onnx: Path, minilm_sha256: str, tmp_path: Path
) -> None:
    unreachable = RegistryAccess("127.0.0.1:9", "nobody", "nothing")
    body = request(unreachable, minilm_onnx.as_uri(), minilm_sha256, repository="models/x")
    code, result, _ = run_build(body, tmp_path, None, "--verify-only")
    assert (code, result.phase, result.reason) == (0, "Verified", "SourceVerified")
    code, result, _ = run_build(body, tmp_path, None)
    assert (code, result.reason) == (1, "RegistryUnavailable")


def test_wrong_credentials_fail_before_building(
    registry: RegistryAccess, minilm_onnx: Path, minilm_sha256: str, tmp_path: Path
) -> None:
    secret = "not-the-password-" + uuid.uuid4().hex
    body = request(
        registry, minilm_onnx.as_uri(), minilm_sha256, repository=f"models/minilm-d-{RUN}"
    )
    code, result, stderr = run_build(body, tmp_path, auth_file(tmp_path, registry, secret))
    assert code == 2
    assert (result.phase, result.reason) == ("Failed", "RegistryAuthFailed")
    assert "registry refused credentials" in result.message and registry.host in result.message
    assert secret not in result.model_dump_json() and secret not in stderr


def test_invalid_request_is_explained(tmp_path: Path) -> None:
    code, result, _ = run_build('{"revision": "r1"}', tmp_path, None)
    assert (code, result.reason) == (2, "InvalidRequest")
    assert "source" in result.message and "image" in result.message


def test_oci_source_and_runnable_image(
    registry: RegistryAccess, minilm_onnx: Path, tmp_path: Path
) -> None:
    """The source is itself a ModelPack artifact in the registry (pinned by manifest digest),
    and the variant is also pushed as base image + one model layer."""
    client = RegistryClient(
        registry.host, credentials=Credentials(registry.username, registry.password), insecure=True
    )
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    shutil.copyfile(minilm_onnx, source_dir / "model.onnx")
    (source_dir / "README.md").write_text("all-MiniLM-L6-v2, exported to ONNX\n")
    pack = build_modelpack(
        source_dir,
        ModelMetadata(
            name="minilm",
            version="fp32",
            format="onnx",
            precision="fp32",
            quantization="none",
            execution_provider="cpu",
        ),
    )
    source_digest = push_modelpack(client, f"sources/minilm-{RUN}", pack, "fp32")
    base_digest = push_base_image(client, "runtime/base")

    body = request(
        registry,
        f"oci://{registry.host}/sources/minilm-{RUN}@{source_digest}",
        source_digest.removeprefix("sha256:"),
        repository=f"models/minilm-e-{RUN}",
        precision="int4",
        evaluation={"repeats": 2, "minNextTokenAgreement": 0.8},
        runtime_base_image=f"runtime/base@{base_digest}",
    )
    code, result, stderr = run_build(body, tmp_path, auth_file(tmp_path, registry))
    assert code == 0, stderr
    assert result.phase == "Qualified", result.message
    assert result.image and result.image_digest
    inspected = skopeo_inspect(
        registry, f"{registry.host}/models/minilm-e-{RUN}@{result.image_digest}", raw=False
    )
    assert "SLMOPS_MODEL_PATH=/models/minilm-int4-cpu" in inspected["Env"]  # type: ignore[operator]
    artifact = skopeo_inspect(
        registry, f"{registry.host}/models/minilm-e-{RUN}@{result.digest}", raw=True
    )
    paths = sorted(layer["annotations"]["org.cncf.model.filepath"] for layer in artifact["layers"])  # type: ignore[attr-defined]
    assert paths == ["README.md", "model.onnx"]

    tampered = body.replace(source_digest.removeprefix("sha256:"), "1" * 64, 1)
    code, result, _ = run_build(tampered, tmp_path, auth_file(tmp_path, registry), "--verify-only")
    assert (code, result.reason) == (2, "SourceDigestMismatch")


def test_a_source_that_is_not_onnx_fails_permanently(
    registry: RegistryAccess, tmp_path: Path
) -> None:
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"this is not a protobuf" * 10)
    body = request(
        registry,
        garbage.as_uri(),
        hashlib.sha256(garbage.read_bytes()).hexdigest(),
        repository=f"models/minilm-f-{RUN}",
    )
    code, result, _ = run_build(body, tmp_path, auth_file(tmp_path, registry))
    assert (code, result.phase, result.reason) == (2, "Failed", "InvalidSource")
    assert "is not a loadable ONNX model" in result.message
