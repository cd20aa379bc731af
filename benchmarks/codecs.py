"""Codec and pool micro-benchmark (issue #5): bytes on the wire, time per message,
allocations and GC collections, for a small (~100 B) and a larger (~4 KB) message.

- json: ``JsonCodec`` (stdlib json) with the message as a dict;
- protobuf: ``ProtobufCodec``, fresh objects per message;
- protobuf pooled: the same with pooled objects (``benchmarks.pools.PooledProtobufCodec`` on decode;
  on encode an ``ObjectPool`` of envelopes, filled, serialized and cleared).

Also frame assembly (2-byte WebSocket header + payload) with ``bytes`` against a
``BufferPool`` of bytearrays. The user message is modelled with the Envelope type
itself (8 fields: ints, strings, bytes), so no extra .proto is needed.

    python benchmarks/codecs.py [--n 200000]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.pools import BufferPool, ObjectPool, PooledProtobufCodec
from channels_tuning.wire.codecs import JsonCodec, ProtobufCodec, Received
from channels_tuning.wire.proto.envelope_pb2 import Envelope

UserMessage = Envelope  # stands in for the user's message type


def astuple_of(r: Received) -> tuple:
    return (r.kind, r.message, r.seq, r.topic, r.type_url, r.sent_at_ms, r.error_code, r.error)


def message_fields(size: int) -> dict:
    return {
        "kind": 1,
        "seq": 123456,
        "topic": "room-42",
        "type_url": "chat.Message",
        "sent_at_ms": 1_764_000_000_000,
        "error": "x" * max(0, size - 60),
    }


def per_op(function: Callable[[], object], n: int) -> tuple[float, float, int]:
    """(µs per call, blocks held per result, gen0 collections per 10k calls)."""
    for _ in range(min(n, 2000)):
        function()
    collections = gc.get_stats()[0]["collections"]
    started = time.perf_counter()
    for _ in range(n):
        function()
    elapsed = time.perf_counter() - started
    gen0 = gc.get_stats()[0]["collections"] - collections
    # Memory blocks held by each call's result (the decoded objects, the frame).
    blocks_before = sys.getallocatedblocks()
    kept = [function() for _ in range(1000)]
    blocks = (sys.getallocatedblocks() - blocks_before) / 1000
    del kept
    return elapsed / n * 1e6, blocks, gen0 * 10_000 // n


def run(size: int, n: int) -> list[tuple[str, float, float, float, int]]:
    fields = message_fields(size)
    user = UserMessage(**fields)
    as_dict = {key: value for key, value in fields.items()}
    json_codec, proto_codec = JsonCodec(), ProtobufCodec(UserMessage)
    pooled_codec = PooledProtobufCodec(UserMessage)
    json_frame = json_codec.encode(as_dict, topic="room-42", seq=7)
    proto_frame = proto_codec.encode(user, topic="room-42", seq=7)
    pool: ObjectPool[Envelope] = ObjectPool(Envelope, Envelope.Clear)
    payload = user.SerializeToString()

    def pooled_encode() -> bytes:
        envelope = pool.acquire()
        envelope.kind, envelope.topic, envelope.seq = 1, "room-42", 7
        envelope.payload = payload
        frame = envelope.SerializeToString()
        pool.release(envelope)
        return frame

    def fresh_encode() -> bytes:
        return Envelope(kind=1, topic="room-42", seq=7, payload=payload).SerializeToString()

    cases = [
        (
            "json encode",
            len(json_frame.encode()),
            lambda: json_codec.encode(as_dict, topic="room-42", seq=7),
        ),
        ("json decode", len(json_frame.encode()), lambda: json_codec.decode(json_frame)),
        (
            "protobuf encode",
            len(proto_frame),
            lambda: proto_codec.encode(user, topic="room-42", seq=7),
        ),
        ("protobuf decode", len(proto_frame), lambda: proto_codec.decode(proto_frame)),
        (
            # The envelope's fields are read lazily: this row reads every one of them.
            "protobuf decode, every field read",
            len(proto_frame),
            lambda: astuple_of(proto_codec.decode(proto_frame)),
        ),
        (
            "protobuf decode, pooled envelope",
            len(proto_frame),
            lambda: pooled_codec.decode(proto_frame),
        ),
        ("envelope encode, fresh", len(proto_frame), fresh_encode),
        ("envelope encode, pooled", len(proto_frame), pooled_encode),
    ]
    buffers = BufferPool()
    header = b"\x82\x7e" + len(proto_frame).to_bytes(2, "big")

    def assemble_bytes() -> bytes:
        return header + proto_frame

    def assemble_pooled() -> bytes:
        buffer = buffers.acquire()
        buffer += header
        buffer += proto_frame
        frame = bytes(buffer)  # the transport needs bytes: one copy anyway
        buffers.release(buffer)
        return frame

    cases += [
        ("frame assembly, bytes", len(header) + len(proto_frame), assemble_bytes),
        ("frame assembly, BufferPool", len(header) + len(proto_frame), assemble_pooled),
    ]
    return [(name, wire, *per_op(function, n)) for name, wire, function in cases]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    options = parser.parse_args()
    for size in (100, 4096):
        rows = run(size, options.n)
        print(f"\nmessage of ~{size} B ({options.n} calls per case)")
        print("| case | bytes on the wire | µs per call | blocks per result | gen0 GCs per 10k |")
        print("|---|---|---|---|---|")
        for name, wire, micros, blocks, gen0 in rows:
            print(f"| {name} | {wire} | {micros:.2f} | {blocks:.1f} | {gen0} |")
        timing = {name: micros for name, _, micros, _, _ in rows}
        print(
            "ratios: json/protobuf encode "
            f"{timing['json encode'] / timing['protobuf encode']:.2f}x, decode "
            f"{timing['json decode'] / timing['protobuf decode']:.2f}x (every field read "
            f"{timing['json decode'] / timing['protobuf decode, every field read']:.2f}x); "
            "pooled/fresh decode "
            f"{timing['protobuf decode, pooled envelope'] / timing['protobuf decode']:.2f}, "
            f"encode {timing['envelope encode, pooled'] / timing['envelope encode, fresh']:.2f}, "
            "frame assembly "
            f"{timing['frame assembly, BufferPool'] / timing['frame assembly, bytes']:.2f}"
        )


if __name__ == "__main__":
    main()
