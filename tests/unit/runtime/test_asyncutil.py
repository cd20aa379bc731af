"""Per-key limits: a bound per key, nothing kept for a key nobody holds. Work in
slices: the loop served between them, the rest handed back when cancelled."""

from __future__ import annotations

import asyncio

import pytest

from channels_tuning.runtime.asyncutil import KeyedLimiter, in_slices


async def test_each_key_has_its_own_bound_and_leaves_nothing_behind():
    limiter = KeyedLimiter(2)
    assert await limiter.acquire("a")
    assert await limiter.acquire("a")
    assert not await limiter.acquire("a", timeout=0.05)  # a third waits, then gives up
    assert await limiter.acquire("b", timeout=0.05)  # another key is not affected
    waiter = asyncio.ensure_future(limiter.acquire("a", timeout=5))
    await asyncio.sleep(0.01)
    limiter.release("a")
    assert await waiter  # took the freed place
    for key in ("a", "a", "b"):
        limiter.release(key)
    assert len(limiter) == 0  # client-chosen keys are not kept


async def test_a_cancelled_waiter_leaves_nothing_behind():
    limiter = KeyedLimiter(1)
    assert await limiter.acquire("k")
    waiter = asyncio.ensure_future(limiter.acquire("k"))
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    limiter.release("k")
    assert len(limiter) == 0


async def test_work_in_slices_lets_the_loop_run_between_them_and_hands_back_the_rest():
    done: list[int] = []
    seen_by_the_loop: list[int] = []
    handed_back: list[int] = []

    async def watch() -> None:
        while True:
            seen_by_the_loop.append(len(done))
            await asyncio.sleep(0)

    def run(part) -> None:
        done.extend(part)
        if len(done) == 6:
            worker.cancel()  # delivered at the next pause, between two slices

    watcher = asyncio.ensure_future(watch())
    await asyncio.sleep(0)
    worker = asyncio.ensure_future(in_slices(range(10), 3, run, on_cancel=handed_back.extend))
    with pytest.raises(asyncio.CancelledError):
        await worker
    watcher.cancel()
    assert done == [0, 1, 2, 3, 4, 5]
    assert handed_back == [6, 7, 8, 9]
    assert 3 in seen_by_the_loop  # the loop ran with one slice done and the next not
