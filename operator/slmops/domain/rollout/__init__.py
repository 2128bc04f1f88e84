"""The EdgeRollout decision: one pure, level-triggered function from the world to a status.

`decide(world)` reads what the controller observed (spec, previous status, the model's
revision and variants, the fleet's nodes, what each node actually serves, a fresh round of
measurements if one was due, a person's request) and returns the complete next status and
the revision every node must run. It reads no clock and does no I/O, so the same world
always yields the same decision: a restarted operator continues exactly where the status
says it was, and calling decide again with its own output changes nothing.

The life of a rollout:

- First rollout (no stable revision yet): nothing to compare against, so every assigned
  node switches at once and the revision becomes stable when each node is ready or has
  timed out (no waves, no analysis).
- A new revision with a stable one: the waves are planned (status.waves, also what
  `slmops plan` shows); wave by wave nodes switch in batches of maxUnavailable, a node not
  ready within nodeTimeoutSeconds is Skipped and reported, then analysis rounds run every
  intervalSeconds (after initialDelaySeconds) until `count` rounds pass, a limit is broken,
  or a person intervenes. After the last wave the new revision becomes stable (Healthy).
- Abort (a broken limit, or `slmops abort`): with rollback.automatic every node the rollout
  touched goes back to stable in one step, no waves, no analysis (RolledBack); without it
  the rollout holds as it is (Degraded) for a person to `slmops abort` or `slmops retry`.
- A newer model revision during a rollout supersedes it: the new revision starts from wave
  0 and every other node returns to stable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from slmops.api.v1alpha1.common import Condition, ConditionStatus
from slmops.api.v1alpha1.edgerollout import (
    AbortReason,
    AnalysisSpec,
    EdgeRolloutSpec,
    EdgeRolloutStatus,
    Measurement,
    MetricSpec,
    NodeAssignment,
    RolloutPhase,
    SLMOpsAction,
    WaveSpec,
    WaveStatus,
)
from slmops.domain import conditions as cond
from slmops.domain.analysis import AnalysisLimits, judge, round_phase, tally, uses_stable
from slmops.domain.expression import ExpressionError, compile_condition
from slmops.domain.placement import FleetNode, NodePlacement, VariantOffer, place
from slmops.domain.promql import TemplateError, render, validate
from slmops.domain.waves import PlannedWave, max_unavailable_count, plan_waves

ACTIONS = ("promote", "promote-full", "pause", "resume", "abort", "retry")
MEASUREMENTS_PER_METRIC = 10
# How often to look again while waiting for something no watch event reports (a model
# becoming Ready is a watch event in most controllers, but cheap insurance).
WAITING_POLL_SECONDS = 30.0
# Pods becoming ready arrive as watch events; this only bounds the wait if one is lost.
SWITCHING_POLL_SECONDS = 10.0

Event = tuple[str, str, str]
_TOUCHED = ("Switching", "Updated", "Skipped")


@dataclass(frozen=True)
class NodeServing:
    """What a node actually runs for this rollout (from its pod)."""

    revision: str | None
    ready: bool
    since: datetime | None = None


@dataclass(frozen=True)
class World:
    """Everything a decision depends on; the controller gathers it, decide() judges it."""

    now: datetime
    generation: int
    spec: EdgeRolloutSpec
    status: EdgeRolloutStatus
    model_revision: str | None
    """The SLMModel's current revision once it is Ready (None while it builds)."""
    offers: Mapping[str, Sequence[VariantOffer]]
    """Per revision (the stable, the canary and the target at least), its variants."""
    nodes: Sequence[FleetNode]
    node_revision: Mapping[str, NodeServing]
    """Node name → what it serves for this rollout; absent: nothing."""
    measurements: Sequence[Measurement] | None = None
    """A fresh round (from measurement_from), when decide() asked for one."""
    action: tuple[str, str] | None = None
    """(id, action) from the slmops.io/action annotation."""
    name: str = ""
    namespace: str = ""


@dataclass(frozen=True)
class Decision:
    """The new status and what the controller must make true."""

    status: EdgeRolloutStatus
    desired: Mapping[str, str]
    """Node → revision it must serve; nodes absent here serve nothing of this rollout."""
    events: list[Event] = field(default_factory=list)
    """(type, reason, message) of the transitions this decision made."""
    measure_now: bool = False
    """A round is due: call plan_round, measure, and decide again with the measurements."""
    requeue_after: float | None = None
    """Seconds until decide must run again even if nothing changes (None: on change only)."""
    variants: Mapping[str, str] = field(default_factory=dict)
    """Node → the variant of the revision in desired."""


@dataclass(frozen=True)
class PlannedQuery:
    """One measurement the controller must take for the current round (queries rendered)."""

    metric: str
    variant: str
    hardware_class: str
    query: str
    stable_query: str | None
    sample_query: str | None
    wave: int = 0


class InvalidSpecError(ValueError):
    """A spec the rollout cannot act on; the message says which field and why."""


def validate_spec(spec: EdgeRolloutSpec) -> None:
    """Raise InvalidSpecError for conditions, templates or limits the rollout cannot use.

    Admission calls it too, so a bad spec is refused before it is stored.
    """
    problems: list[str] = []
    try:
        max_unavailable_count(1, spec.strategy.max_unavailable)
    except ValueError as error:
        problems.append(f"strategy.maxUnavailable: {error}")
    if spec.analysis is not None:
        templates = [("analysis.sampleCountQuery", spec.analysis.sample_count_query)]
        for index, metric in enumerate(spec.analysis.metrics):
            where = f"analysis.metrics[{index}] ({metric.name})"
            templates.append((f"{where}.query", metric.query))
            for label, text in (
                ("successCondition", metric.success_condition),
                ("failureCondition", metric.failure_condition),
            ):
                if text:
                    try:
                        compile_condition(text)
                    except ExpressionError as error:
                        problems.append(f"{where}.{label}: {error}")
        for where, template in templates:
            try:
                validate(template)
            except TemplateError as error:
                problems.append(f"{where}: {error}")
    if problems:
        raise InvalidSpecError("; ".join(problems))


def target_revision(world: World) -> str | None:
    """The revision the fleet should end on: the pinned one, else the model's current."""
    return world.spec.model.revision or world.model_revision


def preview_plan(
    spec: EdgeRolloutSpec, nodes: Sequence[FleetNode], offers: Sequence[VariantOffer]
) -> tuple[list[NodePlacement], list[PlannedWave]]:
    """Placement and waves a rollout of a revision with these offers would use (`slmops plan`)."""
    placements = place(nodes, spec.fleet.selector, offers)
    labels = {n.name: n.labels for n in nodes}
    return placements, plan_waves(placements, labels, spec.strategy.waves)


# --- the decision ---------------------------------------------------------------------


@dataclass
class _Draft:
    """The status being computed (the API models are frozen)."""

    world: World
    now: str
    phase: RolloutPhase
    message: str
    stable: str | None
    canary: str | None
    current_wave: int | None
    paused_by: str | None
    pause_started_at: str | None
    waves: list[WaveStatus]
    nodes: dict[str, NodeAssignment]
    measurements: list[Measurement]
    abort: AbortReason | None
    last_action: SLMOpsAction | None
    last_progress_at: str | None
    decision_at: str | None
    rollback_completed_at: str | None
    stable_placement: dict[str, NodePlacement]
    canary_placement: dict[str, NodePlacement]
    events: list[Event] = field(default_factory=list)
    requeue: list[float] = field(default_factory=list)
    measure_now: bool = False
    invalid: str | None = None
    invalid_reason: str = "InvalidSpec"
    blocked: str | None = None
    deadline_exceeded: bool = False

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def at(self, offset_seconds: float, since: str | None) -> float:
        """Seconds from now until `since + offset` (negative when past)."""
        if since is None:
            return 0.0
        due = _parse(since) + timedelta(seconds=offset_seconds)
        return (due - self.world.now).total_seconds()

    @property
    def in_flight(self) -> bool:
        return self.canary is not None and self.phase in ("Pending", "Progressing", "Paused")

    def wave(self) -> WaveStatus | None:
        if self.current_wave is None or not 0 <= self.current_wave < len(self.waves):
            return None
        return self.waves[self.current_wave]

    def set_wave(self, wave: WaveStatus) -> None:
        self.waves[wave.index] = wave

    def progressed(self) -> None:
        self.last_progress_at = self.now


def decide(world: World) -> Decision:
    """The next status and desired serving state for this world (pure and idempotent)."""
    draft = _draft(world)
    try:
        validate_spec(world.spec)
    except InvalidSpecError as error:
        draft.invalid = str(error)
    missing = [r for r in (draft.stable, draft.canary) if r and r not in world.offers]
    if draft.invalid is None and missing and draft.phase != "RolledBack":
        # Without its variants a revision cannot be placed; deciding anyway would take the
        # servers off every node. Hold what runs until the model lists the revision again.
        draft.invalid_reason = "RevisionUnavailable"
        draft.invalid = (
            f"revision {', '.join(missing)} is not among the revisions of SLMModel"
            f" {world.spec.model.name} (its status.revisions keeps the latest 20); every node"
            " keeps what it serves until it is, or until spec.model.revision pins one that is"
        )
    if draft.invalid is None:
        held = cond.find(world.status.conditions, "Stalled")
        if held is not None and held.reason in ("InvalidSpec", "RevisionUnavailable"):
            draft.message = "resumed: the spec and revisions are usable again"
            draft.event("Normal", "Resumed", draft.message)
        _observe_nodes(draft)
        _apply_action(draft)
        _follow_target(draft)
        _advance(draft)
        _finish_rollback(draft)
        _check_deadline(draft)
    return _decision(draft)


def _draft(world: World) -> _Draft:
    status = world.status
    now = cond.now_rfc3339(world.now)
    draft = _Draft(
        world=world,
        now=now,
        phase=status.phase,
        message=status.message,
        stable=status.stable_revision,
        canary=status.canary_revision,
        current_wave=status.current_wave,
        paused_by=status.paused_by,
        pause_started_at=status.pause_started_at,
        waves=list(status.waves),
        nodes={},
        measurements=list(status.measurements),
        abort=status.abort,
        last_action=status.last_action,
        last_progress_at=status.last_progress_at,
        decision_at=status.decision_at,
        rollback_completed_at=status.rollback_completed_at,
        stable_placement={},
        canary_placement={},
    )
    _place(draft)
    return draft


def _place(draft: _Draft) -> None:
    """Recompute placements for the stable and canary revisions; keep each node's progress."""
    world = draft.world
    fleet = world.spec.fleet.selector

    def placements(revision: str | None) -> dict[str, NodePlacement]:
        if revision is None:
            return {}
        return {p.node: p for p in place(world.nodes, fleet, world.offers.get(revision, ()))}

    draft.stable_placement = placements(draft.stable)
    draft.canary_placement = placements(draft.canary)
    focus = draft.canary_placement if draft.canary is not None else draft.stable_placement
    previous = {n.node: n for n in world.status.nodes}
    fleet_nodes = sorted(
        set(draft.stable_placement) | set(draft.canary_placement)
        or {p.node for p in place(world.nodes, fleet, ())}
    )
    nodes: dict[str, NodeAssignment] = {}
    for name in fleet_nodes:
        placement = focus.get(name) or draft.stable_placement.get(name)
        serving = world.node_revision.get(name)
        before = previous.get(name)
        if placement is None or placement.variant is None:
            reason = placement.reason if placement is not None else "not placed yet"
            state = before.state if before and before.state in (*_TOUCHED, "RolledBack") else None
            nodes[name] = NodeAssignment(
                node=name,
                state=state or "Unassigned",
                reason=reason,
                revision=serving.revision if serving else None,
                wave=before.wave if before else None,
                switched_at=before.switched_at if before else None,
            )
            continue
        nodes[name] = NodeAssignment(
            node=name,
            variant=placement.variant,
            hardware_class=placement.hardware_class,
            wave=before.wave if before else None,
            revision=serving.revision if serving else None,
            state=before.state if before and before.state != "Unassigned" else "Stable",
            reason=before.reason if before and before.state != "Unassigned" else "",
            switched_at=before.switched_at if before else None,
        )
    draft.nodes = nodes


def _set_node(draft: _Draft, name: str, **changes: object) -> None:
    draft.nodes[name] = draft.nodes[name].model_copy(update=changes)


def _observe_nodes(draft: _Draft) -> None:
    """Switching nodes become Updated when ready on the canary, Skipped after their timeout."""
    if draft.canary is None:
        return
    timeout = draft.world.spec.strategy.node_timeout_seconds
    fleet = {n.name: n for n in draft.world.nodes}
    for name, node in list(draft.nodes.items()):
        serving = draft.world.node_revision.get(name)
        on_canary = serving is not None and serving.revision == draft.canary and serving.ready
        if node.state in ("Switching", "Skipped") and on_canary:
            _set_node(draft, name, state="Updated", reason="")
            draft.progressed()
        elif node.state == "Switching":
            remaining = draft.at(timeout, node.switched_at)
            if remaining <= 0:
                offline = name in fleet and not fleet[name].ready
                reason = f"not ready on revision {draft.canary} {timeout}s after switching" + (
                    " (node NotReady)" if offline else ""
                )
                _set_node(draft, name, state="Skipped", reason=reason)
                if node.wave is not None and 0 <= node.wave < len(draft.waves):
                    wave = draft.waves[node.wave]
                    if name not in wave.skipped_nodes:
                        draft.set_wave(
                            wave.model_copy(update={"skipped_nodes": [*wave.skipped_nodes, name]})
                        )
                draft.event("Warning", "NodeSkipped", f"{name}: {reason}; the wave continues")
                draft.progressed()
            else:
                draft.requeue.append(min(remaining, SWITCHING_POLL_SECONDS))


# --- actions --------------------------------------------------------------------------


def _apply_action(draft: _Draft) -> None:
    """Apply a person's request once: its id is recorded, a repeated id is ignored."""
    request = draft.world.action
    if request is None:
        return
    action_id, action = request
    if draft.last_action is not None and draft.last_action.id == action_id:
        return
    draft.last_action = SLMOpsAction(id=action_id, action=action, at=draft.now)
    outcome = _act(draft, action)
    if outcome:
        draft.event("Warning", "ActionIgnored", f"{action} ({action_id}) ignored: {outcome}")
    else:
        draft.event("Normal", "ActionApplied", f"{action} ({action_id}) applied")


def _act(draft: _Draft, action: str) -> str | None:
    """Apply one action; return why it does not apply, or None when it did."""
    if action not in ACTIONS:
        return f"unknown action; use one of {', '.join(ACTIONS)}"
    if action == "retry":
        if draft.phase not in ("RolledBack", "Degraded") or draft.canary is None:
            return "only an aborted rollout can be retried"
        _start(
            draft, draft.canary, "Retry", f"retrying revision {draft.canary} from the first wave"
        )
        return None
    if action == "abort":
        if draft.canary is None or draft.phase == "RolledBack":
            return "no rollout in progress"
        _abort(
            draft,
            AbortReason(
                metric="user",
                wave=draft.current_wave or 0,
                message="aborted by a person (slmops abort)",
                at=draft.now,
            ),
            automatic=True,
        )
        return None
    if not draft.in_flight:
        return "no rollout in progress"
    if action == "pause":
        if draft.paused_by is not None:
            return f"already paused by {draft.paused_by}"
        _pause(draft, "user", "paused by a person (slmops pause)")
        return None
    if draft.world.spec.paused:
        return "spec.paused is true: set it to false first (it is the GitOps switch)"
    if action == "resume":
        if draft.paused_by is None:
            return "not paused"
        _resume(draft)
        return None
    if draft.wave() is None:
        return "no wave to promote (the first rollout switches every node at once)"
    if action == "promote":
        _promote_wave(draft)
        return None
    _promote_full(draft)
    return None


def _pause(draft: _Draft, by: str, message: str) -> None:
    draft.paused_by = by
    draft.pause_started_at = draft.now
    draft.phase = "Paused"
    draft.message = message
    wave = draft.wave()
    if wave is not None and wave.phase in ("Analyzing", "Progressing") and by == "analysis":
        draft.set_wave(wave.model_copy(update={"phase": "Paused"}))
    draft.event("Normal", "RolloutPaused", message)


def _resume(draft: _Draft) -> None:
    by = draft.paused_by
    draft.paused_by = None
    draft.pause_started_at = None
    draft.phase = "Progressing"
    draft.progressed()
    wave = draft.wave()
    if wave is not None and by == "analysis":
        # The limit applies afresh: the person has seen the inconclusive rounds.
        draft.set_wave(wave.model_copy(update={"phase": "Analyzing", "inconclusive": 0}))
    draft.event("Normal", "RolloutResumed", f"resumed (was paused by {by})")


def _promote_wave(draft: _Draft) -> None:
    """Finish the current wave now: its remaining nodes switch, no (more) analysis or pause."""
    wave = draft.wave()
    assert wave is not None
    for name in _wave_nodes(draft, wave.index, "Stable"):
        _set_node(draft, name, state="Switching", switched_at=draft.now, wave=wave.index)
    draft.paused_by = None
    draft.pause_started_at = None
    draft.phase = "Progressing"
    draft.set_wave(
        wave.model_copy(update={"phase": "Succeeded", "finished_at": wave.finished_at or draft.now})
    )
    draft.progressed()


def _promote_full(draft: _Draft) -> None:
    """Every remaining node switches now; the rollout completes when they are ready."""
    for wave in draft.waves[(draft.current_wave or 0) :]:
        for name in _wave_nodes(draft, wave.index, "Stable"):
            _set_node(draft, name, state="Switching", switched_at=draft.now, wave=wave.index)
        draft.set_wave(
            wave.model_copy(
                update={
                    "phase": "Succeeded",
                    "started_at": wave.started_at or draft.now,
                    "finished_at": wave.finished_at or draft.now,
                }
            )
        )
    draft.current_wave = len(draft.waves) - 1
    draft.paused_by = None
    draft.pause_started_at = None
    draft.phase = "Progressing"
    draft.progressed()


# --- which revision to roll out --------------------------------------------------------


def _follow_target(draft: _Draft) -> None:
    target = target_revision(draft.world)
    if target is None or target not in draft.world.offers:
        if draft.canary is None and draft.stable is None:
            draft.phase = "Pending"
            draft.message = (
                f"waiting for SLMModel {draft.world.spec.model.name} to be Ready"
                if target is None
                else f"waiting for the variants of revision {target}"
            )
            draft.requeue.append(WAITING_POLL_SECONDS)
        return
    if target not in (draft.stable, draft.canary) and not _placeable(draft, target):
        return
    if draft.canary is None and draft.stable is None:
        _start_first(draft, target)
    elif draft.canary is None and draft.stable != target:
        _start(draft, target, "RolloutStarted", f"rolling out revision {target}")
    elif draft.canary is not None and draft.canary != target:
        if target == draft.stable:
            _cancel(draft)
        elif draft.phase == "RolledBack":
            _start(draft, target, "RolloutStarted", f"rolling out revision {target}")
        else:
            _start(
                draft,
                target,
                "Superseded",
                f"revision {target} supersedes {draft.canary}: nodes on {draft.canary} return"
                f" to {draft.stable}, {target} starts from the first wave",
            )


def _placeable(draft: _Draft, revision: str) -> bool:
    """Whether the revision can run anywhere; if not, say why and start nothing.

    A revision that places no node would take every server off the fleet when it became
    stable (say, every variant was Rejected), so it waits for a person instead.
    """
    world = draft.world
    placements = place(world.nodes, world.spec.fleet.selector, world.offers[revision])
    if any(p.variant is not None for p in placements):
        return True
    reasons = sorted({p.reason for p in placements}) or ["no node matches spec.fleet.selector"]
    draft.blocked = f"revision {revision} cannot run on any fleet node: {'; '.join(reasons[:3])}"
    if draft.stable is None and draft.canary is None:
        draft.phase = "Pending"
        draft.message = draft.blocked
    previous = cond.find(world.status.conditions, "Stalled")
    if previous is None or previous.reason != "NoPlacement":
        draft.event("Warning", "NoPlacement", draft.blocked)
    draft.requeue.append(WAITING_POLL_SECONDS)
    return False


def _reset_nodes(draft: _Draft) -> None:
    for name, node in draft.nodes.items():
        state = "Stable" if node.variant is not None else "Unassigned"
        draft.nodes[name] = node.model_copy(
            update={"state": state, "wave": None, "switched_at": None}
            | ({"reason": ""} if state == "Stable" else {})
        )


def _start_first(draft: _Draft, revision: str) -> None:
    """The first revision: nothing to compare with, so every node switches at once."""
    draft.canary = revision
    _place(draft)
    _reset_nodes(draft)
    for name, node in draft.nodes.items():
        if node.variant is not None:
            _set_node(draft, name, state="Switching", switched_at=draft.now)
    draft.waves = []
    draft.current_wave = None
    draft.phase = "Progressing"
    draft.message = f"first rollout: every node switches to {revision}"
    draft.measurements = []
    draft.abort = None
    draft.rollback_completed_at = None
    draft.progressed()
    draft.event(
        "Normal",
        "FirstRollout",
        f"revision {revision} goes to all {len(_assigned(draft))} assigned nodes at once"
        " (no stable revision to compare with)",
    )


def _start(draft: _Draft, revision: str, reason: str, message: str) -> None:
    draft.canary = revision
    _place(draft)
    _reset_nodes(draft)
    spec = draft.world.spec
    labels = {n.name: n.labels for n in draft.world.nodes}
    fleet = [draft.canary_placement[n] for n in sorted(draft.canary_placement)]
    planned = plan_waves(fleet, labels, spec.strategy.waves)
    draft.waves = [WaveStatus(index=w.index, name=w.name, nodes=list(w.nodes)) for w in planned]
    for wave in planned:
        for name in wave.nodes:
            _set_node(draft, name, wave=wave.index)
    draft.current_wave = 0
    draft.phase = "Progressing"
    draft.paused_by = None
    draft.pause_started_at = None
    draft.abort = None
    draft.rollback_completed_at = None
    draft.measurements = []
    draft.message = message
    draft.progressed()
    summary = ", ".join(f"{w.name} ({len(w.nodes)} nodes)" for w in planned)
    draft.event("Normal", reason, f"{message}; waves: {summary}")
    for wave in planned:
        if wave.note:
            draft.event("Warning", "EmptyWave", f"{wave.name} has no nodes: {wave.note}")


def _cancel(draft: _Draft) -> None:
    """The target went back to the stable revision: every node returns to it."""
    old = draft.canary
    draft.canary = None
    _place(draft)
    _reset_nodes(draft)
    draft.current_wave = None
    draft.paused_by = None
    draft.pause_started_at = None
    draft.phase = "Healthy"
    draft.message = f"revision {old} withdrawn; the fleet stays on {draft.stable}"
    draft.event("Normal", "RolloutCancelled", draft.message)


# --- progress -------------------------------------------------------------------------


def _advance(draft: _Draft) -> None:
    if draft.canary is None:
        if draft.stable is not None and draft.phase != "Pending":
            draft.phase = "Healthy"
            draft.message = draft.blocked or f"all assigned nodes serve revision {draft.stable}"
        return
    if not draft.in_flight:
        return
    spec = draft.world.spec
    if draft.paused_by == "spec" and not spec.paused:
        _resume(draft)
    if spec.paused and draft.paused_by != "spec":
        draft.paused_by = None
        _pause(draft, "spec", "paused by spec.paused")
    if draft.paused_by is not None:
        _wait_in_pause(draft)
        if draft.paused_by is not None:
            return
    if draft.stable is None:
        _advance_first(draft)
        return
    # Each pass makes at most one transition of the current wave; a wave has four phases
    # and there are at most 50 waves, so this bound is never the reason to stop.
    for _ in range(4 * (len(draft.waves) + 2)):
        if not _step(draft):
            return


def _wait_in_pause(draft: _Draft) -> None:
    wave = draft.wave()
    if draft.paused_by != "wave" or wave is None:
        return
    wave_spec = _wave_spec(draft, wave.index)
    duration = wave_spec.pause.duration_seconds if wave_spec.pause else None
    if duration is None:
        return
    remaining = draft.at(duration, draft.pause_started_at)
    if remaining > 0:
        draft.requeue.append(remaining)
        return
    draft.paused_by = None
    draft.pause_started_at = None
    draft.phase = "Progressing"
    draft.progressed()
    draft.event("Normal", "PauseEnded", f"the {duration}s pause after {wave.name} ended")


def _advance_first(draft: _Draft) -> None:
    switching = [n for n in draft.nodes.values() if n.state == "Switching"]
    if switching:
        draft.message = (
            f"first rollout of {draft.canary}: waiting for {len(switching)} nodes to be ready"
        )
        return
    _promote(draft)


def _step(draft: _Draft) -> bool:
    """One transition of the current wave; False when the rollout must wait."""
    wave = draft.wave()
    if wave is None:
        _promote(draft)
        return False
    if wave.phase == "Pending":
        draft.set_wave(wave.model_copy(update={"phase": "Progressing", "started_at": draft.now}))
        draft.progressed()
        draft.event(
            "Normal", "WaveStarted", f"{wave.name} started: {len(wave.nodes)} nodes to switch"
        )
        return True
    if wave.phase == "Progressing":
        return _switch(draft, wave)
    if wave.phase in ("Analyzing", "Paused"):
        return _analyze(draft, wave)
    if wave.phase == "Succeeded":
        return _next_wave(draft, wave)
    return False


def _wave_nodes(draft: _Draft, index: int, state: str) -> list[str]:
    if not 0 <= index < len(draft.waves):
        return []
    return [
        name
        for name in draft.waves[index].nodes
        if name in draft.nodes
        and draft.nodes[name].state == state
        and draft.nodes[name].variant is not None
    ]


def _switch(draft: _Draft, wave: WaveStatus) -> bool:
    spec = draft.world.spec
    waiting = _wave_nodes(draft, wave.index, "Stable")
    in_flight = sum(1 for n in draft.nodes.values() if n.state == "Switching")
    limit = max_unavailable_count(max(1, len(wave.nodes)), spec.strategy.max_unavailable)
    room = max(0, limit - in_flight)
    if waiting and room:
        batch = waiting[:room]
        for name in batch:
            _set_node(draft, name, state="Switching", switched_at=draft.now)
        draft.progressed()
        draft.event("Normal", "NodesSwitching", f"{wave.name}: {', '.join(batch)} → {draft.canary}")
        waiting = waiting[room:]
    switching = _wave_nodes(draft, wave.index, "Switching")
    if waiting or switching:
        draft.message = (
            f"{wave.name}: {len(switching)} nodes switching, {len(waiting)} waiting"
            f" (maxUnavailable {limit})"
        )
        draft.requeue.append(SWITCHING_POLL_SECONDS)
        return False
    skipped = [n for n in wave.nodes if draft.nodes.get(n) and draft.nodes[n].state == "Skipped"]
    analyzed = _analysis_applies(draft, wave)
    ready = wave.model_copy(update={"ready_at": draft.now, "phase": "Analyzing"})
    draft.set_wave(ready)
    draft.progressed()
    draft.event(
        "Normal",
        "WaveReady",
        f"{wave.name}: every node serves {draft.canary}"
        + (f" except skipped {', '.join(skipped)}" if skipped else "")
        + ("; analysis starts" if analyzed else ""),
    )
    return True if analyzed else _succeed(draft, ready)


def _succeed(draft: _Draft, wave: WaveStatus) -> bool:
    """Mark the wave passed; pause after it if its spec says so. False when pausing."""
    draft.set_wave(wave.model_copy(update={"phase": "Succeeded", "finished_at": draft.now}))
    draft.progressed()
    pause = _wave_spec(draft, wave.index).pause
    if pause is None:
        return True
    duration = pause.duration_seconds
    _pause(
        draft,
        "wave",
        f"pausing after {wave.name}"
        + (f" for {duration}s" if duration else " until slmops resume or promote"),
    )
    if duration:
        draft.requeue.append(float(duration))
    return False


def _analysis_applies(draft: _Draft, wave: WaveStatus) -> bool:
    analysis = draft.world.spec.analysis
    if analysis is None or not analysis.metrics or not wave.nodes:
        return False
    override = _wave_spec(draft, wave.index).analysis
    return not (override is not None and override.skip)


def _wave_spec(draft: _Draft, index: int) -> WaveSpec:
    waves = draft.world.spec.strategy.waves
    # The spec may have lost waves since the plan was made; the last one stands in.
    return waves[min(index, len(waves) - 1)]


def _limits(draft: _Draft, wave: WaveStatus) -> AnalysisLimits:
    analysis = draft.world.spec.analysis
    assert analysis is not None
    return AnalysisLimits.for_wave(analysis, _wave_spec(draft, wave.index).analysis)


def _analyze(draft: _Draft, wave: WaveStatus) -> bool:
    if not _analysis_applies(draft, wave):
        return _succeed(draft, wave)
    limits = _limits(draft, wave)
    since = wave.last_measured_at or wave.ready_at
    delay = limits.interval_seconds if wave.last_measured_at else limits.initial_delay_seconds
    remaining = draft.at(delay, since)
    if remaining > 0:
        draft.requeue.append(remaining)
        if wave.last_measured_at is None:
            # No countdown in the message: a message that changes every second is a status
            # write every reconcile.
            draft.message = f"{wave.name}: every node is ready; analysis starts soon"
        return False
    fresh = [m for m in draft.world.measurements or () if m.wave == wave.index]
    if not fresh:
        draft.measure_now = True
        draft.requeue.append(float(limits.interval_seconds))
        draft.message = f"{wave.name}: measuring"
        return False
    fresh = [m.model_copy(update={"at": draft.now}) for m in fresh]
    outcome = tally(wave, fresh, limits)
    _record(draft, fresh)
    counted = outcome.wave.model_copy(update={"last_measured_at": draft.now})
    draft.set_wave(counted)
    if outcome.round_phase != "Error":
        draft.progressed()
    draft.message = f"{wave.name}: {outcome.reason}"
    if outcome.kind == "Abort":
        culprit = outcome.culprit
        assert culprit is not None
        _abort(
            draft,
            _abort_reason(draft, wave, culprit, outcome.reason),
            automatic=draft.world.spec.rollback.automatic,
        )
        return False
    if outcome.kind == "Pause":
        _pause(draft, "analysis", f"{wave.name}: {outcome.reason}; resume or promote to continue")
        return False
    if outcome.kind == "Passed":
        draft.event("Normal", "AnalysisPassed", f"{wave.name}: {outcome.reason}")
        return _succeed(draft, counted)
    draft.requeue.append(float(limits.interval_seconds))
    if outcome.round_phase == "Error":
        draft.event("Warning", "MeasurementError", f"{wave.name}: {outcome.reason}")
    return False


def _record(draft: _Draft, fresh: Sequence[Measurement]) -> None:
    """Append a round; keep the last MEASUREMENTS_PER_METRIC of each metric."""
    combined = [*draft.measurements, *fresh]
    kept: list[Measurement] = []
    seen: dict[str, int] = {}
    for measurement in reversed(combined):
        seen[measurement.metric] = seen.get(measurement.metric, 0) + 1
        if seen[measurement.metric] <= MEASUREMENTS_PER_METRIC:
            kept.append(measurement)
    draft.measurements = list(reversed(kept))[-200:]


def _next_wave(draft: _Draft, wave: WaveStatus) -> bool:
    if wave.index + 1 < len(draft.waves):
        draft.current_wave = wave.index + 1
        return True
    switching = [n for n in draft.nodes.values() if n.state == "Switching"]
    if switching:
        draft.message = f"waiting for {len(switching)} nodes to be ready before completing"
        return False
    _promote(draft)
    return False


def _promote(draft: _Draft) -> None:
    revision = draft.canary
    draft.stable = revision
    draft.canary = None
    draft.current_wave = None
    draft.paused_by = None
    draft.pause_started_at = None
    draft.phase = "Healthy"
    draft.decision_at = draft.now
    draft.progressed()
    skipped = sorted(n.node for n in draft.nodes.values() if n.state == "Skipped")
    _place(draft)
    _reset_nodes(draft)
    draft.message = f"all assigned nodes serve revision {revision}"
    draft.event(
        "Normal",
        "RolloutComplete",
        f"revision {revision} is stable"
        + (f"; skipped nodes {', '.join(skipped)} get it when they return" if skipped else ""),
    )


# --- abort and rollback ---------------------------------------------------------------


def _abort_reason(
    draft: _Draft, wave: WaveStatus, culprit: Measurement, verdict: str
) -> AbortReason:
    metric = _metric(draft.world.spec.analysis, culprit.metric)
    query, stable_query, condition = "", None, ""
    if metric is not None:
        variables = _variables(draft, wave, culprit.variant)
        query = _try_render(metric.query, variables)
        if uses_stable(metric):
            stable_query = _try_render(metric.query, variables | {"revision": draft.stable or ""})
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


def _abort(draft: _Draft, reason: AbortReason, *, automatic: bool) -> None:
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
    touched = [name for name, node in draft.nodes.items() if node.state in _TOUCHED]
    for name in touched:
        _set_node(draft, name, state="RolledBack", reason=f"was {draft.nodes[name].state}")
    draft.phase = "RolledBack"
    draft.rollback_completed_at = None
    draft.message = (
        f"aborted: {reason.message}; {len(touched)} nodes return to {draft.stable or 'nothing'}"
    )
    draft.event(
        "Warning",
        "RollingBack",
        f"{len(touched)} nodes return to revision {draft.stable} in one step",
    )


def _finish_rollback(draft: _Draft) -> None:
    if draft.phase != "RolledBack" or draft.rollback_completed_at is not None:
        return
    fleet = {n.name: n for n in draft.world.nodes}
    pending = []
    for name, node in draft.nodes.items():
        if node.state != "RolledBack":
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
    draft.message = f"rolled back: every touched node serves {draft.stable} again"
    draft.event("Normal", "RollbackComplete", draft.message)


def _check_deadline(draft: _Draft) -> None:
    if not draft.in_flight or draft.paused_by is not None:
        return
    deadline = draft.world.spec.strategy.progress_deadline_seconds
    if draft.last_progress_at is None:
        return
    remaining = draft.at(deadline, draft.last_progress_at)
    if remaining <= 0:
        draft.deadline_exceeded = True
        previous = cond.find(draft.world.status.conditions, "Stalled")
        if previous is None or previous.reason != "ProgressDeadlineExceeded":
            draft.event(
                "Warning",
                "ProgressDeadlineExceeded",
                f"no progress for {deadline}s: {draft.message}",
            )
    else:
        draft.requeue.append(remaining)


# --- measurement planning -------------------------------------------------------------


def _metric(analysis: AnalysisSpec | None, name: str) -> MetricSpec | None:
    if analysis is None:
        return None
    return next((m for m in analysis.metrics if m.name == name), None)


def _variables(draft: _Draft, wave: WaveStatus, variant: str | None) -> dict[str, str]:
    hardware_class = next(
        (
            p.hardware_class
            for p in draft.canary_placement.values()
            if p.variant == variant and p.hardware_class
        ),
        variant or "",
    )
    return {
        "rollout": draft.world.name,
        "namespace": draft.world.namespace,
        "revision": draft.canary or "",
        "stableRevision": draft.stable or "",
        "variant": variant or "",
        "hardwareClass": hardware_class,
        "wave": wave.name,
    }


def _try_render(template: str, variables: Mapping[str, str]) -> str:
    try:
        return render(template, variables)
    except TemplateError:
        return template


def plan_round(world: World) -> list[PlannedQuery]:
    """The queries of the round decide() asked for (empty when none is due)."""
    decision = decide(replace(world, measurements=None))
    if not decision.measure_now or world.spec.analysis is None:
        return []
    status = decision.status
    wave = status.waves[status.current_wave or 0]
    draft = _draft(replace(world, status=status, measurements=None))
    on_canary = [
        n for n in status.nodes if n.wave == wave.index and n.state == "Updated" and n.variant
    ] or [n for n in status.nodes if n.wave == wave.index and n.variant]
    variants = sorted({n.variant for n in on_canary if n.variant})
    analysis = world.spec.analysis
    planned: list[PlannedQuery] = []
    for metric in analysis.metrics:
        for variant in variants:
            variables = _variables(draft, wave, variant)
            stable_query = (
                render(metric.query, variables | {"revision": status.stable_revision or ""})
                if uses_stable(metric)
                else None
            )
            planned.append(
                PlannedQuery(
                    metric=metric.name,
                    variant=variant,
                    hardware_class=variables["hardwareClass"],
                    query=render(metric.query, variables),
                    stable_query=stable_query,
                    sample_query=(
                        render(analysis.sample_count_query, variables)
                        if analysis.min_sample_count > 0
                        else None
                    ),
                    wave=wave.index,
                )
            )
    return planned


def measurement_from(
    world: World,
    planned: PlannedQuery,
    *,
    value: float | None,
    stable_value: float | None,
    error: str | None,
    samples: float | None,
) -> Measurement:
    """Judge one planned query's results into a Measurement for decide()."""
    analysis = world.spec.analysis
    metric = _metric(analysis, planned.metric)
    if analysis is None or metric is None:
        raise ValueError(f"metric {planned.metric!r} is not in spec.analysis.metrics")
    note = ""
    if planned.stable_query is not None and error is None and not _finite(stable_value):
        baseline = _last_stable_value(world.status, planned.metric, planned.variant)
        if baseline is not None:
            # Once a wave has switched every node of a variant, nothing serves the stable
            # revision there any more; the stable value measured earlier in this rollout is
            # the honest baseline (not "no data", which would pause the last wave).
            stable_value, note = baseline[0], f" (stable value measured at {baseline[1]})"
    verdict = judge(metric, value, stable_value, error, samples, analysis)
    return Measurement(
        metric=planned.metric,
        wave=planned.wave,
        variant=planned.variant,
        phase=verdict.phase,
        value=value,
        stable_value=stable_value,
        message=verdict.message + note,
        at=cond.now_rfc3339(world.now),
    )


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _last_stable_value(
    status: EdgeRolloutStatus, metric: str, variant: str
) -> tuple[float, str] | None:
    """The newest stable value this rollout measured for a metric on a variant."""
    for measurement in reversed(status.measurements):
        if (
            measurement.metric == metric
            and measurement.variant == variant
            and _finite(measurement.stable_value)
            and measurement.stable_value is not None
        ):
            return measurement.stable_value, measurement.at
    return None


# --- the result -----------------------------------------------------------------------


def _assigned(draft: _Draft) -> list[NodeAssignment]:
    return [n for n in draft.nodes.values() if n.variant is not None]


def _desired(draft: _Draft) -> tuple[dict[str, str], dict[str, str]]:
    desired: dict[str, str] = {}
    variants: dict[str, str] = {}
    if draft.invalid is not None:
        return _frozen(draft)
    for name, node in draft.nodes.items():
        on_canary = draft.canary is not None and node.state in _TOUCHED
        if on_canary:
            placement = draft.canary_placement.get(name)
            if placement is not None and placement.variant is not None and draft.canary:
                desired[name], variants[name] = draft.canary, placement.variant
                continue
        stable = draft.stable_placement.get(name)
        if draft.stable is not None and stable is not None and stable.variant is not None:
            desired[name], variants[name] = draft.stable, stable.variant
    return desired, variants


def _frozen(draft: _Draft) -> tuple[dict[str, str], dict[str, str]]:
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
        elif node.state in _TOUCHED:
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


def _conditions(draft: _Draft) -> list[Condition]:
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


def _analysis_condition(draft: _Draft) -> tuple[ConditionStatus, str, str]:
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


def _decision(draft: _Draft) -> Decision:
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


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
