"""A client for the simulator's control API (HTTP on loopback), used by tests and the CLI."""

from __future__ import annotations

from typing import Any

import httpx


class SimulatorClient:
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self.timeout = timeout

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.request(method, f"{self.base_url}{path}", json=body, timeout=self.timeout)
        if response.status_code >= 400:
            raise RuntimeError(
                f"simulator {method} {path} failed ({response.status_code}): {response.text}"
            )
        return response.json()

    def ready(self) -> bool:
        return bool(self._request("GET", "/healthz").get("ready"))

    def nodes(self) -> list[dict[str, Any]]:
        """Every simulated node: name, profile, online, slowdown, labels."""
        result: list[dict[str, Any]] = self._request("GET", "/nodes")
        return result

    def node_names(self, profile: str | None = None) -> list[str]:
        return [n["name"] for n in self.nodes() if profile is None or n["profile"] == profile]

    def profiles(self) -> dict[str, int]:
        """Profile name -> number of simulated nodes of it."""
        counts: dict[str, int] = {}
        for node in self.nodes():
            counts[node["profile"]] = counts.get(node["profile"], 0) + 1
        return counts

    def pods(self) -> list[dict[str, Any]]:
        """Pods the simulator runs: namespace, name, node, ip, containers (pid, log, restarts)."""
        result: list[dict[str, Any]] = self._request("GET", "/pods")
        return result

    def take_offline(self, node: str, kill_processes: bool = False) -> None:
        """Stop the node's heartbeats; its processes are frozen (SIGSTOP) or, with
        kill_processes, killed (and restarted when the node comes back)."""
        self._request("POST", f"/nodes/{node}/offline", {"kill_processes": kill_processes})

    def bring_online(self, node: str) -> None:
        self._request("POST", f"/nodes/{node}/online")

    def slow_down(self, node: str, factor: float) -> None:
        """Make the node's processes run `factor` times slower (SIGSTOP/SIGCONT duty cycle);
        factor 1 restores full speed."""
        self._request("POST", f"/nodes/{node}/slowdown", {"factor": factor})

    def kill_pod_process(
        self, namespace: str, pod: str, container: str | None = None, signal: str = "SIGKILL"
    ) -> None:
        self._request(
            "POST",
            f"/pods/{namespace}/{pod}/kill",
            {"container": container, "signal": signal},
        )

    def stats(self) -> dict[str, Any]:
        """Heartbeat counters and the simulator's own CPU time (for benchmarks)."""
        result: dict[str, Any] = self._request("GET", "/stats")
        return result
