"""Pure builders of the Jobs an SLMModel needs: one that verifies the source, one per variant.

Names are deterministic (model, variant, revision), so an operator that restarts finds the
Jobs it created instead of creating them again, and a revision that was built is never built
twice. A build Job is pinned to nodes of its variant's hardware class by node affinity: the
benchmark in the build is only worth something if it is measured where the variant will run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from slmops.api.v1alpha1.common import API_VERSION, LabelSelector, ResourceRequirements
from slmops.api.v1alpha1.slmmodel import SLMModelSpec, Variant

LABEL_MODEL = "slmops.io/model"
LABEL_REVISION = "slmops.io/revision"
LABEL_VARIANT = "slmops.io/variant"
LABEL_ROLE = "slmops.io/role"
LABEL_ATTEMPT = "slmops.io/attempt"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_GENERATION = "slmops.io/generation"
MANAGER = "slmops"

JobRole = Literal["verify", "build"]

# Paths inside the builder container. Unusual on purpose: the testbed's simulator maps a
# mount onto a local directory by rewriting the mount path wherever it appears as a path in
# args and env, and a short path such as /work could also appear inside held-out text.
WORK_DIR = "/var/run/slmops/build-work"
TMP_DIR = "/var/run/slmops/build-tmp"
REGISTRY_AUTH_DIR = "/var/run/slmops/registry-auth"
REGISTRY_AUTH_FILE = f"{REGISTRY_AUTH_DIR}/config.json"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"

# The builder image's unprivileged user (distroless "nonroot").
NONROOT_UID = 65532

MAX_NAME_LENGTH = 63
"""Job names become the `job-name` label of their pods: a label value, at most 63 characters."""


@dataclass(frozen=True)
class ModelRef:
    """The SLMModel that owns the Jobs."""

    name: str
    namespace: str
    uid: str
    generation: int


@dataclass(frozen=True)
class BuilderSettings:
    """Operator-wide settings of build Jobs."""

    image: str
    """The builder image (its repository ends in slmops-builder)."""
    verify_deadline_seconds: int = 600
    """Fetching and hashing a source is quick; a verify Job that runs longer is stuck."""
    verify_backoff_limit: int = 1


def _short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def bounded_name(*parts: str) -> str:
    """`part-part-…`, or when longer than 63 characters, a truncated prefix + a hash of the
    whole name, so distinct inputs keep distinct names."""
    full = "-".join(parts)
    if len(full) <= MAX_NAME_LENGTH:
        return full
    suffix = _short_hash(full)
    prefix = full[: MAX_NAME_LENGTH - len(suffix) - 1].rstrip("-")
    return f"{prefix}-{suffix}"


def model_label(model_name: str) -> str:
    """The model's name as a label value (object names may be longer than label values)."""
    return bounded_name(model_name)


def build_job_name(model_name: str, variant_name: str, revision: str, attempt: int = 1) -> str:
    """The first attempt keeps the plain name; a retry after a transient failure (the
    registry was down) gets its own, so every attempt is a Job of its own that stays as the
    record of how often the build was tried."""
    if attempt <= 1:
        return bounded_name(model_name, variant_name, revision)
    return bounded_name(model_name, variant_name, revision, f"attempt{attempt}")


def verify_job_name(model_name: str, revision: str, attempt: int = 1) -> str:
    # The revision before the role: a build name ends in hex, this one in "verify", so a
    # variant called "verify" cannot collide with it (nor can their retries: a build
    # retry's name has the revision, hex, where this one has "verify").
    if attempt <= 1:
        return bounded_name(model_name, revision, "verify")
    return bounded_name(model_name, revision, "verify", f"attempt{attempt}")


def artifact_tag(variant_name: str, revision: str) -> str:
    """The tag a variant of a revision is pushed under (digests are what status records)."""
    return f"{variant_name}-{revision}"


def node_affinity(selector: LabelSelector) -> dict[str, Any]:
    """A required node affinity equivalent to a label selector (all requirements in one term:
    a LabelSelector ANDs them, and so do the expressions of a single node selector term)."""
    expressions: list[dict[str, Any]] = [
        {"key": key, "operator": "In", "values": [value]}
        for key, value in sorted(selector.match_labels.items())
    ]
    for requirement in selector.match_expressions:
        expression: dict[str, Any] = {"key": requirement.key, "operator": requirement.operator}
        if requirement.operator in ("In", "NotIn"):
            expression["values"] = list(requirement.values)
        expressions.append(expression)
    if not expressions:
        return {}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": expressions}]
            }
        }
    }


def _resources(requirements: ResourceRequirements) -> dict[str, dict[str, str]]:
    resources: dict[str, dict[str, str]] = {}
    if requirements.requests:
        resources["requests"] = {k: str(v) for k, v in requirements.requests.items()}
    if requirements.limits:
        resources["limits"] = {k: str(v) for k, v in requirements.limits.items()}
    return resources


def job_labels(
    model: ModelRef, revision: str, role: JobRole, variant: str | None, attempt: int = 1
) -> dict[str, str]:
    labels = {
        LABEL_MODEL: model_label(model.name),
        LABEL_REVISION: revision,
        LABEL_ROLE: role,
        LABEL_MANAGED_BY: MANAGER,
    }
    if variant is not None:
        labels[LABEL_VARIANT] = variant
    if attempt > 1:
        labels[LABEL_ATTEMPT] = str(attempt)
    return labels


def _owner_reference(model: ModelRef) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "SLMModel",
        "name": model.name,
        "uid": model.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _job(
    *,
    name: str,
    model: ModelRef,
    spec: SLMModelSpec,
    revision: str,
    role: JobRole,
    variant: Variant | None,
    request_json: str,
    settings: BuilderSettings,
    attempt: int = 1,
) -> dict[str, Any]:
    labels = job_labels(model, revision, role, variant.name if variant else None, attempt)
    args = [
        "build",
        "--request-json",
        request_json,
        "--work-dir",
        WORK_DIR,
        "--termination-message-path",
        TERMINATION_MESSAGE_PATH,
    ]
    if role == "verify":
        args.append("--verify-only")
    env: list[dict[str, Any]] = [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "HOME", "value": WORK_DIR},
        {"name": "TMPDIR", "value": TMP_DIR},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "work", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "work", "mountPath": WORK_DIR},
        {"name": "tmp", "mountPath": TMP_DIR},
    ]
    push_secret = spec.image.push_secret_ref
    # Only a build pushes; the verify Job reads the source and needs no registry credentials
    # (an oci:// source is read with the pull Secret if one is named).
    auth_secret = push_secret if role == "build" else spec.image.pull_secret_ref
    if auth_secret is not None:
        volumes.append(
            {
                "name": "registry-auth",
                "secret": {
                    "secretName": auth_secret.name,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": "registry-auth", "mountPath": REGISTRY_AUTH_DIR, "readOnly": True})
        env.append({"name": "SLMOPS_REGISTRY_AUTH_FILE", "value": REGISTRY_AUTH_FILE})

    if role == "build":
        deadline = spec.build.active_deadline_seconds
        backoff = spec.build.backoff_limit
        resources = _resources(spec.build.resources)
    else:
        deadline = min(settings.verify_deadline_seconds, spec.build.active_deadline_seconds)
        backoff = settings.verify_backoff_limit
        resources = _resources(
            ResourceRequirements(
                requests={"cpu": "100m", "memory": "256Mi"}, limits={"memory": "1Gi"}
            )
        )

    container: dict[str, Any] = {
        "name": "builder",
        "image": settings.image,
        "command": ["slmops"],
        "args": args,
        "env": env,
        "resources": resources,
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        # A builder that crashes before writing its result still leaves the tail of its log
        # where the controller looks for the result, so the condition can say what happened.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # The build talks to the registry and the source, never to the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NONROOT_UID,
            "runAsGroup": NONROOT_UID,
            "fsGroup": NONROOT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if variant is not None:
        affinity = node_affinity(variant.target.node_selector)
        if affinity:
            pod_spec["affinity"] = affinity
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": model.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_GENERATION: str(model.generation)},
            "ownerReferences": [_owner_reference(model)],
        },
        "spec": {
            "activeDeadlineSeconds": deadline,
            "backoffLimit": backoff,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def verify_job(
    *,
    model: ModelRef,
    spec: SLMModelSpec,
    revision: str,
    request_json: str,
    settings: BuilderSettings,
    attempt: int = 1,
) -> dict[str, Any]:
    """The Job that fetches the source and checks its sha256, before any build exists
    (`attempt` > 1: a retry after the source's server did not answer)."""
    return _job(
        name=verify_job_name(model.name, revision, attempt),
        model=model,
        spec=spec,
        revision=revision,
        role="verify",
        variant=None,
        request_json=request_json,
        settings=settings,
        attempt=attempt,
    )


def build_job(
    *,
    model: ModelRef,
    spec: SLMModelSpec,
    variant: Variant,
    revision: str,
    request_json: str,
    settings: BuilderSettings,
    attempt: int = 1,
) -> dict[str, Any]:
    """The Job that builds, evaluates and pushes one variant on its hardware class
    (`attempt` > 1: a retry after a transient failure)."""
    return _job(
        name=build_job_name(model.name, variant.name, revision, attempt),
        model=model,
        spec=spec,
        revision=revision,
        role="build",
        variant=variant,
        request_json=request_json,
        settings=settings,
        attempt=attempt,
    )
