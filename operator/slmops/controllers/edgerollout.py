"""EdgeRollout handlers: thin glue between kopf and the rollout decision in domain/rollout.py.

One level-triggered reconcile per rollout, run by a kopf daemon: read the world (from
indexes and the live body), ask `decide`, measure if the decision says a round is due and
ask again, then make the workloads match and write the status if it changed. Every trigger
(a spec or annotation change, a server pod becoming ready, the time a wave or an analysis
round is due) only wakes that loop, so no two reconciles of one rollout ever overlap and a
restarted operator simply runs the loop again from the status.

Why a daemon and not a timer: the next reconcile is due at `Decision.requeue_after`, which
changes from second to second (analysis intervals, node timeouts, pauses); a daemon waits
exactly that long or until woken, a timer has one fixed period.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from slmops.adapters.kube_objects import (
    ModelView,
    ServerPod,
    dump_status,
    fleet_node,
    model_view,
    node_serving,
    parse_action,
    server_pod,
    status_merge_patch,
)
from slmops.adapters.kubernetes import KubeError, KubeWriter, load_api_client
from slmops.adapters.prometheus import PrometheusClient, PrometheusError
from slmops.api.v1alpha1.common import API_VERSION, GROUP, VERSION
from slmops.api.v1alpha1.edgerollout import EdgeRolloutSpec, EdgeRolloutStatus, Measurement
from slmops.controllers import rollout_metrics
from slmops.controllers.firstsight import acknowledge_generation
from slmops.controllers.fleet_view import FleetView
from slmops.domain import conditions as cond
from slmops.domain.placement import FleetNode
from slmops.domain.rollout import (
    Decision,
    PlannedQuery,
    World,
    decide,
    measurement_from,
    plan_round,
)
from slmops.domain.workloads import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ROLLOUT_LABEL,
    NodeVariant,
    Owner,
    RuntimeOptions,
    daemonset_manifest,
    group_workloads,
    network_policy_manifest,
    registry_port,
    service_manifest,
)

RUNTIME_IMAGE_ENV = "SLMOPS_RUNTIME_IMAGE"
DEFAULT_RUNTIME_IMAGE = "ghcr.io/slmops/slmops-runtime:0.1.0"
# Without a decision asking sooner, look again this often anyway: a lost watch event or a
# model that became Ready must not leave a rollout waiting forever.
IDLE_RECHECK_SECONDS = 30.0
ERROR_BACKOFF_SECONDS = 5.0
MIN_REQUEUE_SECONDS = 0.2
# Off for clusters whose CNI does not enforce NetworkPolicy, or whose owners write their own
# (policies only ever add what is allowed, so ours would widen a stricter one of theirs).
NETWORK_POLICY_ENV = "SLMOPS_NETWORK_POLICY"

_log = logging.getLogger(__name__)

RolloutKey = tuple[str, str]
_wakers: dict[RolloutKey, asyncio.Event] = {}
_prometheus: dict[str, PrometheusClient] = {}
_writer: KubeWriter | None = None
_fleet = FleetView()


def runtime_image() -> str:
    return os.environ.get(RUNTIME_IMAGE_ENV) or DEFAULT_RUNTIME_IMAGE


def network_policies_enabled(environ: Mapping[str, str]) -> bool:
    raw = environ.get(NETWORK_POLICY_ENV, "").strip().lower()
    if raw in ("", "1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{NETWORK_POLICY_ENV}={raw!r}: expected true or false")


# Read once at import, like SLMOPS_CONTROLLERS: a bad value stops the operator at start.
NETWORK_POLICIES = network_policies_enabled(os.environ)


def _kube() -> KubeWriter:
    global _writer  # noqa: PLW0603 -- one API client per operator process
    if _writer is None:
        _writer = KubeWriter(load_api_client())
    return _writer


def _prometheus_for(address: str) -> PrometheusClient:
    client = _prometheus.get(address)
    if client is None:
        client = _prometheus[address] = PrometheusClient(address)
    return client


def wake(namespace: str, name: str) -> None:
    event = _wakers.get((namespace, name))
    if event is not None:
        event.set()


# --- indexes: the fleet and the rollout's children, kept current by watches -------------


@kopf.index("nodes")
async def fleet_nodes(
    *, name: str, labels: kopf.Labels, status: kopf.Status, **_: Any
) -> dict[str, FleetNode]:
    node = fleet_node(name, labels, status)
    _fleet.observe(node)
    return {name: node}


@kopf.index("pods", labels={ROLLOUT_LABEL: kopf.PRESENT, MANAGED_BY_LABEL: MANAGED_BY})
async def rollout_pods(
    *,
    name: str,
    namespace: str | None,
    labels: kopf.Labels,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    **_: Any,
) -> dict[RolloutKey, ServerPod]:
    rollout = labels[ROLLOUT_LABEL]
    # A pod that became ready (or went away) is what a switching wave waits for.
    wake(namespace or "", rollout)
    return {(namespace or "", rollout): server_pod(name, labels, meta, spec, status)}


@kopf.index(
    "apps", "v1", "daemonsets", labels={ROLLOUT_LABEL: kopf.PRESENT, MANAGED_BY_LABEL: MANAGED_BY}
)
async def rollout_workloads(
    *, name: str, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[RolloutKey, str]:
    return {(namespace or "", labels[ROLLOUT_LABEL]): name}


@kopf.index(GROUP, VERSION, "slmmodels")
async def slm_models(
    *, name: str, namespace: str | None, body: kopf.Body, **_: Any
) -> dict[RolloutKey, dict[str, Any]]:
    # A model that became Ready or gained a revision may start or supersede rollouts.
    for (rollout_namespace, _rollout), event in _wakers.items():
        if rollout_namespace == namespace:
            event.set()
    return {
        (namespace or "", name): {
            "spec": dict(body.get("spec", {})),
            "status": dict(body.get("status", {})),
        }
    }


# --- triggers ---------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, "edgerollouts")
async def rollout_changed(*, name: str, namespace: str | None, **_: Any) -> None:
    wake(namespace or "", name)


@kopf.on.delete(GROUP, VERSION, "edgerollouts", optional=True)
async def rollout_deleted(*, name: str, namespace: str | None, **_: Any) -> None:
    # Children go by their ownerReferences; only the metrics need forgetting.
    rollout_metrics.forget(namespace or "", name)


if NETWORK_POLICIES:

    @kopf.on.event(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        labels={ROLLOUT_LABEL: kopf.PRESENT, MANAGED_BY_LABEL: MANAGED_BY},
    )
    async def network_policy_changed(
        *, event: kopf.RawEvent, name: str, namespace: str | None, labels: kopf.Labels, **_: Any
    ) -> None:
        # The apply memory would skip the unchanged manifest for as long as the operator
        # runs; a policy deleted by hand would leave the servers unconfined until then.
        if event.get("type") == "DELETED":
            _kube().forget("NetworkPolicy", namespace or "", name)
            wake(namespace or "", labels[ROLLOUT_LABEL])


@dataclass
class RolloutMemory:
    """What the loop remembers between reconciles of one rollout (lost on restart, and
    nothing correct depends on it: the status is the memory that counts)."""

    written_status: dict[str, Any] | None = None
    written_version: int = -1
    measured_at: float | None = None
    """When the last measurement round finished (monotonic clock)."""
    decision_started: float | None = None
    """When the abort was decided, until the rollback completes (monotonic clock)."""
    network_policy_checked: bool = False
    """With policies off: a policy left by an earlier run was looked for and removed."""


@kopf.daemon(GROUP, VERSION, "edgerollouts", cancellation_timeout=10.0)
async def run_rollout(
    *,
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    **kwargs: Any,
) -> None:
    # kopf passes every index by its function's name.
    nodes_index: kopf.Index[str, FleetNode] = kwargs["fleet_nodes"]
    pods_index: kopf.Index[RolloutKey, ServerPod] = kwargs["rollout_pods"]
    workloads_index: kopf.Index[RolloutKey, str] = kwargs["rollout_workloads"]
    models_index: kopf.Index[RolloutKey, dict[str, Any]] = kwargs["slm_models"]
    key = (namespace or "", name)
    event = _wakers.setdefault(key, asyncio.Event())
    memory = RolloutMemory()
    try:
        while not stopped:
            event.clear()
            started = time.monotonic()
            try:
                delay = await reconcile(
                    body, memory, nodes_index, pods_index, workloads_index, models_index
                )
                rollout_metrics.RECONCILE_DURATION.observe(time.monotonic() - started)
            except (KubeError, PrometheusError) as error:
                _log.warning("rollout %s/%s: %s; retrying", namespace, name, error)
                delay = ERROR_BACKOFF_SECONDS
            except Exception:
                _log.exception("rollout %s/%s: reconcile failed; retrying", namespace, name)
                delay = ERROR_BACKOFF_SECONDS
            await _wait(event, stopped, max(delay, MIN_REQUEUE_SECONDS))
    finally:
        if _wakers.get(key) is event:
            del _wakers[key]


async def _wait(event: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stopped and not event.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            # Short slices so that a stop request is noticed within a second.
            await asyncio.wait_for(event.wait(), timeout=min(remaining, 1.0))
        except TimeoutError:
            continue


def _resource_version(meta: Mapping[str, Any]) -> int:
    try:
        return int(str(meta.get("resourceVersion", "-1")))
    except ValueError:
        return -1


async def reconcile(  # noqa: PLR0917 -- internal steps of one reconcile
    body: kopf.Body,
    memory: RolloutMemory,
    nodes_index: kopf.Index[str, FleetNode],
    pods_index: kopf.Index[RolloutKey, ServerPod],
    workloads_index: kopf.Index[RolloutKey, str],
    models_index: kopf.Index[RolloutKey, dict[str, Any]],
) -> float:
    """One reconcile; returns seconds until the next one is due."""
    meta = body.get("metadata", {})
    name, namespace = str(meta["name"]), str(meta["namespace"])
    if meta.get("deletionTimestamp"):
        return IDLE_RECHECK_SECONDS
    generation = int(meta.get("generation") or 0)
    kube = _kube()

    # The watch may not have delivered our own last write yet; never decide from a status
    # older than the one we wrote.
    stored_status = dict(body.get("status") or {})
    if memory.written_status is not None and _resource_version(meta) < memory.written_version:
        stored_status = memory.written_status
    try:
        status = EdgeRolloutStatus.model_validate(stored_status)
    except ValidationError:
        status = EdgeRolloutStatus()

    try:
        spec = EdgeRolloutSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError as error:
        await _write_invalid(
            kube, memory, name, namespace, generation, status, stored_status, error
        )
        return IDLE_RECHECK_SECONDS

    if _unseen_generation(status, generation):
        # First sight: say at once that this generation is being worked on.
        await _write_first_sight(kube, memory, name, namespace, generation, stored_status)

    model_body = _one(models_index, (namespace, spec.model.name))
    model = model_view(model_body, spec.model.revision)
    pods = list(pods_index.get((namespace, name), []))
    fleet = _fleet.matching(spec.fleet.selector, nodes_index)
    # Nodes the status names that the selector no longer matches (relabelled mid-rollout)
    # are still looked up by the decision, as they were when it read the whole index.
    in_fleet = {node.name for node in fleet}
    nodes = fleet + [
        node
        for known in status.nodes
        if known.node not in in_fleet
        for node in nodes_index.get(known.node, ())
    ]
    world = World(
        now=datetime.now(UTC),
        generation=generation,
        spec=spec,
        status=status,
        model_revision=model.revision,
        offers=model.offers,
        nodes=nodes,
        node_revision=node_serving(pods),
        measurements=None,
        action=parse_action(dict(meta.get("annotations") or {})),
        name=name,
        namespace=namespace,
    )
    decision = decide(world)
    if decision.measure_now and spec.analysis is not None:
        measurements = await measure(world, spec.analysis.prometheus.address)
        memory.measured_at = time.monotonic()
        decision = decide(replace(world, now=datetime.now(UTC), measurements=measurements))

    owner = Owner(name=name, uid=str(meta["uid"]))
    # Recorded first, then made true: an operator killed in between finds the decision in
    # the status and applies it again (the same DaemonSets: nothing changes twice). The other
    # way round, a restart decided afresh from a status older than what the cluster already
    # ran: a rollback applied but not recorded was undone (the canary's DaemonSets recreated)
    # and its verdict taken again, or lost if the breach had passed meanwhile.
    await _write_decision(kube, body, memory, name, namespace, status, stored_status, decision)
    await apply_network_policy(kube, memory, model, spec, owner, namespace)
    await apply_workloads(kube, decision, model, spec, owner, namespace, name, workloads_index)
    return decision.requeue_after if decision.requeue_after is not None else IDLE_RECHECK_SECONDS


def _one(index: kopf.Index[RolloutKey, Any], key: RolloutKey) -> Any:
    store = index.get(key)
    if not store:
        return None
    return next(iter(store))


def _unseen_generation(status: EdgeRolloutStatus, generation: int) -> bool:
    ready = cond.find(status.conditions, "Ready")
    return ready is None or ready.observed_generation != generation


async def measure(world: World, address: str) -> list[Measurement]:
    """Take the round the decision asked for: every planned query at once."""
    prometheus = _prometheus_for(address)
    planned = plan_round(world)

    async def value_of(query: str | None) -> tuple[float | None, str | None]:
        if query is None:
            return None, None
        try:
            return await prometheus.query(query), None
        except PrometheusError as error:
            return None, str(error)

    async def one(item: PlannedQuery) -> Measurement:
        (value, error), (stable, stable_error), (samples, samples_error) = await asyncio.gather(
            value_of(item.query), value_of(item.stable_query), value_of(item.sample_query)
        )
        return measurement_from(
            world,
            item,
            value=value,
            stable_value=stable,
            error=error or stable_error or samples_error,
            samples=samples,
        )

    return list(await asyncio.gather(*(one(item) for item in planned)))


async def apply_network_policy(  # noqa: PLR0917 -- internal steps of one reconcile
    kube: KubeWriter,
    memory: RolloutMemory,
    model: ModelView,
    spec: EdgeRolloutSpec,
    owner: Owner,
    namespace: str,
) -> None:
    """Confine the rollout's servers; called before the DaemonSets are applied, so no server
    pod ever starts without its policy. With policies turned off, remove the one an earlier
    run made (once per process: the apply memory makes the enabled path as cheap)."""
    if not NETWORK_POLICIES:
        if not memory.network_policy_checked:
            await _remove_own_network_policy(kube, owner, namespace)
            memory.network_policy_checked = True
        return
    # Every revision's registry, not only the current one: a rollback pulls the old artifact.
    ports = {
        registry_port(offer.artifact, plain_http=model.insecure_registry)
        for offers in model.offers.values()
        for offer in offers
        if offer.artifact
    }
    await kube.apply(
        network_policy_manifest(owner.name, namespace, spec.serving.port, ports, owner)
    )


async def _remove_own_network_policy(kube: KubeWriter, owner: Owner, namespace: str) -> None:
    # Only ours (owned by this rollout): a policy of the same name may be the user's own.
    found = await kube.get("networking.k8s.io/v1", "NetworkPolicy", namespace, owner.name)
    owners = (found or {}).get("metadata", {}).get("ownerReferences") or []
    if any(reference.get("uid") == owner.uid for reference in owners):
        await kube.delete("networking.k8s.io/v1", "NetworkPolicy", namespace, owner.name)


async def apply_workloads(  # noqa: PLR0917 -- internal steps of one reconcile
    kube: KubeWriter,
    decision: Decision,
    model: ModelView,
    spec: EdgeRolloutSpec,
    owner: Owner,
    namespace: str,
    name: str,
    workloads_index: kopf.Index[RolloutKey, str],
) -> None:
    """Make the DaemonSets and the Service match `decision.desired`."""
    node_variants: dict[str, NodeVariant] = {}
    artifacts: dict[tuple[str, str], str] = {}
    classes: dict[str, str] = {}
    for revision, offers in model.offers.items():
        for offer in offers:
            classes.setdefault(offer.name, offer.hardware_class)
            if offer.artifact:
                artifacts[(revision, offer.name)] = offer.artifact
    for node, variant in decision.variants.items():
        if variant in classes:
            node_variants[node] = NodeVariant(variant, classes[variant])
    workloads, problems = group_workloads(
        rollout=name,
        namespace=namespace,
        model=spec.model.name,
        desired=decision.desired,
        node_variants=node_variants,
        artifacts=artifacts,
        resources=model.resources,
    )
    if not model.problem:
        # (While the model is missing or not Ready, decide() already says so in the status.)
        for problem in problems:
            _log.warning("rollout %s/%s: %s", namespace, name, problem)
    runtime = RuntimeOptions(
        image=runtime_image(),
        registry_plain_http=model.insecure_registry,
        pull_secret=model.pull_secret,
    )
    wanted = {w.name for w in workloads}
    await asyncio.gather(
        *(kube.apply(daemonset_manifest(w, spec.serving, runtime, owner)) for w in workloads),
        kube.apply(service_manifest(name, namespace, spec.serving.port, owner)),
    )
    existing = set(workloads_index.get((namespace, name), []))
    await asyncio.gather(
        *(
            kube.delete("apps/v1", "DaemonSet", namespace, stale)
            for stale in sorted(existing - wanted)
        )
    )


async def _patch_status(  # noqa: PLR0917 -- internal steps of one reconcile
    kube: KubeWriter,
    memory: RolloutMemory,
    name: str,
    namespace: str,
    new: dict[str, Any],
    old: Mapping[str, Any],
) -> None:
    patch = status_merge_patch(new, old)
    if not patch:
        return
    updated = await kube.patch_status(API_VERSION, "EdgeRollout", namespace, name, patch)
    memory.written_status = dict(updated.get("status") or new)
    memory.written_version = _resource_version(updated.get("metadata") or {})


async def _write_first_sight(  # noqa: PLR0917 -- internal steps of one reconcile
    kube: KubeWriter,
    memory: RolloutMemory,
    name: str,
    namespace: str,
    generation: int,
    stored: dict[str, Any],
) -> None:
    patch = kopf.Patch()
    if acknowledge_generation(stored, {"generation": generation}, patch):
        new = {**stored, **dict(patch.status)}
        await _patch_status(kube, memory, name, namespace, new, stored)


async def _write_invalid(  # noqa: PLR0917 -- internal steps of one reconcile
    kube: KubeWriter,
    memory: RolloutMemory,
    name: str,
    namespace: str,
    generation: int,
    status: EdgeRolloutStatus,
    stored: dict[str, Any],
    error: ValidationError,
) -> None:
    now = cond.now_rfc3339()
    message = "The spec is invalid: " + "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
    )
    conditions = cond.set_condition(
        status.conditions,
        "Ready",
        "False",
        reason="InvalidSpec",
        message=message,
        generation=generation,
        now=now,
    )
    conditions = cond.set_condition(
        conditions,
        "Stalled",
        "True",
        reason="InvalidSpec",
        message=message,
        generation=generation,
        now=now,
    )
    conditions = cond.set_condition(
        conditions,
        "Reconciling",
        "False",
        reason="InvalidSpec",
        message=message,
        generation=generation,
        now=now,
    )
    updated = status.model_copy(
        update={"conditions": conditions, "observed_generation": generation, "message": message}
    )
    await _patch_status(kube, memory, name, namespace, dump_status(updated), stored)


async def _write_decision(  # noqa: PLR0917 -- internal steps of one reconcile
    kube: KubeWriter,
    body: kopf.Body,
    memory: RolloutMemory,
    name: str,
    namespace: str,
    before: EdgeRolloutStatus,
    stored: dict[str, Any],
    decision: Decision,
) -> None:
    after = decision.status
    if after != before:
        await _patch_status(kube, memory, name, namespace, dump_status(after), stored)
    for event_type, reason, message in decision.events:
        kopf.event(body, type=event_type, reason=reason, message=message)
    _count_transitions(memory, before, after)
    rollout_metrics.record_state(namespace, name, after)


def _count_transitions(
    memory: RolloutMemory, before: EdgeRolloutStatus, after: EdgeRolloutStatus
) -> None:
    now = time.monotonic()
    if after.abort is not None and before.abort is None:
        rollout_metrics.count_decision("abort")
        if memory.measured_at is not None:
            rollout_metrics.BREACH_TO_DECISION.observe(now - memory.measured_at)
        memory.decision_started = now
    if after.phase == "RolledBack" and before.phase != "RolledBack":
        rollout_metrics.count_decision("rollback")
    if after.rollback_completed_at and not before.rollback_completed_at:
        if memory.decision_started is not None:
            rollout_metrics.ROLLBACK_DURATION.observe(now - memory.decision_started)
        memory.decision_started = None
    if after.phase == "Paused" and before.phase != "Paused":
        rollout_metrics.count_decision("pause")
    if after.phase == "Healthy" and before.phase != "Healthy":
        rollout_metrics.count_decision("complete")
    if (
        before.current_wave is not None
        and after.current_wave is not None
        and after.current_wave > before.current_wave
    ):
        rollout_metrics.count_decision("advance")
    if (
        after.last_action
        and after.last_action != before.last_action
        and after.last_action.action in ("promote", "promote-full")
    ):
        rollout_metrics.count_decision("promote")
