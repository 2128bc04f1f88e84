"""Package a built variant as a CNCF ModelPack artifact, and optionally as a runnable image.

The artifact is an OCI image manifest with `artifactType`
application/vnd.cncf.model.manifest.v1+json, a model config blob, and one uncompressed layer
per file, each annotated with the file's relative path (`org.cncf.model.filepath`), so a
puller gets the files back exactly and can skip the ones it already has.

The runnable image is a base image (already in the registry) plus one uncompressed tar layer
holding the model under /models/<name>/, with SLMOPS_MODEL_PATH pointing there. Both are
assembled and pushed through the registry HTTP API: no Docker daemon is needed.

Everything is deterministic: files are sorted, the tar has fixed owners, modes and times,
JSON is serialized with sorted keys, so the same files and metadata give the same digests.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from slmops.adapters.oci import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    FILEPATH_ANNOTATION,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    Reference,
    RegistryClient,
    RegistryError,
    file_digest,
    sha256_digest,
)

MODEL_ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG_RAW = "application/vnd.cncf.model.weight.config.v1.raw"
DOC_RAW = "application/vnd.cncf.model.doc.v1.raw"

OCI_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

MODEL_PATH_ENV = "SLMOPS_MODEL_PATH"

# Where slmops keeps its measured results inside the ModelPack config: the spec has no field
# for evaluation results, and consumers ignore keys they do not know.
EVALUATION_KEY = "io.slmops.evaluation"

# A fixed time for tar entries and image history: the same files must give the same digest.
EPOCH_ISO = "1970-01-01T00:00:00Z"

_WEIGHT_SUFFIXES = (".onnx", ".data", ".onnx_data", ".bin", ".safetensors", ".pt", ".gguf")
_DOC_NAMES = ("readme", "license", "licence", "notice", "model_card")


def media_type_for(relative_path: PurePosixPath) -> str:
    """ModelPack layer media type of a file: weights, weight config (tokenizer, config.json,
    genai_config.json, …) or documentation."""
    name = relative_path.name.lower()
    if name.endswith(_WEIGHT_SUFFIXES):
        return WEIGHT_RAW
    if name.startswith(_DOC_NAMES) or name.endswith(".md"):
        return DOC_RAW
    return WEIGHT_CONFIG_RAW


@dataclass(frozen=True)
class ModelFile:
    """One file of a model directory and its layer descriptor."""

    path: PurePosixPath
    source: Path
    media_type: str
    digest: str
    size: int

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(
            self.media_type, self.digest, self.size, {FILEPATH_ANNOTATION: str(self.path)}
        )


def list_model_files(model_dir: Path) -> list[ModelFile]:
    """Every regular file under `model_dir`, sorted by relative path, with its digest."""
    if not model_dir.is_dir():
        raise RegistryError(f"model directory {model_dir} does not exist")
    files: list[ModelFile] = []
    for path in sorted(model_dir.rglob("*"), key=lambda p: p.relative_to(model_dir).as_posix()):
        if path.is_symlink():
            raise RegistryError(f"refusing to package symlink {path}: copy the file instead")
        if not path.is_file():
            continue
        relative = PurePosixPath(path.relative_to(model_dir).as_posix())
        digest, size = file_digest(path)
        files.append(ModelFile(relative, path, media_type_for(relative), digest, size))
    if not files:
        raise RegistryError(f"model directory {model_dir} holds no files")
    return files


def format_param_size(parameters: int) -> str:
    """ModelPack paramSize: a count with at most one decimal and a scale letter (26.1m)."""
    for scale, letter in ((10**12, "t"), (10**9, "b"), (10**6, "m"), (10**3, "k")):
        if parameters >= scale:
            return f"{parameters / scale:.1f}{letter}"
    return str(parameters)


@dataclass(frozen=True)
class ModelMetadata:
    """What the ModelPack config says about a variant."""

    name: str
    version: str
    format: str
    precision: str
    quantization: str
    execution_provider: str
    architecture: str = "transformer"
    family: str | None = None
    parameters: int | None = None
    source: str | None = None
    source_digest: str | None = None
    evaluation: Mapping[str, Any] = field(default_factory=dict)


def model_config_json(metadata: ModelMetadata, files: Sequence[ModelFile]) -> bytes:
    descriptor: dict[str, Any] = {"name": metadata.name, "version": metadata.version}
    if metadata.family:
        descriptor["family"] = metadata.family
    if metadata.source:
        descriptor["sourceURL"] = metadata.source
    if metadata.source_digest:
        descriptor["revision"] = metadata.source_digest
    model_config: dict[str, Any] = {
        "architecture": metadata.architecture,
        "format": metadata.format,
        "precision": metadata.precision,
        "quantization": metadata.quantization,
        "executionProvider": metadata.execution_provider,
    }
    if metadata.parameters:
        model_config["paramSize"] = format_param_size(metadata.parameters)
    document: dict[str, Any] = {
        "descriptor": descriptor,
        "config": model_config,
        # Raw layers are uncompressed, so each layer's DiffID is its digest.
        "modelfs": {"type": "layers", "diff_ids": [f.digest for f in files]},
    }
    if metadata.evaluation:
        document[EVALUATION_KEY] = dict(metadata.evaluation)
    return canonical_json(document)


def canonical_json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class ModelPack:
    """A ModelPack artifact ready to push: its files, config and manifest bytes."""

    files: list[ModelFile]
    config: bytes
    manifest: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)


def build_modelpack(model_dir: Path, metadata: ModelMetadata) -> ModelPack:
    files = list_model_files(model_dir)
    config = model_config_json(metadata, files)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": MODEL_ARTIFACT_TYPE,
        "config": Descriptor(MODEL_CONFIG, sha256_digest(config), len(config)).to_json(),
        "layers": [f.descriptor.to_json() for f in files],
        "annotations": {
            "org.opencontainers.image.title": metadata.name,
            "org.opencontainers.image.version": metadata.version,
        },
    }
    return ModelPack(files, config, canonical_json(manifest))


def push_modelpack(client: RegistryClient, repository: str, pack: ModelPack, tag: str) -> str:
    """Push blobs (skipping those the registry has), then the manifest under `tag`;
    returns the manifest digest."""
    for model_file in pack.files:
        client.push_blob(repository, model_file.source)
    client.push_blob(repository, pack.config)
    return client.put_manifest(repository, tag, pack.manifest, OCI_MANIFEST)


def read_model_config(
    client: RegistryClient, repository: str, manifest: Manifest
) -> dict[str, Any]:
    """The ModelPack config of a pushed artifact (e.g. to report an earlier build's results)."""
    if manifest.artifact_type != MODEL_ARTIFACT_TYPE:
        raise RegistryError(
            f"manifest {manifest.digest} is not a model artifact "
            f"(artifactType {manifest.artifact_type!r})"
        )
    document = json.loads(client.fetch_blob(repository, manifest.config.digest))
    if not isinstance(document, dict):
        raise RegistryError(f"model config of {manifest.digest} is not a JSON object")
    return document


# --- runnable image ------------------------------------------------------------------------


def write_model_layer(model_dir: Path, prefix: PurePosixPath, out: Path) -> tuple[str, int]:
    """An uncompressed tar of `model_dir` under `prefix` (e.g. models/demo); returns its
    (digest, size). Owners, modes and times are fixed so the digest depends only on the files.
    """
    files = list_model_files(model_dir)
    directories: set[PurePosixPath] = set()
    for model_file in files:
        for parent in (prefix / model_file.path).parents:
            if parent != PurePosixPath("."):
                directories.add(parent)

    def entry(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.size = size
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for directory in sorted(directories, key=lambda p: (len(p.parts), str(p))):
            tar.addfile(entry(f"{directory}/", tarfile.DIRTYPE, 0o755))
        for model_file in files:
            info = entry(str(prefix / model_file.path), tarfile.REGTYPE, 0o644, model_file.size)
            with model_file.source.open("rb") as stream:
                tar.addfile(info, stream)
    return file_digest(out)


_OCI_LAYER_FOR_DOCKER = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": f"{OCI_LAYER_TAR}+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": OCI_LAYER_TAR,
}


def _resolve_platform_manifest(client: RegistryClient, base: Reference) -> Manifest:
    manifest = client.get_manifest(base.repository, base.reference)
    if manifest.media_type not in (OCI_INDEX, DOCKER_MANIFEST_LIST):
        return manifest
    for entry in manifest.json().get("manifests", []):
        platform = entry.get("platform", {})
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return client.get_manifest(base.repository, str(entry["digest"]))
    raise RegistryError(f"base image {base} has no linux/amd64 manifest")


@dataclass(frozen=True)
class RunnableImage:
    digest: str
    model_layer_digest: str
    model_path: str


def push_runnable_image(
    client: RegistryClient,
    *,
    repository: str,
    tag: str,
    base: Reference,
    model_dir: Path,
    model_name: str,
    work_dir: Path,
) -> RunnableImage:
    """Push base image + one model layer to `repository:tag`; the base must be in the same
    registry (its layers are mounted, not copied through this machine)."""
    if base.registry != client.registry:
        raise RegistryError(
            f"runtime base image {base} must be in registry {client.registry}, "
            "where the model is pushed"
        )
    base_manifest = _resolve_platform_manifest(client, base)
    if base_manifest.media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise RegistryError(f"base image {base} has unsupported type {base_manifest.media_type}")
    image_config = json.loads(client.fetch_blob(base.repository, base_manifest.config.digest))
    if not isinstance(image_config, dict) or "rootfs" not in image_config:
        raise RegistryError(f"base image {base} has no image config with rootfs")

    model_path = PurePosixPath("/models") / model_name
    layer_file = work_dir / f"model-layer-{model_name}.tar"
    layer_digest, layer_size = write_model_layer(model_dir, model_path.relative_to("/"), layer_file)

    layers: list[dict[str, Any]] = []
    for layer in base_manifest.layers:
        if base.repository != repository:
            client.mount_blob(repository, layer.digest, base.repository)
        media_type = _OCI_LAYER_FOR_DOCKER.get(layer.media_type, layer.media_type)
        layers.append(Descriptor(media_type, layer.digest, layer.size).to_json())
    client.push_blob(repository, layer_file)
    layers.append(
        Descriptor(
            OCI_LAYER_TAR, layer_digest, layer_size, {FILEPATH_ANNOTATION: str(model_path)}
        ).to_json()
    )

    image_config["rootfs"] = {
        "type": "layers",
        "diff_ids": [*image_config["rootfs"].get("diff_ids", []), layer_digest],
    }
    runtime = dict(image_config.get("config") or {})
    env = [e for e in runtime.get("Env") or [] if not e.startswith(f"{MODEL_PATH_ENV}=")]
    runtime["Env"] = [*env, f"{MODEL_PATH_ENV}={model_path}"]
    image_config["config"] = runtime
    image_config["history"] = [
        *image_config.get("history", []),
        {"created": EPOCH_ISO, "created_by": f"slmops build: model {model_name} in {model_path}"},
    ]
    config_bytes = canonical_json(image_config)
    client.push_blob(repository, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": Descriptor(
            OCI_IMAGE_CONFIG, sha256_digest(config_bytes), len(config_bytes)
        ).to_json(),
        "layers": layers,
        "annotations": {
            "org.opencontainers.image.base.digest": base_manifest.digest,
            "org.opencontainers.image.base.name": str(base),
        },
    }
    digest = client.put_manifest(repository, tag, canonical_json(manifest), OCI_MANIFEST)
    layer_file.unlink(missing_ok=True)
    return RunnableImage(digest, layer_digest, str(model_path))


def image_tar_layer(files: Mapping[str, bytes]) -> bytes:
    """A deterministic uncompressed tar of in-memory files (to assemble small base images)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o755 if name.startswith(("bin/", "usr/bin/")) else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
