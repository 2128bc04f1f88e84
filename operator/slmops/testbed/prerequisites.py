"""What the testbed needs on the machine, and how it gets it on a fresh Debian 12.

Debian packages: etcd, Prometheus (built without kubernetes_sd, so discovery is file_sd),
the CNCF distribution registry, skopeo, htpasswd (bcrypt) and openssl, plus the Go
toolchain to build Kubernetes. Debian ships no kube-apiserver binary, but its `kubernetes`
source package (1.20.2, vendor/ included) builds offline; we build the three control-plane
binaries once and cache them by version under ~/.cache/slmops/, outside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from slmops.testbed.processes import TestbedError

KUBERNETES_VERSION = "1.20.2"
KUBERNETES_SOURCE_TARBALL = "kubernetes_1.20.5+really1.20.2.orig.tar.gz"
CONTROL_PLANE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")

# command on PATH -> Debian package that provides it
RUNTIME_COMMANDS: dict[str, str] = {
    "etcd": "etcd-server",
    "prometheus": "prometheus",
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "htpasswd": "apache2-utils",
    "openssl": "openssl",
    "kubectl": "kubernetes-client",
}
BUILD_PACKAGES = (
    "golang-go",
    "rsync",
    "jq",
    "golang-github-modern-go-reflect2-dev",
    "make",
    "gcc",
    "git",
)
REFLECT2_SOURCE = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEB_SRC_SOURCES = Path("/etc/apt/sources.list.d/deb-src.sources")


def cache_root() -> Path:
    return Path(os.environ.get("SLMOPS_CACHE", Path.home() / ".cache" / "slmops"))


def kubernetes_bin_dir() -> Path:
    return cache_root() / f"k8s-{KUBERNETES_VERSION}" / "bin"


@dataclass(frozen=True)
class Binaries:
    etcd: str
    kube_apiserver: str
    kube_controller_manager: str
    kube_scheduler: str
    prometheus: str
    registry: str
    skopeo: str
    htpasswd: str
    openssl: str
    kubectl: str


def deb_src_stanza(debian_sources: str) -> str:
    """The deb-src twin of the first stanza of debian.sources, for bookworm.

    It must repeat the same URIs and Signed-By: apt refuses both entries when one URI
    appears with two different keys.
    """
    paragraphs = [p for p in debian_sources.split("\n\n") if p.strip()]
    if not paragraphs:
        raise TestbedError(f"{DEBIAN_SOURCES} has no stanza to derive a deb-src entry from")
    lines = []
    for line in paragraphs[0].strip().splitlines():
        if line.startswith("Types:"):
            lines.append("Types: deb-src")
        elif line.startswith("Suites:"):
            lines.append("Suites: bookworm")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def missing_packages() -> list[str]:
    return sorted(
        {package for command, package in RUNTIME_COMMANDS.items() if not shutil.which(command)}
    )


def ensure_prerequisites(log_dir: Path) -> Binaries:
    """Install what is missing (apt) and build Kubernetes if it is not cached yet."""
    missing = missing_packages()
    if missing:
        _require_root(f"install the Debian packages {', '.join(missing)}")
        _apt_update(log_dir)
        _run(["apt-get", "install", "-y", *missing], log_dir / "apt-install.log", "apt-get install")
    if not all((kubernetes_bin_dir() / name).exists() for name in CONTROL_PLANE_BINARIES):
        build_kubernetes(log_dir)

    def which(command: str) -> str:
        path = shutil.which(command)
        if path is None:
            raise TestbedError(f"{command} is still missing after installing its package")
        return path

    bin_dir = kubernetes_bin_dir()
    return Binaries(
        etcd=which("etcd"),
        kube_apiserver=str(bin_dir / "kube-apiserver"),
        kube_controller_manager=str(bin_dir / "kube-controller-manager"),
        kube_scheduler=str(bin_dir / "kube-scheduler"),
        prometheus=which("prometheus"),
        registry=which("docker-registry"),
        skopeo=which("skopeo"),
        htpasswd=which("htpasswd"),
        openssl=which("openssl"),
        kubectl=which("kubectl"),
    )


def build_kubernetes(log_dir: Path) -> None:
    """Build kube-apiserver, -controller-manager and -scheduler from Debian's source package.

    About 5 minutes on 2 cores, once per machine; the binaries are then cached by version.
    """
    _require_root("build Kubernetes from Debian's source package (apt-get source)")
    build_log = log_dir / "kubernetes-build.log"
    build_root = cache_root() / "build"
    build_root.mkdir(parents=True, exist_ok=True)
    if not DEB_SRC_SOURCES.exists():
        if not DEBIAN_SOURCES.exists():
            raise TestbedError(
                f"{DEBIAN_SOURCES} is missing: add a deb-src entry for bookworm by hand"
            )
        DEB_SRC_SOURCES.write_text(deb_src_stanza(DEBIAN_SOURCES.read_text()))
    _apt_update(log_dir)
    _run(["apt-get", "install", "-y", *BUILD_PACKAGES], build_log, "apt-get install (build)")
    tarball = build_root / KUBERNETES_SOURCE_TARBALL
    if not tarball.exists():
        _run(
            ["apt-get", "source", "--download-only", "kubernetes"],
            build_log,
            "apt-get source kubernetes",
            cwd=build_root,
        )
    source_dir = build_root / f"kubernetes-{KUBERNETES_VERSION}"
    if source_dir.exists():
        shutil.rmtree(source_dir)
    _run(["tar", "xzf", str(tarball)], build_log, "unpacking the source", cwd=build_root)
    # The vendored reflect2 v1.0.1 crashes under Go >= 1.18 ("fatal error: fault" in
    # mapiterinit while encoding JSON); Debian's reflect2 1.0.2 does not.
    vendored = source_dir / "vendor" / "github.com" / "modern-go" / "reflect2"
    shutil.rmtree(vendored)
    shutil.copytree(REFLECT2_SOURCE, vendored)
    (vendored / "go.mod").unlink(missing_ok=True)
    # The build scripts derive version info from git; an empty repository satisfies them.
    _run(["git", "init", "-q", "."], build_log, "git init", cwd=source_dir)
    what = " ".join(f"cmd/{name}" for name in CONTROL_PLANE_BINARIES)
    _run(["make", f"WHAT={what}"], build_log, "building Kubernetes", cwd=source_dir)
    output = source_dir / "_output" / "local" / "bin" / "linux" / "amd64"
    target = kubernetes_bin_dir()
    target.mkdir(parents=True, exist_ok=True)
    for name in CONTROL_PLANE_BINARIES:
        shutil.copy2(output / name, target / name)


def _require_root(purpose: str) -> None:
    if os.geteuid() != 0:
        raise TestbedError(f"the testbed must run as root to {purpose}")


def _apt_update(log_dir: Path) -> None:
    log = log_dir / "apt-update.log"
    try:
        _run(["apt-get", "update"], log, "apt-get update")
    except TestbedError as exc:
        raise TestbedError(
            f"apt is unreachable (apt-get update failed); check the network/mirror. {exc}"
        ) from exc


def _run(argv: list[str], log: Path, what: str, cwd: Path | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        result = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env, check=False
        )
    if result.returncode != 0:
        raise TestbedError(f"{what} failed (exit {result.returncode}); see the log {log}")
