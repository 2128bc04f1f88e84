"""Where the served model's files come from: a local path, or an `oci://` artifact pulled by
digest into a node-local cache.

The cache holds one directory per manifest digest. A directory appears under its final name
only after every layer was downloaded and verified (it is assembled under a temporary name
and renamed), so a crash mid-download never leaves something that looks complete. A second
pod on the node, or a rollback to a revision the node already had, finds the directory and
downloads nothing; its files are still re-hashed against the stored manifest before use, so
a corrupted cache is noticed and pulled again instead of served.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from slmops.adapters.oci import (
    Manifest,
    Reference,
    RegistryError,
    file_digest,
    iter_model_layers,
    pull_artifact,
    sha256_digest,
)

log = logging.getLogger(__name__)

OCI_SCHEME = "oci://"
_MANIFEST_FILE = "manifest.json"
_CONTENT_DIR = "content"


class ModelStoreError(Exception):
    """The model cannot be had; the message says why."""


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    # set for oci:// models
    digest: str | None = None
    downloaded_bytes: int = 0
    download_seconds: float = 0.0
    from_cache: bool = False


def resolve_model(
    model: str,
    cache_dir: Path,
    *,
    plain_http: bool = False,
    auth_file: str | Path | None = None,
) -> ResolvedModel:
    if not model.startswith(OCI_SCHEME):
        path = Path(model).expanduser()
        if not path.exists():
            raise ModelStoreError(f"model path {path} does not exist")
        return ResolvedModel(path=path.resolve())
    try:
        reference = Reference.parse(model)
    except RegistryError as error:
        raise ModelStoreError(str(error)) from error
    if reference.digest is None:
        raise ModelStoreError(
            f"{model}: an oci:// model must be pinned by digest (…@sha256:<64 hex>), so that "
            "every node serves the same bytes and the cache can be keyed by it"
        )
    return _pull_into_cache(reference, reference.digest, cache_dir, plain_http, auth_file)


def cache_entry(cache_dir: Path, digest: str) -> Path:
    return cache_dir / digest.replace(":", "-")


def _pull_into_cache(
    reference: Reference,
    digest: str,
    cache_dir: Path,
    plain_http: bool,
    auth_file: str | Path | None,
) -> ResolvedModel:
    entry = cache_entry(cache_dir, digest)
    if entry.is_dir():
        if _verify_entry(entry, digest):
            log.info("model %s found in the node-local cache %s", digest, entry)
            return ResolvedModel(path=entry / _CONTENT_DIR, digest=digest, from_cache=True)
        log.warning("cached model %s failed verification; pulling it again", digest)
        shutil.rmtree(entry, ignore_errors=True)

    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = cache_dir / f".partial-{digest.replace(':', '-')}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    started = time.perf_counter()
    try:
        manifest = pull_artifact(
            reference, staging / _CONTENT_DIR, insecure=plain_http, auth_file=auth_file
        )
        if manifest.digest != digest:
            raise ModelStoreError(f"{reference}: registry served manifest {manifest.digest}")
        (staging / _MANIFEST_FILE).write_bytes(manifest.raw)
        downloaded = sum(layer.size for layer in manifest.layers)
        seconds = time.perf_counter() - started
        try:
            staging.rename(entry)
        except OSError:
            # Another pod on this node finished the same pull first; its copy is as good.
            if not _verify_entry(entry, digest):
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except RegistryError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelStoreError(f"pulling {reference} failed: {error}") from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("pulled %s (%d bytes) in %.2f s into %s", reference, downloaded, seconds, entry)
    return ResolvedModel(
        path=entry / _CONTENT_DIR,
        digest=digest,
        downloaded_bytes=downloaded,
        download_seconds=seconds,
    )


def _verify_entry(entry: Path, digest: str) -> bool:
    manifest_file = entry / _MANIFEST_FILE
    try:
        raw = manifest_file.read_bytes()
    except OSError:
        return False
    if sha256_digest(raw) != digest:
        return False
    try:
        manifest = Manifest(media_type="", digest=digest, raw=raw)
        for layer, relative in iter_model_layers(manifest):
            target = entry / _CONTENT_DIR / relative
            if not target.is_file() or file_digest(target) != (layer.digest, layer.size):
                return False
    except (RegistryError, ValueError, KeyError):
        return False
    return True


def describe(resolved: ResolvedModel) -> str:
    if resolved.digest is None:
        return str(resolved.path)
    source = "cache" if resolved.from_cache else f"{resolved.downloaded_bytes} bytes downloaded"
    return f"{resolved.digest} at {resolved.path} ({source})"
