"""Per-key limits: a bound per key, nothing kept for a key nobody holds."""

from __future__ import annotations

import asyncio

from channels_tuning.runtime.asyncutil import KeyedLimiter


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
