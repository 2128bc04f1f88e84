"""From watched Kubernetes objects to the facts the rollout decision needs: pure functions.

The controller keeps nodes, pods, workloads and models in kopf indexes; these functions turn
the raw bodies kept there into the facts the decision needs (and are unit-tested without a
cluster).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.utils import parse_quantity
from pydantic import ValidationError

from slmops.api.v1alpha1.common import ResourceRequirements
from slmops.api.v1alpha1.edgerollout import EdgeRolloutStatus
from slmops.api.v1alpha1.slmmodel import SLMModelSpec, SLMModelStatus
from slmops.domain.conditions import is_true
from slmops.domain.placement import FleetNode, VariantOffer
from slmops.domain.rollout import NodeServing
from slmops.domain.workloads import REVISION_LABEL, VARIANT_LABEL

ACTION_ANNOTATION = "slmops.io/action"


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def fleet_node(name: str, labels: Mapping[str, str], status: Mapping[str, Any]) -> FleetNode:
    """A Node as placement sees it: labels, allocatable memory, Ready."""
    memory = (status.get("allocatable") or {}).get("memory") or "0"
    try:
        memory_bytes = int(parse_quantity(str(memory)))  # type: ignore[no-untyped-call]
    except ValueError:
        memory_bytes = 0
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return FleetNode(
        name=name, labels=dict(labels), allocatable_memory_bytes=memory_bytes, ready=ready
    )


@dataclass(frozen=True)
class ServerPod:
    """A model server pod of a rollout, as the index keeps it."""

    name: str
    node: str | None
    revision: str | None
    variant: str | None
    ready: bool
    terminating: bool
    created: datetime | None
    ready_since: datetime | None


def server_pod(
    name: str,
    labels: Mapping[str, str],
    meta: Mapping[str, Any],
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
) -> ServerPod:
    ready_condition = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None
    )
    ready = ready_condition is not None and ready_condition.get("status") == "True"
    return ServerPod(
        name=name,
        node=spec.get("nodeName"),
        revision=labels.get(REVISION_LABEL),
        variant=labels.get(VARIANT_LABEL),
        ready=ready and status.get("phase") == "Running",
        terminating=bool(meta.get("deletionTimestamp")),
        created=parse_time(meta.get("creationTimestamp")),
        ready_since=parse_time(ready_condition.get("lastTransitionTime"))
        if ready_condition and ready
        else None,
    )


def node_serving(pods: Iterable[ServerPod]) -> dict[str, NodeServing]:
    """What each node runs: its newest live pod (during a switch the new revision's pod
    exists next to the old one until the old one is deleted)."""
    newest: dict[str, ServerPod] = {}
    epoch = datetime.min.replace(tzinfo=UTC)
    for pod in pods:
        if pod.node is None or pod.terminating:
            continue
        current = newest.get(pod.node)
        if current is None or (pod.created or epoch, pod.name) > (
            current.created or epoch,
            current.name,
        ):
            newest[pod.node] = pod
    return {
        node: NodeServing(revision=pod.revision, ready=pod.ready, since=pod.ready_since)
        for node, pod in newest.items()
    }


@dataclass(frozen=True)
class ModelView:
    """What a rollout needs from its SLMModel."""

    revision: str | None
    """The revision to roll out now (None: the model is not Ready and nothing is pinned)."""
    offers: dict[str, list[VariantOffer]]
    """Per revision, the variants as placement sees them."""
    insecure_registry: bool
    pull_secret: str | None
    problem: str = ""
    resources: dict[str, ResourceRequirements] = field(default_factory=dict)
    """Per variant, the serving pod's resources from its hardware target."""


def model_view(body: Mapping[str, Any] | None, pinned: str | None) -> ModelView:
    if body is None:
        return ModelView(None, {}, False, None, problem="the SLMModel does not exist")
    try:
        spec = SLMModelSpec.model_validate(body.get("spec") or {})
        status = SLMModelStatus.model_validate(body.get("status") or {})
    except ValidationError as error:
        return ModelView(None, {}, False, None, problem=f"the SLMModel is invalid: {error}")
    offers = model_offers(spec, status)
    ready = is_true(status.conditions, "Ready") or status.phase == "Ready"
    revision = pinned or (status.revision if ready else None)
    problem = ""
    if pinned and pinned not in offers:
        problem = f"revision {pinned} is not among the model's qualified revisions"
    elif revision is None:
        problem = "the SLMModel is not Ready yet"
    pull = spec.image.pull_secret_ref.name if spec.image.pull_secret_ref else None
    resources = {
        v.name: v.target.resources
        for v in spec.variants
        if v.target.resources.requests or v.target.resources.limits
    }
    return ModelView(
        revision, offers, spec.image.insecure, pull, problem=problem, resources=resources
    )


def model_offers(spec: SLMModelSpec, status: SLMModelStatus) -> dict[str, list[VariantOffer]]:
    """Every revision the model can serve, with its variants in the spec's order (which is
    the order of preference for a node)."""
    offers: dict[str, list[VariantOffer]] = {}
    for recorded in status.revisions:
        offers[recorded.revision] = [
            _offer(variant, recorded.variants.get(variant.name), recorded.sizes.get(variant.name))
            for variant in spec.variants
        ]
    if status.revision:
        by_name = {v.name: v for v in status.variants if v.revision in ("", status.revision)}
        current: list[VariantOffer] = []
        for variant in spec.variants:
            built = by_name.get(variant.name)
            qualified = built is not None and built.phase == "Qualified" and bool(built.artifact)
            current.append(
                _offer(
                    variant,
                    built.artifact if built and qualified else None,
                    built.size_bytes if built else None,
                )
            )
        offers[status.revision] = current
    return offers


def _offer(variant: Any, artifact: str | None, size: int | None) -> VariantOffer:
    target = variant.target
    return VariantOffer(
        name=variant.name,
        hardware_class=target.hardware_class or variant.name,
        selector=target.node_selector,
        qualified=artifact is not None,
        artifact=artifact,
        model_bytes=size,
        runtime_overhead_mib=target.runtime_overhead_mi_b,
        gpu_memory_mib=target.gpu_memory_mi_b,
    )


def parse_action(annotations: Mapping[str, str]) -> tuple[str, str] | None:
    """The `slmops.io/action` request as (id, action); None if absent or malformed."""
    raw = annotations.get(ACTION_ANNOTATION, "")
    request_id, sep, action = raw.partition(":")
    if not sep or not request_id or not action:
        return None
    return request_id.strip(), action.strip()


def status_merge_patch(new: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `old` into exactly `new`: absent keys become null (which
    deletes them), nested objects recurse, lists are replaced whole."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        previous = old.get(key)
        if isinstance(value, Mapping) and isinstance(previous, Mapping):
            nested = status_merge_patch(value, previous)
            if nested:
                patch[key] = nested
        elif value != previous:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def dump_status(status: EdgeRolloutStatus) -> dict[str, Any]:
    """The status as stored: camelCase, without None and without empty strings.

    Empty strings are left out because they are the defaults when read back, and because
    some apiservers (the testbed's 1.20 build among them) decode "" in a custom resource as
    null and then refuse it as "must be of type string".
    """
    dumped: dict[str, Any] = _without_empty_strings(
        status.model_dump(mode="json", by_alias=True, exclude_none=True)
    )
    return dumped


def _without_empty_strings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_empty_strings(v) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [_without_empty_strings(v) for v in value]
    return value


def offers_by_variant(offers: Sequence[VariantOffer]) -> dict[str, VariantOffer]:
    return {offer.name: offer for offer in offers}
