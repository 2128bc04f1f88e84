"""Faults the tests inject into the simulated fleet.

- Offline: the node's heartbeats stop (the real node-lifecycle controller turns it
  NotReady/Unknown after its grace period) and its processes are frozen with SIGSTOP, as
  if the machine hung, or killed, as if it lost power. Online: heartbeats and a fresh
  Ready status resume, frozen processes get SIGCONT, killed ones restart per restart policy.
- Slow down: cpulimit-style duty cycling of the node's processes. With factor f each 100 ms
  period is split into 100/f ms running and the rest stopped (SIGSTOP/SIGCONT), so a
  process really does f times less work per wall-clock second, whatever it runs.
"""

from __future__ import annotations

import asyncio
import signal

from slmops.testbed.simulator.kubelet import Kubelet
from slmops.testbed.simulator.nodes import NodeHeartbeats, SimulatedNode

DUTY_CYCLE_PERIOD_SECONDS = 0.1


class Faults:
    def __init__(self, heartbeats: NodeHeartbeats, kubelet: Kubelet) -> None:
        self.heartbeats = heartbeats
        self.kubelet = kubelet
        self._slowdowns: dict[str, asyncio.Task[None]] = {}

    def take_offline(self, node: SimulatedNode, kill_processes: bool) -> None:
        node.kill_processes_when_offline = kill_processes
        self.heartbeats.set_online(node, False)
        self.kubelet.signal_node(node, signal.SIGKILL if kill_processes else signal.SIGSTOP)

    def bring_online(self, node: SimulatedNode) -> None:
        self.kubelet.signal_node(node, signal.SIGCONT)
        node.kill_processes_when_offline = False
        self.heartbeats.set_online(node, True)
        self.kubelet.repost_node_pods(node)

    def slow_down(self, node: SimulatedNode, factor: float) -> None:
        if factor < 1:
            raise ValueError("slowdown factor must be >= 1 (1 = full speed)")
        node.slowdown = factor
        previous = self._slowdowns.pop(node.name, None)
        if previous is not None:
            previous.cancel()
        if factor > 1:
            self._slowdowns[node.name] = asyncio.create_task(self._duty_cycle(node, factor))
        elif node.online:
            self.kubelet.signal_node(node, signal.SIGCONT)

    async def _duty_cycle(self, node: SimulatedNode, factor: float) -> None:
        running = DUTY_CYCLE_PERIOD_SECONDS / factor
        stopped = DUTY_CYCLE_PERIOD_SECONDS - running
        try:
            while True:
                if node.online:
                    self.kubelet.signal_node(node, signal.SIGSTOP)
                await asyncio.sleep(stopped)
                if node.online:
                    self.kubelet.signal_node(node, signal.SIGCONT)
                await asyncio.sleep(running)
        finally:
            if node.online:
                self.kubelet.signal_node(node, signal.SIGCONT)
