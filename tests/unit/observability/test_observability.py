"""Traffic counters, the Prometheus collector, the leak-check helper and the
periodic collection, in-process (the end-to-end proofs are in tests/e2e/test_metrics.py)."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from channels_tuning import TunedWebsocketConsumer
from channels_tuning.core import Outcome
from channels_tuning.jobs import PeriodicCollection
from channels_tuning.observability.gctuning import monitor
from channels_tuning.runtime.counters import TRAFFIC
from channels_tuning.runtime.registry import ConnectionRegistry, registry
from channels_tuning.runtime.scheduler import Scheduler
from channels_tuning.testing import assert_no_leaks, find_leaks
from channels_tuning.wire.closecodes import CloseCode
from tests.support.consumers import Echo, Grouped, communicator


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The default registry's samples, as {(name, sorted labels): value}."""
    text = generate_latest(REGISTRY).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class Leaky(TunedWebsocketConsumer):
    leaked: list[asyncio.Task] = []

    async def connect(self):
        await self.accept()
        Leaky.leaked.append(asyncio.get_running_loop().create_task(self.poll_forever()))

    async def poll_forever(self):
        await asyncio.sleep(3600)


async def stop_leaked_tasks() -> None:
    # In a function of its own: a local name for a cancelled task would keep its
    # exception, whose traceback holds the consumer.
    tasks, Leaky.leaked = Leaky.leaked, []
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_traffic_counts_data_frames_in_and_out_not_control_frames():
    client = communicator(Echo)
    await client.connect()
    await client.send_to(text_data="hello")
    assert await client.receive_from() == "hello"
    await client.send_to(bytes_data=b"\x01\x02\x03")
    assert await client.receive_from() == b"\x01\x02\x03"
    await client.disconnect()
    assert TRAFFIC.as_dict() == {
        "messages_in": 2,
        "bytes_in": 8,
        "messages_out": 2,
        "bytes_out": 8,
    }


async def test_prometheus_metrics_follow_connections_messages_and_closes():
    client = communicator(Echo)
    await client.connect()
    await client.send_to(text_data="x" * 10)
    await client.receive_from()
    metrics = scrape()
    assert metrics[("channels_tuning_open_connections", (("consumer", "Echo"),))] == 1
    assert metrics[("channels_tuning_connections_total", (("consumer", "Echo"),))] == 1
    assert metrics[("channels_tuning_messages_received_total", ())] == 1
    assert metrics[("channels_tuning_received_payload_bytes_total", ())] == 10
    assert metrics[("channels_tuning_send_queue_depth_gcount", ())] == 1
    assert any(name == "channels_tuning_info" for name, _ in metrics)
    assert ("channels_tuning_gc_pause_seconds_bucket", (("generation", "2"), ("le", "+Inf"))) in (
        metrics
    )
    await client.send_to(bytes_data=b"\x00" * (1024 * 1024 + 1))  # over MAX_MESSAGE_SIZE
    assert (await client.receive_output())["code"] == 1009
    await client.disconnect()
    metrics = scrape()
    assert metrics[("channels_tuning_closes_total", (("code", "1009"), ("consumer", "Echo")))] == 1
    assert ("channels_tuning_open_connections", (("consumer", "Echo"),)) not in metrics


async def test_group_metrics_have_no_group_label_by_default():
    from channels_tuning.broadcast import broadcast

    client = communicator(Grouped)
    await client.connect()
    await broadcast("static-group", "hi")
    assert await client.receive_from() == "hi"
    await client.disconnect()
    families = {
        family.name: family
        for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())
    }
    (sample,) = families["channels_tuning_group_sends"].samples
    assert sample.labels == {} and sample.value == 1
    assert scrape()[("channels_tuning_group_memberships", ())] == 0


async def test_assert_no_leaks_passes_after_a_clean_consumer_with_groups():
    client = communicator(Grouped)
    await client.connect()
    await client.disconnect()
    await assert_no_leaks()


async def test_find_leaks_reports_a_consumer_whose_task_outlives_it():
    client = communicator(Leaky)
    await client.connect()
    await client.disconnect()
    problems = await find_leaks(timeout=0.3)
    assert any("1 tasks besides" in problem for problem in problems), problems
    assert any("1 consumer instances still alive" in problem for problem in problems), problems
    await stop_leaked_tasks()
    await assert_no_leaks()


async def test_find_leaks_reports_group_members_left_in_the_layer():
    client = communicator(Echo)
    await client.connect()
    await client.disconnect()
    layer = get_channel_layer()
    await layer.group_add("orphans", "specific.nobody!1")
    try:
        assert await find_leaks(timeout=0.1) == ["1 group memberships left in the channel layer"]
    finally:
        await layer.group_discard("orphans", "specific.nobody!1")


class _Backlogged:
    send_queue_length = 5


def test_periodic_collection_runs_on_its_interval_and_waits_out_backlogs():
    collection = PeriodicCollection(10.0, now=90.0)
    monitor.install()
    before = monitor.collections[2]
    collection(99.0, [])  # not due
    assert monitor.collections[2] == before and collection.every.next_at == 100.0
    collection(100.0, [_Backlogged()])  # backlog: postponed
    assert monitor.collections[2] == before and collection.every.next_at == 100.0
    collection(110.0, [_Backlogged()])  # a full interval late: runs anyway
    assert monitor.collections[2] == before + 1 and collection.every.next_at == 120.0
    collection(120.0, [])
    assert monitor.collections[2] == before + 2 and collection.every.next_at == 130.0


def test_scheduler_runs_registered_jobs_on_their_intervals_and_survives_a_failing_one():
    scheduler = Scheduler(ConnectionRegistry())
    runs: list[tuple[str, float]] = []

    def broken(now: float, consumers: object) -> None:
        raise RuntimeError("job bug")

    scheduler.every("often", None, lambda now, consumers: runs.append(("often", now)))
    scheduler.every("broken", 1.0, broken)
    scheduler.every("rare", 10.0, lambda now, c: runs.append(("rare", now)), first_at=5.0)
    for now in (1.0, 2.0, 5.0, 6.0, 15.0):
        scheduler.run_once(now)
    assert [n for name, n in runs if name == "rare"] == [5.0, 15.0]
    assert [n for name, n in runs if name == "often"] == [1.0, 2.0, 5.0, 6.0, 15.0]
    scheduler.cancel("often")
    assert scheduler.jobs() == ["broken", "rare"]


@override_settings(CHANNELS_TUNING={"SCHEDULER_TICK": 0.02, "GC_COLLECT_INTERVAL": 0.05})
async def test_scheduler_collects_periodically_while_connections_are_open():
    monitor.install()
    before = monitor.collections[2]
    client = WebsocketCommunicator(Echo.as_asgi(), "/ws/")
    from channels_tuning.runtime.scheduler import scheduler

    scheduler._task = None  # a fresh start reads the overridden settings
    await client.connect()
    # At least two collections, 0.05 s apart; up to 5 s on a loaded machine (the
    # newest edge once saw none within a fixed 0.3 s while CI ran beside it).
    deadline = time.monotonic() + 5
    while monitor.collections[2] < before + 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await client.disconnect()
    assert monitor.collections[2] >= before + 2
    gc.collect()


def test_group_labels_are_off_by_default_and_capped_when_on():
    from channels_tuning.runtime.counters import GROUP_LABELS, GROUP_LABELS_FOLDED

    assert GROUP_LABELS.label("room-1") == "*"
    try:
        GROUP_LABELS.configure(True, limit=3)
        labels = [GROUP_LABELS.label(f"room-{n}") for n in range(10)]
        assert labels[:3] == ["room-0", "room-1", "room-2"]
        assert labels[3:] == ["other"] * 7
        assert GROUP_LABELS.label("room-1") == "room-1"  # already labelled
        assert GROUP_LABELS_FOLDED.total() == 7
        assert len(GROUP_LABELS.seen) == 3
    finally:
        GROUP_LABELS.configure(False)


async def test_100k_distinct_groups_keep_counters_and_snapshots_small():
    """Group names are chosen by clients: 100 000 distinct groups sent to (and one
    connection that joined all of them) leave one counter series and a snapshot that
    stays small and quick to build (it was 1.5 MB and 270 ms of loop time)."""
    import json
    import time as clock

    from channels_tuning.layers import InMemoryChannelLayer
    from channels_tuning.observability import snapshot
    from channels_tuning.runtime.counters import GROUP_SEND_DROPPED, GROUP_SENDS
    from channels_tuning.runtime.registry import registry

    layer = InMemoryChannelLayer()
    for n in range(100_000):
        await layer.group_send(f"room-{n}", {"type": "chat.message"})
    assert GROUP_SENDS.items() == [(("*",), 100_000)]
    assert GROUP_SEND_DROPPED.items() == []
    comm = communicator(Grouped)
    await comm.connect()
    (consumer,) = list(registry)
    for n in range(100_000):
        consumer.track_group(f"room-{n}")
    started = clock.perf_counter()
    snap = snapshot.snapshot()
    built_ms = (clock.perf_counter() - started) * 1000
    size = len(json.dumps(snap))
    print(f"snapshot with 100 000 memberships: {built_ms:.1f} ms, {size} bytes")
    assert snap["memberships"] == 100_002  # and the two groups Grouped joins itself
    assert size < 64 * 1024
    assert built_ms < 200  # measured about 20 ms here; a bound, not a benchmark
    for n in range(100_000):
        consumer.untrack_group(f"room-{n}")
    await comm.disconnect()


def test_django_prometheus_metric_namespace_prefixes_the_packages_metrics():
    from django.test import override_settings

    with override_settings(PROMETHEUS_METRIC_NAMESPACE="myapp"):
        names = {name for name, _ in scrape()}
    assert "myapp_channels_tuning_messages_received_total" in names
    assert "myapp_channels_tuning_gc_pause_seconds_bucket" in names
    assert not any(name.startswith("channels_tuning_") for name in names)
    assert "channels_tuning_messages_received_total" in {name for name, _ in scrape()}


async def test_the_multiprocess_copy_reads_every_connection_at_most_every_few_seconds(
    monkeypatch,
):
    """The copy runs every scheduler tick; a look at every connection (queues,
    memberships) is taken at most every MIRROR_GAUGES_EVERY seconds, in steps, while
    the connections per consumer class are read fresh each time."""
    from channels_tuning.observability import figures, prometheus

    passes: list[int] = []
    real_add = figures.ConnectionFigures.add

    def counted_add(self, consumers):
        passes.append(1)
        real_add(self, consumers)

    monkeypatch.setattr(figures.ConnectionFigures, "add", counted_add)
    clients = [communicator(Grouped) for _ in range(3)]
    for client in clients:
        assert (await client.connect())[0]
    recent = prometheus.RecentLoopGauges()
    first = recent.get()  # the first call takes one pass
    assert first.figures.connections == 3 and first.figures.memberships == 6
    assert first.by_consumer == {"Grouped": 3}
    for _ in range(20):
        recent.get()
        await asyncio.sleep(0)
    assert len(passes) == 1
    await clients[0].disconnect()
    again = recent.get()
    assert again.by_consumer == {"Grouped": 2}  # fresh
    assert again.figures.connections == 3  # as last taken
    recent.period.reset()  # due: a take in steps starts, the loop runs meanwhile
    recent.get()
    await wait_for(lambda: recent.get().figures.connections == 2)
    assert len(passes) == 2
    for client in clients[1:]:
        await client.disconnect()


async def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


@pytest.mark.slow
async def test_allocation_sites_are_grouped_off_the_loop_and_taken_once_an_interval():
    import tracemalloc

    from channels_tuning.observability.memorytop import RecentMemoryTop

    recent = RecentMemoryTop(every=3600)
    await recent.refresh()
    assert (recent.sites, recent.taken_at) == ([], None)  # tracemalloc off: nothing taken

    tracemalloc.start(1)
    try:
        # ~150 000 traced blocks: grouping them takes hundreds of milliseconds.
        held = [{"n": i, "list": [i]} for i in range(50_000)]
        turns = 0
        stop = asyncio.Event()

        async def count_turns() -> None:
            nonlocal turns
            while not stop.is_set():
                turns += 1
                await asyncio.sleep(0)

        counter = asyncio.get_running_loop().create_task(count_turns())
        await asyncio.sleep(0)
        before = turns
        started = time.monotonic()
        await recent.refresh()
        took = time.monotonic() - started
        during = turns - before
        stop.set()
        await counter
        assert recent.sites and recent.taken_at is not None
        assert __file__ in recent.sites[0]["where"]  # the dicts made here are on top
        # The loop ran while the sites were grouped (on the loop: 1 turn, at the end).
        assert during >= 20, (during, took)
        first = recent.taken_at
        await recent.refresh()  # within the interval: the same take
        assert recent.taken_at == first
        del held
    finally:
        tracemalloc.stop()
    await recent.refresh()
    assert (recent.sites, recent.taken_at) == ([], None)


async def test_connection_figures_count_each_state_the_backlogs_and_memberships():
    """One pass reads each connection's core: connecting (not accepted yet), open,
    closing; the backlog of one that fell behind; the groups of each."""
    from channels_tuning.observability.figures import connection_figures

    release = asyncio.Event()

    class AcceptsLater(Echo):
        async def connect(self):
            await release.wait()
            await self.accept()

    opened = [communicator(Echo), communicator(Grouped), communicator(Echo)]
    for client in opened:
        assert (await client.connect())[0]
    waiting = communicator(AcceptsLater)
    connecting = asyncio.create_task(waiting.connect())
    await wait_for(lambda: len(registry) == 4)
    by_class = {type(consumer): consumer for consumer in registry}
    behind = by_class[Grouped].core
    for n in range(3):
        assert behind.send({"type": "websocket.send", "text": str(n)}) is Outcome.QUEUED
    closing = next(c for c in registry if type(c) is Echo).core
    assert closing.close(CloseCode.GOING_AWAY)

    figures = connection_figures()
    assert figures.connections == 4
    assert figures.states == {"connecting": 1, "open": 2, "closing": 1}
    assert (figures.queued, figures.longest, figures.with_backlog) == (3, 3, 1)
    assert figures.depth_buckets() == [
        (0.0, 3),
        (1.0, 3),
        (10.0, 4),
        (100.0, 4),
        (1000.0, 4),
        (float("inf"), 4),
    ]
    assert figures.memberships == 2  # the two groups Grouped joins

    release.set()
    assert (await connecting)[0]
    for client in [*opened, waiting]:
        await client.disconnect()
