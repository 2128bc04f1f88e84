"""Helpers for the SLMModel e2e tests: apply models, wait on status, read Jobs, pods, events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support.capture import capture

ROOT = Path(__file__).resolve().parents[2]


def install_crds(testbed: Any) -> bool:
    """Apply the CRDs; True if the SLMModel CRD was not there before."""
    missing = bool(testbed.kubectl("get", "crd", "slmmodels.slmops.io", check=False).returncode)
    testbed.kubectl("apply", "-f", str(ROOT / "crds"))
    testbed.kubectl("wait", "--for", "condition=established", "crd", "--all", "--timeout=60s")
    return missing


def operator_with_crds(testbed: Any, operator: Any) -> Any:
    """The session's operator, serving SLMModels.

    kopf resolves resources through API discovery when their CRD appears; when the CRD is
    created right after the operator starts, discovery can lag behind the last CRD event and
    kopf never serves the kind. An operator started before the CRDs existed is restarted.
    """
    if install_crds(testbed):
        operator.stop()
        operator.start()
    return operator


def model_manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "slmops.io/v1alpha1",
        "kind": "SLMModel",
        "metadata": {"name": name},
        "spec": spec,
    }


def apply(testbed: Any, namespace: str, document: dict[str, Any]) -> str:
    result = testbed.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(document))
    return str(result.stdout)


def get_json(testbed: Any, namespace: str, *what: str) -> dict[str, Any]:
    result = testbed.kubectl("get", "-n", namespace, *what, "-o", "json")
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def condition(model: dict[str, Any], kind: str) -> dict[str, Any]:
    for found in (model.get("status") or {}).get("conditions") or []:
        if found.get("type") == kind:
            return dict(found)
    return {}


def wait_for_model(
    testbed: Any,
    namespace: str,
    name: str,
    done: Callable[[dict[str, Any]], bool],
    timeout: float,
    what: str,
    capture_as: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Poll the model until `done(model)`; on timeout fail with its last status.
    `capture_as` = (Argo CD health, case) saves it as a health-check fixture when
    SLMOPS_CAPTURE_STATUS=1."""
    deadline = time.monotonic() + timeout
    model: dict[str, Any] = {}
    while time.monotonic() < deadline:
        model = get_json(testbed, namespace, "slmmodel", name)
        if done(model):
            if capture_as is not None:
                capture(model, *capture_as)
            return model
        time.sleep(1.0)
    status = json.dumps(model.get("status"), indent=1)[:6000]
    raise AssertionError(f"{what} not reached within {timeout:.0f}s; last status:\n{status}")


def jobs(testbed: Any, namespace: str, selector: str = "slmops.io/model") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(testbed, namespace, "jobs", "-l", selector)["items"]
    return items


def pods(testbed: Any, namespace: str, selector: str = "slmops.io/model") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(testbed, namespace, "pods", "-l", selector)["items"]
    return items


def event_reasons(testbed: Any, namespace: str, name: str) -> list[str]:
    items = get_json(
        testbed,
        namespace,
        "events",
        "--field-selector",
        f"involvedObject.kind=SLMModel,involvedObject.name={name}",
    )["items"]
    return [str(e.get("reason")) for e in items]


def push_secret(testbed: Any, namespace: str, name: str, password: str) -> None:
    registry = testbed.registry
    testbed.kubectl(
        "create",
        "secret",
        "docker-registry",
        name,
        "-n",
        namespace,
        f"--docker-server={registry.host}",
        f"--docker-username={registry.username}",
        f"--docker-password={password}",
    )
