"""Reading build results out of Job and pod snapshots (the shapes the apiserver returns)."""

from __future__ import annotations

from typing import Any

import pytest

from slmops.adapters.kube_jobs import job_snapshot, observe_job, parse_report, pod_snapshot
from slmops.optimize.contract import BuildResult

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "c" * 64


def _job(conditions: list[dict[str, Any]]) -> dict[str, Any]:
    return job_snapshot(
        {
            "metadata": {
                "name": "demo-int4-0123456789ab",
                "labels": {
                    "slmops.io/model": "demo",
                    "slmops.io/revision": "0123456789ab",
                    "slmops.io/role": "build",
                    "slmops.io/variant": "int4",
                },
                "annotations": {"slmops.io/generation": "4", "other": "x"},
            },
            "status": {"conditions": conditions},
        }
    )


def _pod(name: str, finished: str, message: str, exit_code: int = 0) -> dict[str, Any]:
    return pod_snapshot(
        {
            "metadata": {"name": name, "creationTimestamp": finished},
            "status": {
                "containerStatuses": [
                    {
                        "name": "builder",
                        "state": {
                            "terminated": {
                                "exitCode": exit_code,
                                "message": message,
                                "finishedAt": finished,
                            }
                        },
                    }
                ]
            },
        }
    )


def _result(**fields: Any) -> str:
    return BuildResult.model_validate(
        {"variant": "int4", "revision": "0123456789ab", **fields}
    ).to_termination_message()


def test_a_qualified_result_becomes_the_variant_status() -> None:
    report = parse_report(
        _result(
            phase="Qualified",
            reason="BudgetsMet",
            message="ok",
            artifact=f"127.0.0.1:5000/models/demo@{DIGEST}",
            digest=DIGEST,
            sizeBytes=123,
            tokensPerSecond=456.5,
            measuredOn="node-1 (Intel Xeon)",
            budgets=[{"name": "minSpeedup", "passed": True, "limit": 1.0, "actual": 4.0}],
        )
    )
    assert report is not None and report.phase == "Qualified"
    assert report.measurements is not None
    assert report.measurements.digest == DIGEST
    assert report.measurements.size_bytes == 123
    assert report.measurements.tokens_per_second == 456.5
    assert report.measurements.measured_on == "node-1 (Intel Xeon)"


def test_a_log_tail_is_not_a_result() -> None:
    assert parse_report("Traceback (most recent call last):\n  boom") is None
    assert parse_report('{"not": "a result"}') is None
    assert parse_report("") is None


def test_the_newest_pod_speaks_for_the_job() -> None:
    job = _job(
        [
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
                "lastTransitionTime": "2026-01-01T12:00:10Z",
            }
        ]
    )
    pods = [
        _pod(
            "b",
            "2026-01-01T12:00:09Z",
            _result(phase="Failed", reason="RegistryAuthFailed", message="refused"),
            2,
        ),
        _pod("a", "2026-01-01T12:00:01Z", "Traceback: first attempt crashed", 1),
    ]
    observed = observe_job(job, pods)
    assert observed.state == "Failed" and observed.failure_reason == "BackoffLimitExceeded"
    assert observed.report is not None and observed.report.reason == "RegistryAuthFailed"
    assert observed.generation == 4
    assert (observed.role, observed.variant, observed.revision) == ("build", "int4", "0123456789ab")
    assert observed.finished_at is not None


def test_a_running_job_has_no_result() -> None:
    observed = observe_job(_job([]), [])
    assert observed.state == "Active" and observed.report is None and observed.finished_at is None


def test_the_attempt_label_tells_which_retry_a_job_is() -> None:
    first = observe_job(_job([]), [])
    assert first.attempt == 1
    snapshot = _job([])
    snapshot["labels"]["slmops.io/attempt"] = "4"
    assert observe_job(snapshot, []).attempt == 4
    snapshot["labels"]["slmops.io/attempt"] = "garbage"
    assert observe_job(snapshot, []).attempt == 1
