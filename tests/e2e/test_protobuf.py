"""Protobuf frames through a real daphne process (issue #5)."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from google.protobuf.wrappers_pb2 import StringValue

from channels_tuning.client import ReconnectingClient, RequestFailed
from channels_tuning.layers import RedisChannelLayer
from channels_tuning.wire.codecs import ProtobufCodec

codec = ProtobufCodec(StringValue)


async def recv_data(ws) -> object:
    """The next envelope of kind data (heartbeat frames skipped)."""
    while True:
        frame = await asyncio.wait_for(ws.recv(), 5)
        received = codec.decode(frame)
        if received.kind == "data":
            return received


@pytest.mark.parametrize("layer", ["memory", "redis"])
async def test_typed_replies_broadcasts_and_bad_frames(daphne_factory, shared_redis, layer):
    daphne = daphne_factory(tuned=True, redis=shared_redis if layer == "redis" else None)
    alice = await websockets.connect(daphne.ws("/ws/proto/room/"))
    bob = await websockets.connect(daphne.ws("/ws/proto/room/"))

    await alice.send(codec.encode(StringValue(value="hello"), seq=1))
    reply = await recv_data(alice)
    assert (reply.message, reply.seq) == (StringValue(value="HELLO"), 1)

    await alice.send(codec.encode(StringValue(value="all:hi room")))
    for ws in (alice, bob):
        received = await recv_data(ws)
        assert (received.message.value, received.topic) == ("hi room", "room")

    await alice.send(b"\x0a\xff\xff")  # not an envelope
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(alice.recv(), 5)
    assert alice.close_code == 1007

    await bob.send("a text frame")
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(bob.recv(), 5)
    assert bob.close_code == 1003

    closes = daphne.stats()["counters"]["channels_tuning_closes_total"]
    assert closes == {"consumer=ProtoConsumer,code=1007": 1, "consumer=ProtoConsumer,code=1003": 1}


async def test_requests_both_ways_in_protobuf_envelopes(daphne_factory, shared_redis):
    """The Python client with a protobuf codec against a real server: its request to
    an @rpc method, the server's request to it and an acknowledged push travel as
    Envelopes (REQUEST, REPLY, PUSH)."""
    daphne = daphne_factory(tuned=True, redis=shared_redis)
    received: asyncio.Queue = asyncio.Queue()
    client = ReconnectingClient(
        daphne.ws("/ws/proto/desk/"), codec=codec, on_message=received.put_nowait
    )
    client.on_request("page.title", lambda params: f"Home of {params['who']}")
    layer = RedisChannelLayer(hosts=[shared_redis.url])
    try:
        client.start()
        await client.wait_open(10)
        assert await client.request("upper", "quiet") == "QUIET"
        with pytest.raises(RequestFailed) as failed:
            await client.request("lower", "X")
        assert failed.value.code == "unknown_method"
        await layer.group_send("desk", {"type": "ask.page", "params": {"who": "ann"}})
        pushed = await asyncio.wait_for(received.get(), 5)
        assert (pushed.kind, pushed.message.value) == ("push", "the page says Home of ann")
        said = await asyncio.wait_for(received.get(), 5)
        assert (said.kind, said.message.value) == ("data", "acknowledged: True")
    finally:
        await client.close()
        await layer.close_pools()
    counted = daphne.stats()["counters"]
    assert counted["channels_tuning_client_requests_total"] == {
        "consumer=ProtoConsumer,outcome=ok": 2  # the request and the push
    }
    assert counted["channels_tuning_requests_total"] == {
        "consumer=ProtoConsumer,outcome=ok": 1,
        "consumer=ProtoConsumer,outcome=unknown_method": 1,
    }
