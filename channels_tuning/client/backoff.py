"""When the Python client reconnects: the close-code policy (one table for both
clients, :mod:`channels_tuning.wire.reconnect`) and exponential backoff with full
jitter."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..wire.reconnect import Reconnect, codes, policy_for

# The close-code policy (one table for both clients: channels_tuning.wire.reconnect).
#: Close codes after which the client does not reconnect.
DO_NOT_RECONNECT: Final = codes(Reconnect.STOP)
#: Close codes that mean "come back later": the delay starts at ``try_later_delay``.
TRY_LATER: Final = codes(Reconnect.LATER)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt ``n`` (from 0) waits a uniformly
    random time in ``[0, min(max_delay, initial_delay * factor ** n)]``."""

    initial_delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 20.0

    def cap(self, attempt: int) -> float:
        # min() before the power would overflow: 2.0 ** 1100 is inf, not an error, but
        # keep the exponent small anyway.
        return min(self.max_delay, self.initial_delay * self.factor ** min(attempt, 64))

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        return rng() * self.cap(attempt)


def reconnect_delay(
    code: int,
    attempt: int,
    backoff: Backoff,
    try_later_delay: float,
    rng: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before reconnecting after ``code``, or None: do not reconnect."""
    action = policy_for(code)
    if action is Reconnect.STOP:
        return None
    if action is Reconnect.NOW:
        return rng() * backoff.initial_delay
    if action is Reconnect.LATER:
        return try_later_delay + backoff.delay(attempt, rng)
    return backoff.delay(attempt, rng)
