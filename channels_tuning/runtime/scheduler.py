"""One periodic task per process drives every connection's timers.

A timer handle or task per connection per tick costs a few GC-tracked objects
each and, at thousands of connections, a measurable share of the loop. Instead
one task wakes every ``tick`` seconds and calls ``on_tick(now)`` on each
registered consumer, which compares a few floats (ping due? idle too long?
lifetime over?) and acts only when something is due. The task exits when the
registry is empty and is started again by the next connection, so an idle
process (or a test) is left with no background task.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import tracemalloc
from typing import Any

from channels.layers import get_channel_layer

from ..conf import project_settings
from ..layers.membership import refresh_tracked_memberships
from ..observability import gctuning, snapshot
from ..observability.stats import LAYER_ERRORS
from .registry import ConnectionRegistry, registry

logger = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, connections: ConnectionRegistry) -> None:
        self._connections = connections
        self._task: asyncio.Task[None] | None = None
        self.tick = 1.0
        self._next_refresh = 0.0
        self._stats_backend: snapshot.FileBackend | snapshot.RedisBackend | None = None
        self._stats_interval = 0.0
        self._next_publish = 0.0
        self._gc_interval: float | None = None
        self._layer: Any = None
        self._collect_task: asyncio.Task[Any] | None = None
        self._next_gc = 0.0
        #: The event loop the connections live on (set at the first connection).
        self.loop: asyncio.AbstractEventLoop | None = None

    def ensure_running(self, tick: float) -> None:
        """Start the scheduler on the running loop if it is not running there."""
        self.tick = min(self.tick, tick) if self.is_running() else tick
        if not self.is_running():
            self.loop = asyncio.get_running_loop()
            self._start_process_services()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="channels_tuning.scheduler"
            )

    def is_running(self) -> bool:
        task = self._task
        return (
            task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()
        )

    def _start_process_services(self) -> None:
        """At the first connection (start-up is over): GC tuning, tracemalloc, stats."""
        tuning = project_settings()
        gctuning.apply_tuning(tuning)
        if tuning["TRACEMALLOC"] and not tracemalloc.is_tracing():
            tracemalloc.start(tuning["TRACEMALLOC"])
        self._layer = get_channel_layer()
        self._stats_backend = snapshot.backend_for(tuning, self._layer)
        self._stats_interval = tuning["STATS_INTERVAL"] or 0.0
        self._next_publish = 0.0
        self._gc_interval = tuning["GC_COLLECT_INTERVAL"]
        self._next_gc = time.monotonic() + (self._gc_interval or 0.0)

    async def _run(self) -> None:
        self._next_refresh = 0.0
        # With stats publishing on, an idle process keeps publishing (it is alive);
        # otherwise the task ends with the last connection.
        while self._connections or self._stats_backend is not None:
            await asyncio.sleep(self.tick)
            self.run_once(time.monotonic())
        self._task = None

    def run_once(self, now: float) -> None:
        consumers = list(self._connections)
        for consumer in consumers:
            try:
                consumer.on_tick(now)
            except Exception:
                # One broken consumer must not stop heartbeats for all the others.
                logger.exception("channels_tuning: tick failed for %r", consumer)
        from ..observability import multiprocess  # lazy: it imports the Prometheus exporter

        if multiprocess.mirror is not None:
            try:
                multiprocess.mirror.sync()
            except Exception:
                logger.exception("channels_tuning: copying metrics for multiprocess mode failed")
        if self._gc_interval and now >= self._next_gc:
            self._collect_garbage(now, consumers)
        if now >= self._next_publish:
            self._next_publish = now + (self._stats_interval or 5.0)
            self._collect_missed()
            if self._stats_backend is not None:
                try:
                    snapshot.publisher.publish(self._stats_backend)
                except snapshot.UnsafeStatsDirectory as exc:
                    # Refused, not worked around: publishing stays off in this process.
                    logger.error("channels_tuning: stats not published: %s", exc)
                    self._stats_backend = None
                except Exception:
                    logger.exception("channels_tuning: publishing stats failed")
        if now >= self._next_refresh:
            interval = project_settings()["GROUP_REFRESH_INTERVAL"]
            if interval is None:
                self._next_refresh = float("inf")
                return
            if self._next_refresh:  # not at start-up: memberships were just added
                refresh_tracked_memberships(consumers)
            self._next_refresh = now + interval

    def _collect_missed(self) -> None:
        """Take this process' missed-message counts from the layer (Redis: written
        there by producers that found its inbox full) into its counters."""
        collect = getattr(self._layer, "collect_missed", None)
        if collect is None or _in_flight(self._collect_task):
            return
        self._collect_task = asyncio.get_running_loop().create_task(self._collect(collect))

    @staticmethod
    async def _collect(collect: Any) -> None:
        try:
            await collect()
        except Exception as exc:  # Redis down: the next interval tries again
            LAYER_ERRORS.inc((f"missed:{type(exc).__name__}",))

    def _collect_garbage(self, now: float, consumers: list[Any]) -> None:
        """The periodic full collection (GC_COLLECT_INTERVAL): at a tick, so never in
        the middle of a handler or a broadcast, and postponed (up to one more interval)
        while clients have frames waiting, so it does not delay them further."""
        interval = self._gc_interval or 0.0
        overdue = now >= self._next_gc + interval
        if not overdue and any(consumer.send_queue_length for consumer in consumers):
            return
        gc.collect()
        self._next_gc = now + interval


#: The scheduler of this process.
scheduler = Scheduler(registry)


def _in_flight(task: asyncio.Task[Any] | None) -> bool:
    """A task still running on this loop (one left on a closed loop does not count)."""
    return task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()
