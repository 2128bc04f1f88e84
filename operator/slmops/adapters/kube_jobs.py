"""Build Jobs in the Kubernetes API: what the SLMModel controller reads and writes.

Reads come from kopf indexes (the Jobs and their pods, filtered by label and reduced to the
few fields the controller needs), so a reconcile costs no list calls. This module turns those
snapshots into `ObservedJob`s, reading each build's result from its pod's terminated state
(`state.terminated.message`, written by `slmops build` to the termination message path), and
creates and deletes Jobs. Creating a Job that exists is not an error: names are
deterministic, so "already exists" means an earlier reconcile (or operator) made it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from slmops.adapters.kubernetes import KubeError, load_api_client
from slmops.api.v1alpha1.slmmodel import VariantStatus
from slmops.domain.builds import (
    ANNOTATION_GENERATION,
    LABEL_ATTEMPT,
    LABEL_REVISION,
    LABEL_ROLE,
    LABEL_VARIANT,
)
from slmops.domain.model_status import JobReport, JobState, ObservedJob
from slmops.optimize.contract import BuildResult

# Fields of a BuildResult that are not part of a variant's status, or are set by the
# controller itself.
_NOT_STATUS = {"variant", "phase", "reason", "message", "budgets", "skipped"}


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def job_snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a Job the controller needs, as plain data (kept in a kopf index)."""
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    return {
        "name": metadata.get("name", ""),
        "labels": dict(metadata.get("labels") or {}),
        "annotations": {
            k: v
            for k, v in (metadata.get("annotations") or {}).items()
            if k == ANNOTATION_GENERATION
        },
        "deleting": bool(metadata.get("deletionTimestamp")),
        "conditions": [
            {
                "type": c.get("type"),
                "status": c.get("status"),
                "reason": c.get("reason", ""),
                "message": c.get("message", ""),
                "lastTransitionTime": c.get("lastTransitionTime"),
            }
            for c in status.get("conditions") or []
        ],
        "completionTime": status.get("completionTime"),
    }


def pod_snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    """The terminated state of a build pod's container, as plain data (kept in a kopf index)."""
    metadata = body.get("metadata") or {}
    statuses = (body.get("status") or {}).get("containerStatuses") or []
    terminated: Mapping[str, Any] = {}
    for container in statuses:
        if container.get("name") == "builder":
            terminated = (container.get("state") or {}).get("terminated") or {}
    return {
        "name": metadata.get("name", ""),
        "created": metadata.get("creationTimestamp", ""),
        "exitCode": terminated.get("exitCode"),
        "message": terminated.get("message", ""),
        "finishedAt": terminated.get("finishedAt"),
    }


def parse_report(message: str) -> JobReport | None:
    """A build's result from its termination message, or None if it is not one (for example
    the tail of a crashed builder's log, which FallbackToLogsOnError puts there)."""
    text = message.strip()
    if not text.startswith("{"):
        return None
    try:
        result = BuildResult.model_validate_json(text)
    except (ValidationError, json.JSONDecodeError):
        return None
    measurements = None
    if result.phase != "Verified":
        fields = result.model_dump(exclude=_NOT_STATUS, exclude_none=True)
        measurements = VariantStatus.model_validate({"name": result.variant or "?", **fields})
    message_text = result.message
    if result.skipped and "already" not in message_text.lower():
        message_text = f"{message_text} (already built: nothing was rebuilt)".strip()
    return JobReport(
        phase=result.phase,
        reason=result.reason,
        message=message_text,
        measurements=measurements,
    )


def _job_state(conditions: Sequence[Mapping[str, Any]]) -> tuple[JobState, Mapping[str, Any]]:
    for condition in conditions:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "Succeeded", condition
        if condition.get("type") == "Failed":
            return "Failed", condition
    return "Active", {}


def observe_job(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> ObservedJob:
    """An ObservedJob from the snapshots of a Job and its pods."""
    labels = job["labels"]
    state, condition = _job_state(job["conditions"])
    finished = [p for p in pods if p.get("exitCode") is not None]
    # The newest finished pod speaks for the Job: with restartPolicy Never every retry is a
    # new pod, and the last one's result is the one that counts.
    finished.sort(key=lambda p: (p.get("finishedAt") or "", p.get("created") or ""))
    report: JobReport | None = None
    unparsed = ""
    if finished:
        message = str(finished[-1].get("message") or "")
        report = parse_report(message)
        if report is None:
            unparsed = message
    generation_text = job["annotations"].get(ANNOTATION_GENERATION)
    attempt_text = str(labels.get(LABEL_ATTEMPT) or "1")
    return ObservedJob(
        name=job["name"],
        role="verify" if labels.get(LABEL_ROLE) == "verify" else "build",
        revision=labels.get(LABEL_REVISION, ""),
        variant=labels.get(LABEL_VARIANT),
        state=state,
        generation=int(generation_text) if generation_text and generation_text.isdigit() else None,
        failure_reason=str(condition.get("reason") or "") if state == "Failed" else "",
        failure_message=str(condition.get("message") or "") if state == "Failed" else "",
        finished_at=_parse_time(condition.get("lastTransitionTime") or job.get("completionTime")),
        report=report,
        unparsed_message=unparsed,
        attempt=int(attempt_text) if attempt_text.isdigit() else 1,
    )


class JobWriter:
    """Creates and deletes build Jobs (the `kubernetes` client is synchronous: calls run in
    worker threads so a slow apiserver never blocks kopf's event loop)."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._api_client = api_client
        self._batch: client.BatchV1Api | None = None

    def _api(self) -> client.BatchV1Api:
        if self._batch is None:
            self._batch = client.BatchV1Api(self._api_client or load_api_client())
        return self._batch

    async def create(self, job: Mapping[str, Any]) -> bool:
        """Create the Job; False if it already existed."""
        namespace = job["metadata"]["namespace"]
        name = job["metadata"]["name"]
        try:
            await asyncio.to_thread(
                self._api().create_namespaced_job,
                namespace,
                # The client sends a plain dict as it is; no need to build a V1Job.
                cast(Any, dict(job)),
                field_manager="slmops-operator",
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise KubeError(
                f"creating Job {namespace}/{name} failed: {error.status} {error.reason}",
                error.status,
            ) from None
        return True

    async def delete(self, namespace: str, name: str) -> None:
        """Delete the Job and (in the background) its pods; a Job already gone is fine."""
        try:
            await asyncio.to_thread(
                self._api().delete_namespaced_job,
                name,
                namespace,
                propagation_policy="Background",
            )
        except ApiException as error:
            if error.status == 404:
                return
            raise KubeError(
                f"deleting Job {namespace}/{name} failed: {error.status} {error.reason}",
                error.status,
            ) from None
