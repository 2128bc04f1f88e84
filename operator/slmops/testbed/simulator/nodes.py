"""Simulated nodes: registration and heartbeats, the way a kubelet does them.

A kubelet proves it is alive cheaply: it renews its Lease in `kube-node-lease` every 10 s
(a tiny write) and posts the full node status only when something changed or every few
minutes. The node-lifecycle controller counts either as a heartbeat. We do the same, so
1,000 nodes cost ~100 small writes per second, spread evenly over the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from slmops.testbed.simulator.apiclient import ApiError, KubeApi
from slmops.testbed.simulator.profiles import (
    PROFILES,
    HardwareProfile,
    node_info,
    node_manifest,
    node_name,
)

log = logging.getLogger(__name__)
LEASE_NAMESPACE = "kube-node-lease"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class SimulatedNode:
    name: str
    profile: HardwareProfile
    index: int
    ip: str
    online: bool = True
    kill_processes_when_offline: bool = False
    slowdown: float = 1.0
    ready_since: str = field(default_factory=now_rfc3339)
    # Set while online; the kubelet waits on it before restarting processes.
    online_event: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "profile": self.profile.name,
            "ip": self.ip,
            "online": self.online,
            "kill_processes_when_offline": self.kill_processes_when_offline,
            "slowdown": self.slowdown,
            "labels": node_manifest(self.profile, self.name, self.index)["metadata"]["labels"],
        }


def node_ip(octet: int, index: int) -> str:
    """Nodes take 127.<octet>.0.1 .. 127.<octet>.15.250; pods start at 127.<octet>.16.1."""
    return f"127.{octet}.{index // 250}.{index % 250 + 1}"


def plan_fleet(nodes_per_profile: dict[str, int], octet: int) -> list[SimulatedNode]:
    nodes: list[SimulatedNode] = []
    for profile_name, count in nodes_per_profile.items():
        profile = PROFILES[profile_name]
        for index in range(count):
            nodes.append(
                SimulatedNode(
                    name=node_name(profile_name, index),
                    profile=profile,
                    index=index,
                    ip=node_ip(octet, len(nodes)),
                )
            )
    for node in nodes:
        node.online_event.set()
    return nodes


def node_status(node: SimulatedNode) -> dict[str, Any]:
    heartbeat = now_rfc3339()
    condition_defaults = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "sufficient memory"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "sufficient PID"),
        ("Ready", "True", "KubeletReady", "simulated kubelet is posting ready status"),
    ]
    return {
        "capacity": node.profile.capacity(),
        "allocatable": node.profile.allocatable(),
        "conditions": [
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": node.ready_since,
            }
            for kind, status, reason, message in condition_defaults
        ],
        "addresses": [
            {"type": "InternalIP", "address": node.ip},
            {"type": "Hostname", "address": node.name},
        ],
        "nodeInfo": node_info(node.profile, node.name),
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
    }


@dataclass
class HeartbeatStats:
    lease_renewals: int = 0
    status_posts: int = 0
    errors: int = 0
    # How late a renewal went out compared to its schedule (the simulator falling behind).
    max_lateness_seconds: float = 0.0
    # The slowest lease renewal request (the apiserver falling behind).
    max_renew_seconds: float = 0.0


class NodeHeartbeats:
    def __init__(
        self,
        api: KubeApi,
        nodes: list[SimulatedNode],
        lease_renew_seconds: float,
        lease_duration_seconds: int,
        node_status_seconds: float,
    ) -> None:
        self.api = api
        self.nodes = {node.name: node for node in nodes}
        self.lease_renew_seconds = lease_renew_seconds
        self.lease_duration_seconds = lease_duration_seconds
        self.node_status_seconds = node_status_seconds
        self.stats = HeartbeatStats()
        self.registered = asyncio.Event()

    async def register_all(self, concurrency: int = 16) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def register(node: SimulatedNode) -> None:
            async with gate:
                # A busy apiserver may time out or throttle (429) a few of 1,000 writes.
                for attempt in range(5):
                    try:
                        await self._register(node)
                        return
                    except (ApiError, OSError, TimeoutError, aiohttp.ClientError) as exc:
                        if attempt == 4:
                            raise
                        log.warning("registering %s failed, retrying: %s", node.name, exc)
                        await asyncio.sleep(1 + attempt)

        await asyncio.gather(*(register(node) for node in self.nodes.values()))
        self.registered.set()

    async def _register(self, node: SimulatedNode) -> None:
        manifest = node_manifest(node.profile, node.name, node.index)
        try:
            created = await self.api.create("/api/v1/nodes", manifest)
        except ApiError as exc:
            if exc.status != 409:
                raise
            created = await self.api.patch(
                f"/api/v1/nodes/{node.name}",
                {"metadata": {"labels": manifest["metadata"]["labels"]}},
            )
        await self.post_status(node)
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": node.name,
                "namespace": LEASE_NAMESPACE,
                # As the kubelet does: the Lease goes away with its Node.
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": node.name,
                        "uid": created["metadata"]["uid"],
                    }
                ],
            },
            "spec": {
                "holderIdentity": node.name,
                "leaseDurationSeconds": self.lease_duration_seconds,
                "renewTime": now_micro(),
            },
        }
        try:
            await self.api.create(
                f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases", lease
            )
        except ApiError as exc:
            if exc.status != 409:
                raise
            await self.renew_lease(node)

    async def post_status(self, node: SimulatedNode) -> None:
        await self.api.patch(f"/api/v1/nodes/{node.name}/status", {"status": node_status(node)})
        self.stats.status_posts += 1

    async def renew_lease(self, node: SimulatedNode) -> None:
        started = asyncio.get_running_loop().time()
        await self.api.patch(
            f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{node.name}",
            {"spec": {"renewTime": now_micro(), "holderIdentity": node.name}},
        )
        self.stats.lease_renewals += 1
        self.stats.max_renew_seconds = max(
            self.stats.max_renew_seconds, asyncio.get_running_loop().time() - started
        )

    async def run(self) -> None:
        """One heartbeat coroutine per node, phase-shifted so the writes spread evenly."""
        count = max(len(self.nodes), 1)
        await asyncio.gather(
            *(
                self._beat(node, offset=self.lease_renew_seconds * i / count)
                for i, node in enumerate(self.nodes.values())
            )
        )

    async def _beat(self, node: SimulatedNode, offset: float) -> None:
        loop = asyncio.get_running_loop()
        next_lease = loop.time() + offset
        next_status = next_lease + self.node_status_seconds
        while True:
            node.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(node.wake.wait(), max(0.0, next_lease - loop.time()))
            if not node.online:
                next_lease = loop.time() + self.lease_renew_seconds
                continue
            self.stats.max_lateness_seconds = max(
                self.stats.max_lateness_seconds, loop.time() - next_lease
            )
            try:
                if node.wake.is_set() or loop.time() >= next_status:
                    await self.post_status(node)
                    next_status = loop.time() + self.node_status_seconds
                await self.renew_lease(node)
            except (ApiError, OSError, TimeoutError, aiohttp.ClientError) as exc:
                self.stats.errors += 1
                log.warning("heartbeat of %s failed: %s", node.name, exc)
            # A fixed cadence: a slow request must not push every later renewal back.
            next_lease = max(next_lease + self.lease_renew_seconds, loop.time())

    def set_online(self, node: SimulatedNode, online: bool) -> None:
        if node.online == online:
            return
        node.online = online
        if online:
            # The lifecycle controller set Ready=Unknown meanwhile: a new transition.
            node.ready_since = now_rfc3339()
            node.online_event.set()
            node.wake.set()
        else:
            node.online_event.clear()
