"""`slmops serve --model oci://…@sha256:…` against a real registry (CNCF distribution, with
htpasswd auth): pull by digest into the node-local cache, start from the cache without any
download, and notice a corrupted cache."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from slmops.adapters.oci import FILEPATH_ANNOTATION, OCI_MANIFEST, Credentials, RegistryClient
from slmops.testbed.registry import RegistryAccess
from slmops.testbed.testbed import Testbed
from tests.serving.fixtures import (  # noqa: F401 (fixtures)
    TEXT_MODEL_NAME,
    fixture_serve_logs,
    fixture_text_model_fp32,
)
from tests.serving.processes import slmops_serve

pytestmark = pytest.mark.integration

REPOSITORY = "models/tiny-llama"
WEIGHT = "application/vnd.cncf.model.weight.v1.raw"


def _auth_file(directory: Path, access: RegistryAccess, password: str) -> Path:
    token = base64.b64encode(f"{access.username}:{password}".encode()).decode()
    path = directory / f"auth-{password[:4]}.json"
    path.write_text(json.dumps({"auths": {access.host: {"auth": token}}}))
    return path


@pytest.fixture(scope="module", name="oci_registry")
def fixture_oci_registry(testbed: Testbed) -> RegistryAccess:
    return testbed.registry


@pytest.fixture(scope="module")
def pushed_model(oci_registry: RegistryAccess, text_model_fp32: Path) -> tuple[str, int]:
    """The tiny model pushed as a ModelPack-style artifact; (oci:// reference, total bytes)."""
    client = RegistryClient(
        oci_registry.host,
        credentials=Credentials(oci_registry.username, oci_registry.password),
        insecure=True,
    )
    layers = []
    total = 0
    for path in sorted(p for p in text_model_fp32.iterdir() if p.is_file()):
        digest, size = client.push_blob(REPOSITORY, path)
        total += size
        layers.append(
            {
                "mediaType": WEIGHT,
                "digest": digest,
                "size": size,
                "annotations": {FILEPATH_ANNOTATION: path.name},
            }
        )
    config = json.dumps({"descriptor": {"name": "tiny-llama"}, "config": {"format": "onnx"}})
    config_digest, config_size = client.push_blob(REPOSITORY, config.encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.cncf.model.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.cncf.model.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": layers,
    }
    digest = client.put_manifest(REPOSITORY, "v1", json.dumps(manifest).encode())
    client.close()
    return f"oci://{oci_registry.host}/{REPOSITORY}@{digest}", total


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _gauge(url: str, name: str) -> float:
    for family in text_string_to_metric_families(httpx.get(url).text):
        if family.name == name:
            return float(family.samples[0].value)
    raise AssertionError(f"{name} not exposed")


def _serve(reference: str, cache: Path, logs: Path, auth: Path):
    return slmops_serve(
        reference,
        logs,
        model_name=TEXT_MODEL_NAME,
        extra_args=["--cache-dir", str(cache), "--plain-http"],
        env={"SLMOPS_REGISTRY_AUTH_FILE": str(auth)},
    )


def _generates(base: str) -> None:
    response = httpx.post(
        f"{base}/v2/models/{TEXT_MODEL_NAME}/generate",
        json={"text_input": "Hello", "max_tokens": 4, "temperature": 0},
    )
    assert response.status_code == 200, response.text


def test_pull_then_start_from_the_cache_without_the_registry(
    pushed_model, oci_registry, cache_dir, serve_logs, tmp_path
):
    reference, total_bytes = pushed_model
    good_auth = _auth_file(tmp_path, oci_registry, oci_registry.password)
    with _serve(reference, cache_dir, serve_logs, good_auth) as server:
        _generates(server.base)
        assert _gauge(server.metrics_url, "slmops_model_download_bytes") == total_bytes
        assert _gauge(server.metrics_url, "slmops_model_download_seconds") > 0
        assert _gauge(server.metrics_url, "slmops_model_load_seconds") > 0
    digest = reference.rsplit("@", 1)[1]
    entry = cache_dir / digest.replace(":", "-")
    assert (entry / "content" / "genai_config.json").is_file()
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".partial")]

    # Wrong credentials: any registry call would fail, so this start proves no download.
    wrong_auth = _auth_file(tmp_path, oci_registry, "not-the-password")
    with _serve(reference, cache_dir, serve_logs, wrong_auth) as server:
        _generates(server.base)
        assert _gauge(server.metrics_url, "slmops_model_download_bytes") == 0
        assert "found in the node-local cache" in server.log()


def test_corrupted_or_incomplete_cache_is_pulled_again(
    pushed_model, oci_registry, cache_dir, serve_logs, tmp_path
):
    reference, total_bytes = pushed_model
    auth = _auth_file(tmp_path, oci_registry, oci_registry.password)
    with _serve(reference, cache_dir, serve_logs, auth):
        pass
    entry = cache_dir / reference.rsplit("@", 1)[1].replace(":", "-")
    weights = entry / "content" / "model.onnx.data"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with _serve(reference, cache_dir, serve_logs, auth) as server:
        _generates(server.base)
        assert _gauge(server.metrics_url, "slmops_model_download_bytes") == total_bytes
        assert "failed verification" in server.log()
    # a cache entry without its manifest (as an interrupted copy would be) is not trusted
    (entry / "manifest.json").unlink()
    with _serve(reference, cache_dir, serve_logs, auth) as server:
        assert _gauge(server.metrics_url, "slmops_model_download_bytes") == total_bytes


@pytest.mark.parametrize(
    ("make_reference", "message"),
    [
        (lambda host: f"oci://{host}/{REPOSITORY}:v1", "must be pinned by digest"),
        (lambda host: f"oci://{host}/{REPOSITORY}@sha256:{'0' * 64}", "not found"),
        (lambda host: f"oci://{host}/{REPOSITORY}@sha256:abc", "64 hex digits"),
    ],
)
def test_unusable_references_stop_the_server_with_a_clear_error(
    oci_registry, cache_dir, serve_logs, tmp_path, make_reference, message
):
    auth = _auth_file(tmp_path, oci_registry, oci_registry.password)
    with slmops_serve(
        make_reference(oci_registry.host),
        serve_logs,
        model_name=TEXT_MODEL_NAME,
        extra_args=["--cache-dir", str(cache_dir), "--plain-http"],
        env={"SLMOPS_REGISTRY_AUTH_FILE": str(auth)},
        wait_ready=False,
    ) as server:
        assert server.process.wait(timeout=60) == 1
        assert message in server.log()
    assert not cache_dir.exists() or not any(cache_dir.iterdir())
