"""The operator's own metrics about rollouts, served by prometheus-client.

Names and labels are a contract with the Helm chart's ServiceMonitor, alerts and dashboard.
`rollout_namespace` rather than `namespace`: Prometheus' pod discovery overwrites
`namespace` with the operator pod's own.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import kopf
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from slmops.api.v1alpha1.edgerollout import EdgeRolloutStatus

METRICS_PORT_ENV = "SLMOPS_METRICS_PORT"
PHASES = ("Pending", "Progressing", "Paused", "Healthy", "Degraded", "RolledBack")
CONDITIONS = ("Ready", "Reconciling", "Stalled", "Progressing", "Analysis")
DECISIONS = ("advance", "pause", "abort", "rollback", "promote", "complete")

_log = logging.getLogger(__name__)

ROLLOUT_PHASE = Gauge(
    "slmops_rollout_phase",
    "1 for the rollout's current phase, 0 for the others",
    ["rollout_namespace", "rollout", "phase"],
)
ROLLOUT_CONDITION = Gauge(
    "slmops_rollout_condition",
    "1 for the status a rollout condition has now, 0 for the others",
    ["rollout_namespace", "rollout", "condition", "status"],
)
DECISIONS_TOTAL = Counter(
    "slmops_rollout_decisions",
    "Rollout decisions by kind",
    ["decision"],
)
BREACH_TO_DECISION = Histogram(
    "slmops_rollout_breach_to_decision_seconds",
    "From the end of the measurement that broke a limit to the abort decision",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
ROLLBACK_DURATION = Histogram(
    "slmops_rollout_rollback_duration_seconds",
    "From the abort decision to every touched node serving the stable revision again",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
)

RECONCILE_DURATION = Histogram(
    "slmops_rollout_reconcile_seconds",
    "One reconcile of one rollout: read the world, decide, measure when a round is due,"
    " apply the workloads and write the status",
    # Fine at the low end: an idle reconcile is milliseconds, and its p99 is what shows an
    # event loop shared by hundreds of rollouts falling behind.
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

for _decision in DECISIONS:
    DECISIONS_TOTAL.labels(_decision)


def record_state(namespace: str, name: str, status: EdgeRolloutStatus) -> None:
    for phase in PHASES:
        ROLLOUT_PHASE.labels(namespace, name, phase).set(1 if status.phase == phase else 0)
    current = {c.type: c.status for c in status.conditions}
    for condition in CONDITIONS:
        for value in ("True", "False", "Unknown"):
            ROLLOUT_CONDITION.labels(namespace, name, condition, value).set(
                1 if current.get(condition) == value else 0
            )


def forget(namespace: str, name: str) -> None:
    """Drop a deleted rollout's series, so dashboards do not show ghosts."""
    for phase in PHASES:
        _remove(ROLLOUT_PHASE, namespace, name, phase)
    for condition in CONDITIONS:
        for value in ("True", "False", "Unknown"):
            _remove(ROLLOUT_CONDITION, namespace, name, condition, value)


def _remove(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


def count_decision(decision: str) -> None:
    DECISIONS_TOTAL.labels(decision).inc()


@kopf.on.startup()
def serve_metrics(**_: Any) -> None:
    port = int(os.environ.get(METRICS_PORT_ENV, "0") or "0")
    if port:
        start_http_server(port, addr=os.environ.get("SLMOPS_METRICS_ADDRESS", "0.0.0.0"))
        _log.info("operator metrics on :%d/metrics", port)
