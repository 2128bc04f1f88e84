from __future__ import annotations

import asyncio

import pytest

from slmops.runtime.admission import Admission, OverloadedError

pytestmark = pytest.mark.unit


async def test_beyond_concurrency_plus_queue_is_refused_at_once():
    admission = Admission(max_concurrency=1, max_queue=1)
    release = asyncio.Event()
    entered: list[float] = []

    async def hold() -> None:
        async with admission.slot() as queued_s:
            entered.append(queued_s)
            await release.wait()

    first = asyncio.create_task(hold())
    second = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert (admission.running, admission.waiting) == (1, 1)
    with pytest.raises(OverloadedError, match="1 running, 1 queued"):
        async with admission.slot():
            pass
    release.set()
    await asyncio.gather(first, second)
    assert (admission.running, admission.waiting) == (0, 0)
    assert len(entered) == 2
    # the queued one waited for the slot
    async with admission.slot() as queued_s:
        assert queued_s >= 0


async def test_a_cancelled_waiter_gives_its_queue_place_back():
    admission = Admission(max_concurrency=1, max_queue=1)
    release = asyncio.Event()

    async def hold() -> None:
        async with admission.slot():
            await release.wait()

    running = asyncio.create_task(hold())
    waiting = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert admission.waiting == 0
    release.set()
    await running
    assert admission.admitted == 0
