"""When the cyclic collector runs, at tens of thousands of connections.

A full collection walks every tracked object and stops the event loop while it does:
at 19 000 idle connections on one process, 1.4 M objects and 1.46 s, once a minute
with the package's former periodic ``gc.collect()`` (issue #25's measurement;
``python benchmarks/stall.py`` reproduces it). A connection's objects live as long as
it does, so scanning them again and again finds nothing.

:class:`SettlingCollector` (the ``garbage-collection`` job) runs a *round* at the
first scheduler tick after each of CPython's generation-1 (or 2) collections, and at
least every ``GC_FREEZE_INTERVAL`` seconds:

1. ``gc.collect(1)``: the young generations only (small right after CPython's own
   generation-1 collection: at most about ``GC_THRESHOLD[0] x (GC_THRESHOLD[1] + 1)``
   objects); what died young, a connection that came and went among it, is freed
   rather than frozen (``tests/e2e/test_churn.py``: with ``gc.collect(0)`` here 3 000
   short connections grew the server by 13 MB);
2. ``gc.freeze()``: everything tracked moves to the permanent generation, which no
   collection but a full one with ``gc.unfreeze()`` scans. The freeze splices lists:
   O(1) whatever the count.

An object that lives is so scanned a few times (in generation 0, in generation 1 on
its way to the oldest, once more by a round) and never again: the oldest generation
stays nearly empty, so CPython's own full collections are short, and no collection's
pause grows with the connections open. What bounds a pause is ``GC_THRESHOLD``:
generation 1 holds the survivors of at most ``GC_THRESHOLD[1] + 1`` young
collections. The former default, (50 000, 20, 100), let it hold a million objects
while 19 000 clients connected: a 748 ms generation-1 collection
(``benchmarks/stall.py``); (20 000, 2, 100) holds at most about 60 000.

The price is cyclic garbage that was frozen: it is freed only by a collection of
everything. On ``channels-tuning-daphne`` a closed connection leaves none (its
cycles are broken at the close); on other servers it does (per closed connection:
plain daphne 51 objects, hypercorn 43, uvicorn 26; ``tests/e2e/test_gc.py``), so the
job estimates the garbage it froze as the connections closed since the last full
collection times the garbage per closed connection the full collections found so far
(before any, the server's measured figure, or :data:`FIRST_ESTIMATE` on a server
not measured), and when the estimate passes
``GC_FROZEN_GARBAGE_LIMIT`` it unfreezes, collects everything and freezes again: one
full stop, logged, counted, and postponed (at most one interval) while clients have
frames waiting. A process with stable connections never pays it; a churning one pays
it once per ``limit / garbage per connection`` closures.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterable
from typing import Any, Final, Protocol

from ..core.every import Every

logger = logging.getLogger(__name__)

#: Unreachable objects per closed connection assumed before a full collection has
#: measured it, on a server whose figure is not known (the known ones:
#: ``ServerKind.garbage_per_closed``: daphne 51-78, hypercorn 43-55, uvicorn 26-29,
#: channels-tuning-daphne 0 on Twisted 23+, 18 on 22.10). Starting from 50 on
#: channels-tuning-daphne, 19 000 clients gone at once passed the default limit and
#: the first full collection stopped the loop 1 139 ms to find 1 183 objects.
FIRST_ESTIMATE: Final = 50.0
#: The estimate never goes below this: other cyclic garbage (exceptions with their
#: tracebacks, the application's own cycles) grows with the traffic too.
LEAST_ESTIMATE: Final = 1.0
#: How many closed connections the first estimate weighs as, against what the
#: full collections find (the estimate is their running total over the connections
#: closed, so one collection that ran early or late does not swing it).
PRIOR_CLOSED: Final = 100


#: Collections of generation 1 or 2 so far: each moved survivors to the oldest
#: generation, which the next round freezes.
_PROMOTIONS = [0]


def _count_promotions(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"]:
        _PROMOTIONS[0] += 1


def frames_waiting(consumers: Iterable[Any]) -> bool:
    """Some client has frames queued: a full collection now would delay them."""
    return any(consumer.send_queue_length for consumer in consumers)


class ClosedConnections(Protocol):
    #: Connections closed since the process started.
    closed: int
    #: The cyclic garbage a closed connection leaves on this server, as measured
    #: (None: not known, or no connection yet).
    garbage_per_closed: float | None


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
        #: The young collection and freeze at most this often (sooner after CPython's
        #: own generation-1 collection promoted objects).
        self.every = Every(interval, first_at=now + interval)
        #: Per closed connection, from the full collections (None: none yet).
        self._measured: float | None = None
        self.closed_at_full = connections.closed
        self._closed_at_last_round = connections.closed
        self._closed_at_start = connections.closed
        self._found_total = 0
        self._full_due_since: float | None = None
        if _count_promotions not in gc.callbacks:
            gc.callbacks.append(_count_promotions)
        self._promotions_seen = _PROMOTIONS[0]
        #: Rounds run (young collection + freeze) and full collections run.
        self.rounds = 0
        self.full_collections = 0

    @property
    def first_estimate(self) -> float:
        """Garbage per closed connection before a full collection has measured it."""
        known = self.connections.garbage_per_closed
        return FIRST_ESTIMATE if known is None else max(known, LEAST_ESTIMATE)

    @property
    def garbage_per_closed(self) -> float:
        """The estimate of cyclic garbage per closed connection."""
        return self.first_estimate if self._measured is None else self._measured

    def frozen_garbage_estimate(self) -> float:
        closed = self.connections.closed - self.closed_at_full
        return closed * self.garbage_per_closed

    def __call__(self, now: float, consumers: Iterable[Any]) -> None:
        limit = self.garbage_limit
        if limit is not None and self.frozen_garbage_estimate() >= limit:
            if self._full_due_since is None:
                self._full_due_since = now
            overdue = now >= self._full_due_since + self.interval
            if overdue or not frames_waiting(consumers):
                self.collect_everything()
                self._full_due_since = None
                self._freeze(now)
                return
        if _PROMOTIONS[0] != self._promotions_seen or self.every.due(now):
            # The young generations, small after CPython's own generation-1 collection:
            # what died young (a connection that came and went) is freed, not frozen.
            gc.collect(1)
            self._freeze(now)

    def _freeze(self, now: float) -> None:
        gc.freeze()
        self.rounds += 1
        self.every.ran(now)
        self._promotions_seen = _PROMOTIONS[0]
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
        self._measured = max(
            (self._found_total + self.first_estimate * PRIOR_CLOSED) / (credited + PRIOR_CLOSED),
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
