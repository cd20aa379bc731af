"""The envelope, the codecs, the pools, the protobuf consumer and the channels-redis
serializer (issue #5). End-to-end through daphne: tests/e2e/test_protobuf.py."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import random
import re
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator
from google.protobuf.wrappers_pb2 import BytesValue, StringValue
from hypothesis import given, settings
from hypothesis import strategies as st

from channels_tuning import TunedProtobufWebsocketConsumer
from channels_tuning.runtime.counters import CLOSES
from channels_tuning.wire.codecs import KINDS, DecodeError, JsonCodec, ProtobufCodec, type_url
from channels_tuning.wire.heartbeat import PING_BYTES, PONG_BYTES
from channels_tuning.wire.proto import generate
from channels_tuning.wire.proto.envelope_pb2 import Envelope
from channels_tuning.wire.subprotocol import SUBPROTOCOL

PROTO_DIR = Path(generate.__file__).parent

envelope_fields = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(sorted(KINDS)),
        "topic": st.text(max_size=40),
        "seq": st.integers(0, 2**64 - 1),
        "sent_at_ms": st.integers(-(2**63), 2**63 - 1),
        "error_code": st.integers(0, 2**32 - 1),
        "error": st.text(max_size=40),
    }
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def serialized_descriptor(module_source: str) -> bytes:
    literal = re.search(r"AddSerializedFile\((b'.*?')\)\n", module_source, re.S).group(1)
    return ast.literal_eval(literal)


def test_committed_generated_code_is_current(tmp_path):
    """The committed code describes envelope.proto as it is now, and comes from the
    oldest supported runtime's protoc (so that runtime can load it)."""
    generate.generate(tmp_path)
    committed = (PROTO_DIR / "envelope_pb2.py").read_text()
    fresh = (tmp_path / "envelope_pb2.py").read_text()
    assert serialized_descriptor(committed) == serialized_descriptor(fresh), (
        "envelope_pb2.py is stale: see channels_tuning/wire/proto/generate.py"
    )
    assert f"# Protobuf Python Version: {generate.OLDEST_PROTOBUF}." in committed
    assert "ValidateProtobufRuntimeVersion" not in committed  # no gate on newer runtimes


@settings(max_examples=500, deadline=None)
@given(envelope_fields, st.text(max_size=200))
def test_protobuf_codec_round_trips_any_envelope(fields, text):
    codec = ProtobufCodec(StringValue)
    kind = fields.pop("kind")
    message = StringValue(value=text) if kind in ("data", "push") else None
    frame = codec.encode(message, kind=kind, **fields)
    assert frame and frame[0] != 0  # never empty, never a heartbeat frame
    received = codec.decode(frame)
    assert (received.kind, received.message) == (kind, message)
    assert (received.topic, received.seq, received.sent_at_ms) == (
        fields["topic"],
        fields["seq"],
        fields["sent_at_ms"],
    )
    assert (received.error_code, received.error) == (fields["error_code"], fields["error"])


@settings(max_examples=500, deadline=None)
@given(envelope_fields, json_values)
def test_json_codec_round_trips_any_envelope(fields, value):
    codec = JsonCodec()
    kind = fields.pop("kind")
    received = codec.decode(codec.encode(value, kind=kind, **fields))
    assert (received.kind, received.message, received.topic) == (kind, value, fields["topic"])
    assert (received.seq, received.sent_at_ms, received.error) == (
        fields["seq"],
        fields["sent_at_ms"],
        fields["error"],
    )


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_protobuf_decoder_raises_only_decode_error_on_arbitrary_bytes(data):
    for codec in (ProtobufCodec(StringValue), ProtobufCodec(BytesValue)):
        with contextlib.suppress(DecodeError):
            codec.decode(data)


def test_protobuf_decoder_on_300k_random_frames():
    rng = random.Random(1234)
    codec = ProtobufCodec(StringValue)
    valid = codec.encode(StringValue(value="hello"), topic="room", seq=7)
    failures = 0
    for i in range(300_000):
        if i % 2:
            data = rng.randbytes(rng.randrange(0, 64))
        else:  # mutate a valid frame: the interesting near-misses
            data = bytearray(valid)
            data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        try:
            codec.decode(data)
        except DecodeError:
            failures += 1
    assert 0 < failures < 300_000


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=100) | st.binary(max_size=100))
def test_json_decoder_raises_only_decode_error(data):
    with contextlib.suppress(DecodeError):
        JsonCodec().decode(data)


def test_an_all_default_message_still_makes_a_non_empty_frame():
    codec = ProtobufCodec(StringValue)
    assert StringValue().SerializeToString() == b""
    frame = codec.encode(StringValue())
    assert frame == b"\x08\x01"  # kind=DATA
    assert codec.decode(frame).message == StringValue()
    assert codec.encode(None, kind="pong") == b"\x08\x03"


def test_types_registry_picks_the_class_by_type_url():
    types = {type_url(StringValue): StringValue, type_url(BytesValue): BytesValue}
    codec = ProtobufCodec(types=types)
    received = codec.decode(codec.encode(BytesValue(value=b"\x00\x01")))
    assert received.type_url == "type.googleapis.com/google.protobuf.BytesValue"
    assert received.message == BytesValue(value=b"\x00\x01")
    unknown = Envelope(kind=Envelope.DATA, type_url="type.googleapis.com/nope").SerializeToString()
    with pytest.raises(DecodeError, match="unknown type_url"):
        codec.decode(unknown)


# --------------------------------------------------------------- consumer


class ProtoEcho(TunedProtobufWebsocketConsumer):
    message_class = StringValue

    async def receive_message(self, message, received):
        await self.send_message(StringValue(value=message.value[::-1]), seq=received.seq)


async def test_protobuf_consumer_echoes_typed_messages_and_answers_pings():
    client = WebsocketCommunicator(ProtoEcho.as_asgi(), "/ws/", subprotocols=[SUBPROTOCOL])
    await client.connect()
    codec = ProtoEcho.codec
    await client.send_to(bytes_data=codec.encode(StringValue(value="abc"), seq=4))
    reply = codec.decode(await client.receive_from())
    assert (reply.message.value, reply.seq) == ("cba", 4)
    await client.send_to(bytes_data=codec.encode(None, kind="ping", seq=5))
    pong = codec.decode(await client.receive_from())
    assert (pong.kind, pong.seq) == ("pong", 5)
    await client.send_to(bytes_data=PING_BYTES)  # the 2-byte heartbeat frames work too
    assert await client.receive_from() == PONG_BYTES
    await client.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"text_data": "hello"}, 1003),
        ({"bytes_data": b"\xff\xff\xff"}, 1007),
        ({"bytes_data": Envelope(kind=Envelope.DATA, payload=b"\xff").SerializeToString()}, 1007),
        ({"bytes_data": b"\x08\x7f"}, 1007),  # kind 127: unknown
        ({"bytes_data": b"\x08\x08"}, 1007),  # subscribe, to a consumer without topics
    ],
)
async def test_protobuf_consumer_closes_bad_frames_with_documented_codes(frame, code):
    client = WebsocketCommunicator(ProtoEcho.as_asgi(), "/ws/")
    await client.connect()
    await client.send_to(**frame)
    assert (await client.receive_output())["code"] == code
    assert CLOSES.get(("ProtoEcho", str(code))) == 1
    await client.disconnect()


# ------------------------------------------------------------- serializer


async def test_redis_serializer_carries_frames_byte_for_byte(shared_redis):
    from channels_tuning.broadcast import FRAME_TYPE
    from channels_tuning.layers import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[shared_redis.url], serializer_format="channels_tuning")
    frame = ProtoEcho.codec.encode(StringValue(value="x" * 100), topic="room")
    try:
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        await layer.group_send(
            "room", {"type": FRAME_TYPE, "frame": {"type": "websocket.send", "bytes": frame}}
        )
        received = await asyncio.wait_for(layer.receive(channel), 5)
        assert received == {"type": FRAME_TYPE, "frame": {"type": "websocket.send", "bytes": frame}}
        await layer.send(channel, {"type": "chat.message", "text": "other messages: msgpack"})
        assert (await layer.receive(channel))["text"] == "other messages: msgpack"
        # broadcast(exclude=...) adds a key the LayerFrame has no field for: msgpack.
        excluding = {
            "type": FRAME_TYPE,
            "frame": {"type": "websocket.send", "text": "t"},
            "exclude": "specific.x!y",
        }
        await layer.group_send("room", excluding)
        assert await asyncio.wait_for(layer.receive(channel), 5) == excluding
    finally:
        await layer.flush()
        await layer.close_pools()


def test_pool_envelopes_is_deprecated_and_decodes_the_same():
    with pytest.warns(DeprecationWarning, match="removed in 0.3.0"):
        codec = ProtobufCodec(StringValue, pool_envelopes=True)
    received = codec.decode(codec.encode(StringValue(value="a"), topic="room", seq=9))
    assert (received.topic, received.seq, received.message.value) == ("room", 9, "a")


@pytest.mark.parametrize(
    ("module", "replacement"),
    [
        ("channels_tuning.codecs", "channels_tuning.wire.codecs"),
        ("channels_tuning.serializers", "channels_tuning.layers.redis.serializers"),
        ("channels_tuning.server", "channels_tuning.servers.daphne"),
    ],
)
def test_import_paths_kept_from_0_1_warn_and_name_their_replacement(module, replacement):
    import subprocess
    import sys

    code = f"import warnings; warnings.simplefilter('error'); import {module}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "DeprecationWarning" in result.stderr and replacement in result.stderr
    assert "0.3.0" in result.stderr
