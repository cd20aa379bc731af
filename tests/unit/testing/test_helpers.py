"""The helpers users test their own consumers with: TunedCommunicator and
capture_group_sends, on the in-memory layer (the package's own tests use them)."""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings

from channels_tuning import Topic, TunedJsonWebsocketConsumer
from channels_tuning.broadcast import broadcast, broadcast_many
from channels_tuning.client import SubscriptionRefused
from channels_tuning.presence import presence, presence_count
from channels_tuning.testing import (
    Close,
    TunedCommunicator,
    assert_no_leaks,
    capture_closes,
    capture_group_sends,
    capture_presence,
)
from channels_tuning.users import disconnect_user

HISTORY = {
    "CHANNELS_TUNING": {
        "HISTORY": {"news.*": {"size": 10, "ttl": 60}},
        "SCHEDULER_TICK": 0.02,
        "HEARTBEAT_INTERVAL": 0.1,
        "IDLE_TIMEOUT": 5.0,
    }
}


class Room(TunedJsonWebsocketConsumer):
    topics = [Topic("ticker", public=True), Topic("news.{s}", public=True), Topic("user.{u}")]

    async def connect(self):
        await self.join_group("room")
        await self.accept()

    async def receive_json(self, content, **kwargs):
        await broadcast("room", {"said": content})
        await self.channel_layer.group_send("room", {"type": "room.note", "text": "noted"})

    async def room_note(self, event):
        await self.send_json({"note": event["text"]})


@pytest.fixture(autouse=True)
async def _fresh_layer(ct_layer):
    with override_settings(**HISTORY):
        yield


async def test_the_communicator_answers_heartbeats_subscribes_and_unwraps():
    comm = TunedCommunicator(Room.as_asgi(), "/")
    connected, subprotocol = await comm.connect()
    assert connected and subprotocol == "channels-tuning.v1"
    assert await comm.subscribe("ticker") == {"kind": "subscribed", "topic": "ticker", "id": 1}
    with pytest.raises(SubscriptionRefused) as refused:
        await comm.subscribe("user.9")
    assert refused.value.reason == "forbidden"
    await broadcast("room", "for the room")  # not a topic: comes first, kept
    await broadcast("ticker", {"px": 1})
    assert await comm.receive_topic_message() == ("ticker", {"px": 1})
    assert await comm.receive_from() == "for the room"
    answer = await comm.subscribe("news.world")
    assert (answer["offset"], answer["recovered"]) == (0, False)  # with history: a position
    await broadcast("news.world", {"n": 1})
    assert await comm.receive_topic_message() == ("news.world", {"n": 1})
    assert (await comm.unsubscribe("ticker"))["reason"] == "client"
    # Heartbeats every 100 ms meanwhile: answered as they are read, never returned.
    await asyncio.sleep(0.5)
    await comm.send_json_to({"hello": 1})
    assert await comm.receive_json_from() == {"said": {"hello": 1}}
    assert await comm.receive_json_from() == {"note": "noted"}
    assert comm.pings >= 1
    await comm.disconnect()
    await assert_no_leaks()


async def test_a_plain_page_is_what_tuned_false_tests():
    comm = TunedCommunicator(Room.as_asgi(), "/", tuned=False)
    connected, subprotocol = await comm.connect()
    assert connected and subprotocol is None
    await comm.send_to(text_data='{"type":"ct.subscribe","id":1,"topic":"ticker"}')
    said = await comm.receive_json_from()  # it was the application's data
    assert said == {"said": {"type": "ct.subscribe", "id": 1, "topic": "ticker"}}
    await comm.disconnect()


async def test_capture_group_sends_records_broadcasts_events_and_reports():
    comm = TunedCommunicator(Room.as_asgi(), "/")
    await comm.connect()
    with capture_group_sends() as sent:
        await comm.send_json_to({"hi": 1})
        await comm.receive_json_from()
        await comm.receive_json_from()
        await broadcast("news.world", "a str, numbered")
        await broadcast_many("ticker", [{"a": 1}, b"\x01"])
        await disconnect_user(42)
    assert sent.payloads("room") == [{"said": {"hi": 1}}]
    assert sent.events("room") == [{"type": "room.note", "text": "noted"}]
    assert sent.to("room")[0].report.receivers == 1
    assert sent.payloads("news.world") == ["a str, numbered"]
    assert sent.payloads("ticker") == [{"a": 1}, b"\x01"]
    assert sent.to("ct.user.42")[0].message["type"] == "channels_tuning.disconnect"
    with capture_group_sends() as later:
        pass
    await broadcast("room", "after the block")
    assert later == [] and len(sent) == 5
    await comm.disconnect()


async def test_capture_closes_records_the_servers_closes_with_codes():
    comm = TunedCommunicator(Room.as_asgi(), "/rooms/1/")
    await comm.connect()
    other = TunedCommunicator(Room.as_asgi(), "/rooms/2/")
    await other.connect()
    with capture_closes() as closed:
        await comm.send_to(text_data="not json")  # TunedJsonWebsocketConsumer: 1007
        assert (await comm.receive_output(1))["code"] == 1007
        await disconnect_user(7)  # nobody's: no close
    assert closed == [Close("Room", "/rooms/1/", 1007, closed[0].reason)]
    assert closed.codes() == [1007] and closed[0].reason
    await comm.disconnect()
    await other.disconnect()  # the client's own close: not the server's
    assert closed.codes() == [1007]


class Lobby(TunedJsonWebsocketConsumer):
    groups = ["chat.lobby"]

    def presence_identity(self) -> str:
        return self.scope["path"].strip("/")


async def test_capture_presence_records_who_joined_and_left():
    tuning = {**HISTORY["CHANNELS_TUNING"], "PRESENCE": {"chat.*": {"events": True}}}
    with override_settings(CHANNELS_TUNING=tuning):
        with capture_presence() as seen:
            ann = TunedCommunicator(Lobby.as_asgi(), "/ann/")
            bob = TunedCommunicator(Lobby.as_asgi(), "/bob/")
            await ann.connect()
            await bob.connect()
            assert seen.joined("chat.lobby") == ["ann", "bob"] and seen.left("chat.lobby") == []
            assert sorted(e.identity for e in await presence("chat.lobby")) == ["ann", "bob"]
            await ann.disconnect()
        assert seen.left("chat.lobby") == ["ann"]
        assert [c.kind for c in seen] == ["joined", "joined", "left"]
        assert seen[0].channel != seen[1].channel
        await bob.disconnect()
        assert seen.left("chat.lobby") == ["ann"]  # after the block: not recorded
        assert await presence_count("chat.lobby") == 0
