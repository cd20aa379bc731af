"""What a group send's read of its group costs, by the group's size.

A group send on the tuned Redis layer (as on channels-redis) first reads every member
of the group (``ZRANGE`` of the group's sorted set: each member's channel name), then
writes the message once per receiving process. The write grows with the processes;
the read grows with the members. Per size, against a real redis-server: the group
filled by the layer's own membership refresh, then the layer's read of it timed
(``RedisChannelLayer._group_members``, what every ``group_send`` and ``broadcast()``
runs first):

- Redis's CPU per read (its ``commandstats`` for ``ZRANGE``, in µs);
- the producer's time per read, the round trip and redis-py's parse of the reply
  (with or without ``hiredis``, as installed: the output says which);
- the longest the producer's event loop was held at a time meanwhile (a task that
  wakes every millisecond sees the gaps): what a server whose handler sends to the
  group makes its other connections wait.

    python benchmarks/group_members.py [--members 1000,19000,99000] [--reads 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.c100k import commandstats  # noqa: E402
from channels_tuning.layers import RedisChannelLayer  # noqa: E402
from channels_tuning.layers.redis.membership import refresh_groups  # noqa: E402
from tests.support.processes import start_redis, stop_process  # noqa: E402


def zrange_usec(layer: RedisChannelLayer) -> tuple[int, int]:
    """Redis's ZRANGE calls and µs so far."""
    figures = commandstats(layer.hosts[0]["address"]).get("zrange", {})
    return int(figures.get("calls", 0)), int(figures.get("usec", 0))


async def longest_hold() -> float:
    """Until cancelled: the longest gap between two wake-ups 1 ms apart, less the 1 ms."""
    longest = 0.0
    last = time.perf_counter()
    try:
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last - 0.001)
            last = now
    except asyncio.CancelledError:
        return longest


async def measure(url: str, members: int, reads: int) -> dict:
    layer = RedisChannelLayer(hosts=[url])
    group = f"members-{members}"
    try:
        channels = [await layer.new_channel() for _ in range(members)]
        await refresh_groups(layer, {group: channels})
        read, _ = await layer._group_members(group)  # warm: the connection is made
        assert len(read) == members, (len(read), members)
        calls_before, usec_before = zrange_usec(layer)
        watching = asyncio.create_task(longest_hold())
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        for _ in range(reads):
            await layer._group_members(group)
        producer = (time.perf_counter() - started) / reads
        watching.cancel()
        held = await watching
        calls_after, usec_after = zrange_usec(layer)
    finally:
        await layer.close_pools()
    assert calls_after - calls_before == reads
    return {
        "members": members,
        "redis_us": (usec_after - usec_before) / reads,
        "producer_ms": producer * 1000,
        "held_ms": held * 1000,
    }


async def run(sizes: list[int], reads: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp_name:
        redis = start_redis(Path(tmp_name))
        try:
            return [await measure(redis.url, members, reads) for members in sizes]
        finally:
            stop_process(redis.proc)


def main() -> None:
    from redis.utils import HIREDIS_AVAILABLE

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", default="1000,19000,99000")
    parser.add_argument("--reads", type=int, default=20)
    args = parser.parse_args()
    rows = asyncio.run(run([int(n) for n in args.members.split(",")], args.reads))
    parser_name = "hiredis" if HIREDIS_AVAILABLE else "redis-py's own parser"
    print(
        f"| group members | Redis CPU per read, µs | producer per read, ms ({parser_name}) "
        "| longest hold of the producer's loop, ms |"
    )
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['members']} | {row['redis_us']:.0f} | {row['producer_ms']:.1f} "
            f"| {row['held_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
