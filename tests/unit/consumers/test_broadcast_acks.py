"""Acknowledged broadcasts (broadcast(ack=True)) on the in-memory layer, through
TunedCommunicator: who acknowledged, who did not in time, who could not (a plain
page); both clients against two real servers are in tests/e2e/test_broadcast_acks.py."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.layers import get_channel_layer
from django.test import override_settings

from channels_tuning import TunedJsonWebsocketConsumer
from channels_tuning.broadcast import broadcast
from channels_tuning.layers.acks import ACK_ID_MIN
from channels_tuning.layers.frames import FRAME_TYPE
from channels_tuning.runtime.counters import BROADCAST_ACKS, CLIENT_REQUESTS
from channels_tuning.testing import TunedCommunicator


class Alerts(TunedJsonWebsocketConsumer):
    heartbeat_interval = None
    groups = ["alerts"]


def acks_counted() -> dict[str, int]:
    return {labels[0]: value for labels, value in BROADCAST_ACKS.items()}


@pytest.fixture(autouse=True)
async def _fresh(ct_layer):
    BROADCAST_ACKS.clear()
    CLIENT_REQUESTS.clear()
    yield


async def connected(tuned: bool = True) -> TunedCommunicator:
    comm = TunedCommunicator(Alerts.as_asgi(), "/", tuned=tuned)
    assert (await comm.connect())[0]
    return comm


async def test_the_report_counts_acknowledged_not_in_time_and_plain_pages():
    answering, silent, plain = await connected(), await connected(), await connected(False)
    began = time.monotonic()
    sending = asyncio.ensure_future(broadcast("alerts", {"fire": 1}, ack=True, timeout=0.5))
    push = await answering.receive_server_request()
    assert push["kind"] == "push" and push["data"] == {"fire": 1}
    assert ACK_ID_MIN <= push["id"] < 2**53
    await answering.reply(push["id"])
    report = await sending
    elapsed = time.monotonic() - began
    assert (report.acknowledged, report.not_in_time, report.not_reached) == (1, 1, 0)
    assert report.cannot_acknowledge == 1 and report.delivery.receivers == 3
    assert 0.5 <= elapsed < 0.5 + 0.3  # the timeout: the final report ends the wait
    # The silent client got the same push; the plain page the ordinary frame.
    assert (await silent.receive_server_request())["id"] == push["id"]
    assert json.loads(await plain.receive_from()) == {"fire": 1}
    # An answer after the deadline is late: counted, nothing else.
    await silent.reply(push["id"])
    await asyncio.sleep(0.05)
    assert CLIENT_REQUESTS.get(("Alerts", "late")) == 1
    assert acks_counted() == {"acknowledged": 1, "not_in_time": 1, "cannot_acknowledge": 1}
    for comm in (answering, silent, plain):
        await comm.disconnect()


async def test_it_returns_as_soon_as_every_client_answered():
    comms = [await connected() for _ in range(5)]
    began = time.monotonic()
    sending = asyncio.ensure_future(broadcast("alerts", "hello", ack=True, timeout=10))
    for comm in comms:
        push = await comm.receive_server_request()
        assert push["data"] == "hello"
        await comm.reply(push["id"])
    report = await sending
    assert (report.acknowledged, report.not_in_time, report.not_reached) == (5, 0, 0)
    assert time.monotonic() - began < 2  # not the 10 s timeout
    # A second broadcast gets a new id; the first one's is not answered twice.
    sending = asyncio.ensure_future(broadcast("alerts", "again", ack=True, timeout=10))
    ids = set()
    for comm in comms:
        push = await comm.receive_server_request()
        ids.add(push["id"])
        await comm.reply(push["id"])
    assert (await sending).acknowledged == 5 and len(ids) == 1
    # Everyone answered: no final report follows at the deadline, so nothing is left
    # waiting in a reply channel the producer no longer reads.
    sending = asyncio.ensure_future(broadcast("alerts", "third", ack=True, timeout=0.2))
    for comm in comms:
        await comm.reply((await comm.receive_server_request())["id"])
    assert (await sending).acknowledged == 5
    await asyncio.sleep(0.4)
    assert not [name for name in get_channel_layer().channels if name.startswith("ct-acks")]
    for comm in comms:
        await comm.disconnect()


async def test_an_empty_group_and_one_of_plain_pages_return_at_once():
    report = await broadcast("alerts", {"x": 1}, ack=True, timeout=5)
    assert (report.acknowledged, report.not_reached, report.delivery.receivers) == (0, 0, 0)
    plain = await connected(False)
    began = time.monotonic()
    report = await broadcast("alerts", {"x": 2}, ack=True, timeout=5)
    assert report.cannot_acknowledge == 1 and time.monotonic() - began < 1
    await plain.disconnect()


async def test_what_ack_does_not_take_is_refused_before_sending():
    with pytest.raises(TypeError):
        await broadcast("alerts", b"\x00", ack=True)
    with pytest.raises(ValueError):
        await broadcast("alerts", {"x": 1}, ack=True, exclude="specific.x!y")
    history = {"CHANNELS_TUNING": {"HISTORY": {"news.*": {"size": 10, "ttl": 60}}}}
    with override_settings(**history), pytest.raises(ValueError, match="history"):
        await broadcast("news.sport", {"x": 1}, ack=True)


class BinaryAlerts(Alerts):
    accept_text_frames = False


async def test_a_client_of_binary_frames_gets_the_ordinary_frame_and_cannot_acknowledge():
    comm = TunedCommunicator(BinaryAlerts.as_asgi(), "/")
    assert (await comm.connect())[0]
    report = await broadcast("alerts", {"x": 1}, ack=True, timeout=5)
    assert (report.cannot_acknowledge, report.acknowledged, report.not_reached) == (1, 0, 0)
    assert json.loads(await comm.receive_from()) == {"x": 1}
    await comm.disconnect()


async def test_a_malformed_ack_field_is_an_ordinary_broadcast():
    comm = await connected()
    frame = {"type": "websocket.send", "text": "plain"}
    for ack in (["not", "an", "ack"], [1, "x", 0, 1]):  # no ack_frame in the second
        message = {"type": FRAME_TYPE, "frame": frame, "ack": ack}
        await get_channel_layer().group_send("alerts", message)
        assert await comm.receive_from() == "plain"
    await comm.disconnect()
