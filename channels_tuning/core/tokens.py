"""The one token bucket of the package: a client's message rate (``RATE_LIMIT``,
:class:`~channels_tuning.core.policies.RateLimitPolicy`) and its ping budget on the
tuned server (``--ws-control-frame-rate``, :mod:`channels_tuning.servers.daphne.protocol`).

The bucket is the rule only; the two numbers of its state (tokens left, when they
were counted) live on the connection that owns them, as plain floats: an object per
connection would cost each one memory and a GC-tracked object.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; one token per event."""

    rate: float
    burst: float

    def take(self, tokens: float, counted_at: float, now: float) -> tuple[bool, float]:
        """Refill ``tokens`` for the time since ``counted_at``, then take one: whether
        there was one, and what is left. The caller stores what is left and ``now``
        (a new bucket: ``burst`` tokens, counted at its start)."""
        tokens = min(self.burst, tokens + (now - counted_at) * self.rate)
        if tokens < 1.0:
            return False, tokens
        return True, tokens - 1.0
