"""A deadline that repeats, time passed in: "at most every N seconds".

The work the package does on a schedule of its own (the scheduler's jobs, the
collections, the allocation sites once a minute, the per-connection gauges every few
seconds) asks the same questions: is it time, is it a whole interval late, and it
ran now. One object answers them, with the time given by the caller, so a test
moves it without sleeping.
"""

from __future__ import annotations

import math


class Every:
    """Due at ``first_at`` (at once unless given), then ``interval`` seconds after
    each :meth:`ran`."""

    __slots__ = ("interval", "next_at")

    def __init__(self, interval: float, first_at: float = -math.inf) -> None:
        self.interval = interval
        self.next_at = first_at

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def overdue(self, now: float) -> bool:
        """Due for a whole interval already (work that may wait must not wait more)."""
        return now >= self.next_at + self.interval

    def ran(self, now: float) -> None:
        self.next_at = now + self.interval

    def reset(self) -> None:
        """Due at once again."""
        self.next_at = -math.inf
