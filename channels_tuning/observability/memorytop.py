"""The top allocation sites (``wsstats --memory``), without holding the event loop.

With ``TRACEMALLOC`` set, the stats round publishes where the process's memory is.
Grouping tracemalloc's traces by line is Python code over every traced block, and the
copy of the traces is C code that holds the GIL. Measured with 1.5 M traced blocks
(a script making 300 000 small dicts under ``tracemalloc.start(1)`` and ``(25)``):
``take_snapshot()`` 0.5-0.7 s, ``statistics("lineno")`` 5.7 s with one frame, 11.5 s
with 25. At 5 000 connections, a stats round that did both on the loop every 5 s held
it for more than 15 minutes (``benchmarks/connections.py --breakdown``, session 19).

So here:

- the sites are taken at most every :data:`MEMORY_TOP_EVERY` seconds; the rounds in
  between publish the last ones again, with the time they were taken;
- the grouping runs in a worker thread: the loop keeps running beside it (the GIL
  changes hands every few milliseconds);
- the copy (``take_snapshot``) stays a stop of the loop, about 0.4 µs per traced
  block, once a minute. ``TRACEMALLOC`` is a setting for finding a leak, not for
  every day.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from typing import Any

from ..core.every import Every

#: Seconds between two takes of the allocation sites.
MEMORY_TOP_EVERY = 60.0
#: Sites published.
MEMORY_TOP_LIMIT = 15


def top_sites(
    snapshot: tracemalloc.Snapshot, limit: int = MEMORY_TOP_LIMIT
) -> list[dict[str, Any]]:
    """The ``limit`` lines holding the most memory in ``snapshot``, largest first."""
    return [
        {"where": str(stat.traceback[0]), "kib": round(stat.size / 1024, 1), "blocks": stat.count}
        for stat in snapshot.statistics("lineno")[:limit]
    ]


class RecentMemoryTop:
    """The sites of the last take, refreshed by the stats round when one is due."""

    def __init__(self, every: float = MEMORY_TOP_EVERY) -> None:
        self.period = Every(every)
        self.sites: list[dict[str, Any]] = []
        #: Unix time of the take ``sites`` come from (None: none yet, or tracing off).
        self.taken_at: float | None = None

    async def refresh(self) -> None:
        """Take the sites again if tracemalloc is on and the last take is old enough."""
        if not tracemalloc.is_tracing():
            self.sites, self.taken_at = [], None
            self.period.reset()
            return
        now = time.monotonic()
        if not self.period.due(now):
            return
        # Marked before the take: if it fails, the next try waits a whole interval.
        self.period.ran(now)
        snapshot = tracemalloc.take_snapshot()
        loop = asyncio.get_running_loop()
        self.sites = await loop.run_in_executor(None, top_sites, snapshot)
        self.taken_at = time.time()


recent_memory_top = RecentMemoryTop()
