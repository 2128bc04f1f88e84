"""The OCI client and ModelPack packaging against the testbed's real docker-registry
(htpasswd auth, plain HTTP), checked with skopeo as an independent client."""

from __future__ import annotations

import json
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from slmops.adapters.oci import (
    AUTH_FILE_ENV,
    OCI_MANIFEST,
    Credentials,
    NotFoundError,
    Reference,
    RegistryAuthError,
    RegistryClient,
    pull_artifact,
    sha256_digest,
)
from slmops.optimize.packaging import (
    DOC_RAW,
    MODEL_ARTIFACT_TYPE,
    MODEL_CONFIG,
    WEIGHT_CONFIG_RAW,
    WEIGHT_RAW,
    ModelMetadata,
    build_modelpack,
    canonical_json,
    image_tar_layer,
    push_modelpack,
    push_runnable_image,
    read_model_config,
)
from slmops.testbed.registry import RegistryAccess
from slmops.testbed.testbed import Testbed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(testbed: Testbed) -> RegistryAccess:
    return testbed.registry


@pytest.fixture
def client(registry: RegistryAccess) -> RegistryClient:
    return RegistryClient(
        registry.host, credentials=Credentials(registry.username, registry.password), insecure=True
    )


def skopeo_inspect(registry: RegistryAccess, ref: str, *, raw: bool) -> dict[str, object]:
    argv = ["skopeo", "inspect", "--tls-verify=false"]
    argv += ["--creds", f"{registry.username}:{registry.password}"]
    if raw:
        argv.append("--raw")
    result = subprocess.run(
        [*argv, f"docker://{ref}"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    (directory / "tokenizer").mkdir(parents=True)
    (directory / "model.onnx").write_bytes(b"\x08\x07" + uuid.uuid4().bytes * 4096)
    (directory / "genai_config.json").write_text('{"model": {"type": "llama"}}')
    (directory / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0"}')
    (directory / "README.md").write_text("demo model\n")
    return directory


def metadata() -> ModelMetadata:
    return ModelMetadata(
        name="demo-int4",
        version="r1",
        format="onnx-genai",
        precision="int4",
        quantization="int4-matmulnbits-block32",
        execution_provider="cpu",
        parameters=26_100_000,
        evaluation={"speedup": 4.2, "perplexityDeltaPercent": 1.5},
    )


def test_wrong_credentials_are_refused_by_the_real_registry(registry: RegistryAccess) -> None:
    client = RegistryClient(
        registry.host, credentials=Credentials(registry.username, "wrong"), insecure=True
    )
    with pytest.raises(RegistryAuthError, match="registry refused credentials") as excinfo:
        client.ping()
    assert registry.password not in str(excinfo.value)
    anonymous = RegistryClient(registry.host, insecure=True)
    with pytest.raises(RegistryAuthError, match=AUTH_FILE_ENV):
        anonymous.ping()


def test_credentials_from_a_dockerconfigjson_file(
    registry: RegistryAccess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = tmp_path / ".dockerconfigjson"
    auth.write_text(
        json.dumps(
            {
                "auths": {
                    registry.host: {"username": registry.username, "password": registry.password}
                }
            }
        )
    )
    monkeypatch.setenv(AUTH_FILE_ENV, str(auth))
    with RegistryClient.from_environment(registry.host, insecure=True) as client:
        client.ping()
        assert client.manifest_digest("models/absent", "v1") is None


def test_modelpack_push_is_visible_to_skopeo_and_pulls_back_verified(
    registry: RegistryAccess, client: RegistryClient, tmp_path: Path
) -> None:
    source = model_dir(tmp_path)
    pack = build_modelpack(source, metadata())
    # Deterministic: the same files and metadata give the same manifest digest.
    assert build_modelpack(source, metadata()).digest == pack.digest
    digest = push_modelpack(client, "models/pack-test", pack, "int4-r1")
    assert digest == pack.digest

    manifest = skopeo_inspect(registry, f"{registry.host}/models/pack-test:int4-r1", raw=True)
    assert manifest["artifactType"] == MODEL_ARTIFACT_TYPE
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == MODEL_CONFIG  # type: ignore[index]
    layers = {
        layer["annotations"]["org.cncf.model.filepath"]: layer["mediaType"]
        for layer in manifest["layers"]  # type: ignore[attr-defined]
    }
    assert layers == {
        "README.md": DOC_RAW,
        "genai_config.json": WEIGHT_CONFIG_RAW,
        "model.onnx": WEIGHT_RAW,
        "tokenizer/tokenizer.json": WEIGHT_CONFIG_RAW,
    }
    by_digest = skopeo_inspect(registry, f"{registry.host}/models/pack-test@{digest}", raw=True)
    assert by_digest == manifest

    config = read_model_config(
        client, "models/pack-test", client.get_manifest("models/pack-test", digest)
    )
    assert config["config"]["precision"] == "int4"
    assert config["config"]["paramSize"] == "26.1m"
    assert config["io.slmops.evaluation"]["speedup"] == 4.2
    assert config["modelfs"]["diff_ids"] == [layer["digest"] for layer in manifest["layers"]]  # type: ignore[attr-defined]

    dest = tmp_path / "cache"
    pulled = pull_artifact(f"oci://{registry.host}/models/pack-test@{digest}", dest, client=client)
    assert pulled.digest == digest
    for path in source.rglob("*"):
        if path.is_file():
            assert (dest / path.relative_to(source)).read_bytes() == path.read_bytes()
    # A second pull keeps what is there and verified.
    before = (dest / "model.onnx").stat().st_mtime_ns
    pull_artifact(f"{registry.host}/models/pack-test@{digest}", dest, client=client)
    assert (dest / "model.onnx").stat().st_mtime_ns == before


def test_missing_artifact_is_a_clear_not_found(client: RegistryClient, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        pull_artifact(
            Reference("unused", "models/never-pushed", "nope"), tmp_path / "x", client=client
        )


def push_base_image(client: RegistryClient, repository: str) -> str:
    """A tiny base image of our own: one tar layer with a script, an OCI image config."""
    layer = image_tar_layer(
        {"bin/hello": b"#!/bin/sh\necho hello\n", "etc/os-release": b"ID=test\n"}
    )
    layer_digest, layer_size = client.push_blob(repository, layer)
    config = canonical_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin", "SLMOPS_MODEL_PATH=/old"], "Cmd": ["/bin/hello"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created_by": "test base"}],
        }
    )
    config_digest, config_size = client.push_blob(repository, config)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": layer_size,
                }
            ],
        }
    )
    return client.put_manifest(repository, "base", manifest)


def test_runnable_image_is_base_plus_one_model_layer(
    registry: RegistryAccess, client: RegistryClient, tmp_path: Path
) -> None:
    base_digest = push_base_image(client, "runtime/base")
    source = model_dir(tmp_path)
    base = Reference(registry.host, "runtime/base", None, base_digest)
    image = push_runnable_image(
        client,
        repository="models/runnable-test",
        tag="int4-r1-image",
        base=base,
        model_dir=source,
        model_name="demo-int4",
        work_dir=tmp_path,
    )
    inspected = skopeo_inspect(
        registry, f"{registry.host}/models/runnable-test@{image.digest}", raw=False
    )
    assert "SLMOPS_MODEL_PATH=/models/demo-int4" in inspected["Env"]  # type: ignore[operator]
    assert "SLMOPS_MODEL_PATH=/old" not in inspected["Env"]  # type: ignore[operator]
    assert "PATH=/bin" in inspected["Env"]  # type: ignore[operator]
    assert len(inspected["Layers"]) == 2  # type: ignore[arg-type]
    assert inspected["Layers"][-1] == image.model_layer_digest  # type: ignore[index]

    # Copy it out with skopeo and look inside the model layer.
    layout = tmp_path / "layout"
    subprocess.run(
        [
            "skopeo", "copy", "--src-tls-verify=false",
            "--src-creds", f"{registry.username}:{registry.password}",
            f"docker://{registry.host}/models/runnable-test@{image.digest}", f"oci:{layout}:x",
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    # skopeo may recompress layers on copy: follow the layout's own manifest to the last one.
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    copied = json.loads(
        (blobs / index["manifests"][0]["digest"].removeprefix("sha256:")).read_text()
    )
    last_layer = copied["layers"][-1]["digest"].removeprefix("sha256:")
    with tarfile.open(blobs / last_layer, "r:*") as tar:
        names = set(tar.getnames())
        assert "models/demo-int4/model.onnx" in names
        extracted = tar.extractfile("models/demo-int4/tokenizer/tokenizer.json")
        assert extracted is not None and extracted.read() == b'{"version": "1.0"}'
        assert {m.mtime for m in tar.getmembers()} == {0}

    # Same inputs, same image digest (fixed tar metadata and JSON).
    again = push_runnable_image(
        client,
        repository="models/runnable-test",
        tag="int4-r1-image",
        base=base,
        model_dir=source,
        model_name="demo-int4",
        work_dir=tmp_path,
    )
    assert again.digest == image.digest
    assert sha256_digest(b"") != image.digest
