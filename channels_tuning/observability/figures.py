"""The figures of a snapshot that need a look at every connection, taken in one pass
or in steps.

At 19 000 idle connections one pass over the registry (state, send-queue backlog,
memberships of each connection) and the task summary took 43-89 ms, measured around
``snapshot()`` in the server process of ``benchmarks/stall.py``: a stop of the loop
every ``STATS_INTERVAL`` (5 s), the longest of an idle process once the collector's
were gone. The publisher (:class:`~.snapshot.Publisher`) takes the pass in steps of
:data:`CONNECTIONS_PER_STEP` and lets the loop run between them, so no step stops it
for more than a few milliseconds; the figures then describe the connections over those
few milliseconds, not one instant. ``snapshot()`` called directly (``find_leaks`` in
tests) still takes them in one pass; the live view and ``wsstats`` read what was
published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from ..core.state import ConnectionState
from ..layers.capabilities import redis_prefix
from ..layers.redis import keys
from ..runtime.registry import registry

CLOSING, CLOSED = ConnectionState.CLOSING, ConnectionState.CLOSED

#: Connections looked at between two yields to the loop (under 1 ms at 1-2 us each).
CONNECTIONS_PER_STEP = 500
#: Upper bounds of the send-queue-depth buckets (messages queued per connection).
QUEUE_DEPTH_BUCKETS = (0, 1, 10, 100, 1000)


class ConnectionFigures:
    """Counts summed over the connections handed to :meth:`add`."""

    def __init__(self) -> None:
        self.states = {"connecting": 0, "open": 0, "closing": 0}
        self.queued = 0
        self.longest = 0
        self.with_backlog = 0
        self.memberships = 0
        self.layer_prefix: str | None = None
        self.connections = 0
        #: Connections with more than each of :data:`QUEUE_DEPTH_BUCKETS` queued.
        self.deeper_than = [0] * len(QUEUE_DEPTH_BUCKETS)

    def add(self, consumers: Iterable[Any]) -> None:
        # Each consumer's ConnectionCore read once, its fields directly: through the
        # consumer's properties (send_queue_length, closing, accepted: each a look-up
        # of .core again) a connection took 2.2 us, this way 1.1 us (16 700 consumers
        # spread over the heap, Python 3.11). The publisher's pass every
        # STATS_INTERVAL was 12 % of the CPU of a server idling at 16 700 connections
        # (py-spy, benchmarks/stall.py --profile).
        states = self.states
        deeper_than = self.deeper_than
        for consumer in consumers:
            self.connections += 1
            core = consumer.core
            queue = core.queue
            if queue:
                length = len(queue)
                self.queued += length
                self.with_backlog += 1
                self.longest = max(self.longest, length)
                for index, bound in enumerate(QUEUE_DEPTH_BUCKETS):
                    if length > bound:
                        deeper_than[index] += 1
            state = core.state
            if state is CLOSING or state is CLOSED:
                states["closing"] += 1
            elif core.accepted_at is not None:
                states["open"] += 1
            else:
                states["connecting"] += 1
            self.memberships += consumer.tracked_group_count()
            if self.layer_prefix is None and redis_prefix(consumer.channel_layer):
                self.layer_prefix = keys.process_channel(consumer.channel_layer)

    def depth_buckets(self) -> list[tuple[float, int]]:
        """Connections with at most each bound queued (cumulative, +Inf last)."""
        return [
            *(
                (float(bound), self.connections - deeper)
                for bound, deeper in zip(QUEUE_DEPTH_BUCKETS, self.deeper_than, strict=True)
            ),
            (float("inf"), self.connections),
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "by_state": dict(self.states),
            "send_queue": {
                "queued": self.queued,
                "max": self.longest,
                "connections_with_backlog": self.with_backlog,
            },
            "memberships": self.memberships,
            "layer_prefix": self.layer_prefix,
        }


def connection_figures() -> ConnectionFigures:
    """Every connection, in one pass."""
    figures = ConnectionFigures()
    figures.add(registry)
    return figures


async def connection_figures_in_steps(step: int = CONNECTIONS_PER_STEP) -> ConnectionFigures:
    """Every connection open when called and still open at its step, ``step`` at a
    time, the loop running between the steps. The pass holds weak references
    (``registry.refs()``): a connection that closes meanwhile is neither counted nor
    kept alive."""
    figures = ConnectionFigures()
    refs = registry.refs()
    for start in range(0, len(refs), step):
        figures.add(registry.live(refs[start : start + step]))
        await asyncio.sleep(0)
    return figures
