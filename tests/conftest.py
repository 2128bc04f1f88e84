"""Shared fixtures. The testbed fixtures (a real control plane, Prometheus, registry and
the edge-fleet simulator) come from the `slmops.testbed.pytest_plugin` plugin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.operator import OperatorProcess

pytest_plugins = ["slmops.testbed.pytest_plugin"]


@pytest.fixture(scope="module")
def operator(testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator as a real process, watching all namespaces of the testbed.

    Module-scoped: it runs every controller cluster-wide, so it must not outlive the module
    that asked for it (later modules play the model controller themselves, or own the
    workloads they test). Tests that kill it must start it again (`operator.start()`). The CRDs are
    installed first: kopf resolves its resources at start, and one whose discovery lags
    behind would never be served.
    """
    crds = Path(__file__).resolve().parents[1] / "crds"
    testbed.kubectl("apply", "-f", str(crds))
    testbed.kubectl("wait", "--for", "condition=established", "crd", "--all", "--timeout=60s")
    process = OperatorProcess(testbed.kubeconfig, tmp_path_factory.mktemp("operator"))
    process.start()
    yield process
    process.stop()
