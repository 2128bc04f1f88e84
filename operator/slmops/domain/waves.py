"""Splitting a fleet into ordered waves, and a wave into batches of switching nodes.

Count and percent waves are cumulative over the assigned nodes. They take nodes
round-robin across hardware classes, so that the first small wave already runs the new
revision on every kind of hardware: a revision that is slow on one class must be caught
in the first wave, not in the wave that happens to reach that class.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from slmops.api.v1alpha1.edgerollout import WaveSpec
from slmops.domain.placement import NodePlacement
from slmops.domain.selectors import describe, matches

_PERCENT = re.compile(r"^([0-9]{1,3})%$")


@dataclass(frozen=True)
class PlannedWave:
    """The nodes one wave switches; note says why a wave is empty."""

    index: int
    name: str
    nodes: tuple[str, ...]
    note: str = ""


def wave_name(spec: WaveSpec, index: int) -> str:
    return spec.name or f"wave-{index}"


def plan_waves(
    placements: Sequence[NodePlacement],
    labels: Mapping[str, Mapping[str, str]],
    waves: Sequence[WaveSpec],
) -> list[PlannedWave]:
    """Assign every node that has a variant to exactly one wave."""
    order = interleave_by_class(placements)
    total = len(order)
    planned: set[str] = set()
    members: list[list[str]] = []
    notes: list[str] = []
    for spec in waves:
        chosen: list[str] = []
        if spec.selector is not None:
            chosen = [
                n for n in order if n not in planned and matches(spec.selector, labels.get(n, {}))
            ]
            note = f"no remaining node matches {describe(spec.selector)}"
        else:
            target = (
                min(spec.count, total)
                if spec.count is not None
                else math.ceil((spec.percent or 0) * total / 100)
            )
            missing = max(0, target - len(planned))
            chosen = [n for n in order if n not in planned][:missing]
            note = f"earlier waves already switch {len(planned)} of {total} nodes"
        planned.update(chosen)
        members.append(chosen)
        notes.append("" if chosen else note)
    leftovers = [n for n in order if n not in planned]
    if leftovers and members:
        members[-1].extend(leftovers)
        notes[-1] = ""
    return [
        PlannedWave(index, wave_name(spec, index), tuple(nodes), notes[index])
        for index, (spec, nodes) in enumerate(zip(waves, members, strict=True))
    ]


def interleave_by_class(placements: Sequence[NodePlacement]) -> list[str]:
    """Assigned nodes, one of each hardware class in turn (classes and nodes by name)."""
    by_class: dict[str, list[str]] = {}
    for placement in sorted(placements, key=lambda p: p.node):
        if placement.variant is None:
            continue
        by_class.setdefault(placement.hardware_class or placement.variant, []).append(
            placement.node
        )
    columns = [by_class[name] for name in sorted(by_class)]
    depth = max((len(c) for c in columns), default=0)
    return [column[row] for row in range(depth) for column in columns if row < len(column)]


def max_unavailable_count(total: int, max_unavailable: int | str) -> int:
    """Nodes that may switch at once: a number, or a percentage of total rounded down,
    never less than one (otherwise a small wave could never move)."""
    if isinstance(max_unavailable, int):
        if max_unavailable < 1:
            raise ValueError(f"maxUnavailable must be at least 1, got {max_unavailable}")
        return max_unavailable
    text = max_unavailable.strip()
    if text.isdigit():
        return max_unavailable_count(total, int(text))
    match = _PERCENT.match(text)
    if match is None or not 1 <= int(match.group(1)) <= 100:
        raise ValueError(
            f"maxUnavailable must be a number or a percentage from 1% to 100%, got {text!r}"
        )
    return max(1, total * int(match.group(1)) // 100)


def batch(nodes: Sequence[str], max_unavailable: int | str) -> list[tuple[str, ...]]:
    """Consecutive groups of nodes that switch together."""
    size = max_unavailable_count(len(nodes), max_unavailable)
    return [tuple(nodes[i : i + size]) for i in range(0, len(nodes), size)]
