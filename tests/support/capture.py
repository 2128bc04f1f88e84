"""Capture real objects from e2e runs as fixtures for the Argo CD health checks.

With SLMOPS_CAPTURE_STATUS=1, e2e tests write the object they just waited for to
tests/data/status/<kind>/<ArgoHealth>-captured-<case>.yaml; tests/unit/test_argocd_health.py
runs the Lua health checks against every file there. Without the variable nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

STATUS_DIR = Path(__file__).resolve().parents[1] / "data" / "status"
ENV = "SLMOPS_CAPTURE_STATUS"


def capture(obj: dict[str, Any], health: str, case: str) -> None:
    if os.environ.get(ENV) != "1":
        return
    kind = str(obj["kind"]).lower()
    metadata = obj.get("metadata", {})
    kept = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        # Only what a health check may read: volatile fields would make every capture a diff.
        "metadata": {
            "name": metadata.get("name"),
            "generation": metadata.get("generation"),
        },
        "spec": obj.get("spec", {}),
        "status": obj.get("status", {}),
    }
    path = STATUS_DIR / kind / f"{health}-captured-{case}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Captured from an e2e run (SLMOPS_CAPTURE_STATUS=1); do not edit by hand.\n"
    path.write_text(header + yaml.safe_dump(kept, sort_keys=False, width=100))
