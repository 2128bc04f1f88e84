"""Load for the demo: what users of the edge model would send, through tritonclient.

Bounded in time and count (it only ever targets the model servers' loopback addresses),
and stoppable at once, so Ctrl-C leaves nothing running.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

PROMPTS = (b"def main(", b"import os\n", b"class Config:", b"for item in ")


def ready_servers(pods: Iterable[Mapping[str, Any]], port: int) -> list[str]:
    """host:port of every pod that is Ready, has an address and is not being deleted."""
    servers = []
    for pod in pods:
        status = pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if ready and status.get("podIP") and not pod["metadata"].get("deletionTimestamp"):
            servers.append(f"{status['podIP']}:{port}")
    return servers


@dataclass
class TrafficStats:
    sent: int = 0
    failed: int = 0


class Traffic:
    """Send generate-style infers to every server `targets()` returns, one stream each."""

    def __init__(
        self,
        targets: Callable[[], list[str]],
        model_name: str,
        *,
        max_tokens: int = 8,
        max_seconds: float = 1800.0,
        max_requests: int = 200_000,
    ) -> None:
        self.targets = targets
        self.model_name = model_name
        self.max_tokens = max_tokens
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.stats = TrafficStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _done(self, deadline: float) -> bool:
        return (
            self._stop.is_set()
            or time.monotonic() > deadline
            or self.stats.sent >= self.max_requests
        )

    async def _main(self) -> None:
        import tritonclient.http.aio as triton

        deadline = time.monotonic() + self.max_seconds
        clients: dict[str, triton.InferenceServerClient] = {}
        try:
            while not self._done(deadline):
                try:
                    targets = await asyncio.to_thread(self.targets)
                except Exception:  # the apiserver may be busy; try again shortly
                    targets = []
                for target in targets:
                    if target not in clients:
                        clients[target] = triton.InferenceServerClient(target, conn_timeout=5)
                if not targets:
                    await asyncio.sleep(0.5)
                    continue
                # Refresh the list of servers every second: waves move pods around.
                until = time.monotonic() + 1.0
                await asyncio.gather(*(self._send(triton, clients[t], until) for t in targets))
        finally:
            for client in clients.values():
                await client.close()

    async def _send(self, triton: object, client: object, until: float) -> None:
        from tritonclient.http import aio

        while time.monotonic() < until and not self._stop.is_set():
            prompt = aio.InferInput("text_input", [1], "BYTES")
            prompt.set_data_from_numpy(
                np.array([PROMPTS[self.stats.sent % len(PROMPTS)]], dtype=np.object_)
            )
            self.stats.sent += 1
            try:
                await client.infer(  # type: ignore[attr-defined]
                    self.model_name,
                    [prompt],
                    parameters={"max_tokens": self.max_tokens, "temperature": 0},
                    timeout=30,
                )
            except Exception:  # a server going away mid-wave is part of the story
                self.stats.failed += 1
                await asyncio.sleep(0.2)
