"""The process' periodic jobs, registered with the scheduler when it starts.

:mod:`channels_tuning.runtime.scheduler` runs connections' timers and whatever jobs
it is given; this module gives it the package's, at each start of the scheduler on a
loop (its first connection: start-up is over), from the settings of that moment:

- GC tuning (``GC_THRESHOLD``, ``GC_FREEZE``; done as the server started where it
  could: :mod:`channels_tuning.servers.startup`) and ``TRACEMALLOC``, once per start;
- ``metrics-mirror``: the counters copied into prometheus_client's multiprocess
  files, every tick, when that mode is on;
- ``garbage-collection``: after each of CPython's generation-1 collections and at
  least every ``GC_FREEZE_INTERVAL``, a young collection and a freeze, and a full
  collection when the frozen garbage estimate passes ``GC_FROZEN_GARBAGE_LIMIT``
  (:mod:`channels_tuning.runtime.collector`); or, with ``GC_COLLECT_INTERVAL`` set, a
  full collection at that interval as well;
- ``stats``: every ``STATS_INTERVAL`` (5 s when off), this process' missed-message
  counts taken from the layer and its snapshot published for ``wsstats``;
- ``membership-refresh``: every ``GROUP_REFRESH_INTERVAL``, the tracked memberships
  refreshed in Redis (not at start-up: they were just added);
- ``owner-counts``: with a layer that counts connections per owner across processes,
  this process' word that its counts are live (:mod:`.layers.redis.owners`).

:func:`install` is idempotent; the app's ``ready()`` and the first tuned consumer
call it, so a project that lists the app or only uses the consumers gets the same.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import tracemalloc
from collections.abc import Iterable
from typing import Any

from channels.layers import get_channel_layer

from .conf import project_settings
from .core.every import Every
from .layers.capabilities import SharedOwnerCounts, missed_messages, owner_counts
from .layers.redis.membership import refresh_tracked_memberships
from .observability import gctuning, multiprocess, snapshot
from .runtime import clock
from .runtime.collector import SettlingCollector, frames_waiting
from .runtime.counters import LAYER_ERRORS
from .runtime.registry import registry
from .runtime.scheduler import Scheduler, in_flight, scheduler

logger = logging.getLogger(__name__)

#: Seconds between stats rounds when STATS_INTERVAL is off (missed counts still move).
DEFAULT_STATS_ROUND = 5.0


class PeriodicCollection:
    """The full collection every ``interval`` seconds, never in the middle of a
    handler or a broadcast (it runs at a tick), and postponed while clients have
    frames waiting so that it does not delay them further, but at most one interval."""

    def __init__(self, interval: float, now: float) -> None:
        self.every = Every(interval, first_at=now + interval)

    def __call__(self, now: float, consumers: Iterable[Any]) -> None:
        every = self.every
        if not every.due(now):
            return
        if not every.overdue(now) and frames_waiting(consumers):
            return
        gc.collect()
        every.ran(now)


class StatsRound:
    """Missed-message counts from the layer into this process' counters, then the
    snapshot published (when a stats backend is on)."""

    def __init__(self, owner: Scheduler, layer: Any, backend: Any) -> None:
        self.owner = owner
        self.layer = layer
        self.backend = backend
        self._collect_task: asyncio.Task[Any] | None = None

    def __call__(self, now: float, consumers: Iterable[Any]) -> None:
        # Publishing first: its task lists the loop's tasks before the collection's
        # starts a Redis command.
        self._publish()
        self._collect_missed()

    def _publish(self) -> None:
        if self.backend is None:
            return
        refused = snapshot.publisher.refused
        if refused is not None:
            # Refused, not worked around: publishing stays off in this process.
            logger.error("channels_tuning: stats not published: %s", refused)
            self.backend = None
            self.owner.keep_alive = False
            return
        snapshot.publisher.publish(self.backend)

    def _collect_missed(self) -> None:
        counter = missed_messages(self.layer)
        if counter is None or in_flight(self._collect_task):
            return
        self._collect_task = asyncio.get_running_loop().create_task(
            self._collect(counter.collect_missed)
        )

    @staticmethod
    async def _collect(collect: Any) -> None:
        try:
            await collect()
        except Exception as exc:  # Redis down: the next round tries again
            LAYER_ERRORS.inc((f"missed:{type(exc).__name__}",))


class OwnerCountsRefresh:
    """This process' word that its connections per owner still count (once it
    counted one: a process with no per-user limit writes nothing)."""

    def __init__(self, store: SharedOwnerCounts) -> None:
        self.store = store
        self._task: asyncio.Task[Any] | None = None

    def __call__(self, now: float, consumers: Iterable[Any]) -> None:
        if not self.store.used or in_flight(self._task):
            return
        self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        try:
            await self.store.refresh()
        except Exception as exc:  # Redis down: the next round tries again
            LAYER_ERRORS.inc((f"owners:{type(exc).__name__}",))


def _mirror_metrics(now: float, consumers: Iterable[Any]) -> None:
    if multiprocess.mirror is not None:
        multiprocess.mirror.sync()


def _refresh_memberships(now: float, consumers: Iterable[Any]) -> None:
    refresh_tracked_memberships(consumers)  # the registry: read by weak reference


def start_process_services(owner: Scheduler) -> None:
    """At each start of the scheduler: tune the collector, then register the jobs
    with the settings of this moment."""
    tuning = project_settings()
    gctuning.apply_tuning(tuning)
    if tuning["TRACEMALLOC"] and not tracemalloc.is_tracing():
        tracemalloc.start(tuning["TRACEMALLOC"])
    now = clock.monotonic()
    layer = get_channel_layer()
    backend = snapshot.backend_for(tuning, layer)
    # With stats publishing on, an idle process keeps publishing (it is alive);
    # otherwise the scheduler ends with the last connection.
    owner.keep_alive = backend is not None
    owner.every("metrics-mirror", None, _mirror_metrics)
    if tuning["GC_FREEZE_INTERVAL"]:
        settling = SettlingCollector(
            registry,
            interval=tuning["GC_FREEZE_INTERVAL"],
            garbage_limit=tuning["GC_FROZEN_GARBAGE_LIMIT"],
            now=now,
        )
        gctuning.monitor.settling = settling
        owner.every("garbage-collection", None, settling)
    else:
        owner.cancel("garbage-collection")
    if tuning["GC_COLLECT_INTERVAL"]:
        collection = PeriodicCollection(tuning["GC_COLLECT_INTERVAL"], now)
        owner.every("periodic-full-collection", None, collection)
    else:
        owner.cancel("periodic-full-collection")
    owner.every(
        "stats", tuning["STATS_INTERVAL"] or DEFAULT_STATS_ROUND, StatsRound(owner, layer, backend)
    )
    owners = owner_counts(layer)
    if owners is None:
        owner.cancel("owner-counts")
    else:
        owner.every("owner-counts", owners.refresh_interval, OwnerCountsRefresh(owners))
    interval = tuning["GROUP_REFRESH_INTERVAL"]
    if interval is None:
        owner.cancel("membership-refresh")
    else:
        owner.every("membership-refresh", interval, _refresh_memberships, first_at=now + interval)


def install(target: Scheduler = scheduler) -> None:
    """Register the package's jobs with ``target`` (idempotent)."""
    target.on_start(start_process_services)
