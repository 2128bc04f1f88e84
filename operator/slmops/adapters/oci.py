"""A small client for the OCI distribution API: the part of it that models need.

Blobs are pushed monolithically (POST then PUT with `?digest=`), downloaded as streams that
are hashed while they are written, and manifests are put and fetched by tag or digest.
Authentication follows what the registry asks for in `WWW-Authenticate`: Basic with the
configured credentials, or the Bearer token flow (credentials exchanged at the realm for a
token scoped to the repository). Credentials come from a docker `config.json` (the format
of a kubernetes.io/dockerconfigjson Secret) and never appear in errors, logs or reprs.

It is synchronous on purpose: the build step is a batch job, and the model server runs a
pull in a worker thread.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

log = logging.getLogger(__name__)

AUTH_FILE_ENV = "SLMOPS_REGISTRY_AUTH_FILE"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST))

FILEPATH_ANNOTATION = "org.cncf.model.filepath"

_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_CHUNK = 1 << 20


class RegistryError(Exception):
    """Anything that went wrong talking to a registry; the message says what and where."""


class RegistryUnavailableError(RegistryError):
    """The registry could not be reached or answered with a server error."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials (or there were none and it wants some)."""


class NotFoundError(RegistryError):
    """A repository, manifest or blob does not exist."""


class DigestMismatchError(RegistryError):
    """Content did not hash to the digest it was asked for by."""


class InvalidReferenceError(RegistryError, ValueError):
    """A string is not an image reference this client understands."""


@dataclass(frozen=True)
class Credentials:
    """A username and password (or identity token) for one registry."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"

    def basic_header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


def _normalize_registry_key(key: str) -> str:
    # config.json keys may be bare hosts or URLs such as https://index.docker.io/v1/.
    key = re.sub(r"^[a-z]+://", "", key.strip())
    return key.split("/", 1)[0]


def credentials_from_docker_config(config: Mapping[str, Any], registry: str) -> Credentials | None:
    """The credentials for `registry` (host[:port]) in a parsed docker config.json."""
    auths = config.get("auths", {})
    if not isinstance(auths, Mapping):
        raise RegistryError("docker config: 'auths' must be an object")
    for key, entry in auths.items():
        if _normalize_registry_key(str(key)) != registry or not isinstance(entry, Mapping):
            continue
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(str(entry["auth"]), validate=True).decode()
            except (ValueError, UnicodeDecodeError) as exc:
                raise RegistryError(
                    f"docker config: the 'auth' entry for {registry} is not base64 of user:password"
                ) from exc
            username, sep, password = decoded.partition(":")
            if not sep:
                raise RegistryError(
                    f"docker config: the 'auth' entry for {registry} has no ':' separator"
                )
            return Credentials(username, password)
        if entry.get("username") is not None and entry.get("password") is not None:
            return Credentials(str(entry["username"]), str(entry["password"]))
        if entry.get("identitytoken"):
            # An identity token is sent as the password with a fixed placeholder user.
            return Credentials("<token>", str(entry["identitytoken"]))
    return None


def load_docker_credentials(registry: str, path: str | Path | None = None) -> Credentials | None:
    """Credentials for `registry` from the docker config.json at `path`, or at the path in
    `SLMOPS_REGISTRY_AUTH_FILE`; None when neither names a file or it has no entry."""
    if path is None:
        env = os.environ.get(AUTH_FILE_ENV)
        if not env:
            return None
        path = env
    file = Path(path)
    try:
        text = file.read_text()
    except FileNotFoundError as exc:
        raise RegistryError(f"registry auth file {file} does not exist") from exc
    except OSError as exc:
        raise RegistryError(f"registry auth file {file} cannot be read: {exc.strerror}") from exc
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        # The position only, never the text: it holds secrets.
        raise RegistryError(
            f"registry auth file {file} is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from exc
    if not isinstance(config, Mapping):
        raise RegistryError(f"registry auth file {file} must hold a JSON object")
    return credentials_from_docker_config(config, registry)


@dataclass(frozen=True)
class Reference:
    """`registry/repository[:tag][@digest]`, e.g. 127.0.0.1:5000/models/demo@sha256:…"""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        raw = text.removeprefix("oci://")
        name, _, digest = raw.partition("@")
        if digest and not _DIGEST.match(digest):
            raise InvalidReferenceError(f"{text!r}: digest must be sha256: and 64 hex digits")
        registry, slash, rest = name.partition("/")
        if not slash or not rest:
            raise InvalidReferenceError(f"{text!r}: expected REGISTRY/REPOSITORY[:TAG][@DIGEST]")
        tag: str | None = None
        last = rest.rsplit("/", 1)[-1]
        if ":" in last:
            rest, _, tag = rest.rpartition(":")
        if not re.fullmatch(r"[a-z0-9]+([._/-][a-z0-9]+)*", rest):
            raise InvalidReferenceError(f"{text!r}: {rest!r} is not a valid repository name")
        if tag is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
            raise InvalidReferenceError(f"{text!r}: {tag!r} is not a valid tag")
        return cls(registry, rest, tag, digest or None)

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest when pinned, else the tag."""
        if self.digest:
            return self.digest
        if self.tag:
            return self.tag
        raise InvalidReferenceError(f"{self}: needs a tag or a digest")

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, None, digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] | None = None
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest}
        out["size"] = self.size
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Descriptor:
        try:
            digest = str(data["digest"])
            size = int(data["size"])
            media_type = str(data["mediaType"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"malformed descriptor {dict(data)!r}") from exc
        if not _DIGEST.match(digest):
            raise RegistryError(f"descriptor has an unsupported digest {digest!r}")
        annotations = data.get("annotations")
        return cls(
            media_type,
            digest,
            size,
            dict(annotations) if isinstance(annotations, Mapping) else None,
            str(data["artifactType"]) if data.get("artifactType") else None,
        )


@dataclass(frozen=True)
class Manifest:
    """A manifest as stored: its exact bytes (the digest is over them) and what they say."""

    media_type: str
    digest: str
    raw: bytes

    def json(self) -> dict[str, Any]:
        data = json.loads(self.raw)
        if not isinstance(data, dict):
            raise RegistryError(f"manifest {self.digest} is not a JSON object")
        return data

    @property
    def config(self) -> Descriptor:
        return Descriptor.from_json(self.json()["config"])

    @property
    def layers(self) -> list[Descriptor]:
        return [Descriptor.from_json(layer) for layer in self.json().get("layers", [])]

    @property
    def artifact_type(self) -> str | None:
        value = self.json().get("artifactType")
        return str(value) if value else None


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> tuple[str, int]:
    """(sha256 digest, size) of a file, read in chunks."""
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(params))


BodyFactory = Callable[[], bytes | Iterable[bytes] | IO[bytes] | None]


class RegistryClient:
    """One registry, one set of credentials; reusable across repositories."""

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool = False,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.registry = registry
        self.base_url = f"{'http' if insecure else 'https'}://{registry}"
        self._credentials = credentials
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            follow_redirects=True,
        )
        # Authorization header per repository ("" for /v2/ itself), learnt from challenges,
        # so that streamed bodies are sent once with the right header instead of replayed.
        self._auth_headers: dict[str, str] = {}

    @classmethod
    def from_environment(
        cls, registry: str, *, insecure: bool = False, auth_file: str | Path | None = None
    ) -> RegistryClient:
        """A client with credentials from `auth_file` or `$SLMOPS_REGISTRY_AUTH_FILE`."""
        return cls(
            registry,
            credentials=load_docker_credentials(registry, auth_file),
            insecure=insecure,
        )

    def __repr__(self) -> str:
        user = self._credentials.username if self._credentials else None
        return f"RegistryClient({self.base_url!r}, username={user!r})"

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- transport and auth -------------------------------------------------------------

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def _send(
        self,
        method: str,
        path: str,
        *,
        scope_repository: str,
        what: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: BodyFactory | None = None,
        stream: bool = False,
        push: bool = False,
    ) -> httpx.Response:
        """Send a request, answering one auth challenge; `what` names the thing for errors."""
        for attempt in range(2):
            request_headers = dict(headers or {})
            auth = self._auth_headers.get(scope_repository)
            if auth:
                request_headers["Authorization"] = auth
            content = body() if body else None
            request = self._http.build_request(
                method,
                self._url(path),
                headers=request_headers,
                params=params,
                content=content,
            )
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                raise RegistryUnavailableError(
                    f"registry {self.registry} is unreachable ({type(exc).__name__}) "
                    f"while accessing {what}"
                ) from None
            finally:
                # A file body is opened per attempt (it cannot be replayed) and closed here.
                close = getattr(content, "close", None)
                if close is not None:
                    close()
            if response.status_code != 401:
                return self._check(response, what)
            challenge = response.headers.get("WWW-Authenticate", "")
            response.close()
            if attempt == 1 or not challenge:
                break
            self._auth_headers[scope_repository] = self._answer_challenge(
                challenge, scope_repository, what, push=push
            )
        raise self._refused(what)

    def _refused(self, what: str) -> RegistryAuthError:
        if self._credentials is None:
            return RegistryAuthError(
                f"registry {self.registry} requires credentials for {what} and none were "
                f"configured (set {AUTH_FILE_ENV} to a docker config.json)"
            )
        return RegistryAuthError(
            f"registry refused credentials for {what} "
            f"(user {self._credentials.username!r} at {self.registry})"
        )

    def _answer_challenge(self, challenge: str, repository: str, what: str, *, push: bool) -> str:
        scheme, params = _parse_challenge(challenge)
        if scheme == "basic":
            if self._credentials is None:
                raise self._refused(what)
            return self._credentials.basic_header()
        if scheme == "bearer":
            return "Bearer " + self._fetch_token(params, repository, what, push=push)
        raise RegistryAuthError(
            f"registry {self.registry} asks for unsupported authentication {scheme!r} for {what}"
        )

    def _fetch_token(
        self, params: Mapping[str, str], repository: str, what: str, *, push: bool
    ) -> str:
        realm = params.get("realm")
        if not realm:
            raise RegistryAuthError(f"registry {self.registry}: Bearer challenge has no realm")
        query: dict[str, str] = {}
        if params.get("service"):
            query["service"] = params["service"]
        scope = params.get("scope")
        if not scope and repository:
            scope = f"repository:{repository}:{'pull,push' if push else 'pull'}"
        if scope:
            query["scope"] = scope
        headers = {}
        if self._credentials is not None:
            headers["Authorization"] = self._credentials.basic_header()
        try:
            response = self._http.get(realm, params=query, headers=headers)
        except httpx.TransportError as exc:
            raise RegistryUnavailableError(
                f"token service of registry {self.registry} is unreachable "
                f"({type(exc).__name__}) while accessing {what}"
            ) from None
        if response.status_code in (401, 403):
            raise self._refused(what)
        if response.status_code != 200:
            raise RegistryError(
                f"token service of registry {self.registry} answered HTTP "
                f"{response.status_code} while accessing {what}"
            )
        try:
            payload = response.json()
        except ValueError:
            raise RegistryError(
                f"token service of registry {self.registry} did not answer JSON"
            ) from None
        token = payload.get("token") or payload.get("access_token")
        if not token:
            raise RegistryError(f"token service of registry {self.registry} returned no token")
        return str(token)

    def _check(self, response: httpx.Response, what: str) -> httpx.Response:
        status = response.status_code
        if status < 400:
            return response
        if not response.is_closed:
            response.read()
        detail = _error_detail(response)
        response.close()
        if status == 403:
            raise RegistryAuthError(
                f"registry {self.registry} denied access to {what} (HTTP 403{detail})"
            )
        if status == 404:
            raise NotFoundError(f"{what} not found in registry {self.registry}{detail}")
        if status >= 500:
            raise RegistryUnavailableError(
                f"registry {self.registry} failed on {what} (HTTP {status}{detail})"
            )
        raise RegistryError(f"registry {self.registry} rejected {what} (HTTP {status}{detail})")

    # --- API ----------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry speaks the v2 API and accepts our credentials."""
        self._send("GET", "/v2/", scope_repository="", what="the /v2/ endpoint").close()

    def blob_exists(self, repository: str, digest: str) -> bool:
        try:
            self._send(
                "HEAD",
                f"/v2/{repository}/blobs/{digest}",
                scope_repository=repository,
                what=f"blob {digest} in {repository}",
            ).close()
        except NotFoundError:
            return False
        return True

    def push_blob(
        self,
        repository: str,
        content: bytes | Path,
        *,
        mount_from: str | None = None,
    ) -> tuple[str, int]:
        """Upload a blob unless the repository has it already; returns (digest, size).

        `mount_from` names another repository in the same registry that may hold the blob:
        the registry then links it without the bytes travelling again.
        """
        if isinstance(content, Path):
            digest, size = file_digest(content)
        else:
            digest, size = sha256_digest(content), len(content)
        if self.blob_exists(repository, digest):
            return digest, size
        what = f"blob upload to {repository}"
        params = {"mount": digest, "from": mount_from} if mount_from else None
        started = self._send(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            scope_repository=repository,
            what=what,
            params=params,
            push=True,
        )
        started.close()
        if started.status_code == 201:
            return digest, size
        location = started.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.registry} started an upload without Location")
        location = str(httpx.URL(self.base_url).join(location))
        separator = "&" if "?" in location else "?"

        def body() -> bytes | IO[bytes]:
            return content.open("rb") if isinstance(content, Path) else content

        self._send(
            "PUT",
            f"{location}{separator}digest={digest}",
            scope_repository=repository,
            what=f"blob {digest} in {repository}",
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=body,
            push=True,
        ).close()
        return digest, size

    def mount_blob(self, repository: str, digest: str, source_repository: str) -> None:
        """Make a blob of `source_repository` (same registry) available in `repository`.

        The registry links it without copying when it can; when it declines (HTTP 202), the
        blob is downloaded through a temporary file and uploaded, so the call always succeeds
        or raises.
        """
        if self.blob_exists(repository, digest):
            return
        started = self._send(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            scope_repository=repository,
            what=f"mount of blob {digest} from {source_repository} into {repository}",
            params={"mount": digest, "from": source_repository},
            push=True,
        )
        started.close()
        if started.status_code == 201:
            return
        with tempfile.TemporaryDirectory(prefix="slmops-mount-") as tmp:
            local = Path(tmp) / "blob"
            self.download_blob(source_repository, digest, local)
            self.push_blob(repository, local)

    def fetch_blob(self, repository: str, digest: str, *, max_bytes: int = 16 << 20) -> bytes:
        """A small blob (a config) in memory, verified against its digest."""
        what = f"blob {digest} in {repository}"
        response = self._send(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            scope_repository=repository,
            what=what,
            stream=True,
        )
        try:
            chunks: list[bytes] = []
            total = 0
            for chunk in response.iter_bytes(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise RegistryError(f"{what} is larger than {max_bytes} bytes")
                chunks.append(chunk)
        finally:
            response.close()
        data = b"".join(chunks)
        if sha256_digest(data) != digest:
            raise DigestMismatchError(f"{what}: content hashes to {sha256_digest(data)}")
        return data

    def download_blob(
        self, repository: str, digest: str, dest: Path, *, expected_size: int | None = None
    ) -> int:
        """Stream a blob to `dest`, verified against its digest; returns its size.

        The bytes go to a temporary file beside `dest` that is renamed only once the digest
        matches, so a mismatch or a broken download leaves nothing behind. With
        `expected_size` (the manifest's word), reading stops at the first byte past it: a
        tampered or hostile blob cannot fill a node's disk before its digest is checked.
        """
        if not _DIGEST.match(digest):
            raise RegistryError(f"unsupported digest {digest!r}")
        what = f"blob {digest} in {repository}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            hasher = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                response = self._send(
                    "GET",
                    f"/v2/{repository}/blobs/{digest}",
                    scope_repository=repository,
                    what=what,
                    stream=True,
                )
                try:
                    for chunk in response.iter_bytes(_CHUNK):
                        size += len(chunk)
                        if expected_size is not None and size > expected_size:
                            raise DigestMismatchError(
                                f"{what}: the registry sent more than the {expected_size} bytes"
                                " its manifest declares; nothing was kept"
                            )
                        hasher.update(chunk)
                        out.write(chunk)
                except httpx.TransportError:
                    raise RegistryUnavailableError(
                        f"registry {self.registry}: download of {what} broke off after {size} bytes"
                    ) from None
                finally:
                    response.close()
            actual = "sha256:" + hasher.hexdigest()
            if actual != digest:
                raise DigestMismatchError(
                    f"{what}: downloaded content hashes to {actual}; nothing was kept"
                )
            tmp.replace(dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return size

    def put_manifest(
        self, repository: str, reference: str, raw: bytes, media_type: str = OCI_MANIFEST
    ) -> str:
        """Store a manifest under a tag or its digest; returns its digest."""
        digest = sha256_digest(raw)
        response = self._send(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scope_repository=repository,
            what=f"manifest {repository}:{reference}",
            headers={"Content-Type": media_type},
            body=lambda: raw,
            push=True,
        )
        response.close()
        returned = response.headers.get("Docker-Content-Digest")
        if returned and returned != digest:
            raise DigestMismatchError(
                f"registry {self.registry} stored manifest {repository}:{reference} as "
                f"{returned}, expected {digest}"
            )
        return digest

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """Fetch a manifest by tag or digest; by digest, its bytes are verified."""
        what = f"manifest {repository}{'@' if reference.startswith('sha256:') else ':'}{reference}"
        response = self._send(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            scope_repository=repository,
            what=what,
            headers={"Accept": MANIFEST_ACCEPT},
        )
        raw = response.content
        digest = sha256_digest(raw)
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatchError(f"{what}: registry returned content hashing to {digest}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        with contextlib.suppress(ValueError):
            media_type = json.loads(raw).get("mediaType") or media_type
        return Manifest(media_type or OCI_MANIFEST, digest, raw)

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest a tag or digest resolves to, or None if there is no such manifest."""
        try:
            response = self._send(
                "HEAD",
                f"/v2/{repository}/manifests/{reference}",
                scope_repository=repository,
                what=f"manifest {repository}:{reference}",
                headers={"Accept": MANIFEST_ACCEPT},
            )
        except NotFoundError:
            return None
        response.close()
        digest = response.headers.get("Docker-Content-Digest")
        if digest:
            return str(digest)
        return self.get_manifest(repository, reference).digest


def _error_detail(response: httpx.Response) -> str:
    """The registry's own error codes, e.g. MANIFEST_INVALID, without echoing request data."""
    try:
        errors = response.json().get("errors", [])
        parts = [f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)]
    except (ValueError, AttributeError):
        return ""
    return f": {'; '.join(parts)}" if parts else ""


def _safe_relative_path(text: str) -> Path:
    """A layer's filepath annotation as a relative path that cannot leave the target dir."""
    path = Path(text)
    if not text or path.is_absolute() or ".." in path.parts:
        raise RegistryError(f"refusing layer filepath {text!r}: must be relative, without '..'")
    return path


def iter_model_layers(manifest: Manifest) -> Iterator[tuple[Descriptor, Path]]:
    """Each layer with the relative path it goes to (ModelPack `org.cncf.model.filepath`)."""
    for layer in manifest.layers:
        if ".tar" in layer.media_type.rsplit("/", 1)[-1]:
            raise RegistryError(
                f"layer {layer.digest} of {manifest.digest} is an archive ({layer.media_type}); "
                "only raw (one file per layer) model artifacts can be pulled"
            )
        annotations = layer.annotations or {}
        filepath = annotations.get(FILEPATH_ANNOTATION) or annotations.get(
            "org.opencontainers.image.title"
        )
        if not filepath:
            raise RegistryError(
                f"layer {layer.digest} of {manifest.digest} has no {FILEPATH_ANNOTATION} annotation"
            )
        yield layer, _safe_relative_path(filepath)


def pull_artifact(
    ref: str | Reference,
    dest_dir: Path,
    *,
    client: RegistryClient | None = None,
    insecure: bool = False,
    auth_file: str | Path | None = None,
) -> Manifest:
    """Download every layer of a model artifact into `dest_dir`, each to its
    `org.cncf.model.filepath`, verifying digests. Returns the manifest.

    Files already present with the right digest are kept (a node-local cache refills only
    what is missing). `ref` should be pinned by digest; a tag is resolved once.
    """
    reference = ref if isinstance(ref, Reference) else Reference.parse(ref)
    own_client = client is None
    registry_client = client or RegistryClient.from_environment(
        reference.registry, insecure=insecure, auth_file=auth_file
    )
    try:
        manifest = registry_client.get_manifest(reference.repository, reference.reference)
        if manifest.media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST):
            raise RegistryError(
                f"{reference} is an index; pull a single-platform model artifact by its digest"
            )
        dest_dir.mkdir(parents=True, exist_ok=True)
        for layer, relative in iter_model_layers(manifest):
            target = dest_dir / relative
            if target.is_file() and file_digest(target) == (layer.digest, layer.size):
                continue
            log.info("pulling %s (%d bytes) to %s", layer.digest, layer.size, target)
            registry_client.download_blob(
                reference.repository, layer.digest, target, expected_size=layer.size
            )
        return manifest
    finally:
        if own_client:
            registry_client.close()
