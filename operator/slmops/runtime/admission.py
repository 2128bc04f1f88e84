"""Bounded concurrency and a bounded queue in front of the model.

At most `max_concurrency` requests run on the model at once and at most `max_queue` wait for a
slot; anything beyond is refused at once (503) instead of piling up memory and latency. Refusing
fast is what lets a load balancer or client retry elsewhere while this node is busy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class OverloadedError(Exception):
    """Every slot is busy and the queue is full."""


class Admission:
    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self._slots = asyncio.Semaphore(max_concurrency)
        self._capacity = max_concurrency + max_queue
        self.running = 0
        self.waiting = 0

    @property
    def admitted(self) -> int:
        return self.running + self.waiting

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Hold a model slot; yields the seconds spent waiting for it."""
        if self.admitted >= self._capacity:
            raise OverloadedError(
                f"server is at capacity ({self.running} running, {self.waiting} queued); "
                "retry later"
            )
        queued_at = time.perf_counter()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield time.perf_counter() - queued_at
        finally:
            self.running -= 1
            self._slots.release()
