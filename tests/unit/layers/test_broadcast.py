"""broadcast(): encode once, delivery reports, and the on_full policies, on the
tuned in-memory layer (the Redis layer is covered end to end)."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from channels_tuning import TunedWebsocketConsumer
from channels_tuning.broadcast import (
    DeliveryTimeout,
    ReceiversFull,
    broadcast,
    broadcast_many,
)
from channels_tuning.runtime.counters import GROUP_SEND_DROPPED
from channels_tuning.runtime.registry import registry


class Subscriber(TunedWebsocketConsumer):
    heartbeat_interval = None
    groups = ["news"]


@pytest.fixture(autouse=True)
async def _fresh_layer():
    await get_channel_layer().flush()  # the layer object outlives each test's loop
    yield
    await get_channel_layer().flush()


@pytest.fixture
async def subscribers():
    comms = [WebsocketCommunicator(Subscriber.as_asgi(), "/") for _ in range(3)]
    for comm in comms:
        assert (await comm.connect())[0]
    yield comms
    for comm in comms:
        await comm.disconnect()
    assert len(registry) == 0


async def test_tuned_consumers_get_no_reader_task_on_the_tuned_layer(subscribers):
    # Direct delivery: nothing per connection waits on the layer.
    names = [t.get_name() for t in asyncio.all_tasks()]
    assert not [n for n in names if "read_own_channel" in n]
    for consumer in registry:
        assert consumer._layer_task is None


async def test_frames_are_encoded_once_and_shared(subscribers):
    report = await broadcast("news", {"headline": "hi"})
    assert (report.receivers, report.delivered, report.processes) == (3, 3, 1)
    frames = [await comm.receive_output(timeout=1) for comm in subscribers]
    assert {f["text"] for f in frames} == {'{"headline":"hi"}'}
    assert frames[0] is frames[1] is frames[2]  # the very same message object
    await broadcast("news", b"\x01\x02")
    assert [(await c.receive_output(timeout=1))["bytes"] for c in subscribers] == [b"\x01\x02"] * 3


async def test_broadcast_many_keeps_order(subscribers):
    await broadcast_many("news", [str(i) for i in range(50)])
    expected = [str(i) for i in range(50)]
    for comm in subscribers:
        assert [await comm.receive_from(timeout=1) for _ in range(50)] == expected


async def test_broadcast_to_empty_group_reports_nobody():
    report = await broadcast("nobody-here", "x")
    assert (report.receivers, report.complete) == (0, True)


@pytest.fixture
async def full_receiver():
    """A member channel nobody reads: full after `capacity` (100) messages."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("news", channel)
    for i in range(100):
        await layer.send(channel, {"type": "fill", "n": i})
    return layer, channel


async def test_drop_counts_the_full_receiver(subscribers, full_receiver):
    report = await broadcast("news", "x", on_full="drop")
    assert (report.receivers, report.receivers_over_capacity) == (4, 1)
    assert GROUP_SEND_DROPPED.get(("*", "over_capacity")) == 1
    assert [await c.receive_from(timeout=1) for c in subscribers] == ["x"] * 3


async def test_raise_reports_who_was_full(subscribers, full_receiver):
    with pytest.raises(ReceiversFull) as caught:
        await broadcast("news", "x", on_full="raise")
    assert caught.value.report.receivers_over_capacity == 1
    assert GROUP_SEND_DROPPED.get(("*", "raised")) == 1


async def test_wait_gives_up_at_deadline(subscribers, full_receiver):
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeliveryTimeout) as caught:
        await broadcast("news", "x", on_full="wait", timeout=0.3)
    assert 0.3 <= loop.time() - started < 1.0
    assert caught.value.report.retries > 1
    assert GROUP_SEND_DROPPED.get(("*", "deadline")) == 1
    # The receivers with room got it exactly once, despite the retries.
    for comm in subscribers:
        assert await comm.receive_from(timeout=1) == "x"
        assert await comm.receive_nothing(timeout=0.1)


async def test_wait_delivers_everything_once_room_is_made(subscribers, full_receiver):
    layer, channel = full_receiver
    received = []

    async def slow_reader():
        while len(received) < 120:
            message = await layer.receive(channel)
            received.append(message.get("n", message.get("frame", {}).get("text")))
            await asyncio.sleep(0.001)

    reader = asyncio.ensure_future(slow_reader())
    for i in range(20):
        report = await broadcast("news", str(i), on_full="wait", timeout=5)
        assert report.complete
    await asyncio.wait_for(reader, 5)
    assert received == [*range(100), *(str(i) for i in range(20))]
    assert GROUP_SEND_DROPPED.total() == 0


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}})
async def test_plain_layers_are_refused_clearly():
    with pytest.raises(TypeError, match=r"channels_tuning\.layers"):
        await broadcast("news", "x")


async def test_exclude_leaves_out_the_senders_own_connection(subscribers):
    sender = next(iter(registry)).channel_name
    report = await broadcast("news", "not for the sender", exclude=sender)
    assert report.receivers == 3  # counted as a member: it was written, then skipped
    received = []
    for comm in subscribers:
        if not await comm.receive_nothing(timeout=0.1):
            received.append(await comm.receive_from(timeout=1))
    assert received == ["not for the sender"] * 2
    await broadcast_many("news", ["a", "b"], exclude=sender)
    batches = []
    for comm in subscribers:
        if not await comm.receive_nothing(timeout=0.1):
            batches.append([await comm.receive_from(timeout=1) for _ in range(2)])
    assert batches == [["a", "b"]] * 2


@override_settings(CHANNELS_TUNING={"HISTORY": {"numbered.*": {"size": 5, "ttl": 60}}})
async def test_a_group_with_history_takes_no_exclude():
    """Its members must get every offset: an excluded one would see a gap."""
    with pytest.raises(ValueError, match="takes no exclude"):
        await broadcast("numbered.room", "x", exclude="specific.abc!def")
    with pytest.raises(ValueError, match="takes no exclude"):
        await broadcast_many("numbered.room", ["x"], exclude="specific.abc!def")
