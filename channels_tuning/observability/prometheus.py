"""The package's metrics on django-prometheus' ``/metrics`` view.

A custom collector in ``prometheus_client``'s default registry, registered when the
app is ready (``CHANNELS_TUNING["PROMETHEUS"]``, on by default). Nothing is recorded
per message for Prometheus: at scrape time the collector reads the package's own
counters (:mod:`channels_tuning.runtime.counters`), the GC monitor and, on the server's event
loop, the connection registry.

Labels are low-cardinality: consumer class, close code, drop reason, generation.
Group sends carry a ``group`` label only with ``PROMETHEUS_GROUP_LABELS``.

Every metric, with its type, labels and meaning, is listed in the documentation's
metrics reference, generated from :meth:`ChannelsTuningCollector.describe` (a test
checks that a real scrape exports nothing the reference lacks).

RSS, CPU and open files are prometheus_client's own ``process_*`` metrics.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, Collector

from ..core.every import Every
from ..runtime import counters as stats
from ..runtime.registry import registry
from ..runtime.scheduler import scheduler
from .figures import (
    ConnectionFigures,
    connection_figures,
    connection_figures_in_steps,
)
from .gctuning import PAUSE_BUCKETS, monitor
from .snapshot import loop_tasks

#: Seconds a scrape waits for the loop gauges taken in steps (each step waits its
#: turn of a busy loop).
STEPS_TIMEOUT = 5.0
#: Seconds between two takes of the loop gauges for the multiprocess copy.
MIRROR_GAUGES_EVERY = 5.0


@dataclass
class LoopGauges:
    """What only the event loop may read: connections, queues, tasks."""

    by_consumer: dict[str, int]
    figures: ConnectionFigures
    tasks: int


def loop_gauges() -> LoopGauges:
    """The loop gauges in one pass over the connections (a scrape served on the loop
    itself, and tests)."""
    tasks = loop_tasks()[0]
    return LoopGauges(registry.counts_by_class(qualified=False), connection_figures(), tasks)


async def loop_gauges_in_steps() -> LoopGauges:
    """The loop gauges, the connections read in steps with the loop running between
    them (:func:`.figures.connection_figures_in_steps`). At 19 000 connections one pass
    (and ``asyncio.all_tasks()``, before ``compat.asyncio_tasks``) stopped the loop
    for tens of milliseconds at each scrape, and every second in multiprocess mode:
    probe p99 67 ms and 12.5 % of a core instead of 18 ms and 6.9 %
    (``PROMETHEUS_MULTIPROC_DIR=... python benchmarks/stall.py --connections 19000
    --kinds tuned``)."""
    tasks = loop_tasks()[0]
    figures = await connection_figures_in_steps()
    return LoopGauges(registry.counts_by_class(qualified=False), figures, tasks)


class RecentLoopGauges:
    """The loop gauges for the multiprocess copy (every scheduler tick): the
    connections per consumer class as they are, the figures that need a look at every
    connection and the task count as last taken, in steps, at most every
    :data:`MIRROR_GAUGES_EVERY` seconds (up to that old: a scrape every 15 s hardly
    notices)."""

    def __init__(self) -> None:
        #: The per-connection figures and the task count as last taken.
        self._taken: tuple[ConnectionFigures, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self.period = Every(MIRROR_GAUGES_EVERY)

    def get(self) -> LoopGauges:
        """Call it on the server's loop. The first call takes one pass."""
        now = time.monotonic()
        if self._taken is None:
            self._taken = (connection_figures(), loop_tasks()[0])
            self.period.ran(now)
        elif self.period.due(now) and (self._task is None or self._task.done()):
            self.period.ran(now)
            self._task = asyncio.get_running_loop().create_task(self._take())
        figures, tasks = self._taken
        return LoopGauges(registry.counts_by_class(qualified=False), figures, tasks)

    async def _take(self) -> None:
        tasks = loop_tasks()[0]
        self._taken = (await connection_figures_in_steps(), tasks)


def scrape_loop_gauges() -> LoopGauges | None:
    """The loop gauges for a scrape, from its worker thread: taken in steps on the
    server's loop (one pass when the scrape runs on that loop itself). None when no
    loop serves connections, or it did not answer within :data:`STEPS_TIMEOUT`."""
    loop = scheduler.loop
    if loop is None or loop.is_closed():
        return None
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return loop_gauges()
    future = asyncio.run_coroutine_threadsafe(loop_gauges_in_steps(), loop)
    try:
        return future.result(STEPS_TIMEOUT)
    except concurrent.futures.TimeoutError:
        future.cancel()
        return None


class ChannelsTuningCollector(Collector):
    def __init__(self, group_labels: bool = False) -> None:
        self.group_labels = group_labels
        self.recent_loop_gauges = RecentLoopGauges()

    def describe(self) -> Iterator[Metric]:
        """Every metric :meth:`collect` can export, each with one example sample (label
        values ``"..."``): what the documentation's metrics reference is generated from.
        prometheus_client reads the names from it when the collector is registered."""
        yield from self._counters(example=True)
        yield from self._traffic()
        yield from self._gc()
        yield self._info()
        yield from self._loop_gauges(LoopGauges({"...": 0}, ConnectionFigures(), 0))

    def mirrored_families(self) -> Iterator[Metric]:
        """What :mod:`.multiprocess` copies: counters and gauges, without the GC pause
        histogram (observed as it happens there), the info metric and the gauge
        histogram. Called on the server's event loop."""
        for family in self._counters():
            yield family
        yield from self._traffic()
        for family in self._gc():
            if family.type in ("counter", "gauge"):
                yield family
        for family in self._loop_gauges(self.recent_loop_gauges.get()):
            if family.type == "gauge":
                yield family

    def _info(self) -> Metric:
        return InfoMetricFamily(
            "channels_tuning",
            "The WebSocket server of this process.",
            {"server": registry.server_kind},
        )

    def collect(self) -> Iterator[Metric]:
        namespace = _namespace()
        for family in self._collect():
            yield _with_namespace(family, namespace) if namespace else family

    def _collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._traffic()
        yield from self._gc()
        yield self._info()
        gauges = scrape_loop_gauges()
        if gauges is not None:
            yield from self._loop_gauges(gauges)

    def _counters(self, example: bool = False) -> Iterator[Metric]:
        def items(counter: stats.Counter) -> Any:
            return [(("...",) * len(counter.labelnames), 0)] if example else counter.items()

        for counter in (
            stats.ACCEPTED,
            stats.CLOSES,
            stats.DROPPED,
            stats.REJECTED,
            stats.ACCEPT_PAUSES,
            stats.LAYER_ERRORS,
            stats.MISSED,
            stats.GROUP_LABELS_FOLDED,
            stats.RECOVERY,
            stats.REPLAYED,
            stats.PRESENCE_EVENTS,
            stats.TOPIC_REQUESTS,
            stats.REQUESTS,
            stats.CLIENT_REQUESTS,
            stats.BROADCAST_ACKS,
        ):
            yield _counter(counter.name, counter.description, counter.labelnames, items(counter))
        sends, dropped = stats.GROUP_SENDS, stats.GROUP_SEND_DROPPED
        if self.group_labels:
            yield _counter(sends.name, sends.description, sends.labelnames, items(sends))
            yield _counter(dropped.name, dropped.description, dropped.labelnames, items(dropped))
            return
        yield _counter(
            sends.name, "Group sends through a channels-tuning layer.", (), [((), sends.total())]
        )
        by_reason: dict[tuple[str, ...], int] = {("...",): 0} if example else {}
        for (_, reason), value in dropped.items():
            by_reason[(reason,)] = by_reason.get((reason,), 0) + value
        yield _counter(
            dropped.name,
            "Receivers that missed a group send, by reason.",
            ("reason",),
            by_reason.items(),
        )

    def _traffic(self) -> Iterator[Metric]:
        t = stats.TRAFFIC
        for name, description, value in (
            ("messages_received", "Data frames received from clients.", t.messages_in),
            ("messages_sent", "Data frames handed to the server for clients.", t.messages_out),
            (
                "received_payload_bytes",
                "Payload of received frames (text: characters).",
                t.bytes_in,
            ),
            ("sent_payload_bytes", "Payload of sent frames (text: characters).", t.bytes_out),
        ):
            yield CounterMetricFamily(f"channels_tuning_{name}", description, value=value)

    def _gc(self) -> Iterator[Metric]:
        collections = CounterMetricFamily(
            "channels_tuning_gc_collections",
            "Garbage collections, by generation.",
            labels=("generation",),
        )
        pauses = HistogramMetricFamily(
            "channels_tuning_gc_pause_seconds",
            "Garbage-collection pauses, by generation.",
            labels=("generation",),
        )
        for generation in range(3):
            label = [str(generation)]
            collections.add_metric(label, monitor.collections[generation])
            cumulative, buckets = 0, []
            for bound, count in zip(
                (*PAUSE_BUCKETS, float("inf")), monitor.histogram[generation], strict=True
            ):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            pauses.add_metric(label, buckets, monitor.pause_total[generation])
        yield collections
        yield pauses
        yield GaugeMetricFamily(
            "channels_tuning_gc_tracked_objects",
            "Objects the collector tracks in generations 0-2 (frozen ones excluded).",
            value=sum(gc.get_count()),
        )
        from .snapshot import publisher  # lazy: snapshot imports this module's users

        yield GaugeMetricFamily(
            "channels_tuning_stats_published_timestamp_seconds",
            "Unix time of this process' last wsstats snapshot that reached its backend "
            "(0: none yet, or STATS_BACKEND off).",
            value=publisher.last_published,
        )
        yield GaugeMetricFamily(
            "channels_tuning_python_allocated_blocks",
            "Memory blocks allocated by the Python allocator (sys.getallocatedblocks).",
            value=sys.getallocatedblocks(),
        )

    def _loop_gauges(self, gauges: LoopGauges) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "channels_tuning_open_connections",
            "Accepted connections open now, by consumer.",
            labels=("consumer",),
        )
        for consumer, count in sorted(gauges.by_consumer.items()):
            connections.add_metric([consumer], count)
        yield connections
        yield GaugeMetricFamily(
            "channels_tuning_consumer_instances",
            "Tuned consumer instances alive (more than connections: a leak).",
            value=registry.instances,
        )
        figures = gauges.figures
        yield GaugeMetricFamily(
            "channels_tuning_send_queue_messages",
            "Messages waiting in outbound queues, all connections.",
            value=figures.queued,
        )
        buckets = [(_bound(bound), count) for bound, count in figures.depth_buckets()]
        depth = GaugeHistogramMetricFamily(
            "channels_tuning_send_queue_depth",
            "Connections by the number of messages in their outbound queue, now.",
        )
        depth.add_metric([], buckets, figures.queued)
        yield depth
        yield GaugeMetricFamily(
            "channels_tuning_group_memberships",
            "Group memberships tracked by open connections.",
            value=figures.memberships,
        )
        yield GaugeMetricFamily(
            "channels_tuning_asyncio_tasks",
            "Tasks on the server's event loop (an estimate beyond 500).",
            value=gauges.tasks,
        )


def _namespace() -> str:
    """django-prometheus' ``PROMETHEUS_METRIC_NAMESPACE``: it prefixes its own metrics
    with it, and so the package's (``myapp_channels_tuning_...``)."""
    from django.conf import settings

    try:
        return str(getattr(settings, "PROMETHEUS_METRIC_NAMESPACE", "") or "")
    except Exception:  # settings not configured: no namespace
        return ""


def _with_namespace(family: Metric, namespace: str) -> Metric:
    family.name = f"{namespace}_{family.name}"
    family.samples = [
        sample._replace(name=f"{namespace}_{sample.name}") for sample in family.samples
    ]
    return family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _counter(
    name: str, description: str, labelnames: tuple[str, ...], items: Any
) -> CounterMetricFamily:
    family = CounterMetricFamily(name.removesuffix("_total"), description, labels=labelnames)
    for labels, value in items:
        family.add_metric(list(labels), value)
    return family


_collector: ChannelsTuningCollector | None = None


def register(group_labels: bool = False) -> ChannelsTuningCollector:
    """Add the collector to prometheus_client's default registry (once per process)."""
    global _collector
    if _collector is None:
        _collector = ChannelsTuningCollector(group_labels)
        REGISTRY.register(_collector)
    return _collector
