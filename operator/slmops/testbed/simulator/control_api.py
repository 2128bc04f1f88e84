"""The simulator's control API: HTTP on loopback, JSON in and out (see client.py)."""

from __future__ import annotations

import resource
import signal
from typing import Any

from aiohttp import web

from slmops.testbed.simulator.faults import Faults
from slmops.testbed.simulator.kubelet import Kubelet
from slmops.testbed.simulator.nodes import NodeHeartbeats, SimulatedNode


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class ControlApi:
    def __init__(self, heartbeats: NodeHeartbeats, kubelet: Kubelet, faults: Faults) -> None:
        self.heartbeats = heartbeats
        self.kubelet = kubelet
        self.faults = faults

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/nodes", self.nodes)
        app.router.add_post("/nodes/{name}/offline", self.offline)
        app.router.add_post("/nodes/{name}/online", self.online)
        app.router.add_post("/nodes/{name}/slowdown", self.slowdown)
        app.router.add_get("/pods", self.pods)
        app.router.add_post("/pods/{namespace}/{name}/kill", self.kill)
        app.router.add_get("/stats", self.stats)
        return app

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        body = await request.json()
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}')
        return body

    def _node(self, request: web.Request) -> SimulatedNode:
        node = self.heartbeats.nodes.get(request.match_info["name"])
        if node is None:
            raise web.HTTPNotFound(
                text=f'{{"error": "no simulated node {request.match_info["name"]}"}}',
                content_type="application/json",
            )
        return node

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": self.heartbeats.registered.is_set()})

    async def nodes(self, request: web.Request) -> web.Response:
        return web.json_response([node.summary() for node in self.heartbeats.nodes.values()])

    async def offline(self, request: web.Request) -> web.Response:
        node = self._node(request)
        body = await self._body(request)
        self.faults.take_offline(node, bool(body.get("kill_processes", False)))
        return web.json_response(node.summary())

    async def online(self, request: web.Request) -> web.Response:
        node = self._node(request)
        self.faults.bring_online(node)
        return web.json_response(node.summary())

    async def slowdown(self, request: web.Request) -> web.Response:
        node = self._node(request)
        body = await self._body(request)
        try:
            self.faults.slow_down(node, float(body.get("factor", 1)))
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return web.json_response(node.summary())

    async def pods(self, request: web.Request) -> web.Response:
        return web.json_response([run.summary() for run in self.kubelet.pods.values()])

    async def kill(self, request: web.Request) -> web.Response:
        run = self.kubelet.find(request.match_info["namespace"], request.match_info["name"])
        if run is None:
            return _error(404, "no such pod on a simulated node")
        body = await self._body(request)
        try:
            signum = signal.Signals[str(body.get("signal") or "SIGKILL")]
        except KeyError:
            return _error(400, f"unknown signal {body.get('signal')!r}")
        wanted = body.get("container")
        targets = [c for c in run.init_containers + run.containers if wanted in (None, c.name)]
        alive = [c for c in targets if c.process is not None and c.process.returncode is None]
        if not alive:
            return _error(409, "no running process for that pod/container")
        for container in alive:
            self.kubelet.signal_container(container, signum)
        return web.json_response(run.summary())

    async def stats(self, request: web.Request) -> web.Response:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        stats = self.heartbeats.stats
        return web.json_response(
            {
                "nodes": len(self.heartbeats.nodes),
                "pods": len(self.kubelet.pods),
                "lease_renewals": stats.lease_renewals,
                "status_posts": stats.status_posts,
                "errors": stats.errors,
                "max_lateness_seconds": stats.max_lateness_seconds,
                "max_renew_seconds": stats.max_renew_seconds,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "max_rss_kib": usage.ru_maxrss,
            }
        )
