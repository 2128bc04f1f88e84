"""Clear errors from the prerequisite step (no package is installed by these tests)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from slmops.testbed import prerequisites
from slmops.testbed.processes import TestbedError

pytestmark = pytest.mark.unit


def test_missing_package_without_root_names_the_packages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(
        prerequisites.shutil, "which", lambda cmd: None if cmd in ("etcd", "skopeo") else cmd
    )
    monkeypatch.setattr(prerequisites.os, "geteuid", lambda: 1000)
    with pytest.raises(TestbedError, match="must run as root to install the Debian packages") as e:
        prerequisites.ensure_prerequisites(tmp_path)
    assert "etcd-server" in str(e.value) and "skopeo" in str(e.value)


def test_unreachable_apt_is_reported_as_such(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(prerequisites.shutil, "which", lambda cmd: None if cmd == "etcd" else cmd)
    monkeypatch.setattr(prerequisites.os, "geteuid", lambda: 0)

    def apt_fails(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(argv, 100)

    monkeypatch.setattr(prerequisites.subprocess, "run", apt_fails)
    with pytest.raises(TestbedError, match="apt is unreachable") as caught:
        prerequisites.ensure_prerequisites(tmp_path)
    assert str(tmp_path / "apt-update.log") in str(caught.value)


def test_failed_build_step_points_at_its_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def make_fails(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(argv, 2)

    monkeypatch.setattr(prerequisites.subprocess, "run", make_fails)
    log = tmp_path / "kubernetes-build.log"
    with pytest.raises(TestbedError, match="building Kubernetes failed") as caught:
        prerequisites._run(["make"], log, "building Kubernetes")
    assert f"see the log {log}" in str(caught.value)
    assert "$ make" in log.read_text()


def test_cached_binaries_are_looked_up_by_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SLMOPS_CACHE", str(tmp_path))
    assert prerequisites.kubernetes_bin_dir() == tmp_path / "k8s-1.20.2" / "bin"
