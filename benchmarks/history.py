"""Cost of group history and presence on a real redis-server.

- producer time per ``broadcast()`` of a 100 B payload to a group with one member
  process, without and with history (the history adds one Lua script: ``XADD`` and
  the offset counter), sequential and with 32 concurrent producers;
- Redis memory per kept message (``used_memory`` growth over ``--kept`` messages,
  100 B each, divided by their count);
- the read of a recovery: ``recover()`` of the last 1000 messages;
- Redis memory per presence entry (``MEMORY USAGE`` of a group's sorted set with
  ``--entries`` entries, divided by their count).

    python benchmarks/history.py [--broadcasts 5000] [--kept 10000] [--entries 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure(
    CHANNELS_TUNING={
        "HISTORY": {"hist.*": {"size": 1_000_000, "ttl": 600}},
        "PRESENCE": {"pres.*": {}},
    }
)
django.setup()

from channels_tuning.broadcast import broadcast  # noqa: E402
from channels_tuning.layers import RedisChannelLayer  # noqa: E402
from channels_tuning.layers.history import HistoryPolicy  # noqa: E402
from channels_tuning.wire.offsets import StreamPosition  # noqa: E402
from tests.support.processes import start_redis, stop_process  # noqa: E402

PAYLOAD = {"text": "x" * 88}  # 100 B of JSON


def used_memory(redis) -> int:
    info = redis.cli("INFO", "memory")
    return int(
        next(line for line in info.splitlines() if line.startswith("used_memory:")).split(":")[1]
    )


async def per_broadcast(layer, group: str, count: int, concurrency: int) -> float:
    """Microseconds of producer wall time per broadcast."""
    # One member in a process whose inbox is drained by a task: a real group send.
    await layer.group_add(group, "specific.bench!member")
    stop = asyncio.Event()

    async def drain() -> None:
        while not stop.is_set():
            await layer.receive("specific.bench!member")

    drainer = asyncio.ensure_future(drain())
    per_worker = count // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await broadcast(group, PAYLOAD, on_full="drop", layer=layer)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    stop.set()
    drainer.cancel()
    return elapsed / (per_worker * concurrency) * 1e6


async def main(options: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        redis = start_redis(Path(tmp))
        layer = RedisChannelLayer(hosts=[redis.url])
        try:
            rows = []
            for concurrency in (1, 32):
                plain = statistics.median(
                    [
                        await per_broadcast(layer, "plain.g", options.broadcasts, concurrency)
                        for _ in range(3)
                    ]
                )
                kept = statistics.median(
                    [
                        await per_broadcast(layer, "hist.g", options.broadcasts, concurrency)
                        for _ in range(3)
                    ]
                )
                rows.append((concurrency, plain, kept))
            policy = HistoryPolicy(options.kept, 600)
            before = used_memory(redis)
            data = b'{"text":"' + b"x" * 88 + b'"}'
            for _ in range(options.kept):
                await layer.history.append("hist.mem", data, False, policy)
            per_message = (used_memory(redis) - before) / options.kept
            offset, epoch = await layer.history.append("hist.mem", data, False, policy)
            began = time.perf_counter()
            recovery = await layer.history.recover(
                "hist.mem", StreamPosition(epoch, offset - 1000), policy
            )
            replay_ms = (time.perf_counter() - began) * 1000
            assert recovery.recovered and len(recovery.entries) == 1000
            store = layer.presence
            for i in range(options.entries):
                await store._store_add("pres.mem", f"specific.abcdefgh!{i:012x}", str(100000 + i))
            key = f"{layer.prefix}:ct:pres:pres.mem"
            per_entry = int(redis.cli("MEMORY", "USAGE", key)) / options.entries
            assert await store.count("pres.mem") == options.entries
            began = time.perf_counter()
            for _ in range(100):
                await store.count("pres.mem")
            count_us = (time.perf_counter() - began) / 100 * 1e6
        finally:
            await layer.close_pools()
            stop_process(redis.proc)
    print("broadcast() of 100 B to a group of one process, producer wall time per broadcast:")
    for concurrency, plain, kept in rows:
        print(
            f"  {concurrency:>2} producer(s): {plain:6.0f} µs without history, {kept:6.0f} µs with "
            f"(+{kept - plain:.0f} µs, x{kept / plain:.2f})"
        )
    print(f"history: {per_message:.0f} B of Redis memory per kept 100 B message")
    print(f"recovery read of 1000 messages: {replay_ms:.1f} ms")
    print(
        f"presence: {per_entry:.0f} B of Redis memory per entry ({options.entries} entries, "
        f"channels-redis channel names); presence_count: {count_us:.0f} µs"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broadcasts", type=int, default=5000)
    parser.add_argument("--kept", type=int, default=10000)
    parser.add_argument("--entries", type=int, default=10000)
    asyncio.run(main(parser.parse_args()))
