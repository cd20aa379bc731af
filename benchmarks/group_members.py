"""What a group send's read of its group, and the whole send, cost by the group's size.

A group send on the tuned Redis layer (as on channels-redis) first reads every member
of the group (``ZRANGE`` of the group's sorted set: each member's channel name), then
maps them to their processes' inboxes and writes the message once per receiving
process. The write grows with the processes; the read and the mapping grow with the
members. Per size, against a real redis-server: the group filled by the layer's own
membership refresh with members of five processes (each saying it is alive, as a
server does), then

- the layer's read of it timed (``RedisChannelLayer._group_members``, what every
  ``group_send`` and ``broadcast()`` runs first): Redis's CPU per read (its
  ``commandstats`` for ``ZRANGE``, in µs) and the producer's time per read, the round
  trip and redis-py's parse of the reply (with or without ``hiredis``, as installed:
  the output says which);
- the whole send timed (``group_send_report``: the read, the mapping to inboxes, one
  script writing the five messages);
- for each, the longest the producer's event loop was held at a time meanwhile (a
  task that wakes every millisecond sees the gaps): what a server whose handler sends
  to the group makes its other connections wait.

    python benchmarks/group_members.py [--members 1000,19000,99000] [--reads 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.c100k import commandstats  # noqa: E402
from channels_tuning.layers import RedisChannelLayer  # noqa: E402
from channels_tuning.layers.redis import keys  # noqa: E402
from channels_tuning.layers.redis.membership import refresh_groups  # noqa: E402
from tests.support.processes import start_redis, stop_process  # noqa: E402


def zrange_usec(layer: RedisChannelLayer) -> tuple[int, int]:
    """Redis's ZRANGE calls and µs so far."""
    figures = commandstats(layer.hosts[0]["address"]).get("zrange", {})
    return int(figures.get("calls", 0)), int(figures.get("usec", 0))


class LongestHold:
    """``async with LongestHold() as hold:``; after the block, ``hold.seconds`` is the
    longest gap between two wake-ups 1 ms apart during it, less the 1 ms."""

    seconds = 0.0

    async def _watch(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.seconds = max(self.seconds, now - last - 0.001)
            last = now

    async def __aenter__(self) -> LongestHold:
        self._task = asyncio.create_task(self._watch())
        await asyncio.sleep(0)  # the watch has started before the block's work
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


#: Server processes the members belong to (as in benchmarks/c100k.py).
PROCESSES = 5


async def measure(url: str, members: int, reads: int) -> dict:
    layer = RedisChannelLayer(hosts=[url])
    processes = [RedisChannelLayer(hosts=[url]) for _ in range(PROCESSES)]
    inboxes = [keys.channel_key(p, keys.process_channel(p)) for p in processes]
    group = f"members-{members}"
    try:
        channels = [
            f"{keys.process_channel(processes[n % PROCESSES])}{n:x}" for n in range(members)
        ]
        await refresh_groups(layer, {group: channels})
        read, _ = await layer._group_members(group)  # warm: the connection is made
        assert sorted(read) == sorted(channels), (len(read), members)
        calls_before, usec_before = zrange_usec(layer)
        async with LongestHold() as held:
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            for _ in range(reads):
                await layer._group_members(group)
            producer = (time.perf_counter() - started) / reads
        calls_after, usec_after = zrange_usec(layer)
        send, send_held = await time_sends(layer, processes, inboxes, group, reads)
    finally:
        for each in [layer, *processes]:
            await each.close_pools()
    assert calls_after - calls_before == reads
    return {
        "members": members,
        "redis_us": (usec_after - usec_before) / reads,
        "producer_ms": producer * 1000,
        "held_ms": held.seconds * 1000,
        "send_ms": send * 1000,
        "send_held_ms": send_held * 1000,
    }


async def time_sends(
    layer: RedisChannelLayer, processes: list, inboxes: list[str], group: str, sends: int
) -> tuple[float, float]:
    """Seconds per ``group_send_report`` to ``group`` and the longest hold of the loop
    during the sends; each send reaches every member in one message per process (the
    processes said they are alive just before; their inboxes emptied after)."""
    connection = layer.connection(0)
    members = await connection.zcard(keys.group_key(layer, group))
    spent = 0.0
    async with LongestHold() as held:
        for _ in range(sends):
            for process in processes:
                await process.mark_alive()
            started = time.perf_counter()
            report = await layer.group_send_report(group, {"type": "bench.event", "n": 1})
            spent += time.perf_counter() - started
            assert (report.receivers, report.processes) == (members, len(processes)), report
            assert report.receivers_over_capacity == report.receivers_gone == 0, report
            await connection.delete(*inboxes)
    return spent / sends, held.seconds


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
        "| longest hold of the producer's loop, ms | whole send, ms | longest hold, ms |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['members']} | {row['redis_us']:.0f} | {row['producer_ms']:.1f} "
            f"| {row['held_ms']:.1f} | {row['send_ms']:.1f} | {row['send_held_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
