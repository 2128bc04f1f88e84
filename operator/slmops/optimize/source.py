"""Fetch a model source into a work directory and prove it is the one the spec names.

Sources are `file://` (a file or a directory), `https://` (streamed, with a size limit) and
`oci://REGISTRY/REPO@sha256:…` (a ModelPack artifact, pulled layer by layer). Each is checked
against the spec's sha256 before anything uses it:
- a single file: sha256 of its bytes;
- a directory: the sha256 of its `sha256sum`-style listing (`directory_digest`), so a person
  can compute it with `find . -type f | sort | xargs sha256sum`-like tools or
  `slmops model digest DIR`;
- oci: the manifest digest, which pins every layer by digest in turn.
A `.tar`, `.tar.gz` or `.tgz` file is verified as a file, then unpacked (safely) into a
directory.
"""

from __future__ import annotations

import hashlib
import ipaddress
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import httpx

from slmops.adapters.oci import (
    Reference,
    RegistryClient,
    RegistryError,
    RegistryUnavailableError,
    pull_artifact,
)

DEFAULT_MAX_DOWNLOAD_BYTES = 20 << 30
_CHUNK = 1 << 20
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


class SourceError(Exception):
    """The source could not be fetched (missing, unreachable, unsupported, too large)."""


class SourceUnreachableError(SourceError):
    """The source's server (a registry, a web server) did not answer or failed: it may well
    answer later, unlike a source that is missing or refused."""


class SourceVerificationError(SourceError):
    """The fetched source does not hash to the expected sha256."""

    def __init__(self, uri: str, expected: str, actual: str, what: str) -> None:
        super().__init__(
            f"source {uri} does not match its sha256: expected {expected}, got {actual} "
            f"({what}); nothing was built or pushed"
        )
        self.expected = expected
        self.actual = actual


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def directory_listing(directory: Path) -> str:
    """`<sha256>  <relative path>` per regular file, sorted by path, like sha256sum prints."""
    lines = []
    for path in sorted(
        (p for p in directory.rglob("*") if p.is_file()),
        key=lambda p: p.relative_to(directory).as_posix(),
    ):
        lines.append(f"{file_sha256(path)}  {path.relative_to(directory).as_posix()}\n")
    return "".join(lines)


def directory_digest(directory: Path) -> str:
    """The canonical sha256 of a directory: sha256 over its `directory_listing`."""
    if not directory.is_dir():
        raise SourceError(f"{directory} is not a directory")
    return hashlib.sha256(directory_listing(directory).encode()).hexdigest()


def path_digest(path: Path) -> str:
    """sha256 of a file, or the canonical digest of a directory."""
    return directory_digest(path) if path.is_dir() else file_sha256(path)


@dataclass(frozen=True)
class FetchedSource:
    """A verified source: `path` is the model file or directory to build from."""

    uri: str
    path: Path
    sha256: str


def _is_archive(name: str) -> bool:
    return name.lower().endswith(_ARCHIVE_SUFFIXES)


def _unpack(archive: Path, dest: Path) -> Path:
    """Unpack into `dest`, refusing links, devices and paths that leave it."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise SourceError(f"cannot unpack {archive.name}: {exc}") from exc
    entries = list(dest.iterdir())
    # A checkpoint tarred as its folder unpacks to one directory: build from inside it.
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def _verify(uri: str, path: Path, expected: str, what: str) -> None:
    actual = path_digest(path)
    if actual != expected:
        raise SourceVerificationError(uri, expected, actual, what)


def _fetch_file(uri: str, expected: str, work_dir: Path) -> FetchedSource:
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise SourceError(f"{uri}: file:// URIs must be local (file:///path)")
    path = Path(unquote(parsed.path))
    if not path.exists():
        raise SourceError(f"source {uri} does not exist")
    if path.is_dir():
        _verify(uri, path, expected, "directory digest over its sha256sum listing")
        return FetchedSource(uri, path, expected)
    _verify(uri, path, expected, "sha256 of the file")
    if _is_archive(path.name):
        return FetchedSource(uri, _unpack(path, work_dir / "source"), expected)
    return FetchedSource(uri, path, expected)


def _fetch_https(
    uri: str, expected: str, work_dir: Path, max_bytes: int, transport: httpx.BaseTransport | None
) -> FetchedSource:
    name = PurePosixPath(urlparse(uri).path).name or "source"
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / name
    partial = work_dir / f".{name}.partial"
    hasher = hashlib.sha256()
    size = 0
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=60.0, transport=transport) as http,
            http.stream("GET", uri) as response,
        ):
            if response.status_code >= 500 or response.status_code == 429:
                raise SourceUnreachableError(f"source {uri}: HTTP {response.status_code}")
            if response.status_code != 200:
                raise SourceError(f"source {uri}: HTTP {response.status_code}")
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > max_bytes:
                raise SourceError(f"source {uri} is {declared} bytes, over the {max_bytes} limit")
            with partial.open("wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise SourceError(f"source {uri} is larger than the {max_bytes} limit")
                    hasher.update(chunk)
                    out.write(chunk)
    except httpx.HTTPError as exc:
        partial.unlink(missing_ok=True)
        failure = SourceUnreachableError if isinstance(exc, httpx.TransportError) else SourceError
        raise failure(f"source {uri} cannot be downloaded ({type(exc).__name__})") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    actual = hasher.hexdigest()
    if actual != expected:
        partial.unlink(missing_ok=True)
        raise SourceVerificationError(uri, expected, actual, "sha256 of the downloaded file")
    partial.replace(target)
    if _is_archive(name):
        unpacked = _unpack(target, work_dir / "source")
        target.unlink()
        return FetchedSource(uri, unpacked, expected)
    return FetchedSource(uri, target, expected)


def _is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _fetch_oci(
    uri: str,
    expected: str,
    work_dir: Path,
    client: RegistryClient | None,
    insecure_registries: frozenset[str],
) -> FetchedSource:
    try:
        reference = Reference.parse(uri)
    except RegistryError as exc:
        raise SourceError(str(exc)) from exc
    if reference.digest is None:
        raise SourceError(f"source {uri} must be pinned by digest (…@sha256:{expected})")
    pinned = reference.digest.removeprefix("sha256:")
    if pinned != expected:
        raise SourceVerificationError(uri, expected, pinned, "digest pinned in the oci:// URI")
    dest = work_dir / "source"
    own_client = client is None
    # Registries on loopback speak plain HTTP, as docker and skopeo assume for localhost.
    insecure = reference.registry in insecure_registries or _is_loopback(reference.registry)
    registry = client or RegistryClient.from_environment(reference.registry, insecure=insecure)
    try:
        pull_artifact(reference, dest, client=registry)
    except RegistryError as exc:
        if dest.exists():
            shutil.rmtree(dest)
        failure = (
            SourceUnreachableError if isinstance(exc, RegistryUnavailableError) else SourceError
        )
        raise failure(f"source {uri}: {exc}") from exc
    finally:
        if own_client:
            registry.close()
    return FetchedSource(uri, dest, expected)


def fetch_source(
    uri: str,
    sha256: str,
    work_dir: Path,
    *,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    registry_client: RegistryClient | None = None,
    insecure_registries: frozenset[str] = frozenset(),
    transport: httpx.BaseTransport | None = None,
) -> FetchedSource:
    """Fetch `uri` into `work_dir` (file:// sources are used in place) and verify `sha256`.

    Raises SourceVerificationError on a mismatch, SourceError when it cannot be fetched.
    """
    expected = sha256.lower()
    scheme = urlparse(uri).scheme
    if scheme == "file":
        return _fetch_file(uri, expected, work_dir)
    if scheme == "https":
        return _fetch_https(uri, expected, work_dir, max_bytes, transport)
    if scheme == "oci":
        return _fetch_oci(uri, expected, work_dir, registry_client, insecure_registries)
    raise SourceError(
        f"source {uri}: unsupported scheme {scheme!r} (use file://, https://, oci://)"
    )
