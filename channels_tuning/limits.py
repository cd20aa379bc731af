"""Limits: connections per process, inbound message size and rate, connection lifetime.

Each limit is a named setting with a default in ``CHANNELS_TUNING`` and a
per-consumer class attribute of the same (lower-case) name. What a client sees
when it crosses one:

======================  ================================================
limit                   answer
======================  ================================================
max_connections         accepted, then closed with 1013 (try again later)
max_message_size        closed with 1009
rate_limit/rate_burst   closed with 1008 at the first message over the bucket
max_lifetime            closed with 1001 (reconnect) after the lifetime, minus jitter
======================  ================================================

Every refusal and close is logged once and counted (``channels_tuning.stats``).
"""

from __future__ import annotations

import random
import time
from typing import Any

from .backpressure import Message
from .closecodes import CloseCode
from .conf import FROM_SETTINGS
from .connection import ManagedConnectionMixin
from .registry import registry


class ConnectionLimitMixin(ManagedConnectionMixin):
    """Refuse connections beyond ``max_connections`` (process) or
    ``max_connections_per_consumer`` (this class) with close code 1013."""

    max_connections: Any = FROM_SETTINGS
    max_connections_per_consumer: Any = FROM_SETTINGS

    def admission_refusal(self) -> tuple[int, str] | None:
        refusal = super().admission_refusal()
        if refusal is not None:
            return refusal
        tuning = self.tuning
        if tuning.max_connections is not None and registry.count() >= tuning.max_connections:
            return CloseCode.TRY_AGAIN_LATER, "process connection limit"
        if (
            tuning.max_connections_per_consumer is not None
            and registry.count(type(self)) >= tuning.max_connections_per_consumer
        ):
            return CloseCode.TRY_AGAIN_LATER, "consumer connection limit"
        return None


class MessageLimitMixin(ManagedConnectionMixin):
    """Close with 1009 for messages over ``max_message_size`` bytes and with 1008
    when a client exceeds ``rate_limit`` messages per second (burst ``rate_burst``)."""

    max_message_size: Any = FROM_SETTINGS
    rate_limit: Any = FROM_SETTINGS
    rate_burst: Any = FROM_SETTINGS

    _tokens: float = 0.0
    _tokens_at: float = 0.0

    def on_accepted(self, now: float) -> None:
        super().on_accepted(now)
        if self.tuning.rate_burst is not None:
            self._tokens = float(self.tuning.rate_burst)
            self._tokens_at = now

    def filter_inbound(self, message: Message) -> bool:
        tuning = self.tuning
        limit = tuning.max_message_size
        if limit is not None and _too_big(message, limit):
            self.close_nowait(CloseCode.MESSAGE_TOO_BIG, f"message over {limit} bytes")
            return False
        if (
            tuning.rate_limit is not None
            and tuning.rate_burst is not None
            and not self._take_token(tuning.rate_limit, tuning.rate_burst)
        ):
            self.close_nowait(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
            return False
        return super().filter_inbound(message)

    def _take_token(self, rate: float, burst: float) -> bool:
        now = time.monotonic()
        tokens = min(burst, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


def _too_big(message: Message, limit: int) -> bool:
    payload = message.get("bytes")
    if payload is not None:
        return len(payload) > limit
    text = message.get("text") or ""
    # UTF-8 takes 1 to 4 bytes per character: encode only when it could matter.
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode()) > limit


class MaxLifetimeMixin(ManagedConnectionMixin):
    """Close with 1001 after ``max_lifetime`` seconds, shortened at random by up to
    ``lifetime_jitter`` of it, so clients reconnect spread out (and rebalance
    across servers after a deploy)."""

    max_lifetime: Any = FROM_SETTINGS
    lifetime_jitter: Any = FROM_SETTINGS

    _expires_at: float | None = None

    def on_accepted(self, now: float) -> None:
        super().on_accepted(now)
        lifetime = self.tuning.max_lifetime
        if lifetime is not None:
            jitter = self.tuning.lifetime_jitter * random.random()
            self._expires_at = now + lifetime * (1.0 - jitter)

    def on_tick(self, now: float) -> None:
        super().on_tick(now)
        if self._expires_at is not None and now >= self._expires_at and not self.closing:
            self.close_nowait(CloseCode.GOING_AWAY, "maximum connection lifetime reached")
