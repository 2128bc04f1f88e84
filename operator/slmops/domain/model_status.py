"""What an SLMModel's status should be, and which Jobs should exist, given what is observed.

One pure function, `plan_model`, takes the spec, the revision, the previous status and the
Jobs that exist (with the results their pods reported) and returns the new status, the Jobs to
create or delete and the events to post. The controller only carries this out. Everything a
restarted operator needs is in the Jobs (deterministic names, labels) and in the status, so it
continues exactly where the last one stopped.

Semantics:
- SourceVerified is decided by a verify Job before any build Job exists: a wrong sha256 gives
  SourceVerified=False and no build at all.
- Each variant is built once per revision. A Failed build is not retried by itself (a wrong
  password would otherwise loop forever); editing the spec (a new generation, e.g. pointing at a
  fixed Secret) retries the failed ones. Rejected is a verdict, not a failure: it is kept.
- The exception is a transient failure (contract.TRANSIENT_REASONS: the registry or the
  source's server not answering): the outage is reported as it happens (Ready=False with the
  Job's reason and message, which name the host; Reconciling=True, Stalled=False), and a Job
  that failed with it is followed by a new attempt, a Job of its own, after a delay that
  doubles each time (RETRY_DELAY_SECONDS), at most MAX_BUILD_ATTEMPTS Jobs per variant (or
  per source verification) and revision. Only then is it Failed, and a spec edit retries it
  as any other failure. An artifact enters the status only from a build's result, written
  after the registry stored its manifest (which the registry accepts only once every blob is
  there), so no status names a half-pushed artifact.
- Ready is True when the source is verified, every build has finished, none failed and at least
  one variant qualified. VariantsQualified is False when any variant was rejected, with the
  budgets it broke; a rejected variant is never deployed, the qualified ones are.
- status.revisions keeps the qualified artifacts of recent revisions, newest first, so a
  rollout can pin (or roll back to) an older one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from slmops.api.v1alpha1.common import ConditionStatus
from slmops.api.v1alpha1.slmmodel import (
    RevisionArtifacts,
    SLMModelSpec,
    SLMModelStatus,
    VariantStatus,
)
from slmops.domain import conditions as cond
from slmops.domain.builds import JobRole
from slmops.optimize.contract import TRANSIENT_REASONS

MAX_REVISIONS = 10
MAX_BUILD_ATTEMPTS = 6
"""Build Jobs per variant and revision when transient failures repeat: with the delays below
an outage of about five minutes (plus each Job's own pod retries) is ridden out."""
RETRY_DELAY_SECONDS = 10.0
"""Wait after the first failed attempt; doubled after each further one, at most MAX_RETRY_DELAY."""
MAX_RETRY_DELAY_SECONDS = 160.0
RESULT_GRACE = timedelta(seconds=30)
"""How long a finished Job may go without its pod's result showing up (the pod and the Job
are watched separately, so one can be seen before the other) before the Job's own failure
reason is used instead."""

JobState = Literal["Active", "Succeeded", "Failed"]
ReportPhase = Literal["Verified", "Qualified", "Rejected", "Failed"]
EventType = Literal["Normal", "Warning"]

TERMINAL_PHASES = ("Qualified", "Rejected", "Failed")


_ConditionValue = tuple[ConditionStatus, str, str]
ModelPhase = Literal["Pending", "Building", "Ready", "Failed"]


@dataclass(frozen=True)
class JobReport:
    """What a build or verify Job's pod reported in its termination message."""

    phase: ReportPhase
    reason: str
    message: str
    measurements: VariantStatus | None = None
    """For builds: the measured results, in the shape of the variant's status."""


@dataclass(frozen=True)
class ObservedJob:
    """A Job of this model as it is now."""

    name: str
    role: JobRole
    revision: str
    variant: str | None
    state: JobState
    generation: int | None = None
    """The model generation the Job was created for."""
    failure_reason: str = ""
    """The Job's Failed condition reason (BackoffLimitExceeded, DeadlineExceeded)."""
    failure_message: str = ""
    finished_at: datetime | None = None
    report: JobReport | None = None
    unparsed_message: str = ""
    """A termination message that is not a result (e.g. the log tail of a crashed builder)."""
    attempt: int = 1
    """Which build attempt of its variant and revision this Job is (retries are new Jobs)."""


@dataclass(frozen=True)
class JobToCreate:
    role: JobRole
    variant: str | None = None
    attempt: int = 1


@dataclass(frozen=True)
class ModelEvent:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class ModelPlan:
    status: SLMModelStatus
    create: list[JobToCreate] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    events: list[ModelEvent] = field(default_factory=list)
    in_progress: bool = False
    """Jobs are running or about to: the controller keeps looking (a timer, not a sleep)."""


@dataclass(frozen=True)
class _Verification:
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str


def _is_finished_without_report(job: ObservedJob, now: datetime) -> bool:
    """A finished Job whose result has not been seen yet, still within the grace period."""
    if job.state == "Active" or job.report is not None or job.unparsed_message:
        return False
    return job.finished_at is not None and now - job.finished_at < RESULT_GRACE


def _job_failure_text(job: ObservedJob) -> tuple[str, str]:
    """Reason and message for a Job that failed without a parseable result."""
    if job.failure_reason == "DeadlineExceeded":
        return (
            "BuildDeadlineExceeded",
            f"Job {job.name} ran longer than its deadline (spec.build.activeDeadlineSeconds); "
            "raise the deadline or give the build more CPU (spec.build.resources).",
        )
    detail = job.unparsed_message.strip()[-600:] if job.unparsed_message else ""
    base = f"Job {job.name} failed ({job.failure_reason or 'no reason given'})"
    if detail:
        return ("BuildCrashed", f"{base}; the builder's last output: {detail}")
    if job.state == "Succeeded":
        return ("NoBuildResult", f"Job {job.name} succeeded but its pod reported no result.")
    return ("BuildFailed", f"{base}: {job.failure_message or 'see the pod log'}.")


def retry_delay(attempt: int) -> timedelta:
    """How long after build attempt `attempt` failed transiently the next one starts."""
    seconds = RETRY_DELAY_SECONDS * 2 ** max(0, attempt - 1)
    return timedelta(seconds=min(seconds, MAX_RETRY_DELAY_SECONDS))


def _transient_failure(job: ObservedJob) -> JobReport | None:
    """The report of a build that failed on something outside it that comes back by itself."""
    report = job.report
    if (
        job.state != "Succeeded"
        and report is not None
        and report.phase == "Failed"
        and report.reason in TRANSIENT_REASONS
    ):
        return report
    return None


@dataclass(frozen=True)
class _Retry:
    """What to do about a Job that failed transiently."""

    message: str
    next_attempt: int | None = None
    """Create this attempt now."""
    gave_up: bool = False


def _retry(job: ObservedJob, report: JobReport, now: datetime, what: str) -> _Retry:
    """A Job that failed transiently: retried by its own pods while it is active, then by a
    new Job after a delay, at most MAX_BUILD_ATTEMPTS Jobs; then given up."""
    failure = report.message.rstrip(".")
    if job.state == "Active":
        return _Retry(f"{failure}; Job {job.name} tries again.")
    if job.attempt >= MAX_BUILD_ATTEMPTS:
        return _Retry(
            f"{failure}; gave up after {job.attempt} {what} attempts. Editing the spec retries.",
            gave_up=True,
        )
    following = job.attempt + 1
    due = (job.finished_at or now) + retry_delay(job.attempt)
    tried = f"{failure}; {what} attempt {job.attempt} of {MAX_BUILD_ATTEMPTS} failed"
    if now < due:
        return _Retry(f"{tried}, attempt {following} starts at {cond.now_rfc3339(due)}.")
    return _Retry(f"{tried}, attempt {following} is starting.", next_attempt=following)


def _retrying(
    name: str, revision: str, job: ObservedJob, report: JobReport, now: datetime
) -> tuple[VariantStatus, JobToCreate | None]:
    """A variant whose build failed transiently: Building while it is retried, then Failed."""
    step = _retry(job, report, now, "build")
    variant = VariantStatus(
        name=name,
        revision=revision,
        build_job=job.name,
        phase="Failed" if step.gave_up else "Building",
        reason=report.reason,
        message=step.message,
    )
    if step.next_attempt is None:
        return variant, None
    return variant, JobToCreate("build", name, attempt=step.next_attempt)


def _verification(
    spec: SLMModelSpec,
    revision: str,
    previous: SLMModelStatus,
    job: ObservedJob | None,
    now: datetime,
) -> tuple[_Verification, JobToCreate | None]:
    """The SourceVerified verdict and the verify Job to create, if one is needed."""
    previously = cond.find(previous.conditions, "SourceVerified")
    if (
        job is None
        and previous.revision == revision
        and previously is not None
        and previously.status == "True"
    ):
        # Verified earlier for this very revision; its Job may have been cleaned up.
        return _Verification("True", previously.reason, previously.message), None
    if job is None:
        return _Verification(
            "Unknown", "Verifying", f"Fetching {spec.source.uri} to check its sha256."
        ), JobToCreate("verify")
    if job.report is not None and job.report.phase == "Verified":
        return _Verification(
            "True",
            "SourceVerified",
            job.report.message or f"{spec.source.uri} matches sha256 {spec.source.sha256}.",
        ), None
    transient = _transient_failure(job)
    if transient is not None:
        step = _retry(job, transient, now, "verify")
        again = JobToCreate("verify", attempt=step.next_attempt) if step.next_attempt else None
        return _Verification(
            "False" if step.gave_up else "Unknown", transient.reason, step.message
        ), again
    if job.report is not None and job.report.phase == "Failed":
        return _Verification(
            "False", job.report.reason or "SourceUnavailable", job.report.message
        ), None
    if job.state == "Active" or _is_finished_without_report(job, now):
        return _Verification(
            "Unknown", "Verifying", f"Job {job.name} is fetching the source to check its sha256."
        ), None
    reason, message = _job_failure_text(job)
    return _Verification(
        "False", "SourceUnavailable" if reason == "BuildFailed" else reason, message
    ), None


def _variant_from_job(
    name: str, revision: str, job: ObservedJob, previous: VariantStatus | None, now: datetime
) -> VariantStatus:
    if job.report is not None and job.report.phase in TERMINAL_PHASES:
        measured = job.report.measurements or VariantStatus(name=name)
        return measured.model_copy(
            update={
                "name": name,
                "revision": revision,
                "build_job": job.name,
                "phase": job.report.phase,
                "reason": job.report.reason,
                "message": job.report.message,
            }
        )
    if (
        previous is not None
        and previous.revision == revision
        and previous.build_job == job.name
        and previous.phase in TERMINAL_PHASES
    ):
        # The pods that carried the result may be gone; the status is the durable record.
        return previous
    if job.state == "Active" or _is_finished_without_report(job, now):
        return VariantStatus(
            name=name,
            revision=revision,
            build_job=job.name,
            phase="Building",
            reason="Building",
            message=f"Job {job.name} is building and evaluating the variant.",
        )
    reason, message = _job_failure_text(job)
    return VariantStatus(
        name=name,
        revision=revision,
        build_job=job.name,
        phase="Failed",
        reason=reason,
        message=message,
    )


def _with_secret_hint(variant: VariantStatus, spec: SLMModelSpec) -> VariantStatus:
    """Point a credential failure at the Secret a person has to fix."""
    if variant.reason != "RegistryAuthFailed":
        return variant
    secret = spec.image.push_secret_ref
    hint = (
        f" Check the push Secret {secret.name} (spec.image.pushSecretRef); editing the spec "
        "retries the failed builds."
        if secret is not None
        else " No push Secret is set (spec.image.pushSecretRef); the registry needs one."
    )
    if hint.strip() in variant.message:
        return variant
    return variant.model_copy(update={"message": variant.message + hint})


def _summary(variants: Sequence[VariantStatus], phase: str) -> list[VariantStatus]:
    return [v for v in variants if v.phase == phase]


def _describe(variants: Sequence[VariantStatus]) -> str:
    return "; ".join(f"{v.name}: {v.message or v.reason}" for v in variants)


def _one_reason(variants: Sequence[VariantStatus], fallback: str) -> str:
    reasons = {v.reason for v in variants if v.reason}
    return reasons.pop() if len(reasons) == 1 else fallback


def _record_revision(
    revisions: Sequence[RevisionArtifacts], revision: str, variants: Sequence[VariantStatus]
) -> list[RevisionArtifacts]:
    qualified = [v for v in variants if v.phase == "Qualified" and v.artifact]
    if not qualified:
        return list(revisions)
    entry = RevisionArtifacts(
        revision=revision,
        variants={v.name: v.artifact for v in qualified if v.artifact},
        sizes={v.name: v.size_bytes for v in qualified if v.size_bytes is not None},
    )
    others = [r for r in revisions if r.revision != revision]
    return [entry, *others][:MAX_REVISIONS]


def _events(
    previous: SLMModelStatus,
    revision: str,
    verification: _Verification,
    variants: Sequence[VariantStatus],
    created: Sequence[JobToCreate],
) -> list[ModelEvent]:
    events: list[ModelEvent] = []
    if previous.revision != revision:
        events.append(
            ModelEvent(
                "Normal",
                "NewRevision",
                f"Revision {revision} (was {previous.revision or 'none'}).",
            )
        )
    before = cond.find(previous.conditions, "SourceVerified")
    if before is None or before.status != verification.status or previous.revision != revision:
        if verification.status == "True":
            events.append(ModelEvent("Normal", "SourceVerified", verification.message))
        elif verification.status == "False":
            events.append(
                ModelEvent(
                    "Warning", verification.reason, f"Source not verified: {verification.message}"
                )
            )
    if (
        verification.status == "Unknown"
        and verification.reason in TRANSIENT_REASONS
        and (before is None or before.reason != verification.reason)
    ):
        events.append(ModelEvent("Warning", verification.reason, f"Source: {verification.message}"))
    for job in created:
        if job.role == "verify":
            again = f" (attempt {job.attempt} of {MAX_BUILD_ATTEMPTS})" if job.attempt > 1 else ""
            events.append(
                ModelEvent(
                    "Normal", "VerifyingSource", f"Started a Job to verify the source{again}."
                )
            )
        elif job.attempt > 1:
            events.append(
                ModelEvent(
                    "Normal",
                    "BuildStarted",
                    f"Started build attempt {job.attempt} of {MAX_BUILD_ATTEMPTS} of variant "
                    f"{job.variant} for revision {revision}.",
                )
            )
        else:
            events.append(
                ModelEvent(
                    "Normal",
                    "BuildStarted",
                    f"Started the build of variant {job.variant} for revision {revision}.",
                )
            )
    old = {v.name: v for v in previous.variants if v.revision == revision}
    for variant in variants:
        was = old.get(variant.name)
        if variant.phase == "Building" and variant.reason in TRANSIENT_REASONS:
            if was is None or was.reason != variant.reason:
                events.append(
                    ModelEvent("Warning", variant.reason, f"{variant.name}: {variant.message}")
                )
            continue
        if was is not None and was.phase == variant.phase:
            continue
        if variant.phase == "Qualified":
            events.append(
                ModelEvent("Normal", "VariantQualified", f"{variant.name}: {variant.message}")
            )
        elif variant.phase == "Rejected":
            events.append(
                ModelEvent("Warning", "VariantRejected", f"{variant.name}: {variant.message}")
            )
        elif variant.phase == "Failed":
            events.append(
                ModelEvent(
                    "Warning",
                    variant.reason or "VariantFailed",
                    f"{variant.name}: {variant.message}",
                )
            )
    return events


def plan_model(
    *,
    spec: SLMModelSpec,
    revision: str,
    generation: int | None,
    previous: SLMModelStatus,
    jobs: Sequence[ObservedJob],
    now: datetime,
) -> ModelPlan:
    """The status to write, the Jobs to create or delete and the events to post."""
    stamp = cond.now_rfc3339(now)
    create: list[JobToCreate] = []
    delete: list[str] = []

    current = [j for j in jobs if j.revision == revision]
    # Another revision's Jobs are wasted work now; their qualified artifacts are already
    # recorded in status.revisions and stay in the registry.
    delete.extend(j.name for j in jobs if j.revision != revision)

    def is_stale_failure(job: ObservedJob) -> bool:
        failed = job.state == "Failed" and (job.report is None or job.report.phase == "Failed")
        return (
            failed
            and generation is not None
            and job.generation is not None
            and job.generation < generation
            and not _is_finished_without_report(job, now)
        )

    # A variant's newest attempt speaks for it; the earlier ones are the record of its retries.
    attempts: dict[str, list[ObservedJob]] = {}
    for observed in current:
        if observed.role == "build" and observed.variant:
            attempts.setdefault(observed.variant, []).append(observed)
    latest = {v: max(found, key=lambda j: j.attempt) for v, found in attempts.items()}
    verifies = [j for j in current if j.role == "verify"]
    latest_verify = max(verifies, key=lambda j: j.attempt) if verifies else None
    # A spec edit retries a failure from its first attempt: all the Jobs of that step go.
    stale_variants = {v for v, newest in latest.items() if is_stale_failure(newest)}
    stale_verify = latest_verify is not None and is_stale_failure(latest_verify)
    retry = [
        j
        for j in current
        if (j.role == "verify" and stale_verify)
        or (j.role == "build" and j.variant in stale_variants)
    ]
    delete.extend(j.name for j in retry)
    retried = {j.name for j in retry}

    verify = latest_verify if latest_verify is not None and not stale_verify else None
    waiting_for_deletion = verify is None and any(j.role == "verify" for j in retry)
    verification, wanted_verify = _verification(spec, revision, previous, verify, now)
    if wanted_verify is not None and not waiting_for_deletion:
        create.append(wanted_verify)

    builds = {v: newest for v, newest in latest.items() if newest.name not in retried}
    previous_variants = {v.name: v for v in previous.variants}
    variants: list[VariantStatus] = []
    for variant in spec.variants:
        job = builds.get(variant.name)
        if verification.status != "True":
            waiting = verification.status == "Unknown"
            reason = "WaitingForSource" if waiting else "SourceNotVerified"
            message = (
                "Waiting for the source to be verified."
                if waiting
                else "Not built: the source was not verified."
            )
            variants.append(
                VariantStatus(
                    name=variant.name,
                    revision=revision,
                    phase="Pending",
                    reason=reason,
                    message=message,
                )
            )
            continue
        if job is None:
            if not any(j.variant == variant.name for j in retry):
                create.append(JobToCreate("build", variant.name))
            variants.append(
                VariantStatus(
                    name=variant.name,
                    revision=revision,
                    phase="Building",
                    reason="BuildStarting",
                    message="Creating the build Job.",
                )
            )
            continue
        transient = _transient_failure(job)
        if transient is not None:
            built, again = _retrying(variant.name, revision, job, transient, now)
            if again is not None:
                create.append(again)
            variants.append(built)
            continue
        built = _variant_from_job(
            variant.name, revision, job, previous_variants.get(variant.name), now
        )
        variants.append(_with_secret_hint(built, spec))

    in_progress = (
        bool(create or delete)
        or verification.status == "Unknown"
        or any(v.phase in ("Pending", "Building") for v in variants)
    )
    if verification.status == "False":
        in_progress = bool(create or delete)

    conditions = list(previous.conditions)

    def put(
        kind: str, status: Literal["True", "False", "Unknown"], reason: str, message: str
    ) -> None:
        nonlocal conditions
        conditions = cond.set_condition(
            conditions,
            kind,
            status,
            reason=reason,
            message=message,
            generation=generation,
            now=stamp,
        )

    put("SourceVerified", verification.status, verification.reason, verification.message)

    qualified = _summary(variants, "Qualified")
    rejected = _summary(variants, "Rejected")
    failed = _summary(variants, "Failed")
    building = [v for v in variants if v.phase in ("Pending", "Building")]
    retrying = [v for v in building if v.reason in TRANSIENT_REASONS]
    verify_retrying = verification.status == "Unknown" and verification.reason in TRANSIENT_REASONS
    finished = len(variants) - len(building)
    total = len(variants)

    built_cond: _ConditionValue
    qual_cond: _ConditionValue
    ready: _ConditionValue
    phase: ModelPhase
    if verification.status == "False":
        built_cond = (
            "False",
            "SourceNotVerified",
            "No variant is built from an unverified source.",
        )
    elif building:
        built_cond = ("Unknown", "Building", f"{finished} of {total} variants finished.")
    elif failed:
        built_cond = ("False", _one_reason(failed, "BuildsFailed"), _describe(failed))
    else:
        built_cond = ("True", "AllBuilt", f"All {total} variants were built and evaluated.")
    put("VariantsBuilt", *built_cond)

    if verification.status == "False":
        qual_cond = ("False", "SourceNotVerified", "Nothing to evaluate.")
    elif rejected:
        qual_cond = (
            "False",
            "BudgetExceeded",
            f"{len(qualified)} of {total} qualified; rejected: {_describe(rejected)}",
        )
    elif building:
        qual_cond = ("Unknown", "Evaluating", f"{len(qualified)} of {total} qualified so far.")
    elif failed:
        qual_cond = (
            "False",
            "NotAllBuilt",
            f"{len(qualified)} of {total} qualified; {len(failed)} failed to build.",
        )
    else:
        qual_cond = ("True", "AllQualified", f"All {total} variants met the evaluation budgets.")
    put("VariantsQualified", *qual_cond)

    stalled: tuple[str, str] | None = None
    if verification.status == "False":
        ready = ("False", verification.reason, verification.message)
        stalled = (verification.reason, verification.message)
        phase = "Failed"
    elif verify_retrying:
        # Not ready, and why, while it lasts: the outage is named, not left as "Building".
        ready = ("False", verification.reason, verification.message)
        phase = "Building"
    elif retrying:
        ready = ("False", _one_reason(retrying, "BuildsRetrying"), _describe(retrying))
        phase = "Building"
    elif building or verification.status == "Unknown":
        ready = (
            "Unknown",
            "Building",
            f"Revision {revision}: {finished} of {total} variants finished.",
        )
        phase = "Building"
    elif failed:
        message = _describe(failed)
        ready = ("False", _one_reason(failed, "BuildsFailed"), message)
        stalled = (ready[1], message)
        phase = "Failed"
    elif not qualified:
        message = f"No variant met the evaluation budgets: {_describe(rejected)}"
        ready = ("False", "NoVariantQualified", message)
        stalled = ("NoVariantQualified", message)
        phase = "Failed"
    else:
        message = f"Revision {revision}: {len(qualified)} of {total} variants qualified"
        message += f"; rejected: {_describe(rejected)}." if rejected else "."
        ready = ("True", "Qualified", message)
        phase = "Ready"
    put("Ready", *ready)
    if in_progress and verify_retrying:
        put(
            "Reconciling",
            "True",
            "Retrying",
            f"Revision {revision}: retrying the source's verification after a transient failure.",
        )
    elif in_progress and retrying:
        put(
            "Reconciling",
            "True",
            "Retrying",
            f"Revision {revision}: retrying {', '.join(v.name for v in retrying)} after a "
            "transient failure.",
        )
    elif in_progress:
        put("Reconciling", "True", "Building", f"Building revision {revision}.")
    else:
        put("Reconciling", "False", "Done", f"Revision {revision} is settled.")
    if stalled is not None:
        put("Stalled", "True", stalled[0], stalled[1])
    else:
        put(
            "Stalled",
            "False",
            "Progressing" if in_progress else "Settled",
            "Nothing needs a person.",
        )

    revisions = list(previous.revisions)
    if not building and verification.status == "True":
        revisions = _record_revision(revisions, revision, variants)

    status = SLMModelStatus(
        observed_generation=generation,
        conditions=conditions,
        phase=phase,
        revision=revision,
        variants=variants,
        revisions=revisions,
    )
    return ModelPlan(
        status=status,
        create=create,
        delete=delete,
        events=_events(previous, revision, verification, variants, create),
        in_progress=in_progress,
    )
