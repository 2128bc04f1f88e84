"""Nodes switching to the canary in batches of maxUnavailable; ready or timed out."""

from __future__ import annotations

from slmops.api.v1alpha1.edgerollout import (
    WaveStatus,
)
from slmops.domain.rollout.analyzing import analysis_applies, measured_variants, pass_wave
from slmops.domain.rollout.draft import (
    SWITCHING_POLL_SECONDS,
    Draft,
    set_node,
    settle_returned,
    wave_nodes,
)
from slmops.domain.waves import max_unavailable_count


def observe_nodes(draft: Draft) -> None:
    """Switching nodes become Updated when ready on the canary, Skipped after their timeout.

    A skipped node that returns while the rollout is in flight serves the canary (it was
    switched) and becomes Updated, whichever wave is current. Once the rollout has ended,
    skipped nodes wait for the stable revision instead (settle_returned).
    """
    if draft.canary is None or draft.phase == "RolledBack":
        settle_returned(draft)
        return
    timeout = draft.world.spec.strategy.node_timeout_seconds
    fleet = {n.name: n for n in draft.world.nodes}
    for name, node in list(draft.nodes.items()):
        serving = draft.world.node_revision.get(name)
        on_canary = serving is not None and serving.revision == draft.canary and serving.ready
        if node.state in ("Switching", "Skipped") and on_canary:
            set_node(draft, name, state="Updated", reason="")
            draft.progressed()
        elif node.state == "Switching":
            remaining = draft.at(timeout, node.switched_at)
            if remaining <= 0:
                offline = name in fleet and not fleet[name].ready
                reason = f"not ready on revision {draft.canary} {timeout}s after switching" + (
                    " (node NotReady)" if offline else ""
                )
                set_node(draft, name, state="Skipped", reason=reason)
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


def switch_wave(draft: Draft, wave: WaveStatus) -> bool:
    spec = draft.world.spec
    waiting = wave_nodes(draft, wave.index, "Stable")
    in_flight = sum(1 for n in draft.nodes.values() if n.state == "Switching")
    limit = max_unavailable_count(max(1, len(wave.nodes)), spec.strategy.max_unavailable)
    room = max(0, limit - in_flight)
    while waiting and room:
        batch = waiting[:room]
        for name in batch:
            serving = draft.world.node_revision.get(name)
            if serving is not None and serving.revision == draft.canary and serving.ready:
                # Already serving it (a retry after a Degraded hold): Updated now, not in a
                # decision later, or deciding again from this status would change it.
                set_node(draft, name, state="Updated", switched_at=draft.now)
            else:
                set_node(draft, name, state="Switching", switched_at=draft.now)
                room -= 1
        draft.progressed()
        draft.event("Normal", "NodesSwitching", f"{wave.name}: {', '.join(batch)} → {draft.canary}")
        waiting = waiting[len(batch) :]
    switching = wave_nodes(draft, wave.index, "Switching")
    if waiting or switching:
        draft.message = (
            f"{wave.name}: {len(switching)} nodes switching, {len(waiting)} waiting"
            f" (maxUnavailable {limit})"
        )
        draft.requeue.append(SWITCHING_POLL_SECONDS)
        return False
    skipped = [n for n in wave.nodes if draft.nodes.get(n) and draft.nodes[n].state == "Skipped"]
    analyzed = analysis_applies(draft, wave)
    measurable = analyzed and bool(measured_variants(draft, wave))
    ready = wave.model_copy(update={"ready_at": draft.now, "phase": "Analyzing"})
    draft.set_wave(ready)
    draft.progressed()
    draft.event(
        "Normal",
        "WaveReady",
        f"{wave.name}: every node serves {draft.canary}"
        + (f" except skipped {', '.join(skipped)}" if skipped else "")
        + ("; analysis starts" if measurable else ""),
    )
    return True if analyzed else pass_wave(draft, ready)
