"""Aborting a rollout and rolling every touched node back to stable in one step."""

from __future__ import annotations

from slmops.api.v1alpha1.edgerollout import (
    AbortReason,
    Measurement,
    WaveStatus,
)
from slmops.domain.analysis import uses_stable
from slmops.domain.rollout.draft import (
    SWITCHING_POLL_SECONDS,
    TOUCHED,
    Draft,
    except_skipped,
    hold_skipped,
    set_node,
)
from slmops.domain.rollout.queries import metric_spec, query_variables, try_render


def abort_reason(draft: Draft, wave: WaveStatus, culprit: Measurement, verdict: str) -> AbortReason:
    metric = metric_spec(draft.world.spec.analysis, culprit.metric)
    query, stable_query, condition = "", None, ""
    if metric is not None:
        variables = query_variables(draft, wave, culprit.variant)
        query = try_render(metric.query, variables)
        if uses_stable(metric):
            stable_query = try_render(metric.query, variables | {"revision": draft.stable or ""})
        condition = metric.success_condition
    return AbortReason(
        metric=culprit.metric,
        wave=wave.index,
        variant=culprit.variant,
        query=query,
        stable_query=stable_query,
        value=culprit.value,
        stable_value=culprit.stable_value,
        condition=condition,
        message=verdict,
        at=draft.now,
    )


def abort_rollout(draft: Draft, reason: AbortReason, *, automatic: bool) -> None:
    wave = draft.wave()
    if wave is not None and wave.phase != "Succeeded":
        draft.set_wave(wave.model_copy(update={"phase": "Failed", "finished_at": draft.now}))
    draft.abort = reason
    draft.decision_at = draft.now
    draft.paused_by = None
    draft.pause_started_at = None
    draft.event("Warning", "RolloutAborted", f"revision {draft.canary}: {reason.message}")
    if not automatic:
        draft.phase = "Degraded"
        draft.message = (
            f"aborted: {reason.message}; rollback.automatic is false, so nodes stay as they"
            " are: run `slmops abort` to roll back or `slmops retry` to start over"
        )
        return
    touched = [name for name, node in draft.nodes.items() if node.state in TOUCHED]
    for name in touched:
        state = draft.nodes[name].state
        if state == "Skipped" and draft.stable is not None:
            continue  # held below: it never reported ready, so it is not back yet either
        set_node(draft, name, state="RolledBack", reason=f"was {state}")
    draft.phase = "RolledBack"
    draft.rollback_completed_at = None
    if draft.canary is not None:
        hold_skipped(draft, draft.canary, ", which was rolled back")
    draft.message = (
        f"aborted: {reason.message}; {len(touched)} nodes return to {draft.stable or 'nothing'}"
    )
    draft.event(
        "Warning",
        "RollingBack",
        f"{len(touched)} nodes return to revision {draft.stable} in one step",
    )


def finish_rollback(draft: Draft) -> None:
    """The rollback is complete when every node it returned serves stable again; a skipped
    node that is offline cannot report back and stays Skipped (it gets stable when it
    returns), so it does not hold the completion up."""
    if draft.phase != "RolledBack":
        return
    if draft.rollback_completed_at is not None:
        # Recomputed every time: a skipped node that returned leaves the message.
        draft.message = _rolled_back_message(draft)
        return
    fleet = {n.name: n for n in draft.world.nodes}
    pending = []
    for name, node in draft.nodes.items():
        if node.state not in ("RolledBack", "Skipped"):
            continue
        serving = draft.world.node_revision.get(name)
        back = (serving is not None and serving.revision == draft.stable and serving.ready) or (
            draft.stable is None and (serving is None or serving.revision != draft.canary)
        )
        # An offline node cannot report back; it gets the stable revision when it returns.
        offline = name in fleet and not fleet[name].ready
        if not back and not offline:
            pending.append(name)
    if pending:
        draft.message = (
            f"rolling back: {len(pending)} nodes not yet on {draft.stable}"
            f" ({', '.join(pending[:5])}{'…' if len(pending) > 5 else ''})"
        )
        draft.requeue.append(SWITCHING_POLL_SECONDS)
        return
    draft.rollback_completed_at = draft.now
    draft.message = _rolled_back_message(draft)
    draft.event("Normal", "RollbackComplete", draft.message)


def _rolled_back_message(draft: Draft) -> str:
    return f"rolled back: every touched node serves {draft.stable} again" + except_skipped(draft)
