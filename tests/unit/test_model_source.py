"""Fetching and verifying model sources: digests, archives, https limits, oci pinning."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
from pathlib import Path

import httpx
import pytest

from slmops.optimize.build import exit_code_for, run_build
from slmops.optimize.contract import TRANSIENT_REASONS, BuildRequest, ExitCode, Reason
from slmops.optimize.source import (
    SourceError,
    SourceUnreachableError,
    SourceVerificationError,
    directory_digest,
    directory_listing,
    fetch_source,
)

pytestmark = pytest.mark.unit


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checkpoint(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_bytes(b"{}")
    (root / "sub" / "b.bin").write_bytes(b"bbb")
    (root / "a.txt").write_bytes(b"aaa")
    return root


def test_directory_digest_is_sha256_over_a_sha256sum_listing(tmp_path: Path) -> None:
    directory = checkpoint(tmp_path / "ckpt")
    expected_listing = (
        f"{sha(b'aaa')}  a.txt\n{sha(b'{}')}  config.json\n{sha(b'bbb')}  sub/b.bin\n"
    )
    assert directory_listing(directory) == expected_listing
    assert directory_digest(directory) == sha(expected_listing.encode())
    (directory / "sub" / "b.bin").write_bytes(b"bbB")
    assert directory_digest(directory) != sha(expected_listing.encode())


def test_file_and_directory_sources_are_verified_in_place(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx bytes")
    fetched = fetch_source(model.as_uri(), sha(b"onnx bytes"), tmp_path / "work")
    assert fetched.path == model
    directory = checkpoint(tmp_path / "ckpt")
    fetched = fetch_source(directory.as_uri(), directory_digest(directory), tmp_path / "work")
    assert fetched.path == directory


def test_mismatch_names_expected_and_actual(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx bytes")
    wrong = "ab" * 32
    with pytest.raises(SourceVerificationError) as excinfo:
        fetch_source(model.as_uri(), wrong, tmp_path / "work")
    assert excinfo.value.expected == wrong
    assert excinfo.value.actual == sha(b"onnx bytes")
    assert f"expected {wrong}, got {sha(b'onnx bytes')}" in str(excinfo.value)
    assert not (tmp_path / "work").exists()


def test_missing_file_and_bad_schemes(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        fetch_source((tmp_path / "absent").as_uri(), "0" * 64, tmp_path / "work")
    with pytest.raises(SourceError, match="unsupported scheme"):
        fetch_source("ftp://host/model.onnx", "0" * 64, tmp_path / "work")
    with pytest.raises(SourceError, match="must be local"):
        fetch_source("file://otherhost/model.onnx", "0" * 64, tmp_path / "work")


def tarball(members: dict[str, bytes], *, prefix: str = "ckpt/") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_archive_is_verified_then_unpacked(tmp_path: Path) -> None:
    archive = tmp_path / "ckpt.tar.gz"
    archive.write_bytes(tarball({"config.json": b"{}", "model.safetensors": b"w"}))
    fetched = fetch_source(archive.as_uri(), sha(archive.read_bytes()), tmp_path / "work")
    assert fetched.path.name == "ckpt"
    assert (fetched.path / "model.safetensors").read_bytes() == b"w"


def test_archive_escaping_its_directory_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(tarball({"../../escaped": b"x"}, prefix=""))
    with pytest.raises(SourceError, match="cannot unpack"):
        fetch_source(archive.as_uri(), sha(archive.read_bytes()), tmp_path / "work")
    assert not (tmp_path / "escaped").exists()


def test_https_download_is_streamed_verified_and_limited(tmp_path: Path) -> None:
    payload = b"x" * 5000
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=payload))
    fetched = fetch_source(
        "https://models.test/m/model.onnx", sha(payload), tmp_path / "work", transport=transport
    )
    assert fetched.path.read_bytes() == payload
    with pytest.raises(SourceError, match="limit"):
        fetch_source(
            "https://models.test/m/model.onnx",
            sha(payload),
            tmp_path / "work2",
            max_bytes=1000,
            transport=transport,
        )
    assert list((tmp_path / "work2").iterdir()) == []
    with pytest.raises(SourceVerificationError):
        fetch_source(
            "https://models.test/m/model.onnx", "0" * 64, tmp_path / "work3", transport=transport
        )
    assert list((tmp_path / "work3").iterdir()) == []
    missing = httpx.MockTransport(lambda request: httpx.Response(404))
    with pytest.raises(SourceError, match="HTTP 404"):
        fetch_source("https://models.test/x.onnx", "0" * 64, tmp_path / "w4", transport=missing)


def test_oci_source_must_be_pinned_to_the_expected_digest(tmp_path: Path) -> None:
    expected = "a" * 64
    with pytest.raises(SourceError, match="pinned by digest"):
        fetch_source("oci://127.0.0.1:5000/models/demo:latest", expected, tmp_path)
    with pytest.raises(SourceVerificationError, match="pinned in the oci:// URI"):
        fetch_source(f"oci://127.0.0.1:5000/models/demo@sha256:{'b' * 64}", expected, tmp_path)


def _closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_server_that_does_not_answer_is_unreachable_not_missing(tmp_path: Path) -> None:
    """Unreachable (may pass on retry) is told apart from missing or refused (will not)."""
    digest = "a" * 64
    port = _closed_loopback_port()
    with pytest.raises(SourceUnreachableError, match=f"127.0.0.1:{port}"):
        fetch_source(f"oci://127.0.0.1:{port}/sources/x@sha256:{digest}", digest, tmp_path / "o")

    def answer(status: int) -> httpx.MockTransport:
        return httpx.MockTransport(lambda request: httpx.Response(status))

    for status in (502, 503, 429):
        with pytest.raises(SourceUnreachableError, match=f"HTTP {status}"):
            fetch_source("https://example.test/m.onnx", digest, tmp_path, transport=answer(status))
    for status in (404, 403):
        with pytest.raises(SourceError, match=f"HTTP {status}") as raised:
            fetch_source("https://example.test/m.onnx", digest, tmp_path, transport=answer(status))
        assert not isinstance(raised.value, SourceUnreachableError)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(SourceUnreachableError, match="ConnectError"):
        fetch_source(
            "https://example.test/m.onnx", digest, tmp_path, transport=httpx.MockTransport(refuse)
        )


def test_verifying_a_source_whose_registry_is_down_is_a_transient_failure(
    tmp_path: Path,
) -> None:
    port = _closed_loopback_port()
    digest = "b" * 64
    request = BuildRequest.model_validate(
        {
            "revision": "r1",
            "model": "m",
            "source": {
                "uri": f"oci://127.0.0.1:{port}/sources/m@sha256:{digest}",
                "sha256": digest,
            },
            "image": {"registry": f"127.0.0.1:{port}", "repository": "models/m", "insecure": True},
        }
    )
    result = run_build(request, tmp_path, verify_only=True)
    assert (result.phase, result.reason) == ("Failed", Reason.SOURCE_UNREACHABLE)
    assert result.reason in TRANSIENT_REASONS
    assert f"127.0.0.1:{port}" in result.message
    assert exit_code_for(result) == ExitCode.RETRYABLE
