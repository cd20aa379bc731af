"""``MAX_CONNECTIONS_PER_USER`` for the whole deployment, not per process.

The admission policies count an owner's connections in this process
(:class:`~channels_tuning.core.policies.ConnectionLimitPolicy`, before anything is
allocated). With a layer that counts owners across processes (the tuned Redis layer:
:mod:`channels_tuning.layers.redis.owners`) a connection that passes that check is
then counted there too, atomically against the same limit; one refused there is closed
with 1013 like one refused here. Without such a layer the per-process count is the
limit (the in-memory layer serves one process anyway). When the layer fails, the
per-process count stands: one log line a second at most, and
``channels_tuning_layer_errors_total{operation="owners:<error>"}``.
"""

from __future__ import annotations

import logging
from typing import Any

from ..layers.capabilities import SharedOwnerCounts, owner_counts
from ..runtime.counters import LAYER_ERRORS
from ..runtime.ratelog import RateLimitedLog
from ..wire.closecodes import CloseCode

_log = RateLimitedLog(logging.getLogger("channels_tuning"))


async def shared_owner_refusal(consumer: Any) -> tuple[int, str] | None:
    """Count the connection for its owner across processes; a refusal at the limit."""
    limit = consumer.tuning.max_connections_per_user
    if limit is None or not consumer.owner_key:
        return None
    store = owner_counts(getattr(consumer, "channel_layer", None))
    if store is None:
        return None
    try:
        admitted = await store.acquire(consumer.owner_key, limit)
    except Exception as exc:  # Redis down: the per-process count stands
        LAYER_ERRORS.inc((f"owners:{type(exc).__name__}",))
        _log.log("channels_tuning: connections per user counted per process: %r", exc)
        return None
    if not admitted:
        return int(CloseCode.TRY_AGAIN_LATER), "user connection limit"
    consumer.owner_store = store
    return None


def release_owner(consumer: Any) -> None:
    """The connection no longer counts for its owner (if it was counted across processes)."""
    store: SharedOwnerCounts | None = consumer.owner_store
    if store is not None:
        consumer.owner_store = None
        store.release(consumer.owner_key)
