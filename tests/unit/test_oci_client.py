"""The OCI client's auth flows, error mapping and download safety, against a fake registry
(httpx.MockTransport). The real registry is exercised in tests/integration/test_oci_registry.py."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from slmops.adapters.oci import (
    AUTH_FILE_ENV,
    Credentials,
    DigestMismatchError,
    InvalidReferenceError,
    NotFoundError,
    Reference,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryUnavailableError,
    credentials_from_docker_config,
    load_docker_credentials,
)

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-Pa55"
BLOB = b"model weights" * 100
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def client_with(
    handler: Callable[[httpx.Request], httpx.Response], **kwargs: object
) -> RegistryClient:
    return RegistryClient(
        "registry.test:5000",
        transport=httpx.MockTransport(handler),
        insecure=True,
        **kwargs,  # type: ignore[arg-type]
    )


class BasicRegistry:
    """Answers 401 + Basic challenge unless the right credentials come along."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("Authorization") != basic("alice", SECRET):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="test"'})
        if request.url.path.endswith(f"/blobs/{BLOB_DIGEST}"):
            return httpx.Response(200, content=BLOB)
        return httpx.Response(200, json={})


class BearerRegistry:
    """The docker token flow: 401 with a Bearer challenge; the realm trades Basic for a token."""

    def __init__(self) -> None:
        self.token_requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            self.token_requests.append(request)
            if request.headers.get("Authorization") != basic("alice", SECRET):
                return httpx.Response(401, json={"details": "bad credentials"})
            return httpx.Response(200, json={"token": "tok-123"})
        if request.headers.get("Authorization") == "Bearer tok-123":
            if request.method == "HEAD":
                return httpx.Response(404)
            if request.method == "POST":
                return httpx.Response(202, headers={"Location": "/v2/models/demo/blobs/uploads/u1"})
            if request.method == "PUT":
                assert request.url.params["digest"] == BLOB_DIGEST
                assert request.content == BLOB
                return httpx.Response(201)
            return httpx.Response(200, json={})
        scope = "repository:models/demo:pull,push" if request.method != "GET" else ""
        challenge = 'Bearer realm="https://auth.test/token",service="registry.test"'
        if scope:
            challenge += f',scope="{scope}"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})


def test_basic_challenge_is_answered_and_remembered() -> None:
    fake = BasicRegistry()
    with client_with(fake, credentials=Credentials("alice", SECRET)) as client:
        client.ping()
        client.ping()
    # One challenge, then the header is sent up front.
    assert [r.headers.get("Authorization") is not None for r in fake.requests] == [
        False,
        True,
        True,
    ]


def test_wrong_basic_credentials_give_a_clear_error_without_the_secret() -> None:
    fake = BasicRegistry()
    client = client_with(fake, credentials=Credentials("alice", "wrong-" + SECRET))
    with pytest.raises(RegistryAuthError) as excinfo:
        client.blob_exists("models/demo", BLOB_DIGEST)
    message = str(excinfo.value)
    assert message.startswith("registry refused credentials for blob")
    assert "alice" in message
    assert SECRET not in message and SECRET not in repr(client)
    assert SECRET not in repr(Credentials("alice", SECRET))


def test_no_credentials_names_the_environment_variable() -> None:
    with pytest.raises(RegistryAuthError, match=AUTH_FILE_ENV):
        client_with(BasicRegistry()).ping()


def test_bearer_flow_exchanges_credentials_for_a_scoped_token_and_pushes() -> None:
    fake = BearerRegistry()
    with client_with(fake, credentials=Credentials("alice", SECRET)) as client:
        digest, size = client.push_blob("models/demo", BLOB)
    assert (digest, size) == (BLOB_DIGEST, len(BLOB))
    scopes = [r.url.params.get("scope") for r in fake.token_requests]
    assert scopes == ["repository:models/demo:pull,push"]
    assert fake.token_requests[0].url.params["service"] == "registry.test"


def test_bearer_flow_with_refused_credentials() -> None:
    fake = BearerRegistry()
    client = client_with(fake, credentials=Credentials("alice", "nope"))
    with pytest.raises(RegistryAuthError, match="registry refused credentials for"):
        client.blob_exists("models/demo", BLOB_DIGEST)


def test_download_verifies_the_digest_and_leaves_nothing_on_mismatch(tmp_path: Path) -> None:
    def tampering(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=BLOB + b"!")

    dest = tmp_path / "cache" / "model.onnx"
    with pytest.raises(DigestMismatchError, match="nothing was kept"):
        client_with(tampering).download_blob("models/demo", BLOB_DIGEST, dest)
    assert list(dest.parent.iterdir()) == []


def test_download_stops_at_the_declared_size(tmp_path: Path) -> None:
    sent: list[int] = []

    def endless(request: httpx.Request) -> httpx.Response:
        def body() -> Iterator[bytes]:
            for _ in range(1000):
                sent.append(1)
                yield b"x" * 65536

        return httpx.Response(200, content=body())

    dest = tmp_path / "cache" / "model.onnx"
    with pytest.raises(DigestMismatchError, match=f"more than the {len(BLOB)} bytes"):
        client_with(endless).download_blob(
            "models/demo", BLOB_DIGEST, dest, expected_size=len(BLOB)
        )
    assert list(dest.parent.iterdir()) == []
    # One read buffer (1 MiB) past the declared size, not the 64 MiB on offer.
    assert len(sent) < 100, len(sent)


def test_download_writes_the_verified_file(tmp_path: Path) -> None:
    fake = BasicRegistry()
    dest = tmp_path / "model.onnx"
    client = client_with(fake, credentials=Credentials("alice", SECRET))
    assert client.download_blob("models/demo", BLOB_DIGEST, dest) == len(BLOB)
    assert dest.read_bytes() == BLOB


def test_status_codes_become_domain_errors() -> None:
    def answer(status: int) -> Callable[[httpx.Request], httpx.Response]:
        body = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
        return lambda request: httpx.Response(status, json=body)

    with pytest.raises(NotFoundError, match="MANIFEST_UNKNOWN"):
        client_with(answer(404)).get_manifest("models/demo", "v1")
    with pytest.raises(RegistryUnavailableError, match="HTTP 503"):
        client_with(answer(503)).get_manifest("models/demo", "v1")
    with pytest.raises(RegistryAuthError, match="denied access"):
        client_with(answer(403)).get_manifest("models/demo", "v1")
    assert client_with(answer(404)).manifest_digest("models/demo", "v1") is None


def test_unreachable_registry() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(RegistryUnavailableError, match="unreachable"):
        client_with(refuse).ping()


def test_manifest_fetched_by_digest_is_verified() -> None:
    raw = json.dumps({"schemaVersion": 2, "layers": []}).encode()
    wrong = "sha256:" + "0" * 64
    client = client_with(lambda request: httpx.Response(200, content=raw))
    with pytest.raises(DigestMismatchError):
        client.get_manifest("models/demo", wrong)
    good = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert client.get_manifest("models/demo", good).digest == good


def test_docker_config_formats() -> None:
    encoded = base64.b64encode(f"bob:{SECRET}".encode()).decode()
    config = {
        "auths": {
            "https://other.test/v1/": {"auth": base64.b64encode(b"x:y").decode()},
            "registry.test:5000": {"auth": encoded},
            "plain.test": {"username": "carol", "password": SECRET},
        }
    }
    assert credentials_from_docker_config(config, "registry.test:5000") == Credentials(
        "bob", SECRET
    )
    assert credentials_from_docker_config(config, "other.test") == Credentials("x", "y")
    assert credentials_from_docker_config(config, "plain.test") == Credentials("carol", SECRET)
    assert credentials_from_docker_config(config, "missing.test") is None
    with pytest.raises(RegistryError, match="not base64"):
        credentials_from_docker_config({"auths": {"r": {"auth": "%%%"}}}, "r")


def test_auth_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth_file = tmp_path / "config.json"
    auth_file.write_text(json.dumps({"auths": {"r.test": {"username": "u", "password": SECRET}}}))
    monkeypatch.setenv(AUTH_FILE_ENV, str(auth_file))
    assert load_docker_credentials("r.test") == Credentials("u", SECRET)
    auth_file.write_text('{"auths": {"r.test": {"password": "' + SECRET)
    with pytest.raises(RegistryError, match="not valid JSON") as excinfo:
        load_docker_credentials("r.test")
    assert SECRET not in str(excinfo.value)
    monkeypatch.setenv(AUTH_FILE_ENV, str(tmp_path / "absent.json"))
    with pytest.raises(RegistryError, match="does not exist"):
        load_docker_credentials("r.test")
    monkeypatch.delenv(AUTH_FILE_ENV)
    assert load_docker_credentials("r.test") is None


def test_reference_parsing() -> None:
    digest = "sha256:" + "a" * 64
    ref = Reference.parse(f"oci://127.0.0.1:5000/models/demo:int4-abc@{digest}")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        "127.0.0.1:5000",
        "models/demo",
        "int4-abc",
        digest,
    )
    assert ref.reference == digest
    assert str(Reference.parse("r.test/a/b:v1")) == "r.test/a/b:v1"
    for bad in ("r.test", "r.test/Upper", "r.test/a@sha256:12", "r.test/a:bad tag"):
        with pytest.raises(InvalidReferenceError):
            Reference.parse(bad)
