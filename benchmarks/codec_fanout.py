"""End-to-end CPU per delivered message: JSON encoded by every consumer against a
frame encoded once (JSON or protobuf), broadcast to 500 subscribers (issue #5).

One tuned daphne per case, the same Redis, the same clients (2 processes, see
tests/support/fanout_client.py), 100-byte messages:

- json per consumer: ``send_to_group`` of a dict; each consumer's handler runs
  ``json.dumps`` and sends (what a Channels consumer usually does);
- json encoded once: ``broadcast(group, {...})`` (one JSON text frame for everyone);
- protobuf encoded once: ``broadcast(group, codec.encode(StringValue(...)))`` (one
  binary envelope for everyone, ``TunedProtobufWebsocketConsumer``).

Prints daphne CPU µs per delivery, deliveries/s, bytes per frame, and the ratios.

    python benchmarks/codec_fanout.py [--subscribers 500] [--messages 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from google.protobuf.wrappers_pb2 import StringValue  # noqa: E402

from benchmarks.fanout import payload, run_case  # noqa: E402
from channels_tuning.broadcast import broadcast, send_to_group  # noqa: E402
from channels_tuning.wire.codecs import ProtobufCodec  # noqa: E402
from tests.support.processes import start_redis, stop_process  # noqa: E402

CODEC = ProtobufCodec(StringValue)


async def json_per_consumer(layer, group: str, i: int) -> None:
    event = {"type": "chat.message", "data": {"text": payload(i), "seq": i}}
    await send_to_group(group, event, on_full="wait", timeout=60, layer=layer)


async def json_once(layer, group: str, i: int) -> None:
    await broadcast(group, {"text": payload(i), "seq": i}, on_full="wait", timeout=60, layer=layer)


async def protobuf_once(layer, group: str, i: int) -> None:
    frame = CODEC.encode(StringValue(value=payload(i)), topic=group, seq=i)
    await broadcast(group, frame, on_full="wait", timeout=60, layer=layer)


CASES = {
    "json per consumer": ("/ws/json-per-consumer/", json_per_consumer),
    "json encoded once": ("/ws/group/", json_once),
    "protobuf encoded once": ("/ws/proto/", protobuf_once),
}
FRAME_BYTES = {
    "json per consumer": len(json.dumps({"text": payload(0), "seq": 0})),
    "json encoded once": len(json.dumps({"text": payload(0), "seq": 0}, separators=(",", ":"))),
    "protobuf encoded once": len(CODEC.encode(StringValue(value=payload(0)), topic="g", seq=1)),
}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--messages", type=int, default=2000)
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        redis = start_redis(tmp)
        try:
            for name, (route, publish) in CASES.items():
                row = await run_case(
                    "tuned",
                    redis,
                    options.subscribers,
                    options.messages,
                    None,
                    tmp,
                    route=route,
                    publish=publish,
                )
                row["kind"] = name
                rows.append(row)
        finally:
            stop_process(redis.proc)
    print(f"\n{options.subscribers} subscribers, {options.messages} x ~100 B messages, unthrottled")
    print(
        "| case | bytes per frame | delivered/expected | deliveries/s "
        "| daphne µs CPU per delivery |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['kind']} | {FRAME_BYTES[r['kind']]} | {r['got']}/{r['expected']} "
            f"| {r['deliveries_per_s']:.0f} | {r['us_per_delivery']:.1f} |"
        )
    per_consumer = rows[0]["us_per_delivery"]
    print(
        "ratios, CPU per delivery against json per consumer: "
        + ", ".join(
            f"{r['kind']} {per_consumer / r['us_per_delivery']:.2f}x less" for r in rows[1:]
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
