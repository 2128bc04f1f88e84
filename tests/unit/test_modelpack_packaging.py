"""ModelPack layout and determinism, without a registry."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from slmops.adapters.oci import RegistryError, sha256_digest
from slmops.optimize.packaging import (
    DOC_RAW,
    EVALUATION_KEY,
    MODEL_ARTIFACT_TYPE,
    MODEL_CONFIG,
    WEIGHT_CONFIG_RAW,
    WEIGHT_RAW,
    ModelMetadata,
    build_modelpack,
    format_param_size,
    media_type_for,
    write_model_layer,
)

pytestmark = pytest.mark.unit

META = ModelMetadata(
    name="demo-int4",
    version="r1",
    format="onnx-genai",
    precision="int4",
    quantization="int4-matmulnbits-block32",
    execution_provider="cpu",
    parameters=26_123_456,
    evaluation={"speedup": 4.1},
)


def make_model(root: Path, mtime: int) -> Path:
    (root / "tok").mkdir(parents=True)
    files = {
        "model.onnx": b"graph",
        "model.onnx.data": b"weights" * 10,
        "genai_config.json": b"{}",
        "tok/tokenizer.json": b"{}",
        "LICENSE": b"Apache-2.0",
    }
    for name, content in files.items():
        path = root / name
        path.write_bytes(content)
        os.utime(path, (mtime, mtime))
    return root


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("model.onnx", WEIGHT_RAW),
        ("model.onnx.data", WEIGHT_RAW),
        ("model.safetensors", WEIGHT_RAW),
        ("genai_config.json", WEIGHT_CONFIG_RAW),
        ("tokenizer.json", WEIGHT_CONFIG_RAW),
        ("README.md", DOC_RAW),
        ("LICENSE", DOC_RAW),
    ],
)
def test_media_types(name: str, media_type: str) -> None:
    assert media_type_for(PurePosixPath(name)) == media_type


def test_param_size_format() -> None:
    assert format_param_size(26_123_456) == "26.1m"
    assert format_param_size(6_700_000_000) == "6.7b"
    assert format_param_size(900) == "900"


def test_manifest_and_config_follow_modelpack(tmp_path: Path) -> None:
    pack = build_modelpack(make_model(tmp_path / "m", 1000), META)
    manifest = json.loads(pack.manifest)
    assert manifest["artifactType"] == MODEL_ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == MODEL_CONFIG
    assert manifest["config"]["digest"] == sha256_digest(pack.config)
    paths = [layer["annotations"]["org.cncf.model.filepath"] for layer in manifest["layers"]]
    assert paths == sorted(paths)
    assert set(paths) == {
        "LICENSE",
        "genai_config.json",
        "model.onnx",
        "model.onnx.data",
        "tok/tokenizer.json",
    }
    config = json.loads(pack.config)
    assert config["config"] == {
        "architecture": "transformer",
        "executionProvider": "cpu",
        "format": "onnx-genai",
        "paramSize": "26.1m",
        "precision": "int4",
        "quantization": "int4-matmulnbits-block32",
    }
    assert config["modelfs"]["diff_ids"] == [layer["digest"] for layer in manifest["layers"]]
    assert config[EVALUATION_KEY] == {"speedup": 4.1}
    assert pack.size_bytes == sum(layer["size"] for layer in manifest["layers"])


def test_same_files_same_digests_regardless_of_times(tmp_path: Path) -> None:
    first = build_modelpack(make_model(tmp_path / "a", 1000), META)
    second = build_modelpack(make_model(tmp_path / "b", 2_000_000), META)
    assert first.digest == second.digest
    layer_a = write_model_layer(tmp_path / "a", PurePosixPath("models/demo"), tmp_path / "a.tar")
    layer_b = write_model_layer(tmp_path / "b", PurePosixPath("models/demo"), tmp_path / "b.tar")
    assert layer_a == layer_b
    with tarfile.open(tmp_path / "a.tar") as tar:
        names = tar.getnames()
        assert names[:3] == ["models", "models/demo", "models/demo/tok"]
        assert "models/demo/tok/tokenizer.json" in names
        assert {(m.uid, m.gid, m.mtime) for m in tar.getmembers()} == {(0, 0, 0)}


def test_symlinks_and_empty_directories_are_refused(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m", 1000)
    (model / "link.onnx").symlink_to(model / "model.onnx")
    with pytest.raises(RegistryError, match="symlink"):
        build_modelpack(model, META)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="no files"):
        build_modelpack(tmp_path / "empty", META)
