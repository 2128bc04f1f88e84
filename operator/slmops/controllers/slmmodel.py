"""SLMModel handlers: thin glue between kopf and the build pipeline.

Every trigger (create, update, resume, and a timer while builds run) goes through one
level-triggered reconcile: read the Jobs of the model from kopf indexes, let
`domain.model_status.plan_model` decide, create or delete Jobs, post events for transitions and
patch the status only when it changed. No handler sleeps while a build runs; the timer looks
again every few seconds while the model reports Reconciling=True, and rarely otherwise.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from slmops.adapters.kube_jobs import JobWriter, job_snapshot, observe_job, pod_snapshot
from slmops.api.v1alpha1.common import GROUP, VERSION
from slmops.api.v1alpha1.slmmodel import SLMModelSpec, SLMModelStatus
from slmops.controllers.firstsight import acknowledge_generation
from slmops.domain import conditions as cond
from slmops.domain.builds import (
    LABEL_MANAGED_BY,
    LABEL_MODEL,
    MANAGER,
    BuilderSettings,
    ModelRef,
    artifact_tag,
    build_job,
    build_job_name,
    model_label,
    verify_job,
    verify_job_name,
)
from slmops.domain.model_status import ModelPlan, ObservedJob, plan_model
from slmops.domain.revision import model_revision
from slmops.optimize.contract import BuildRequest

BUILDER_IMAGE_ENV = "SLMOPS_BUILDER_IMAGE"
BUSY_INTERVAL_SECONDS = 3.0
IDLE_INTERVAL_SECONDS = 60.0


def builder_settings() -> BuilderSettings:
    """The builder image: env SLMOPS_BUILDER_IMAGE, else the image of this very version."""
    default = f"ghcr.io/slmops/slmops-builder:{importlib.metadata.version('slmops')}"
    return BuilderSettings(image=os.environ.get(BUILDER_IMAGE_ENV) or default)


_writer = JobWriter()
# Change handlers and the timer of one object may overlap; one reconcile at a time per object
# keeps them from creating the same Job twice or posting the same event twice.
_locks: dict[str, asyncio.Lock] = {}
# The status this process last computed per object. The operator is the only writer of the
# status, and the status in a handler's body may predate our own last patch; starting from
# what we wrote keeps a transition from being announced twice.
_written: dict[str, dict[str, Any]] = {}


@kopf.index("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGER, LABEL_MODEL: kopf.PRESENT})
def slmmodel_jobs(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], dict[str, Any]]:
    """Build and verify Jobs by (namespace, model label)."""
    return {(namespace, labels[LABEL_MODEL]): job_snapshot(body)}


@kopf.index("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGER, LABEL_MODEL: kopf.PRESENT})
def slmmodel_build_pods(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], dict[str, Any]]:
    """Pods of build Jobs by (namespace, Job name): where the results are."""
    job_name = labels.get("job-name")
    if not job_name:
        return {}
    return {(namespace, job_name): pod_snapshot(body)}


def _observe(
    namespace: str, name: str, jobs: kopf.Index[Any, Any], pods: kopf.Index[Any, Any]
) -> tuple[list[ObservedJob], set[str]]:
    """The model's Jobs, and the names of those being deleted (not to be created again yet)."""
    observed: list[ObservedJob] = []
    deleting: set[str] = set()
    snapshots: Iterable[Mapping[str, Any]] = jobs.get((namespace, model_label(name)), [])
    for snapshot in snapshots:
        if snapshot["deleting"]:
            deleting.add(snapshot["name"])
            continue
        observed.append(observe_job(snapshot, list(pods.get((namespace, snapshot["name"]), []))))
    return observed, deleting


def _request_json(name: str, spec: SLMModelSpec, revision: str, variant_name: str | None) -> str:
    variant = next((v for v in spec.variants if v.name == variant_name), None)
    request = BuildRequest(
        revision=revision,
        model=name,
        source=spec.source,
        variant=variant,
        evaluation=spec.evaluation,
        image=spec.image,
        artifact_tag=artifact_tag(variant.name, revision) if variant else None,
    )
    return request.model_dump_json(by_alias=True, exclude_none=True)


async def _carry_out(
    *,
    plan: ModelPlan,
    model: ModelRef,
    spec: SLMModelSpec,
    revision: str,
    deleting: set[str],
    logger: kopf.Logger,
) -> set[str]:
    """Create and delete Jobs; returns the names of Jobs this call actually created."""
    settings = builder_settings()
    created: set[str] = set()
    for name in plan.delete:
        logger.info(f"Deleting Job {name}.")
        await _writer.delete(model.namespace, name)
    for wanted in plan.create:
        if wanted.role == "verify":
            job_name = verify_job_name(model.name, revision, wanted.attempt)
            job = verify_job(
                model=model,
                spec=spec,
                revision=revision,
                request_json=_request_json(model.name, spec, revision, None),
                settings=settings,
                attempt=wanted.attempt,
            )
        else:
            variant = next(v for v in spec.variants if v.name == wanted.variant)
            job_name = build_job_name(model.name, variant.name, revision, wanted.attempt)
            job = build_job(
                model=model,
                spec=spec,
                variant=variant,
                revision=revision,
                request_json=_request_json(model.name, spec, revision, variant.name),
                settings=settings,
                attempt=wanted.attempt,
            )
        if job_name in deleting:
            continue
        if await _writer.create(job):
            created.add(job_name)
            logger.info(f"Created Job {job_name}.")
    return created


def _invalid_spec_status(
    previous: Mapping[str, Any], generation: int | None, error: ValidationError
) -> dict[str, Any]:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in error.errors()
    )
    now = cond.now_rfc3339()
    try:
        conditions = SLMModelStatus.model_validate(previous).conditions
    except ValidationError:
        conditions = []
    for kind, status in (("Ready", "False"), ("Stalled", "True"), ("Reconciling", "False")):
        conditions = cond.set_condition(
            conditions,
            kind,
            status,  # type: ignore[arg-type]
            reason="InvalidSpec",
            message=f"The spec is invalid; fix it: {problems}",
            generation=generation,
            now=now,
        )
    return {
        "observedGeneration": generation,
        "phase": "Failed",
        "conditions": cond.as_status(conditions),
    }


async def reconcile(
    *,
    body: kopf.Body,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    patch: kopf.Patch,
    logger: kopf.Logger,
    slmmodel_jobs: kopf.Index[Any, Any],
    slmmodel_build_pods: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    """The one reconcile every trigger runs."""
    uid = str(meta.get("uid"))
    lock = _locks.setdefault(uid, asyncio.Lock())
    async with lock:
        await _reconcile_locked(
            body=body,
            meta=meta,
            spec=spec,
            status=status,
            patch=patch,
            logger=logger,
            jobs=slmmodel_jobs,
            pods=slmmodel_build_pods,
        )


async def _reconcile_locked(
    *,
    body: kopf.Body,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    patch: kopf.Patch,
    logger: kopf.Logger,
    jobs: kopf.Index[Any, Any],
    pods: kopf.Index[Any, Any],
) -> None:
    uid = str(meta.get("uid"))
    name = str(meta.get("name"))
    namespace = str(meta.get("namespace"))
    generation = meta.get("generation")
    acknowledge_generation(status, meta, patch)
    known = _written.get(uid)
    current: dict[str, Any] = dict(known) if known is not None else dict(status)
    try:
        model_spec = SLMModelSpec.model_validate(dict(spec))
    except ValidationError as error:
        wanted = _invalid_spec_status(current, generation, error)
        _patch_if_changed(uid, status, patch, {**current, **wanted})
        return
    try:
        previous = SLMModelStatus.model_validate(current)
    except ValidationError:
        previous = SLMModelStatus()

    revision = model_revision(model_spec)
    observed, deleting = _observe(namespace, name, jobs, pods)
    plan = plan_model(
        spec=model_spec,
        revision=revision,
        generation=generation,
        previous=previous,
        jobs=observed,
        now=datetime.now(UTC),
    )
    model = ModelRef(name=name, namespace=namespace, uid=uid, generation=generation or 0)
    created = await _carry_out(
        plan=plan, model=model, spec=model_spec, revision=revision, deleting=deleting, logger=logger
    )
    for event in plan.events:
        if event.reason in ("BuildStarted", "VerifyingSource") and not created:
            continue
        kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])
    wanted = plan.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    _patch_if_changed(uid, status, patch, wanted)


def _patch_if_changed(
    uid: str, status: Mapping[str, Any], patch: kopf.Patch, wanted: dict[str, Any]
) -> None:
    _written[uid] = wanted
    stored = {key: status.get(key) for key in wanted}
    if stored == wanted and not patch.status:
        return
    for key, value in wanted.items():
        patch.status[key] = value


@kopf.on.resume(GROUP, VERSION, "slmmodels")
@kopf.on.create(GROUP, VERSION, "slmmodels")
@kopf.on.update(GROUP, VERSION, "slmmodels", field="spec")
async def on_change(**kwargs: Any) -> None:
    await reconcile(**kwargs)


def _busy(status: kopf.Status, **_: Any) -> bool:
    return any(
        c.get("type") == "Reconciling" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def _idle(status: kopf.Status, **kwargs: Any) -> bool:
    return not _busy(status, **kwargs)


@kopf.timer(GROUP, VERSION, "slmmodels", interval=BUSY_INTERVAL_SECONDS, when=_busy)
async def while_building(**kwargs: Any) -> None:
    await reconcile(**kwargs)


@kopf.timer(GROUP, VERSION, "slmmodels", interval=IDLE_INTERVAL_SECONDS, when=_idle)
async def while_settled(**kwargs: Any) -> None:
    # A settled model is still level-triggered: a Job deleted by hand is noticed and rebuilt.
    await reconcile(**kwargs)


@kopf.on.delete(GROUP, VERSION, "slmmodels", optional=True)
def forget(meta: kopf.Meta, **_: Any) -> None:
    """Drop per-object memory; the Jobs go with the model (owner references)."""
    uid = str(meta.get("uid"))
    _locks.pop(uid, None)
    _written.pop(uid, None)
