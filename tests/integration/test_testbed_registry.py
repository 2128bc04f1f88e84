"""The testbed's OCI registry is real and enforces its htpasswd credentials: an image
pushed with them (by skopeo, an independent client) pulls back byte-identical; without
them, both push and pull are refused."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from slmops.testbed.testbed import Testbed

pytestmark = pytest.mark.integration


def _blob(layout: Path, content: bytes) -> dict[str, object]:
    digest = hashlib.sha256(content).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(content)
    return {"digest": f"sha256:{digest}", "size": len(content)}


def make_oci_layout(layout: Path, tag: str, payload: bytes) -> str:
    """A minimal single-layer image as an OCI image layout; returns the layer digest."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as archive:
        info = tarfile.TarInfo("payload.bin")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    layer_content = tar_bytes.getvalue()
    layer = _blob(layout, layer_content)
    diff_id = f"sha256:{hashlib.sha256(layer_content).hexdigest()}"
    config = _blob(
        layout,
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "config": {},
            }
        ).encode(),
    )
    manifest = _blob(
        layout,
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
            }
        ).encode(),
    )
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        **manifest,
                        "annotations": {"org.opencontainers.image.ref.name": tag},
                    }
                ],
            }
        )
    )
    return str(layer["digest"])


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_push_with_credentials_pulls_back_and_without_is_refused(
    testbed: Testbed, tmp_path: Path
) -> None:
    registry = testbed.registry
    creds = f"{registry.username}:{registry.password}"
    reference = f"docker://{registry.host}/testbed/probe-{uuid.uuid4().hex[:8]}:v1"
    payload = uuid.uuid4().bytes * 1000
    make_oci_layout(tmp_path / "src", "v1", payload)

    refused_push = skopeo(
        "copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'src'}:v1", reference
    )
    assert refused_push.returncode != 0
    assert "unauthorized" in refused_push.stderr.lower()

    pushed = skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"--dest-creds={creds}",
        f"oci:{tmp_path / 'src'}:v1",
        reference,
    )
    assert pushed.returncode == 0, pushed.stderr

    refused_pull = skopeo("inspect", "--tls-verify=false", "--no-creds", reference)
    assert refused_pull.returncode != 0
    assert "unauthorized" in refused_pull.stderr.lower()
    wrong_password = skopeo(
        "inspect", "--tls-verify=false", f"--creds={registry.username}:wrong", reference
    )
    assert wrong_password.returncode != 0

    pulled = skopeo(
        "copy",
        "--src-tls-verify=false",
        f"--src-creds={creds}",
        reference,
        f"oci:{tmp_path / 'dst'}:v1",
    )
    assert pulled.returncode == 0, pulled.stderr
    # skopeo may have compressed the layer on push, so follow the pulled manifest.
    blobs = tmp_path / "dst" / "blobs" / "sha256"
    index = json.loads((tmp_path / "dst" / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    pulled_layer = blobs / manifest["layers"][0]["digest"].split(":", 1)[1]
    with tarfile.open(pulled_layer) as archive:
        member = archive.extractfile("payload.bin")
        assert member is not None
        assert member.read() == payload


def test_registry_can_be_stopped_and_started_again(testbed: Testbed) -> None:
    registry = testbed.registry
    creds = f"{registry.username}:{registry.password}"
    catalog = ["inspect", "--tls-verify=false", f"--creds={creds}"]
    testbed.stop_registry()
    try:
        down = skopeo(*catalog, f"docker://{registry.host}/testbed/none:v1")
        assert "connection refused" in down.stderr.lower()
    finally:
        testbed.start_registry()
    up = skopeo(*catalog, f"docker://{registry.host}/testbed/none:v1")
    assert "connection refused" not in up.stderr.lower()
    assert "manifest unknown" in up.stderr.lower() or "not found" in up.stderr.lower()
