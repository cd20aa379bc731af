"""A fake clock for tuned consumers' timers: :func:`fake_clock`.

Heartbeats, the idle timeout, the lifetime, credentials expiry and the topics'
authorization refresh are deadlines that the process scheduler checks once a
``scheduler_tick`` (1 s). A test that waits for them sleeps a minute; with the fake
clock it moves time forward and the scheduler ticks at each second it skips, so
every policy acts as it would have, in order, at once::

    async def test_a_silent_client_is_closed_4000():
        with fake_clock() as clock:
            comm = TunedCommunicator(ChatConsumer.as_asgi(), "/ws/chat/")
            assert (await comm.connect())[0]
            await clock.advance(61)  # IDLE_TIMEOUT 60: the client never answered
            assert (await comm.receive_output())["code"] == 4000

Inside the block the package's clock (:mod:`channels_tuning.runtime.clock`) stands
still except when :meth:`FakeClock.advance` moves it. What runs on the event loop's
own clock is not moved: awaits with a timeout (``request_timeout``,
``client_request_timeout``, a send's deadline) and ``asyncio.sleep``. A
communicator answers heartbeat pings only as it reads, so a test that advances past
``IDLE_TIMEOUT`` without reading in between is closed as idle, like a client that
stopped answering; to keep a connection alive, advance in steps shorter than the
heartbeat interval and read (``receive_nothing()``) between them.

Connect and disconnect inside the block: the deadlines of a connection the fake
clock moved forward lie in the future of the real clock after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator

from ..runtime import clock as package_clock
from ..runtime.scheduler import scheduler

__all__ = ["FakeClock", "fake_clock"]

#: Loop passes after each tick: enough for a tick's sends and closes to go through
#: the consumer's writer task to the communicator (three are needed; more is free).
_PASSES_AFTER_TICK = 8


class FakeClock:
    """The package's monotonic clock, moved only by :meth:`advance`."""

    def __init__(self, start: float) -> None:
        self._now = start

    def monotonic(self) -> float:
        """The fake time now (what the package's timers read in the block)."""
        return self._now

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, ticking the scheduler at every
        ``scheduler_tick`` on the way (and at the end), and letting the event loop
        run after each tick so that what a tick sent has reached the client."""
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        target = self._now + seconds
        step = scheduler.tick
        for _ in range(max(1, math.ceil(seconds / step))):
            self._now = min(self._now + step, target)
            scheduler.run_once(self._now)
            for _ in range(_PASSES_AFTER_TICK):
                await asyncio.sleep(0)
        self._now = target


@contextlib.contextmanager
def fake_clock() -> Iterator[FakeClock]:
    """Replace the package's clock with a :class:`FakeClock` in the block, starting
    at the real time of its start."""
    fake = FakeClock(time.monotonic())
    real = package_clock.monotonic
    package_clock.monotonic = fake.monotonic
    try:
        yield fake
    finally:
        package_clock.monotonic = real
