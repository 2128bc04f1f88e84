"""Prometheus scrape targets for pods that ask to be scraped, published as a file_sd file.

Debian's Prometheus has no kubernetes_sd, so the simulator, which knows every pod's IP,
does what the pod role of kubernetes_sd plus the usual relabelling would: honour the
`prometheus.io/scrape|port|path|scheme` annotations and carry the pod's labels.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCRAPE_ANNOTATION = "prometheus.io/scrape"
PORT_ANNOTATION = "prometheus.io/port"
PATH_ANNOTATION = "prometheus.io/path"
SCHEME_ANNOTATION = "prometheus.io/scheme"


def prometheus_label_name(name: str) -> str:
    """`slmops.io/revision` -> `slmops_io_revision` (Prometheus label names are
    [a-zA-Z_][a-zA-Z0-9_]*)."""
    sanitised = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    if not sanitised or sanitised[0].isdigit():
        sanitised = "_" + sanitised
    return sanitised


def scrape_target(pod: Mapping[str, Any], pod_ip: str, node_name: str) -> dict[str, Any] | None:
    """The file_sd entry of a pod, or None if it does not ask to be scraped."""
    metadata = pod.get("metadata", {})
    annotations = metadata.get("annotations") or {}
    if str(annotations.get(SCRAPE_ANNOTATION, "")).lower() != "true":
        return None
    port = annotations.get(PORT_ANNOTATION)
    if not port or not str(port).isdigit():
        return None
    labels: dict[str, str] = {}
    for key, value in (metadata.get("labels") or {}).items():
        labels[prometheus_label_name(key)] = str(value)
    # Ours win over pod labels of the same sanitised name: they identify the target.
    labels.update(
        {
            "namespace": metadata.get("namespace", "default"),
            "pod": metadata.get("name", ""),
            "node": node_name,
            "__metrics_path__": annotations.get(PATH_ANNOTATION, "/metrics"),
            "__scheme__": annotations.get(SCHEME_ANNOTATION, "http"),
        }
    )
    return {"targets": [f"{pod_ip}:{port}"], "labels": labels}


def write_targets(path: Path, targets: list[dict[str, Any]]) -> None:
    """Atomically, so Prometheus never reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(targets, indent=1, sort_keys=True))
    tmp.replace(path)
