"""A model pushed cleanly, then altered inside the registry's own storage: every client that
reads the altered bytes must notice, because the registry itself never re-hashes what it
serves (CNCF distribution streams the file behind a digest as it is, and even answers a
by-digest manifest request with `Docker-Content-Digest` set to the digest that was asked for).

Two real clients read the testbed registry here: `slmops serve` (the model server's `oci://`
model store, as a pod runs it) and skopeo. What skopeo 1.9 does, recorded by these tests:

- `skopeo copy` hashes every blob and the manifest: an altered weights blob fails with
  "Digest did not match, expected …, got …" (the blobs before it are already in the target
  `dir:`, the altered one never is); an altered manifest fails with "Manifest does not match
  provided manifest digest" before anything is copied.
- `skopeo inspect --raw` prints the altered manifest and exits 0: with --raw it does not
  verify the digest it was given.
- `skopeo inspect` without --raw verifies the manifest ("Manifest does not match provided
  manifest digest"); with an intact manifest it then refuses any ModelPack artifact
  ("unsupported image-specific operation on artifact with type
  application/vnd.cncf.model.config.v1+json"), so it never reads, nor checks, the layers.

Blobs are stored once per digest for the whole registry, so each test pushes an artifact whose
bytes exist nowhere else (a random suffix on the weights, a random version in the manifest) in
a repository of its own: altering it cannot corrupt a blob another test pushed.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from slmops.adapters.oci import Credentials, RegistryClient
from slmops.optimize.packaging import ModelMetadata, build_modelpack, push_modelpack
from slmops.runtime.model_store import resolve_model
from slmops.testbed.registry import RegistryAccess
from slmops.testbed.testbed import Testbed
from tests.serving.fixtures import (  # noqa: F401 (fixtures)
    TEXT_MODEL_NAME,
    fixture_serve_logs,
    fixture_text_model_fp32,
)
from tests.serving.processes import RunningServer, slmops_serve

pytestmark = pytest.mark.integration

WEIGHTS_FILE = "model.onnx.data"


@dataclass(frozen=True)
class PushedModel:
    repository: str
    manifest_digest: str
    weights_digest: str
    version: str
    """Random, in the manifest's annotations: what makes the manifest unique."""

    def reference(self, registry: RegistryAccess) -> str:
        return f"{registry.host}/{self.repository}@{self.manifest_digest}"


def stored_blob(testbed: Testbed, digest: str) -> Path:
    """Where the registry (filesystem storage driver) keeps the bytes of `digest`."""
    hex_digest = digest.removeprefix("sha256:")
    blobs = testbed.state_dir / "registry" / "storage" / "docker" / "registry" / "v2" / "blobs"
    path = blobs / "sha256" / hex_digest[:2] / hex_digest / "data"
    assert path.is_file(), f"the registry stores no blob {digest} at {path}"
    return path


@pytest.fixture(name="pushed")
def fixture_pushed(testbed: Testbed, text_model_fp32: Path, tmp_path: Path) -> PushedModel:
    unique = uuid.uuid4().hex
    model = tmp_path / "model"
    shutil.copytree(text_model_fp32, model)
    # onnxruntime reads external data by offset and length, so bytes after the last tensor
    # change the blob's digest and nothing the model does (the test serves it to prove it).
    with (model / WEIGHTS_FILE).open("ab") as weights:
        weights.write(unique.encode())
    pack = build_modelpack(
        model,
        ModelMetadata(
            name="tamper-test",
            version=unique,
            format="onnx",
            precision="fp32",
            quantization="none",
            execution_provider="cpu",
        ),
    )
    access = testbed.registry
    repository = f"tamper/{unique[:12]}"
    credentials = Credentials(access.username, access.password)
    with RegistryClient(access.host, credentials=credentials, insecure=True) as client:
        digest = push_modelpack(client, repository, pack, "v1")
    (weights_file,) = [f for f in pack.files if f.path.name == WEIGHTS_FILE]
    return PushedModel(repository, digest, weights_file.digest, unique)


def auth_file(directory: Path, access: RegistryAccess) -> Path:
    token = base64.b64encode(f"{access.username}:{access.password}".encode()).decode()
    path = directory / "registry-auth.json"
    path.write_text(json.dumps({"auths": {access.host: {"auth": token}}}))
    return path


def serve(
    reference: str, cache: Path, logs: Path, auth: Path, *, wait_ready: bool
) -> AbstractContextManager[RunningServer]:
    return slmops_serve(
        f"oci://{reference}",
        logs,
        model_name=TEXT_MODEL_NAME,
        extra_args=["--cache-dir", str(cache), "--plain-http"],
        env={"SLMOPS_REGISTRY_AUTH_FILE": str(auth)},
        wait_ready=wait_ready,
    )


def generates(base: str) -> None:
    response = httpx.post(
        f"{base}/v2/models/{TEXT_MODEL_NAME}/generate",
        json={"text_input": "Hello", "max_tokens": 4, "temperature": 0},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, check=False, timeout=120
    )


def skopeo_copy(access: RegistryAccess, reference: str, target: Path) -> str:
    """skopeo copy to a `dir:`; returns its error (empty on success)."""
    creds = f"{access.username}:{access.password}"
    result = skopeo(
        "copy",
        "--src-tls-verify=false",
        f"--src-creds={creds}",
        f"docker://{reference}",
        f"dir:{target}",
    )
    return "" if result.returncode == 0 else result.stderr


def flip_a_byte(data: bytes) -> bytes:
    # Same length: the registry's size bookkeeping still agrees; only the content is wrong.
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def cut_in_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def doubled(data: bytes) -> bytes:
    # Longer than the manifest declares; the registry serves the file's real length.
    return data + data


@pytest.mark.parametrize(
    "alter", [flip_a_byte, cut_in_half, doubled], ids=["same-size", "truncated", "grown"]
)
def test_altered_weights_in_storage_are_refused_by_the_server_and_by_skopeo_copy(
    testbed: Testbed,
    pushed: PushedModel,
    serve_logs: Path,
    tmp_path: Path,
    alter: Callable[[bytes], bytes],
) -> None:
    access = testbed.registry
    reference = pushed.reference(access)
    auth = auth_file(tmp_path, access)
    pulled_before = tmp_path / "cache-pulled-before"
    # Control: before the change the artifact pulls and verifies (as a node that had it
    # earlier did; that it also serves is shown after the change, from this copy).
    before = resolve_model(f"oci://{reference}", pulled_before, plain_http=True, auth_file=auth)
    assert before.downloaded_bytes > 0
    assert skopeo_copy(access, reference, tmp_path / "copy-before") == ""

    blob = stored_blob(testbed, pushed.weights_digest)
    blob.write_bytes(alter(blob.read_bytes()))

    fresh_cache = tmp_path / "cache-fresh"
    with serve(reference, fresh_cache, serve_logs, auth, wait_ready=False) as server:
        assert server.process.wait(timeout=60) == 1, server.log()[-3000:]
        log = server.log()
    assert f"blob {pushed.weights_digest} in {pushed.repository}" in log, log[-3000:]
    # A grown blob is cut off at the size its manifest declares, before its digest is known.
    refused = "its manifest declares" if alter is doubled else "content hashes to sha256:"
    assert refused in log and "nothing was kept" in log, log[-3000:]
    # Nothing half-pulled stays behind to be taken for the model later.
    assert not fresh_cache.exists() or not list(fresh_cache.iterdir())

    # The node that pulled before the change re-verifies its copy and serves the good bytes.
    with serve(reference, pulled_before, serve_logs, auth, wait_ready=True) as server:
        generates(server.base)
        assert "found in the node-local cache" in server.log()

    copy_target = tmp_path / "copy-after"
    error = skopeo_copy(access, reference, copy_target)
    assert f"Digest did not match, expected {pushed.weights_digest}, got sha256:" in error, error
    assert not (copy_target / pushed.weights_digest.removeprefix("sha256:")).exists()
    # Recorded: plain inspect stops at the artifact type and never reads a layer.
    creds = f"--creds={access.username}:{access.password}"
    image = skopeo("inspect", "--tls-verify=false", creds, f"docker://{reference}")
    assert image.returncode != 0
    assert "unsupported image-specific operation on artifact" in image.stderr, image.stderr


def test_an_altered_manifest_in_storage_is_refused_by_digest(
    testbed: Testbed, pushed: PushedModel, serve_logs: Path, tmp_path: Path
) -> None:
    access = testbed.registry
    reference = pushed.reference(access)
    stored = stored_blob(testbed, pushed.manifest_digest)
    original = stored.read_bytes()
    # One character of the random version annotation: still a valid manifest of the same
    # size, which the registry parses and serves as the answer to the original digest.
    at = original.index(pushed.version.encode())
    replacement = b"0" if original[at : at + 1] != b"0" else b"1"
    stored.write_bytes(original[:at] + replacement + original[at + 1 :])

    cache = tmp_path / "cache"
    auth = auth_file(tmp_path, access)
    with serve(reference, cache, serve_logs, auth, wait_ready=False) as server:
        assert server.process.wait(timeout=60) == 1, server.log()[-3000:]
        log = server.log()
    assert f"manifest {pushed.repository}@{pushed.manifest_digest}" in log, log[-3000:]
    assert "registry returned content hashing to sha256:" in log
    assert not cache.exists() or not list(cache.iterdir())

    copy_target = tmp_path / "copy"
    error = skopeo_copy(access, reference, copy_target)
    assert "Manifest does not match provided manifest digest" in error, error
    copied = sorted(p.name for p in copy_target.iterdir()) if copy_target.exists() else []
    assert copied in ([], ["version"]), copied

    creds = f"--creds={access.username}:{access.password}"
    raw = skopeo("inspect", "--raw", "--tls-verify=false", creds, f"docker://{reference}")
    # Recorded, not wished for: --raw prints whatever the registry sends, unverified.
    assert raw.returncode == 0, raw.stderr
    assert pushed.version.encode() not in raw.stdout.encode()
    image = skopeo("inspect", "--tls-verify=false", creds, f"docker://{reference}")
    assert image.returncode != 0
    assert "Manifest does not match provided manifest digest" in image.stderr, image.stderr
