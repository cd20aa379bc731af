"""Group history and recovery: offsets, replay on join, order and exactly-once, bad
requests. Unit level on the in-memory layer; the Redis layer and real servers are in
``tests/e2e/test_recovery.py``."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from channels_tuning import (
    TunedJsonWebsocketConsumer,
    TunedProtobufWebsocketConsumer,
    TunedWebsocketConsumer,
)
from channels_tuning.broadcast import broadcast, broadcast_many
from channels_tuning.core.offsets import GroupStream, Offer
from channels_tuning.exceptions import RecoveryRequestError
from channels_tuning.layers.frames import FRAME_TYPE
from channels_tuning.layers.history import HistoryPolicy, MemoryHistory
from channels_tuning.runtime.counters import RECOVERY, REJECTED, REPLAYED
from channels_tuning.runtime.registry import registry
from channels_tuning.wire.codecs import ProtobufCodec
from channels_tuning.wire.offsets import (
    MAX_RECOVER_REQUESTS,
    StreamPosition,
    data_frame,
    parse_recover_requests,
)
from channels_tuning.wire.proto.envelope_pb2 import Envelope
from channels_tuning.wire.subprotocol import SUBPROTOCOL

HISTORY = {"CHANNELS_TUNING": {"HISTORY": {"room.*": {"size": 5, "ttl": 60}}}}


class Member(TunedWebsocketConsumer):
    heartbeat_interval = None

    async def connect(self):
        await self.join_group("room.a")
        await self.accept()


class JoinsTwo(TunedJsonWebsocketConsumer):
    heartbeat_interval = None
    groups = ["room.b", "plain"]


@pytest.fixture(autouse=True)
async def _fresh_layer(ct_layer):
    with override_settings(**HISTORY):
        yield


async def connect(path="/", consumer=Member):
    comm = WebsocketCommunicator(consumer.as_asgi(), path, subprotocols=[SUBPROTOCOL])
    assert (await comm.connect())[0]
    return comm


async def frames(comm, count):
    return [json.loads((await comm.receive_output(timeout=2))["text"]) for _ in range(count)]


# ------------------------------------------------------------------ sans-I/O


def test_group_stream_sends_in_order_once_and_holds_after_a_gap():
    stream = GroupStream()
    assert stream.offer("e", 1, "f1") is Offer.HOLD  # joining: held
    assert stream.resume("e", 0) == [("e", 1, "f1")]
    assert stream.offer("e", 1, "f1") is Offer.SEND
    assert stream.offer("e", 1, "f1") is Offer.DUPLICATE
    assert stream.offer("e", 3, "f3") is Offer.GAP  # 2 is missing: fetch it
    assert stream.offer("e", 4, "f4") is Offer.HOLD
    assert stream.offer("e", 2, "f2") is Offer.HOLD  # the late one, held too
    held = stream.resume("e", 2)  # the gap fill sent 2
    assert [stream.offer(*item) for item in held] == [Offer.SEND, Offer.SEND, Offer.DUPLICATE]
    assert stream.offset == 4
    assert stream.offer("new", 1, "g1") is Offer.RESET
    assert (stream.epoch, stream.offset) == ("new", 1)


def test_recover_requests_are_parsed_and_bounded():
    assert parse_recover_requests(b"") == {}
    assert parse_recover_requests(b"x=1&ct_recover=room.a:9f3a:12&ct_recover=b-c_d:1:0") == {
        "room.a": StreamPosition("9f3a", 12),
        "b-c_d": StreamPosition("1", 0),
    }
    for bad in (
        "ct_recover=room.a:9f3a",
        "ct_recover=room.a:9f3a:-1",
        "ct_recover=room.a:9f3a:1e9",
        "ct_recover=room.a:9F3A:1",
        "ct_recover=room+a:9f3a:1",
        "ct_recover=room.a:9f3a:99999999999999999",
        "ct_recover=" + "a" * 100 + ":e:1",
        "&".join(f"ct_recover=g{i}:e:1" for i in range(MAX_RECOVER_REQUESTS + 1)),
    ):
        with pytest.raises(RecoveryRequestError):
            parse_recover_requests(bad)


def test_data_frames_carry_offset_and_epoch_in_both_encodings():
    text = data_frame("room.a", 7, "ab12", b'{"x":1}', binary=False)["text"]
    assert json.loads(text) == {
        "kind": "data",
        "topic": "room.a",
        "offset": 7,
        "epoch": "ab12",
        "data": {"x": 1},
    }
    payload = Envelope(kind=Envelope.ACK, seq=3).SerializeToString()  # any message type
    received = ProtobufCodec(Envelope).decode(
        data_frame("room.a", 7, "ab12", payload, binary=True)["bytes"]
    )
    assert (received.kind, received.topic, received.offset, received.epoch) == (
        "data",
        "room.a",
        7,
        "ab12",
    )
    assert received.message.seq == 3


# ------------------------------------------------------------- with consumers


async def test_join_says_where_the_group_stands_then_numbers_broadcasts():
    comm = await connect()
    (subscribed,) = await frames(comm, 1)
    assert subscribed["kind"] == "subscribed" and subscribed["topic"] == "room.a"
    assert subscribed["offset"] == 0 and subscribed["recovered"] is False
    epoch = subscribed["epoch"]
    await broadcast("room.a", {"n": 1})
    await broadcast("room.a", "two")
    data = await frames(comm, 2)
    assert [(d["offset"], d["epoch"], d["data"]) for d in data] == [
        (1, epoch, {"n": 1}),
        (2, epoch, "two"),
    ]
    await comm.disconnect()


async def test_group_streams_hold_no_reference_to_their_consumer():
    """No cycle between a consumer and its streams: reference counting frees both
    (a cycle kept alive by gc.freeze() would outlive the connection)."""
    import gc

    from channels_tuning.runtime.registry import registry

    comm = await connect()
    await frames(comm, 1)
    (consumer,) = list(registry)
    streams = consumer._group_streams
    assert streams is not None
    assert not [ref for ref in gc.get_referents(streams) if ref is consumer]
    del consumer
    await comm.disconnect()


async def test_a_reconnecting_client_gets_what_it_missed_before_live_messages():
    comm = await connect()
    epoch = (await frames(comm, 1))[0]["epoch"]
    await broadcast("room.a", 1)
    await frames(comm, 1)
    await comm.disconnect()
    for n in (2, 3, 4):  # sent while the client was away
        await broadcast("room.a", n)
    comm = await connect(f"/?ct_recover=room.a:{epoch}:1")
    subscribed, *replay = await frames(comm, 4)
    assert (subscribed["kind"], subscribed["recovered"], subscribed["offset"]) == (
        "subscribed",
        True,
        4,
    )
    assert [(d["offset"], d["data"]) for d in replay] == [(2, 2), (3, 3), (4, 4)]
    await broadcast("room.a", 5)
    assert [d["offset"] for d in await frames(comm, 1)] == [5]
    assert await comm.receive_nothing(0.05)
    assert RECOVERY.get(("recovered",)) == 1 and REPLAYED.total() == 3
    await comm.disconnect()


class ChannelsStyleMember(TunedWebsocketConsumer):
    """Joins as Channels' tutorial does: the layer's own group_add and group_discard."""

    heartbeat_interval = None

    async def connect(self):
        await self.channel_layer.group_add("room.a", self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard("room.a", self.channel_name)


async def test_channels_own_group_add_gets_subscribed_and_recovery_too():
    comm = await connect(consumer=ChannelsStyleMember)
    (subscribed,) = await frames(comm, 1)
    assert (subscribed["kind"], subscribed["topic"]) == ("subscribed", "room.a")
    epoch = subscribed["epoch"]
    await broadcast("room.a", 1)
    assert [d["offset"] for d in await frames(comm, 1)] == [1]
    await comm.disconnect()
    for n in (2, 3):
        await broadcast("room.a", n)
    comm = await connect(f"/?ct_recover=room.a:{epoch}:1", consumer=ChannelsStyleMember)
    subscribed, *replay = await frames(comm, 3)
    assert (subscribed["recovered"], subscribed["offset"]) == (True, 3)
    assert [(d["offset"], d["data"]) for d in replay] == [(2, 2), (3, 3)]
    await broadcast("room.a", 4)
    assert [d["offset"] for d in await frames(comm, 1)] == [4]
    assert await comm.receive_nothing(0.05)  # once each
    await comm.disconnect()


async def test_a_plain_page_gets_the_payloads_of_a_group_with_history():
    """No subscribed frame, no envelope: what broadcast() was given."""
    comm = WebsocketCommunicator(Member.as_asgi(), "/")
    assert (await comm.connect())[0]
    await broadcast("room.a", {"message": "hi"})
    await broadcast("room.a", "a str")
    await broadcast("room.a", b"\x01bytes")
    assert json.loads(await comm.receive_from(timeout=1)) == {"message": "hi"}
    assert await comm.receive_from(timeout=1) == "a str"
    assert (await comm.receive_output(timeout=1))["bytes"] == b"\x01bytes"
    assert await comm.receive_nothing(0.05)
    await comm.disconnect()


@pytest.mark.parametrize(
    "request_for",
    [
        "too_old",  # 7 missed, 5 kept
        "other_epoch",  # forged, or the history was lost
        "future",  # an offset the group never reached
    ],
)
async def test_what_cannot_be_recovered_is_said(request_for):
    comm = await connect()
    epoch = (await frames(comm, 1))[0]["epoch"]
    await comm.disconnect()
    for n in range(1, 8):
        await broadcast("room.a", n)
    since = {"too_old": f"{epoch}:0", "other_epoch": "beef:6", "future": f"{epoch}:99"}
    comm = await connect(f"/?ct_recover=room.a:{since[request_for]}")
    (subscribed,) = await frames(comm, 1)
    assert (subscribed["recovered"], subscribed["offset"], subscribed["epoch"]) == (
        False,
        7,
        epoch,
    )
    assert await comm.receive_nothing(0.05)  # nothing replayed: the app must reload
    assert RECOVERY.get(("not_recovered",)) == 1
    await comm.disconnect()


async def test_requests_for_groups_not_joined_are_never_answered():
    await broadcast("room.secret", "for members only")
    comm = await connect("/?ct_recover=room.secret:abcd:0")
    (subscribed,) = await frames(comm, 1)
    assert subscribed["topic"] == "room.a"
    assert await comm.receive_nothing(0.05)
    await comm.disconnect()


async def test_an_unreadable_request_is_closed_with_1008_and_counted():
    comm = WebsocketCommunicator(
        Member.as_asgi(), "/?ct_recover=room.a:oops", subprotocols=[SUBPROTOCOL]
    )
    connected, _ = await comm.connect()
    # Accepted, then closed: a browser sees the close code, not an HTTP status.
    assert connected
    assert (await comm.receive_output(timeout=1)) == {
        "type": "websocket.close",
        "code": 1008,
        "reason": "bad_recovery_request",
    }
    assert REJECTED.get(("Member", "bad_recovery_request")) == 1
    await comm.disconnect()


async def test_reordered_messages_reach_the_client_in_order_exactly_once():
    comm = await connect()
    epoch = (await frames(comm, 1))[0]["epoch"]
    layer = get_channel_layer()
    policy = HistoryPolicy(5, 60)
    # Two producers took offsets 1 and 2; the message of 2 arrives first.
    messages = []
    for n in (1, 2):
        data = json.dumps(n).encode()
        offset, epoch = await layer.history.append("room.a", data, False, policy)
        messages.append(
            {
                "type": FRAME_TYPE,
                "frame": data_frame("room.a", offset, epoch, data, binary=False),
                "group": "room.a",
                "offset": offset,
                "epoch": epoch,
            }
        )
    consumer = next(iter(registry))
    consumer.deliver_layer_message(messages[1])
    consumer.deliver_layer_message(messages[0])  # late: already sent by the gap fill
    assert [d["offset"] for d in await frames(comm, 2)] == [1, 2]
    assert await comm.receive_nothing(0.05)
    assert RECOVERY.get(("gap_filled",)) == 1 and RECOVERY.get(("duplicate",)) == 1
    await comm.disconnect()


async def test_groups_class_attribute_and_batches_are_numbered_too():
    comm = await connect(consumer=JoinsTwo)
    (subscribed,) = await frames(comm, 1)
    assert subscribed["topic"] == "room.b"  # "plain" has no history: nothing said
    report = await broadcast_many("room.b", ["a", "b"])
    assert report.receivers == 1 and report.complete
    assert [(d["offset"], d["data"]) for d in await frames(comm, 2)] == [(1, "a"), (2, "b")]
    await broadcast("plain", {"raw": True})  # no history: the payload as it is
    assert json.loads((await comm.receive_output(timeout=1))["text"]) == {"raw": True}
    with pytest.raises(ValueError, match="coalesce_key"):
        await broadcast("room.b", "x", coalesce_key="k")
    await comm.disconnect()


async def test_history_is_trimmed_to_size_and_expires_with_its_epoch():
    history = MemoryHistory()
    policy = HistoryPolicy(3, 60)
    for n in range(5):
        await history.append("g", str(n).encode(), False, policy)
    assert [e[0] for e in await history.fetch("g", 1, 5)] == [3, 4, 5]
    # Entries older than ttl are gone; the epoch and offset stay (a client that
    # missed nothing recovers; one that missed an aged-out message does not).
    short = HistoryPolicy(3, 0.05)
    _, epoch = await history.append("h", b"1", False, short)
    await asyncio.sleep(0.1)
    offset, same_epoch = await history.append("h", b"2", False, short)
    assert (offset, same_epoch) == (2, epoch)
    assert [e[0] for e in await history.fetch("h", 1, 2)] == [2]
    assert (await history.recover("h", StreamPosition(epoch, 1), short)).recovered
    assert not (await history.recover("h", StreamPosition(epoch, 0), short)).recovered
    with pytest.raises(ValueError):
        HistoryPolicy(0, 1)


async def test_groups_only_joined_are_forgotten_after_their_ttl():
    """A join to a group nobody broadcasts to keeps its epoch ``ttl`` (client-chosen
    names), not the day a broadcast buys; the in-memory history sweeps them."""
    history = MemoryHistory()
    history.sweep_every = 100
    short, long = HistoryPolicy(10, 0.05), HistoryPolicy(10, 60)
    await history.append("written", b"1", False, short)  # lives the meta ttl
    for n in range(1000):
        await history.recover(f"room.{n}", None, short)
    assert len(history) == 1001
    await asyncio.sleep(0.1)
    for n in range(100):  # a sweep comes with the next new groups
        await history.recover(f"later.{n}", None, long)
    assert len(history) == 101  # "written" and the 100 new ones
    assert (await history.recover("written", None, short)).offset == 1


@pytest.mark.parametrize(
    "history, problem",
    [
        ({"chat.*": {"size": 10, "ttl": 5}}, None),
        ([("chat.*", 1)], "must be a dict"),
        ({"chat.*": {"size": 0, "ttl": 5}}, "size must be an integer >= 1"),
        ({"chat.*": {"size": 10}}, "ttl must be a number"),
        ({"chat.*": {"size": 10, "ttl": 5, "max": 1}}, "unknown keys"),
    ],
)
def test_history_setting_is_checked(history, problem):
    from channels_tuning.checks import check_settings

    with override_settings(CHANNELS_TUNING={"HISTORY": history}):
        errors = [p for p in check_settings() if p.id == "channels_tuning.E008"]
    assert [problem in e.msg for e in errors] == ([True] if problem else [])


class ProtoMember(TunedProtobufWebsocketConsumer):
    heartbeat_interval = None
    message_class = Envelope  # any protobuf message type will do
    groups = ["room.p"]


async def test_binary_payloads_and_protobuf_consumers_get_binary_envelopes():
    comm = WebsocketCommunicator(ProtoMember.as_asgi(), "/", subprotocols=[SUBPROTOCOL])
    assert (await comm.connect())[0]
    codec = ProtobufCodec(Envelope)
    subscribed = codec.decode((await comm.receive_output(timeout=1))["bytes"])
    assert (subscribed.kind, subscribed.topic, subscribed.offset) == ("subscribed", "room.p", 0)
    payload = Envelope(kind=Envelope.ACK, seq=9).SerializeToString()
    await broadcast("room.p", payload)
    received = codec.decode((await comm.receive_output(timeout=1))["bytes"])
    assert (received.offset, received.epoch, received.message.seq) == (1, subscribed.epoch, 9)
    await comm.disconnect()


def test_python_client_keeps_positions_and_asks_for_them():
    from channels_tuning.client import ReconnectingClient

    client = ReconnectingClient("ws://h/ws/chat/a/?x=1&ct_recover=stale:e:1", codec="json")
    assert client.connect_url() == "ws://h/ws/chat/a/?x=1&ct_recover=stale:e:1"  # nothing kept
    subscribed = {"kind": "subscribed", "topic": "chat.a", "offset": 4, "epoch": "ab"}
    assert client._track({**subscribed, "recovered": False})
    data = {"kind": "data", "topic": "chat.a", "epoch": "ab"}
    assert client._track({**data, "offset": 5}) and not client._track({**data, "offset": 5})
    assert client._track({"plain": True})  # not numbered: passed on
    assert client.duplicates == 1 and client.positions["chat.a"] == StreamPosition("ab", 5)
    assert client.connect_url() == "ws://h/ws/chat/a/?x=1&ct_recover=chat.a%3Aab%3A5"
    # The same with the protobuf codec's Received objects.
    proto = ProtobufCodec(Envelope)
    frame = data_frame("chat.b", 1, "cd", Envelope(kind=1).SerializeToString(), binary=True)
    assert client._track(proto.decode(frame["bytes"]))
    assert client.positions["chat.b"] == StreamPosition("cd", 1)
    # History lost: told recovered false, counted as a gap, the position starts again.
    assert client._track({**subscribed, "epoch": "zz", "offset": 0, "recovered": False})
    assert client.gaps == 1 and client.positions["chat.a"] == StreamPosition("zz", 0)


def test_history_with_a_layer_that_keeps_none_is_warned():
    from channels_tuning.checks import check_deployment

    layers = {"default": {"BACKEND": "channels_tuning.layers.RedisPubSubChannelLayer"}}
    with override_settings(
        CHANNEL_LAYERS=layers, CHANNELS_TUNING={"HISTORY": {"a.*": {"size": 1, "ttl": 1}}}
    ):
        assert "channels_tuning.W010" in [p.id for p in check_deployment()]
    layers = {"default": {"BACKEND": "channels_tuning.layers.RedisChannelLayer"}}
    with override_settings(CHANNEL_LAYERS=layers, CHANNELS_TUNING={"PRESENCE": {"a.*": {}}}):
        assert "channels_tuning.W010" not in [p.id for p in check_deployment()]


async def test_redis_history_numbers_trims_recovers_and_changes_epoch(redis_server):
    from channels_tuning.layers import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[redis_server.url])
    history, policy = layer.history, HistoryPolicy(3, 60)
    try:
        positions = [
            await history.append("g", f"{n}".encode(), n % 2 == 0, policy) for n in range(5)
        ]
        epoch = positions[0][1]
        assert positions == [(n, epoch) for n in range(1, 6)]
        assert await history.fetch("g", 1, 5) == [
            (3, b"2", True),
            (4, b"3", False),
            (5, b"4", True),
        ]
        assert redis_server.cli("XLEN", "asgi:ct:hist:g") == "3"  # trimmed exactly to size
        recovery = await history.recover("g", StreamPosition(epoch, 3), policy)
        assert (recovery.recovered, recovery.offset, [e[0] for e in recovery.entries]) == (
            True,
            5,
            [4, 5],
        )
        # The first page only: by count, and by bytes (stops after the entry past 64 KB).
        paged = await history.recover("g", StreamPosition(epoch, 3), policy, page=1)
        assert (paged.recovered, [e[0] for e in paged.entries]) == (True, [4])
        big = HistoryPolicy(10, 60)
        for _ in range(4):
            await history.append("big", b"x" * 40_000, False, big)
        big_epoch = (await history.recover("big", None, big)).epoch
        paged = await history.recover("big", StreamPosition(big_epoch, 0), big)
        assert (paged.recovered, [e[0] for e in paged.entries]) == (True, [1, 2])
        assert not (
            await history.recover("g", StreamPosition(epoch, 1), policy)
        ).recovered  # too old
        assert not (
            await history.recover("g", StreamPosition(epoch, 6), policy)
        ).recovered  # future
        assert not (await history.recover("g", StreamPosition("beef", 4), policy)).recovered
        assert (
            await history.recover("g", StreamPosition(epoch, 5), policy)
        ).recovered  # up to date
        # Entries older than ttl are trimmed as broadcasts arrive, and refused.
        short = HistoryPolicy(100, 0.2)
        _, e2 = await history.append("h", b"1", False, short)
        await asyncio.sleep(0.3)
        await history.append("h", b"2", False, short)
        assert [e[0] for e in await history.fetch("h", 1, 2)] == [2]
        assert not (await history.recover("h", StreamPosition(e2, 0), short)).recovered
        assert (await history.recover("h", StreamPosition(e2, 1), short)).recovered
        # Redis lost everything (a restart without persistence): a new epoch.
        redis_server.cli("FLUSHALL")
        offset, new_epoch = await history.append("g", b"x", False, policy)
        assert (offset, new_epoch != epoch) == (1, True)
    finally:
        await layer.close_pools()


async def test_messages_numbered_after_the_read_reach_the_joining_connection():
    """The position is read before the membership is added. A message numbered between
    the read and the membership (its send reached the group before this member was in
    it) is fetched from the history when the next live one shows the gap."""
    layer = get_channel_layer()
    add = layer.group_add

    async def slow_group_add(group, channel):
        await broadcast("room.a", "between")  # numbered 1, sent before the membership
        await add(group, channel)

    layer.group_add = slow_group_add
    try:
        comm = await connect()
    finally:
        layer.group_add = add
    await broadcast("room.a", "after")  # numbered 2: live, and shows the gap
    subscribed, *data = await frames(comm, 3)
    assert (subscribed["kind"], subscribed["offset"]) == ("subscribed", 0)
    assert [(d["offset"], d["data"]) for d in data] == [(1, "between"), (2, "after")]
    assert RECOVERY.get(("gap_filled",)) == 1
    await comm.disconnect()


@pytest.mark.parametrize("offset", ["²", "①", "٣", "1²", "+1", "-1", " 1", "1 ", "0x1", ""])
def test_recovery_offsets_are_ascii_digits_only(offset):
    with pytest.raises(RecoveryRequestError):
        parse_recover_requests(f"ct_recover=room.a:ab:{offset}".encode())


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.lists(st.text(max_size=60), max_size=40).map(
            lambda values: "&".join(f"ct_recover={value}" for value in values)
        ),
        st.tuples(
            st.text("abc.-_", min_size=1, max_size=5),
            st.text("0123456789abcdef", max_size=8),
            st.text(max_size=20),
        ).map(lambda parts: "ct_recover=" + ":".join(parts)),
    )
)
def test_the_recovery_request_parser_refuses_or_parses_anything(query):
    """Whatever a client puts in the query string: a parse, or RecoveryRequestError
    (the documented 1008), never another exception."""
    try:
        requests = parse_recover_requests(query)
    except RecoveryRequestError:
        return
    assert len(requests) <= MAX_RECOVER_REQUESTS
    for position in requests.values():
        assert 0 <= position.offset < 2**53


async def test_refused_recovery_requests_are_counted_each_and_logged_once_a_second(caplog):
    """A client decides how often it sends an unreadable request: every one is counted,
    the log gets a line a second at most."""
    with caplog.at_level("INFO", logger="channels_tuning"):
        for _ in range(20):
            comm = WebsocketCommunicator(Member.as_asgi(), "/?ct_recover=room.a:ab:²")
            await comm.connect()
            assert (await comm.receive_output(timeout=1))["code"] == 1008
            await comm.disconnect()
    assert REJECTED.get(("Member", "bad_recovery_request")) == 20
    refused = [r for r in caplog.records if "refused Member" in r.getMessage()]
    assert len(refused) <= 2  # the test takes well under two seconds
    assert not any(r.exc_info for r in caplog.records)


# ------------------------------------------------------------ bounded replay


async def _streams_with_backlog(count: int, size: int = 100):
    """A GroupStreams of an open connection that asked for all of ``count`` entries of
    ``size`` bytes, read (as the handshake does) and joined."""
    from channels_tuning.consumers.recovery import GroupStreams
    from channels_tuning.core import ConnectionCore, ConnectionSettings
    from channels_tuning.core.policies import PolicyChain

    history, policy = MemoryHistory(), HistoryPolicy(count, 60)
    for _ in range(count):
        _, epoch = await history.append("room.big", b'"' + b"x" * size + b'"', False, policy)
    core = ConnectionCore(ConnectionSettings(), PolicyChain([]), 0.0)
    core.accept(0.0)
    streams = GroupStreams(history, core, {"room.big": StreamPosition(epoch, 0)}, binary=False)
    await streams.start("room.big", policy)
    return streams, epoch


async def _wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_a_replay_longer_than_a_page_is_read_page_by_page_in_order():
    """1 000 entries of 1 KB: the handshake's read carries one page (64 KB at most),
    the rest follows in pages; every entry once, in order, then the live messages."""
    streams, epoch = await _streams_with_backlog(1000, 1000)
    first_page = streams.read["room.big"].entries
    # 64 KB (and the entry that passed it), not the backlog.
    assert (
        sum(len(data) for _, data, _ in first_page[:-1])
        < 64 * 1024
        <= sum(len(data) for _, data, _ in first_page)
    )
    sent: list[dict] = []

    async def room(size: int, timeout: float) -> bool:
        return True

    streams.joined("room.big", sent.append, room)
    live = {"group": "room.big", "epoch": epoch, "offset": 1001, "frame": {"text": "live"}}
    streams.deliver(live, sent.append)  # held while the replay runs
    await _wait_for(lambda: len(sent) == 1 + 1000 + 1)
    offsets = [json.loads(frame["text"]).get("offset") for frame in sent[1:-1]]
    assert offsets == list(range(1, 1001))
    assert sent[-1] == {"text": "live"}


async def test_a_client_that_stops_reading_is_told_recovered_false_where_the_group_is():
    """The queue has room for 10 frames, then never again (the client stopped reading):
    the replay ends, the client is told ``recovered: false`` at the group's offset and
    goes on from there with live messages, instead of reconnecting into the same
    replay (a backlog over the queue's bound was refused forever)."""
    streams, epoch = await _streams_with_backlog(500)
    sent: list[dict] = []

    async def room(size: int, timeout: float) -> bool:
        return len(sent) <= 10

    before = RECOVERY.get(("replay_cut",))
    streams.joined("room.big", sent.append, room)
    await _wait_for(lambda: RECOVERY.get(("replay_cut",)) == before + 1)
    last = json.loads(sent[-1]["text"])
    assert last == {
        "kind": "subscribed", "topic": "room.big", "offset": 500, "epoch": epoch,
        "recovered": False,
    }  # fmt: skip
    assert len(sent) == 1 + 10 + 1
    live = {"group": "room.big", "epoch": epoch, "offset": 501, "frame": {"text": "live"}}
    streams.deliver(live, sent.append)
    assert sent[-1] == {"text": "live"}
