"""Topics a client subscribes to: the protocol, authorization, limits, revocation.
Unit level on the in-memory layer; real servers, Redis and both clients are in
``tests/e2e/test_topics.py``."""

from __future__ import annotations

import json
import logging

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from channels_tuning import Topic, TunedJsonWebsocketConsumer, TunedProtobufWebsocketConsumer
from channels_tuning.broadcast import broadcast, broadcast_many
from channels_tuning.consumers import topics
from channels_tuning.core.tokens import TokenBucket
from channels_tuning.runtime.counters import TOPIC_REQUESTS
from channels_tuning.testing import fake_clock
from channels_tuning.wire.proto.envelope_pb2 import Envelope
from channels_tuning.wire.subprotocol import SUBPROTOCOL

HISTORY = {"CHANNELS_TUNING": {"HISTORY": {"news.*": {"size": 10, "ttl": 60}}}}
#: Who may read which private topic (what a permission table would say).
ALLOWED: set[tuple[str, str]] = set()


class Dashboard(TunedJsonWebsocketConsumer):
    heartbeat_interval = None
    topics = [
        Topic("ticker", public=True),
        Topic("news.{section}", public=True, cache=2),
        Topic("user.{user_id}"),
    ]
    max_subscriptions = 3
    authorization_ttl = 0.3

    async def connect(self):
        await self.accept()

    async def can_subscribe(self, user, scope, topic):
        if topic.topic.public:
            return True
        who = dict(scope["query_string"] and [scope["query_string"].decode().split("=")])
        if (who.get("me"), topic.args["user_id"]) in ALLOWED:
            return True
        return "not your topic" if topic.params.get("why") else False

    async def receive_json(self, content, **kwargs):
        await self.send_json({"echo": content})


class Binary(TunedProtobufWebsocketConsumer):
    heartbeat_interval = None
    topics = [Topic("ticker", public=True)]

    async def connect(self):
        await self.accept()


@pytest.fixture(autouse=True)
async def _fresh_layer(ct_layer, ct_no_leaks):
    # The package's own fixtures (channels_tuning.testing.plugin): an empty layer with a
    # fresh history, and every test's connections ended without a leftover.
    ALLOWED.clear()
    TOPIC_REQUESTS.clear()
    with override_settings(**HISTORY):
        yield


async def connect(path="/", consumer=Dashboard, tuned=True):
    protocols = [SUBPROTOCOL] if tuned else []
    comm = WebsocketCommunicator(consumer.as_asgi(), path, subprotocols=protocols)
    assert (await comm.connect())[0]
    return comm


async def request(comm, action, topic, id, **fields):
    await comm.send_to(
        text_data=json.dumps({"type": f"ct.{action}", "id": id, "topic": topic, **fields})
    )


async def answer(comm):
    return json.loads(await comm.receive_from(timeout=2))


def outcomes():
    return {labels[1]: count for labels, count in TOPIC_REQUESTS.items()}


async def test_subscribe_answers_and_then_broadcasts_arrive_in_an_envelope_naming_the_topic():
    comm = await connect()
    await request(comm, "subscribe", "ticker", 1)
    assert await answer(comm) == {"kind": "subscribed", "topic": "ticker", "id": 1}
    await broadcast("ticker", {"px": 12.5})
    await broadcast("ticker", "plain text")
    await broadcast_many("ticker", [{"px": 1}, "two"])
    assert await answer(comm) == {"kind": "data", "topic": "ticker", "data": {"px": 12.5}}
    assert await answer(comm) == {"kind": "data", "topic": "ticker", "data": "plain text"}
    assert await answer(comm) == {"kind": "data", "topic": "ticker", "data": {"px": 1}}
    assert await answer(comm) == {"kind": "data", "topic": "ticker", "data": "two"}
    await request(comm, "unsubscribe", "ticker", 2)
    assert await answer(comm) == {
        "kind": "unsubscribed",
        "topic": "ticker",
        "id": 2,
        "reason": "client",
    }
    await broadcast("ticker", {"px": 13})
    assert await comm.receive_nothing(0.2)
    assert outcomes() == {"subscribed": 1, "unsubscribed": 1}
    await comm.disconnect()


async def test_a_subscription_is_left_when_the_connection_ends():
    comm = await connect()
    await request(comm, "subscribe", "ticker", 1)
    await answer(comm)
    layer = get_channel_layer()
    assert layer.groups.get("ticker")
    await comm.disconnect()
    assert not layer.groups.get("ticker")


async def test_refusals_say_why_and_the_connection_stays_open(caplog):
    comm = await connect("/?me=7")
    await request(comm, "subscribe", "admin.secrets", 1)
    assert await answer(comm) == {
        "kind": "error",
        "topic": "admin.secrets",
        "id": 1,
        "error": "unknown_topic",
    }
    await request(comm, "subscribe", "user.8", 2)
    assert (await answer(comm))["error"] == "forbidden"
    await request(comm, "subscribe", "user.8", 3, params={"why": 1})
    assert (await answer(comm))["error"] == "not your topic"
    ALLOWED.add(("7", "7"))
    await request(comm, "subscribe", "user.7", 4)
    assert await answer(comm) == {"kind": "subscribed", "topic": "user.7", "id": 4}
    await request(comm, "subscribe", "user.7", 5)
    assert (await answer(comm))["error"] == "already_subscribed"
    await request(comm, "unsubscribe", "ticker", 6)
    assert (await answer(comm))["error"] == "not_subscribed"
    await request(comm, "subscribe", "ticker", 7)
    await request(comm, "subscribe", "news.world", 8)
    assert (await answer(comm))["id"] == 7
    assert (await answer(comm))["id"] == 8
    await request(comm, "subscribe", "news.sport", 9)
    assert (await answer(comm))["error"] == "too_many_subscriptions"
    # Still open: the application's own frames go through.
    await comm.send_json_to({"hello": 1})
    assert await answer(comm) == {"echo": {"hello": 1}}
    assert outcomes() == {
        "unknown_topic": 1,
        "forbidden": 2,
        "subscribed": 3,
        "already_subscribed": 1,
        "not_subscribed": 1,
        "too_many_subscriptions": 1,
    }
    await comm.disconnect()


async def test_a_group_the_consumer_joined_itself_cannot_be_subscribed_or_left_by_the_client():
    class JoinsTicker(Dashboard):
        groups = ["ticker"]

    comm = await connect(consumer=JoinsTicker)
    await request(comm, "subscribe", "ticker", 1)
    assert (await answer(comm))["error"] == "already_subscribed"
    await request(comm, "unsubscribe", "ticker", 2)
    assert (await answer(comm))["error"] == "not_subscribed"
    assert get_channel_layer().groups.get("ticker")
    await comm.disconnect()


async def test_a_revoked_permission_ends_the_subscription_within_the_authorization_ttl():
    ALLOWED.add(("7", "7"))
    with fake_clock() as clock:
        comm = await connect("/?me=7")
        await request(comm, "subscribe", "user.7", 1)
        await answer(comm)
        await clock.advance(0.5)  # asked again at a tick after 0.3 s: still allowed
        await broadcast("user.7", {"n": 1})
        assert (await answer(comm))["data"] == {"n": 1}
        ALLOWED.clear()
        await clock.advance(0.2)  # the next check is due 0.3 s after the last one
        assert await comm.receive_nothing(0.05)
        await clock.advance(0.2)
        assert await answer(comm) == {
            "kind": "unsubscribed",
            "topic": "user.7",
            "reason": "forbidden",
        }
        await broadcast("user.7", {"n": 2})
        assert await comm.receive_nothing(0.2)
        assert outcomes()["revoked"] == 1
        await comm.disconnect()


async def test_unsubscribe_user_reaches_the_users_connections():
    from channels_tuning.users import unsubscribe_user, user_group

    comm = await connect()
    await request(comm, "subscribe", "ticker", 1)
    await answer(comm)
    # The communicator has no authenticated user: join the user's group by hand.
    layer = get_channel_layer()
    channel = next(iter(layer.groups["ticker"]))
    await layer.group_add(user_group(5), channel)
    report = await unsubscribe_user(5, "ticker")
    assert report.receivers == 1
    assert await answer(comm) == {"kind": "unsubscribed", "topic": "ticker", "reason": "revoked"}
    assert not layer.groups.get("ticker")
    await comm.disconnect()


async def test_cache_mode_sends_the_latest_messages_after_subscribed():
    for n in range(5):
        await broadcast("news.world", {"n": n})
    comm = await connect()
    await request(comm, "subscribe", "news.world", 1)
    subscribed = await answer(comm)
    assert subscribed["kind"] == "subscribed" and subscribed["id"] == 1
    # Where the client stands: the latest two follow (a client keeping positions
    # takes them as new, not as duplicates of offset 5).
    assert subscribed["offset"] == 3 and subscribed["recovered"] is True
    latest = [await answer(comm) for _ in range(2)]
    assert [m["data"] for m in latest] == [{"n": 3}, {"n": 4}]
    assert [m["offset"] for m in latest] == [4, 5]
    await broadcast("news.world", {"n": 5})
    assert (await answer(comm))["offset"] == 6
    await comm.disconnect()


async def test_a_position_in_the_request_recovers_what_was_missed():
    for n in range(4):
        await broadcast("news.world", {"n": n})
    comm = await connect()
    await request(comm, "subscribe", "news.world", 1)
    epoch = (await answer(comm))["epoch"]
    await comm.disconnect()
    await broadcast("news.world", {"n": 4})
    comm = await connect()
    await request(comm, "subscribe", "news.world", 2, since={"epoch": epoch, "offset": 3})
    subscribed = await answer(comm)
    assert subscribed["recovered"] is True and subscribed["id"] == 2
    assert [(await answer(comm))["data"] for _ in range(2)] == [{"n": 3}, {"n": 4}]
    await comm.disconnect()


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"ct.subscribe","topic":"ticker"}',
        '{"type":"ct.subscribe","id":"1","topic":"ticker"}',
        '{"type":"ct.subscribe","id":1}',
        '{"type":"ct.subscribe","id":1,"topic":"' + "x" * 100 + '"}',
        '{"type":"ct.subscribe","id":1,"topic":"ticker","params":[1]}',
        '{"type":"ct.subscribe","id":1,"topic":"ticker","since":{"epoch":"A!","offset":1}}',
        '{"type":"ct.unsubscribe","id":-4,"topic":"ticker"}',
    ],
)
async def test_an_unreadable_request_closes_with_1008(frame):
    comm = await connect()
    await comm.send_to(text_data=frame)
    assert await comm.receive_output(timeout=2) == {
        "type": "websocket.close",
        "code": 1008,
        "reason": "unreadable topic request",
    }
    assert outcomes() == {"malformed": 1}
    await comm.disconnect(code=1008)  # what the server delivers once the close is done


async def test_a_flood_of_requests_closes_with_1008():
    class Strict(Dashboard):
        subscribe_rate = TokenBucket(rate=1.0, burst=5.0)

    comm = await connect(consumer=Strict)
    for n in range(1, 8):
        await request(comm, "subscribe", f"room{n}", n)
    replies = []
    while True:
        output = await comm.receive_output(timeout=2)
        if output["type"] == "websocket.close":
            break
        replies.append(json.loads(output["text"]))
    assert [r["error"] for r in replies] == ["unknown_topic"] * 5
    assert output["code"] == 1008
    assert outcomes() == {"unknown_topic": 5, "flood": 1}
    await comm.disconnect(code=1008)


async def test_a_page_that_does_not_speak_the_protocol_gets_its_frames_unchanged():
    comm = await connect(tuned=False)
    await request(comm, "subscribe", "ticker", 1)
    assert (await answer(comm))["echo"]["type"] == "ct.subscribe"
    assert not get_channel_layer().groups.get("ticker")
    await comm.disconnect()


async def test_binary_consumers_speak_the_protocol_in_protobuf_envelopes():
    comm = await connect(consumer=Binary)
    request = Envelope(kind=Envelope.SUBSCRIBE, seq=3, topic="ticker")
    await comm.send_to(bytes_data=request.SerializeToString())
    reply = Envelope.FromString(await comm.receive_from(timeout=2))
    assert (reply.kind, reply.seq, reply.topic) == (Envelope.SUBSCRIBED, 3, "ticker")
    await broadcast("ticker", b"\x01\x02")
    data = Envelope.FromString(await comm.receive_from(timeout=2))
    assert (data.kind, data.topic, data.payload) == (Envelope.DATA, "ticker", b"\x01\x02")
    refused = Envelope(kind=Envelope.SUBSCRIBE, seq=4, topic="nope")
    await comm.send_to(bytes_data=refused.SerializeToString())
    error = Envelope.FromString(await comm.receive_from(timeout=2))
    assert (error.kind, error.seq, error.error) == (Envelope.ERROR, 4, "unknown_topic")
    leave = Envelope(kind=Envelope.UNSUBSCRIBE, seq=5, topic="ticker")
    await comm.send_to(bytes_data=leave.SerializeToString())
    done = Envelope.FromString(await comm.receive_from(timeout=2))
    assert (done.kind, done.seq, done.error) == (Envelope.UNSUBSCRIBED, 5, "client")
    await comm.disconnect()


async def test_refusal_log_lines_are_rate_limited(caplog):
    caplog.set_level(logging.INFO, "channels_tuning")
    topics._refused_log.last = float("-inf")  # the other tests' lines are not this one's
    comm = await connect()
    for n in range(1, 21):
        await request(comm, "subscribe", f"nope{n}", n)
    for _ in range(20):
        await answer(comm)
    lines = [r for r in caplog.records if "topic request refused" in r.getMessage()]
    assert 1 <= len(lines) <= 2
    assert outcomes() == {"unknown_topic": 20}
    await comm.disconnect()
