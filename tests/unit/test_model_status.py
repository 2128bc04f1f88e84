from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from slmops.api.v1alpha1.slmmodel import SLMModelSpec, SLMModelStatus, VariantStatus
from slmops.domain import conditions as cond
from slmops.domain.model_status import (
    MAX_BUILD_ATTEMPTS,
    JobReport,
    JobToCreate,
    ObservedJob,
    plan_model,
    retry_delay,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
REV = "0123456789ab"


def _spec(names: tuple[str, ...] = ("int4", "fp16")) -> SLMModelSpec:
    return SLMModelSpec.model_validate(
        {
            "source": {"uri": "file:///models/demo", "sha256": "a" * 64},
            "variants": [
                {"name": n, "target": {"nodeSelector": {"matchLabels": {"a": "b"}}}} for n in names
            ],
            "image": {
                "registry": "127.0.0.1:5000",
                "repository": "models/demo",
                "pushSecretRef": {"name": "registry-push"},
            },
        }
    )


def _verify(state: str = "Succeeded", report: JobReport | None = None, **kw: Any) -> ObservedJob:
    if report is None and state == "Succeeded":
        report = JobReport("Verified", "SourceVerified", "matches")
    return ObservedJob(
        name=f"demo-{REV}-verify",
        role="verify",
        revision=kw.pop("revision", REV),
        variant=None,
        state=state,  # type: ignore[arg-type]
        report=report,
        generation=kw.pop("generation", 1),
        finished_at=kw.pop("finished_at", NOW - timedelta(minutes=1)),
        **kw,
    )


def _build(variant: str, state: str, report: JobReport | None = None, **kw: Any) -> ObservedJob:
    return ObservedJob(
        name=f"demo-{variant}-{REV}",
        role="build",
        revision=kw.pop("revision", REV),
        variant=variant,
        state=state,  # type: ignore[arg-type]
        report=report,
        generation=kw.pop("generation", 1),
        finished_at=kw.pop("finished_at", NOW - timedelta(minutes=1)),
        **kw,
    )


def _qualified(variant: str) -> JobReport:
    return JobReport(
        "Qualified",
        "BudgetsMet",
        "perplexity +1.0% <= +5%",
        VariantStatus(
            name=variant,
            artifact=f"127.0.0.1:5000/models/demo@sha256:{'1' * 64}",
            digest=f"sha256:{'1' * 64}",
            size_bytes=1000,
            tokens_per_second=500.0,
        ),
    )


def _plan(jobs: list[ObservedJob], previous: SLMModelStatus | None = None, **kw: Any) -> Any:
    return plan_model(
        spec=kw.pop("spec", _spec()),
        revision=kw.pop("revision", REV),
        generation=kw.pop("generation", 1),
        previous=previous or SLMModelStatus(),
        jobs=jobs,
        now=kw.pop("now", NOW),
    )


def _cond(plan: Any, kind: str) -> tuple[str, str]:
    found = cond.find(plan.status.conditions, kind)
    assert found is not None, kind
    return found.status, found.reason


def test_first_a_verify_job_and_nothing_else() -> None:
    plan = _plan([])
    assert plan.create == [JobToCreate("verify")]
    assert _cond(plan, "SourceVerified") == ("Unknown", "Verifying")
    assert _cond(plan, "Ready") == ("Unknown", "Building")
    assert _cond(plan, "Reconciling") == ("True", "Building")
    assert [v.phase for v in plan.status.variants] == ["Pending", "Pending"]
    assert plan.status.phase == "Building" and plan.in_progress
    assert plan.status.observed_generation == 1 and plan.status.revision == REV


def test_a_wrong_digest_stops_everything_before_any_build() -> None:
    report = JobReport("Failed", "SourceDigestMismatch", "expected aaa, got bbb")
    plan = _plan([_verify("Failed", report)])
    assert plan.create == [] and plan.delete == []
    assert _cond(plan, "SourceVerified") == ("False", "SourceDigestMismatch")
    assert _cond(plan, "Ready") == ("False", "SourceDigestMismatch")
    assert _cond(plan, "Stalled") == ("True", "SourceDigestMismatch")
    assert _cond(plan, "Reconciling")[0] == "False"
    assert plan.status.phase == "Failed" and not plan.in_progress
    assert any(e.reason == "SourceDigestMismatch" and e.type == "Warning" for e in plan.events)


def test_verified_source_starts_one_build_per_variant() -> None:
    plan = _plan([_verify()])
    assert plan.create == [JobToCreate("build", "int4"), JobToCreate("build", "fp16")]
    assert _cond(plan, "SourceVerified") == ("True", "SourceVerified")
    assert [v.phase for v in plan.status.variants] == ["Building", "Building"]


def test_all_decided_with_one_rejected_is_ready_and_records_the_revision() -> None:
    rejected = JobReport("Rejected", "BudgetExceeded", "size 12.0 MiB > 10.0 MiB")
    plan = _plan(
        [
            _verify(),
            _build("int4", "Succeeded", _qualified("int4")),
            _build("fp16", "Succeeded", rejected),
        ]
    )
    assert plan.create == [] and not plan.in_progress
    assert [(v.name, v.phase) for v in plan.status.variants] == [
        ("int4", "Qualified"),
        ("fp16", "Rejected"),
    ]
    int4 = plan.status.variants[0]
    assert int4.digest == f"sha256:{'1' * 64}" and int4.revision == REV
    assert int4.build_job == f"demo-int4-{REV}"
    assert _cond(plan, "VariantsBuilt") == ("True", "AllBuilt")
    assert _cond(plan, "VariantsQualified") == ("False", "BudgetExceeded")
    qualified = cond.find(plan.status.conditions, "VariantsQualified")
    assert qualified is not None and "size 12.0 MiB > 10.0 MiB" in qualified.message
    assert _cond(plan, "Ready") == ("True", "Qualified")
    assert _cond(plan, "Stalled") == ("False", "Settled")
    assert plan.status.phase == "Ready"
    assert plan.status.revisions[0].revision == REV
    assert plan.status.revisions[0].variants == {"int4": int4.artifact}
    assert {e.reason for e in plan.events} >= {"VariantQualified", "VariantRejected"}


def test_settled_plan_is_a_fixed_point() -> None:
    jobs = [
        _verify(),
        _build("int4", "Succeeded", _qualified("int4")),
        _build("fp16", "Succeeded", _qualified("fp16")),
    ]
    first = _plan(jobs)
    again = _plan(jobs, previous=first.status, now=NOW + timedelta(hours=1))
    assert again.status == first.status
    assert again.events == [] and again.create == [] and again.delete == []


def test_refused_credentials_fail_clearly_and_are_not_retried_by_themselves() -> None:
    auth = JobReport(
        "Failed",
        "RegistryAuthFailed",
        "the registry at 127.0.0.1:5000 refused the push credentials",
    )
    jobs = [_verify(), _build("int4", "Failed", auth), _build("fp16", "Failed", auth)]
    plan = _plan(jobs)
    assert plan.create == [] and plan.delete == [] and not plan.in_progress
    assert _cond(plan, "Ready") == ("False", "RegistryAuthFailed")
    assert _cond(plan, "VariantsBuilt") == ("False", "RegistryAuthFailed")
    assert _cond(plan, "Stalled") == ("True", "RegistryAuthFailed")
    assert "registry-push" in plan.status.variants[0].message
    assert plan.status.phase == "Failed"
    # The same world an hour later: still no new Job.
    later = _plan(jobs, previous=plan.status, now=NOW + timedelta(hours=1))
    assert later.create == [] and later.delete == []


def test_a_spec_edit_retries_failed_builds_only() -> None:
    auth = JobReport("Failed", "RegistryAuthFailed", "refused")
    jobs = [
        _verify(),
        _build("int4", "Failed", auth),
        _build("fp16", "Succeeded", _qualified("fp16")),
    ]
    plan = _plan(jobs, generation=2)
    assert plan.delete == [f"demo-int4-{REV}"]
    assert plan.create == []  # after the deletion is seen
    gone = _plan([jobs[0], jobs[2]], previous=plan.status, generation=2)
    assert gone.create == [JobToCreate("build", "int4")]


def test_a_new_revision_deletes_the_old_jobs_and_keeps_old_artifacts() -> None:
    old = _plan(
        [
            _verify(),
            _build("int4", "Succeeded", _qualified("int4")),
            _build("fp16", "Succeeded", _qualified("fp16")),
        ]
    )
    new_rev = "ba9876543210"
    plan = _plan(
        [_verify(), _build("int4", "Active")],
        previous=old.status,
        revision=new_rev,
        generation=2,
    )
    assert set(plan.delete) == {f"demo-{REV}-verify", f"demo-int4-{REV}"}
    assert plan.create == [JobToCreate("verify")]
    assert plan.status.revisions[0].revision == REV
    assert any(e.reason == "NewRevision" for e in plan.events)


def test_a_finished_job_gets_time_for_its_result_then_its_own_reason() -> None:
    fresh = _build(
        "int4", "Failed", failure_reason="DeadlineExceeded", finished_at=NOW - timedelta(seconds=5)
    )
    assert _plan([_verify(), fresh], spec=_spec(("int4",))).status.variants[0].phase == "Building"
    stale = _build(
        "int4", "Failed", failure_reason="DeadlineExceeded", finished_at=NOW - timedelta(minutes=5)
    )
    variant = _plan([_verify(), stale], spec=_spec(("int4",))).status.variants[0]
    assert (variant.phase, variant.reason) == ("Failed", "BuildDeadlineExceeded")


def test_a_crashed_builder_shows_its_last_words() -> None:
    crashed = _build(
        "int4",
        "Failed",
        failure_reason="BackoffLimitExceeded",
        unparsed_message="Traceback ...\nMemoryError",
    )
    variant = _plan([_verify(), crashed], spec=_spec(("int4",))).status.variants[0]
    assert (variant.phase, variant.reason) == ("Failed", "BuildCrashed")
    assert "MemoryError" in variant.message


def test_the_status_remembers_results_whose_pods_are_gone() -> None:
    spec = _spec(("int4",))
    done = _plan([_verify(), _build("int4", "Succeeded", _qualified("int4"))], spec=spec)
    without_pods = _plan([_verify(), _build("int4", "Succeeded")], previous=done.status, spec=spec)
    assert without_pods.status.variants == done.status.variants


def test_no_variant_qualified_is_stalled() -> None:
    rejected = JobReport("Rejected", "BudgetExceeded", "speedup 1.1x < 1000x")
    plan = _plan([_verify(), _build("int4", "Succeeded", rejected)], spec=_spec(("int4",)))
    assert _cond(plan, "Ready") == ("False", "NoVariantQualified")
    assert _cond(plan, "Stalled") == ("True", "NoVariantQualified")
    assert plan.status.revisions == []


# --- transient failures: the registry (or the source's server) unreachable ---------------

UNREACHABLE = JobReport(
    "Failed",
    "RegistryUnavailable",
    "registry 127.0.0.1:5000 is unreachable (ConnectError) while accessing the /v2/ endpoint",
)


def _attempt(attempt: int, state: str, report: JobReport | None = None, **kw: Any) -> ObservedJob:
    name = f"demo-int4-{REV}" + (f"-attempt{attempt}" if attempt > 1 else "")
    return ObservedJob(
        name=name,
        role="build",
        revision=REV,
        variant="int4",
        state=state,  # type: ignore[arg-type]
        report=report,
        generation=kw.pop("generation", 1),
        finished_at=kw.pop("finished_at", NOW - timedelta(seconds=1)),
        attempt=attempt,
        **kw,
    )


def _int4(jobs: list[ObservedJob], **kw: Any) -> Any:
    return _plan([_verify(), *jobs], spec=_spec(("int4",)), **kw)


def test_a_pod_failing_on_the_registry_is_reported_while_its_job_tries_again() -> None:
    plan = _int4([_attempt(1, "Active", UNREACHABLE)])
    variant = plan.status.variants[0]
    assert (variant.phase, variant.reason) == ("Building", "RegistryUnavailable")
    assert "127.0.0.1:5000" in variant.message and "tries again" in variant.message
    assert _cond(plan, "Ready") == ("False", "RegistryUnavailable")
    ready = cond.find(plan.status.conditions, "Ready")
    assert ready is not None and "127.0.0.1:5000" in ready.message
    assert _cond(plan, "Reconciling") == ("True", "Retrying")
    assert _cond(plan, "Stalled") == ("False", "Progressing")
    assert plan.status.phase == "Building" and plan.in_progress
    assert plan.create == [] and plan.delete == []
    assert [e.reason for e in plan.events if e.type == "Warning"] == ["RegistryUnavailable"]


def test_a_job_failed_on_the_registry_is_followed_by_a_new_attempt_after_a_delay() -> None:
    failed = _attempt(1, "Failed", UNREACHABLE, finished_at=NOW)
    waiting = _int4([failed])
    assert waiting.create == [] and waiting.in_progress
    variant = waiting.status.variants[0]
    assert (variant.phase, variant.reason) == ("Building", "RegistryUnavailable")
    assert f"attempt 1 of {MAX_BUILD_ATTEMPTS} failed" in variant.message
    assert "attempt 2 starts at" in variant.message
    due = NOW + retry_delay(1)
    assert _int4([failed], previous=waiting.status, now=due - timedelta(seconds=1)).create == []
    retry = _int4([failed], previous=waiting.status, now=due)
    assert retry.create == [JobToCreate("build", "int4", attempt=2)]
    assert any("attempt 2" in e.message for e in retry.events if e.reason == "BuildStarted")
    # Once the second attempt exists it speaks for the variant; nothing more is created.
    running = _int4([failed, _attempt(2, "Active")], previous=retry.status, now=due)
    assert running.create == [] and running.status.variants[0].reason == "Building"
    assert running.status.variants[0].build_job == f"demo-int4-{REV}-attempt2"
    assert _cond(running, "Ready") == ("Unknown", "Building")


def test_retry_delays_double_and_attempts_are_bounded() -> None:
    delays = [retry_delay(a).total_seconds() for a in range(1, MAX_BUILD_ATTEMPTS)]
    assert delays == sorted(delays) and delays[0] == 10.0 and delays[1] == 20.0
    assert max(delays) <= 160.0
    jobs = [
        _attempt(a, "Failed", UNREACHABLE, finished_at=NOW - timedelta(hours=1))
        for a in range(1, MAX_BUILD_ATTEMPTS + 1)
    ]
    plan = _int4(jobs)
    variant = plan.status.variants[0]
    assert plan.create == [] and not plan.in_progress
    assert (variant.phase, variant.reason) == ("Failed", "RegistryUnavailable")
    assert f"gave up after {MAX_BUILD_ATTEMPTS} build attempts" in variant.message
    assert _cond(plan, "Ready") == ("False", "RegistryUnavailable")
    assert _cond(plan, "Stalled") == ("True", "RegistryUnavailable")
    later = _int4(jobs, previous=plan.status, now=NOW + timedelta(days=1))
    assert later.create == [] and later.delete == []


def test_a_later_attempt_that_succeeds_makes_the_model_ready() -> None:
    jobs = [
        _attempt(1, "Failed", UNREACHABLE, finished_at=NOW - timedelta(minutes=2)),
        _attempt(2, "Succeeded", _qualified("int4")),
    ]
    plan = _int4(jobs)
    variant = plan.status.variants[0]
    assert (variant.phase, variant.build_job) == ("Qualified", f"demo-int4-{REV}-attempt2")
    assert _cond(plan, "Ready") == ("True", "Qualified")
    assert _cond(plan, "Reconciling") == ("False", "Done")
    assert plan.create == [] and plan.delete == []
    assert plan.status.revisions[0].variants == {"int4": variant.artifact}


def test_permanent_failures_are_not_retried_by_new_jobs() -> None:
    refused = JobReport("Failed", "RegistryAuthFailed", "refused")
    plan = _int4([_attempt(1, "Failed", refused, finished_at=NOW - timedelta(hours=1))])
    assert plan.create == [] and plan.status.variants[0].phase == "Failed"


def test_a_spec_edit_after_transient_failures_starts_again_from_the_first_attempt() -> None:
    jobs = [
        _attempt(a, "Failed", UNREACHABLE, finished_at=NOW - timedelta(hours=1))
        for a in range(1, MAX_BUILD_ATTEMPTS + 1)
    ]
    plan = _int4(jobs, generation=2)
    assert set(plan.delete) == {j.name for j in jobs}
    assert plan.create == []
    gone = _int4([], previous=plan.status, generation=2)
    assert gone.create == [JobToCreate("build", "int4")]


SOURCE_DOWN = JobReport(
    "Failed",
    "SourceUnreachable",
    "source oci://127.0.0.1:5000/sources/demo@sha256:aaa: registry 127.0.0.1:5000 is unreachable",
)


def _verify_attempt(attempt: int, state: str, report: JobReport | None, **kw: Any) -> ObservedJob:
    return ObservedJob(
        name=f"demo-{REV}-verify" + (f"-attempt{attempt}" if attempt > 1 else ""),
        role="verify",
        revision=REV,
        variant=None,
        state=state,  # type: ignore[arg-type]
        report=report,
        generation=kw.pop("generation", 1),
        finished_at=kw.pop("finished_at", NOW),
        attempt=attempt,
    )


def test_a_source_server_that_does_not_answer_is_retried_not_failed() -> None:
    first = _verify_attempt(1, "Failed", SOURCE_DOWN)
    waiting = _plan([first])
    assert _cond(waiting, "SourceVerified") == ("Unknown", "SourceUnreachable")
    assert _cond(waiting, "Ready") == ("False", "SourceUnreachable")
    assert _cond(waiting, "Reconciling") == ("True", "Retrying")
    assert _cond(waiting, "Stalled") == ("False", "Progressing")
    assert waiting.status.phase == "Building" and waiting.create == []
    assert [v.reason for v in waiting.status.variants] == ["WaitingForSource"] * 2
    assert [e.reason for e in waiting.events if e.type == "Warning"] == ["SourceUnreachable"]
    retry = _plan([first], previous=waiting.status, now=NOW + retry_delay(1))
    assert retry.create == [JobToCreate("verify", attempt=2)]
    verified = _plan(
        [first, _verify_attempt(2, "Succeeded", JobReport("Verified", "SourceVerified", "ok"))],
        previous=retry.status,
    )
    assert _cond(verified, "SourceVerified") == ("True", "SourceVerified")
    assert verified.create == [JobToCreate("build", "int4"), JobToCreate("build", "fp16")]


def test_a_source_that_stays_unreachable_fails_after_the_last_attempt() -> None:
    jobs = [
        _verify_attempt(a, "Failed", SOURCE_DOWN, finished_at=NOW - timedelta(hours=1))
        for a in range(1, MAX_BUILD_ATTEMPTS + 1)
    ]
    plan = _plan(jobs)
    assert _cond(plan, "SourceVerified") == ("False", "SourceUnreachable")
    assert _cond(plan, "Stalled") == ("True", "SourceUnreachable")
    assert plan.create == [] and not plan.in_progress
    # A missing source is not a transient failure: not retried by itself.
    missing = JobReport("Failed", "SourceUnavailable", "source file:///x does not exist")
    plan = _plan([_verify_attempt(1, "Failed", missing, finished_at=NOW - timedelta(hours=1))])
    assert _cond(plan, "SourceVerified") == ("False", "SourceUnavailable")
    assert plan.create == []
