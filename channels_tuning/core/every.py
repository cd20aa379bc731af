"""A deadline that repeats, time passed in: "at most every N seconds".

The work the stats round and the multiprocess copy do on a schedule of their own
(the allocation sites once a minute, the per-connection gauges every few seconds)
asks the same two questions: is it time, and it ran now. One object answers both,
with the time given by the caller, so a test moves it without sleeping.
"""

from __future__ import annotations

import math


class Every:
    """Due at once, then ``interval`` seconds after each :meth:`ran`."""

    __slots__ = ("interval", "next_at")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_at = -math.inf

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def ran(self, now: float) -> None:
        self.next_at = now + self.interval

    def reset(self) -> None:
        """Due at once again."""
        self.next_at = -math.inf
