"""When the cyclic collector runs, at tens of thousands of connections.

A full collection walks every tracked object and stops the event loop while it does:
at 19 000 idle connections on one process, 1.4 M objects and 1.46 s, once a minute
with the package's former periodic ``gc.collect()`` (issue #25's measurement;
``python benchmarks/stall.py`` reproduces it). A connection's objects live as long as
it does, so scanning them again and again finds nothing.

:class:`SettlingCollector` (the ``garbage-collection`` job) runs, every
``GC_FREEZE_INTERVAL`` seconds at a scheduler tick:

1. ``gc.collect(1)``: the young generations only, that is what was allocated since
   the last round; short-lived garbage goes, survivors are promoted;
2. ``gc.freeze()``: everything tracked moves to the permanent generation, which no
   automatic collection scans. The freeze splices lists: O(1) whatever the count.

So a collection, automatic or this one, scans what was allocated since the last
round, not what the open connections hold: its pause follows the traffic, not the
connection count.

The price is cyclic garbage that was frozen: it is freed only by a collection of
everything. Connections are not free of reference cycles on every server (measured
by ``tests/e2e/test_gc.py``: the Twisted and autobahn protocol objects of a closed
WebSocket form cycles on daphne), so the job estimates the garbage it froze as the
connections closed since the last full collection times the garbage per closed
connection the full collections found so far (:data:`FIRST_ESTIMATE` before any), and when the
estimate passes ``GC_FROZEN_GARBAGE_LIMIT`` it unfreezes, collects everything and
freezes again: one full stop, logged, counted, and postponed (at most one interval)
while clients have frames waiting. A process with stable connections never pays it;
a churning one pays it once per ``limit / garbage per connection`` closures.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterable
from typing import Any, Final, Protocol

logger = logging.getLogger(__name__)

#: Unreachable objects per closed connection assumed before a full collection has
#: measured it (channels-tuning-daphne: 47; daphne: 20; tests/e2e/test_gc.py).
FIRST_ESTIMATE: Final = 50.0
#: The estimate never goes below this: other cyclic garbage (exceptions with their
#: tracebacks, the application's own cycles) grows with the traffic too.
LEAST_ESTIMATE: Final = 1.0
#: How many closed connections :data:`FIRST_ESTIMATE` weighs as, against what the
#: full collections find (the estimate is their running total over the connections
#: closed, so one collection that ran early or late does not swing it).
PRIOR_CLOSED: Final = 100


class ClosedConnections(Protocol):
    #: Connections closed since the process started.
    closed: int


class SettlingCollector:
    """The ``garbage-collection`` job (see the module docstring)."""

    def __init__(
        self,
        connections: ClosedConnections,
        *,
        interval: float,
        garbage_limit: int | None,
        now: float,
    ) -> None:
        self.connections = connections
        self.interval = interval
        self.garbage_limit = garbage_limit
        self.next_at = now + interval
        self.garbage_per_closed = FIRST_ESTIMATE
        self.closed_at_full = connections.closed
        self._closed_at_last_round = connections.closed
        self._closed_at_start = connections.closed
        self._found_total = 0
        #: Rounds run (young collection + freeze) and full collections run.
        self.rounds = 0
        self.full_collections = 0

    def frozen_garbage_estimate(self) -> float:
        closed = self.connections.closed - self.closed_at_full
        return closed * self.garbage_per_closed

    def __call__(self, now: float, consumers: Iterable[Any]) -> None:
        if now < self.next_at:
            return
        limit = self.garbage_limit
        if limit is not None and self.frozen_garbage_estimate() >= limit:
            overdue = now >= self.next_at + self.interval
            if not overdue and any(consumer.send_queue_length for consumer in consumers):
                return  # not while clients wait for frames; at most one interval late
            self.collect_everything()
        else:
            gc.collect(1)
        gc.freeze()
        self.rounds += 1
        self.next_at = now + self.interval
        self._closed_at_last_round = self.connections.closed

    def collect_everything(self) -> int:
        """Unfreeze and collect every generation; returns what was unreachable.

        A closed connection's objects become garbage a little after its consumer
        unregisters (daphne drops its protocol at its next check, up to a second
        later), so this collection is credited with the connections closed up to the
        previous round only: the later ones are counted again in the next estimate (a
        conservative count: under steady churn, full collections come up to twice as
        often as the garbage alone would need)."""
        counted_up_to = self._closed_at_last_round
        closed = self.connections.closed - self.closed_at_full
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        pause = time.perf_counter() - started
        self._found_total += found
        credited = counted_up_to - self._closed_at_start
        self.garbage_per_closed = max(
            (self._found_total + FIRST_ESTIMATE * PRIOR_CLOSED) / (credited + PRIOR_CLOSED),
            LEAST_ESTIMATE,
        )
        self.closed_at_full = counted_up_to
        self.full_collections += 1
        logger.info(
            "channels_tuning: full collection (frozen garbage estimate reached): "
            "%d unreachable, %d connections closed since the last one, %.0f ms",
            found,
            closed,
            pause * 1000,
        )
        return found
