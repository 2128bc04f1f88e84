"""The decision assembled from the draft: status, kstatus conditions, desired serving."""

from __future__ import annotations

from slmops.api.v1alpha1.common import Condition, ConditionStatus
from slmops.api.v1alpha1.edgerollout import (
    EdgeRolloutStatus,
)
from slmops.domain import conditions as cond
from slmops.domain.analysis import round_phase
from slmops.domain.rollout.draft import Draft, heads_for_canary, skipped_nodes
from slmops.domain.rollout.world import Decision


def _desired(draft: Draft) -> tuple[dict[str, str], dict[str, str]]:
    desired: dict[str, str] = {}
    variants: dict[str, str] = {}
    if draft.invalid is not None:
        return _frozen(draft)
    for name, node in draft.nodes.items():
        if heads_for_canary(draft, node):
            placement = draft.canary_placement.get(name)
            if placement is not None and placement.variant is not None and draft.canary:
                desired[name], variants[name] = draft.canary, placement.variant
                continue
        stable = draft.stable_placement.get(name)
        if draft.stable is not None and stable is not None and stable.variant is not None:
            desired[name], variants[name] = draft.stable, stable.variant
    return desired, variants


def _frozen(draft: Draft) -> tuple[dict[str, str], dict[str, str]]:
    """What each node serves now: a rollout that cannot decide must not undo anything.

    A node whose pod is not known (yet) keeps what its state in the status says.
    """
    previous = {n.node: n for n in draft.world.status.nodes}
    desired: dict[str, str] = {}
    variants: dict[str, str] = {}
    for name, node in draft.nodes.items():
        serving = draft.world.node_revision.get(name)
        if serving is not None and serving.revision in (draft.stable, draft.canary):
            revision = serving.revision
        elif heads_for_canary(draft, node):
            revision = draft.canary
        else:
            revision = draft.stable
        if revision is None:
            continue
        placements = draft.canary_placement if revision == draft.canary else draft.stable_placement
        placement = placements.get(name)
        variant = placement.variant if placement is not None else None
        if variant is None and name in previous:
            variant = previous[name].variant
        if variant is not None:
            desired[name], variants[name] = revision, variant
    return desired, variants


def _conditions(draft: Draft) -> list[Condition]:
    world = draft.world
    generation = world.generation
    conditions: list[Condition] = list(world.status.conditions)

    def put(kind: str, status: ConditionStatus, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = cond.set_condition(
            conditions,
            kind,
            status,
            reason=reason,
            message=message,
            generation=generation,
            now=draft.now,
        )

    message = draft.message
    if draft.invalid is not None:
        reason = draft.invalid_reason
        put("Ready", "False", reason, draft.invalid)
        put("Reconciling", "False", reason, "Nothing moves until this is fixed.")
        put("Stalled", "True", reason, draft.invalid)
        put("Progressing", "False", reason, draft.invalid)
        return conditions
    phase = draft.phase
    put(
        "Ready",
        "True" if phase == "Healthy" else "False",
        "RolloutComplete" if phase == "Healthy" else phase,
        message,
    )
    reconciling = phase in ("Pending", "Progressing") and not draft.deadline_exceeded
    put(
        "Reconciling",
        "True" if reconciling else "False",
        phase if reconciling else "Settled",
        message if reconciling else "Nothing is moving without a person or a new revision.",
    )
    if draft.deadline_exceeded:
        put("Stalled", "True", "ProgressDeadlineExceeded", message)
    elif phase == "RolledBack":
        put("Stalled", "True", "RolledBack", message)
    elif phase == "Degraded":
        put("Stalled", "True", "RolloutAborted", message)
    elif draft.blocked is not None:
        put("Stalled", "True", "NoPlacement", draft.blocked)
    else:
        put("Stalled", "False", "Progressing" if draft.in_flight else "Settled", "")
    if phase == "Healthy":
        put("Progressing", "True", "RolloutComplete", message)
    elif phase in ("RolledBack", "Degraded"):
        put("Progressing", "False", "RolloutAborted", message)
    elif draft.deadline_exceeded:
        put("Progressing", "False", "ProgressDeadlineExceeded", message)
    elif phase == "Paused":
        put("Progressing", "Unknown", "RolloutPaused", message)
    elif phase == "Pending":
        put("Progressing", "Unknown", "WaitingForModel", message)
    else:
        wave = draft.wave()
        reason = "FirstRollout" if draft.stable is None else f"Wave{wave.phase if wave else ''}"
        put("Progressing", "True", reason, message)
    put("Analysis", *_analysis_condition(draft))
    return conditions


def _analysis_condition(draft: Draft) -> tuple[ConditionStatus, str, str]:
    if draft.abort is not None and draft.phase in ("RolledBack", "Degraded"):
        return "False", "Failed", draft.abort.message
    wave = draft.wave()
    if not draft.in_flight or wave is None or wave.phase not in ("Analyzing", "Paused"):
        return "False", "Idle", "No analysis is running."
    latest = [
        m for m in draft.measurements if m.wave == wave.index and m.at == wave.last_measured_at
    ]
    phase = round_phase(latest) if wave.last_measured_at else None
    if phase is None:
        return "Unknown", "Waiting", f"{wave.name}: waiting for the first measurement."
    if phase == "Successful":
        return "True", "Passing", f"{wave.name}: the last round passed."
    messages = "; ".join(f"{m.metric}/{m.variant}: {m.message}" for m in latest if m.phase == phase)
    reason = {"Failed": "Failing", "Error": "MeasurementError", "Inconclusive": "Inconclusive"}
    return ("False" if phase == "Failed" else "Unknown"), reason[phase], messages


def decision_from(draft: Draft) -> Decision:
    desired, variants = _desired(draft)
    status = EdgeRolloutStatus(
        observed_generation=draft.world.generation,
        conditions=_conditions(draft),
        phase=draft.phase,
        message=draft.invalid or draft.message,
        stable_revision=draft.stable,
        canary_revision=draft.canary,
        current_wave=draft.current_wave,
        paused_by=draft.paused_by,
        pause_started_at=draft.pause_started_at,
        waves=draft.waves,
        nodes=[draft.nodes[name] for name in sorted(draft.nodes)],
        skipped_count=len(skipped_nodes(draft)),
        measurements=draft.measurements,
        abort=draft.abort,
        last_action=draft.last_action,
        last_progress_at=draft.last_progress_at,
        decision_at=draft.decision_at,
        rollback_completed_at=draft.rollback_completed_at,
    )
    requeue = [r for r in draft.requeue if r is not None]
    return Decision(
        status=status,
        desired=desired,
        events=draft.events,
        measure_now=draft.measure_now,
        requeue_after=max(0.0, min(requeue)) if requeue else None,
        variants=variants,
    )
