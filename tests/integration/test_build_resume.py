"""A build finds the artifact of an earlier build of its revision and reports it instead of
building again, but only when all of it is in the registry. A build stopped between pushes
(the registry went away), or a blob deleted since, means the next attempt builds and pushes
again; reporting the old artifact would reference something that cannot be pulled.

Real `slmops build` processes against the testbed's registry; the parts are removed through
the registry's own delete API (enabled on the testbed).
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

from slmops.adapters.oci import Credentials, RegistryClient
from slmops.testbed.registry import RegistryAccess
from slmops.testbed.testbed import Testbed
from tests.integration.test_build_command import auth_file, request, run_build
from tests.integration.test_oci_registry import push_base_image
from tests.serving.tiny_models import plain_onnx_model

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def registry(testbed: Testbed) -> RegistryAccess:
    return testbed.registry


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, str]:
    model = tmp_path / "model.onnx"
    shutil.copyfile(plain_onnx_model(32) / "model.onnx", model)
    return model, hashlib.sha256(model.read_bytes()).hexdigest()


def _client(registry: RegistryAccess) -> RegistryClient:
    return RegistryClient(
        registry.host, credentials=Credentials(registry.username, registry.password), insecure=True
    )


def _delete(registry: RegistryAccess, path: str) -> None:
    response = httpx.delete(
        f"{registry.url}{path}", auth=(registry.username, registry.password), timeout=30
    )
    assert response.status_code == 202, (path, response.status_code, response.text)


def test_an_artifact_missing_a_blob_is_built_and_pushed_again(
    registry: RegistryAccess, source: tuple[Path, str], tmp_path: Path
) -> None:
    model, sha256 = source
    repository = f"models/resume-a-{RUN}"
    body = request(registry, model.as_uri(), sha256, repository=repository)
    auth = auth_file(tmp_path, registry)
    code, first, stderr = run_build(body, tmp_path, auth)
    assert (code, first.phase, first.skipped) == (0, "Qualified", False), stderr
    code, again, _ = run_build(body, tmp_path, auth)
    assert (code, again.reason, again.skipped) == (0, "AlreadyBuilt", True)
    assert again.digest == first.digest

    assert first.digest is not None
    with _client(registry) as client:
        manifest = client.get_manifest(repository, first.digest)
        weights = manifest.layers[0].digest
        _delete(registry, f"/v2/{repository}/blobs/{weights}")
        assert not client.blob_exists(repository, weights)

    code, rebuilt, stderr = run_build(body, tmp_path, auth)
    assert (code, rebuilt.phase, rebuilt.reason, rebuilt.skipped) == (
        0,
        "Qualified",
        "BudgetsMet",
        False,
    ), stderr
    assert rebuilt.digest is not None
    with _client(registry) as client:
        manifest = client.get_manifest(repository, rebuilt.digest)
        assert all(
            client.blob_exists(repository, d.digest) for d in (manifest.config, *manifest.layers)
        )


def test_an_artifact_whose_runnable_image_is_missing_is_built_again(
    registry: RegistryAccess, source: tuple[Path, str], tmp_path: Path
) -> None:
    model, sha256 = source
    repository = f"models/resume-b-{RUN}"
    with _client(registry) as client:
        base_digest = push_base_image(client, "runtime/base")
    body = request(
        registry,
        model.as_uri(),
        sha256,
        repository=repository,
        runtime_base_image=f"runtime/base@{base_digest}",
    )
    auth = auth_file(tmp_path, registry)
    code, first, stderr = run_build(body, tmp_path, auth)
    assert (code, first.phase) == (0, "Qualified"), stderr
    assert first.image_digest is not None

    # As if the registry had gone away after the artifact and before the image.
    _delete(registry, f"/v2/{repository}/manifests/{first.image_digest}")
    with _client(registry) as client:
        assert client.manifest_digest(repository, "int8-cpu-r1-image") is None

    code, rebuilt, stderr = run_build(body, tmp_path, auth)
    assert (code, rebuilt.phase, rebuilt.skipped) == (0, "Qualified", False), stderr
    assert rebuilt.image and rebuilt.image_digest
    with _client(registry) as client:
        assert client.manifest_digest(repository, "int8-cpu-r1-image") == rebuilt.image_digest
    code, settled, _ = run_build(body, tmp_path, auth)
    assert (settled.reason, settled.skipped, settled.image) == ("AlreadyBuilt", True, rebuilt.image)
