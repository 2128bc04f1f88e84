"""The nodes a rollout's fleet selector matches, remembered until the fleet changes.

Every reconcile needs the rollout's fleet. Matching every node of the cluster against the
selector each time made each reconcile cost O(all nodes), and with many rollouts sharing one
event loop that became the operator's main cost (profiled at 1,000 nodes and 50 rollouts in
tests/benchmarks/test_operator_scale.py: placement over the whole fleet and listing the node
index were about a third of the busy main thread). Nodes rarely change in ways that matter
here (labels, readiness, allocatable memory); heartbeats and status posts leave a `FleetNode`
equal, so a match stays valid until a node really changes, appears or goes away.
"""

from __future__ import annotations

from collections.abc import Mapping

from slmops.api.v1alpha1.common import LabelSelector
from slmops.domain.placement import FleetNode
from slmops.domain.selectors import matches


class FleetView:
    """Selector → matching nodes, recomputed only after the fleet changed.

    Fed by the node index handler (`observe`) with each node as it is indexed, and asked
    with the index itself (`matching`) for which nodes still exist: kopf drops a deleted
    node from the index without calling the handler, and stores a new value only after the
    handler returned, so the handler's node is the newest and the index says who is there.
    A deleted node's last value stays remembered (a few hundred bytes per node the cluster
    ever had) and is never matched while it is gone.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, FleetNode] = {}
        self._version = 0
        # The fleet (version, index size) the remembered matches were computed on.
        self._matched_on = (0, 0)
        self._matches: dict[str, list[FleetNode]] = {}
        # Names in the index when the matches were computed: a node coming back equal to
        # what was remembered from before it went away is a change too.
        self._present: set[str] = set()

    def observe(self, node: FleetNode) -> None:
        """A node was (re)indexed: only a different or returning node invalidates the
        matches. Without changes the index can only lose nodes, which its size shows."""
        if node.name not in self._present or self._nodes.get(node.name) != node:
            self._nodes[node.name] = node
            self._version += 1

    def matching(self, selector: LabelSelector, index: Mapping[str, object]) -> list[FleetNode]:
        """The existing nodes (names in `index`) the selector matches."""
        fleet = (self._version, len(index))
        if fleet != self._matched_on:
            # Stale, all of them; and selectors no rollout asks for any more go too.
            self._matches.clear()
            self._present = set(index)
            self._matched_on = fleet
        key = selector.model_dump_json()
        nodes = self._matches.get(key)
        if nodes is None:
            nodes = self._matches[key] = [
                node
                for node in self._nodes.values()
                if node.name in index and matches(selector, node.labels)
            ]
        return nodes
