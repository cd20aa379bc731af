"""Tests of the example's consumers, written as a project using channels-tuning writes
them (the testing guide shows this file): the package's communicator, captures, fake
clock and fixtures, on the in-memory layer, no server and no sleeping."""

import pytest
from channels.layers import get_channel_layer
from channels.routing import URLRouter

from channels_tuning.broadcast import broadcast
from channels_tuning.client import RequestFailed, SubscriptionRefused
from channels_tuning.testing import (
    TunedCommunicator,
    capture_closes,
    capture_group_sends,
    capture_presence,
    fake_clock,
)

from .routing import websocket_urlpatterns

application = URLRouter(websocket_urlpatterns)


@pytest.fixture(autouse=True)
async def _isolated(ct_layer, ct_no_leaks):
    """A fresh layer for each test, and nothing left behind after it."""
    yield


async def connect(path):
    comm = TunedCommunicator(application, path)
    connected, _ = await comm.connect()
    assert connected
    return comm


async def join_room(path):
    """A client in a chat room: the room's position first (it has history: what the
    client would recover from), then who is online."""
    comm = await connect(path)
    assert (await comm.receive_json_from())["kind"] == "subscribed"
    assert (await comm.receive_json_from())["type"] == "online"
    return comm


async def test_a_chat_message_reaches_everyone_in_the_room_once():
    with capture_presence() as seen:
        ann = await join_room("/ws/chat/lobby/")
        bob = await join_room("/ws/chat/lobby/")
    assert len(seen.joined("chat.lobby")) == 2

    with capture_group_sends() as sent:
        await ann.send_json_to({"message": "hello"})
        said = {"type": "message", "message": "hello"}
        # Rooms have history: the package's clients get each message in an envelope
        # with its offset, which the communicator unwraps.
        await ann.assert_push(said, topic="chat.lobby")
        await bob.assert_push(said, topic="chat.lobby")
    assert sent.payloads("chat.lobby") == [said]
    await ann.disconnect()
    await bob.disconnect()


async def test_a_chat_frame_that_is_not_an_object_closes_1007():
    comm = await join_room("/ws/chat/lobby/")
    with capture_closes() as closed:
        await comm.send_json_to(["not", "an", "object"])
        assert (await comm.receive_output())["code"] == 1007
    assert closed.codes() == [1007]
    await comm.disconnect()


async def test_the_dashboard_serves_public_topics_and_refuses_the_rest():
    comm = await connect("/ws/dashboard/")
    await comm.subscribe("ticker")
    await broadcast("ticker", {"px": 101.5})
    await comm.assert_push({"px": 101.5}, topic="ticker")
    with pytest.raises(SubscriptionRefused) as refused:
        await comm.subscribe("user.8")
    assert refused.value.reason == "login required"
    with pytest.raises(RequestFailed) as failed:
        await comm.request("desk.list")
    assert failed.value.code == "login_required"
    await comm.disconnect()


async def test_an_alert_is_pushed_acknowledged_and_the_page_asked():
    comm = await connect("/ws/dashboard/")
    await comm.subscribe("ticker")  # a member of "ticker": its events reach it
    await get_channel_layer().group_send("ticker", {"type": "dashboard.alert", "text": "drill"})
    push = await comm.receive_server_request()
    assert (push["kind"], push["data"]) == ("push", {"alert": "drill"})
    await comm.reply(push["id"])  # the page handled it
    asked = await comm.receive_server_request()
    assert asked["method"] == "page.state"
    await comm.reply(asked["id"], {"topics": 1})
    outcome = await comm.receive_json_from()
    assert outcome == {"alert_outcome": {"shown": True, "page": {"topics": 1}}}
    await comm.disconnect()


async def test_a_page_that_stops_answering_heartbeats_is_closed_4000():
    with fake_clock() as clock:
        comm = await connect("/ws/echo/")
        await clock.advance(59)  # pinged at 25 and 50: still within IDLE_TIMEOUT
        await comm.send_to(text_data="still here")  # any frame is a sign of life
        assert await comm.receive_from() == "still here"
        with capture_closes() as closed:
            await clock.advance(61)
        assert closed.codes() == [4000]
        await comm.disconnect()
