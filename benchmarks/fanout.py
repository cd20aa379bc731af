"""Fan-out benchmark: plain Channels + channels-redis against the tuned layer and
consumers, on the same machine, in one run.

500 subscribers on one daphne process (clients in 2 separate processes), a producer
in this process broadcasting 100-byte messages through a real redis-server:

- plain: ``daphne``, a plain ``AsyncWebsocketConsumer`` forwarding each group event
  with ``self.send``, and channels-redis' ``group_send``;
- tuned: ``channels-tuning-daphne``, a ``TunedWebsocketConsumer``, and
  ``broadcast(on_full="wait")`` on ``channels_tuning.layers.RedisChannelLayer``
  (encoded once, queued as a ready frame per subscriber).

Prints delivered/expected, deliveries per second, latency p50/p99, daphne CPU
seconds per 10 000 deliveries (and µs per delivery), and the ratios.

    python benchmarks/fanout.py [--subscribers 500] [--messages 2000] [--paced 200 --rate 5]
    python benchmarks/fanout.py --servers    # the tuned consumers on each ASGI server
    python benchmarks/fanout.py --processes 1,2,3    # sizing: N server processes
    python benchmarks/fanout.py --processes 2 --shards 2    # Redis sharded over 2 servers
    python benchmarks/fanout.py --layouts    # one Redis, 2 shards, a Redis Cluster
    python benchmarks/fanout.py --group-send    # the quickstart's path: group_send + handler
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import websockets

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from channels_redis.core import RedisChannelLayer as PlainRedisLayer  # noqa: E402

from benchmarks.ceiling import start_ceiling  # noqa: E402
from channels_tuning.broadcast import broadcast  # noqa: E402
from channels_tuning.layers import RedisChannelLayer  # noqa: E402
from channels_tuning.servers.guarantees import SERVER_TITLES  # noqa: E402
from tests.support.processes import (  # noqa: E402
    start_daphne,
    start_redis,
    start_subscribers,
    stop_process,
)
from tests.support.redis_cluster import RedisCluster, start_redis_cluster  # noqa: E402

CLIENT_PROCESSES = 2


def cpu_seconds(pid: int) -> float:
    """User and system CPU of ``pid`` so far, in clock ticks (10 ms here): for windows
    of seconds. Shorter ones: :func:`thread_cpu_ns`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """Nanoseconds on a CPU so far per live thread of ``pid`` (the scheduler's
    ``/proc/PID/task/TID/schedstat``); where the kernel keeps none, the whole process
    in clock ticks under key 0. A broadcast to 1 000 connections costs about one tick:
    read in ticks, its CPU per delivery came out 0.0 or 10 µs."""
    readings = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text()
                readings[int(tid)] = int(stat.split()[0])
    return readings or {0: int(cpu_seconds(pid) * 1e9)}


def cpu_seconds_between(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds from one :func:`thread_cpu_ns` reading to a later one: a thread
    counts from the first reading it is in (one that exited in between is left out,
    never negative)."""
    return sum(ns - before.get(tid, 0) for tid, ns in after.items()) / 1e9


def payload(i: int) -> str:
    return f"{i} {time.time():.6f} ".ljust(100, "x")


def gc_totals(daphne, reset_max: bool = False) -> dict:
    stats = daphne.stats(reset_gc_max=reset_max)
    if "gc" not in stats:
        return {
            "collections": [0, 0, 0],
            "pause_ms": 0.0,
            "gen2_ms": 0.0,
            "gen2_max_ms": 0.0,
            "histogram": [[], [], []],
        }
    generations = stats["gc"]["generations"]
    return {
        # The websockets ceiling times its collections without a histogram.
        "histogram": [g.get("histogram", []) for g in generations],
        "collections": [g["collections"] for g in generations],
        "pause_ms": sum(g["pause_total_ms"] for g in generations),
        "gen2_ms": generations[2]["pause_total_ms"],
        "gen2_max_ms": generations[2]["pause_max_ms"],
    }


async def publish_plain(layer, group: str, i: int) -> None:
    await layer.group_send(group, {"type": "relay", "text": payload(i)})


async def publish_tuned(layer, group: str, i: int) -> None:
    await broadcast(group, payload(i), on_full="wait", timeout=60, layer=layer)


async def run_case(
    kind: str,
    redis,
    subscribers: int,
    messages: int,
    rate: float | None,
    tmp: Path,
    tuning: dict | None = None,
    route: str | None = None,
    publish=None,
    server: str | None = None,
    processes: int = 1,
    application: str | None = None,
) -> dict:
    """``processes`` server processes (one by default), ``subscribers`` clients spread
    over them on ``route`` (default: the plain or tuned group consumer), and
    ``messages`` published by ``publish(layer, group, i)`` (default: channels-redis
    group_send for plain, ``broadcast()`` for tuned). ``server``: one of
    tests.support.processes.SERVERS (default: daphne for plain, channels-tuning-daphne
    for tuned); the consumers are tuned unless ``kind`` is plain. ``application``:
    another ASGI application of tests.e2e_asgi (``tests.e2e_asgi:application_behind_auth``
    puts Channels' AuthMiddlewareStack in front)."""
    tuned = kind != "plain"
    # ``redis``: one server, a list of them (shards: channels-redis' hosts list), or a
    # Redis Cluster (tests.support.redis_cluster).
    if isinstance(redis, RedisCluster):
        env = redis.env
        shards = []
    else:
        shards = redis if isinstance(redis, list) else [redis]
        env = {"REDIS_URL": ",".join(shard.url for shard in shards)}
    servers = [
        start_daphne(
            tmp,
            tuned=tuned,
            server=server,
            tuning={
                "HEARTBEAT_INTERVAL": None,
                "IDLE_TIMEOUT": None,
                "RATE_LIMIT": None,
                **(tuning or {}),
            },
            **env,
            **({"application": application} if application else {}),
        )
        for _ in range(processes)
    ]
    group = f"fan-{kind.replace(' ', '-')}-{int(time.time())}"
    route = route or ("/ws/group/" if tuned else "/ws/plain-group/")
    publish = publish or (publish_tuned if tuned else publish_plain)
    hosts = [shard.url for shard in shards]
    if isinstance(redis, RedisCluster):
        layer, group_shard = redis.layer(), redis  # channels-redis has no cluster layer
    else:
        layer = RedisChannelLayer(hosts=hosts) if tuned else PlainRedisLayer(hosts=hosts)
        group_shard = shards[layer.consistent_hash(group)]

    async def subscribed(expected: int) -> bool:
        return int(group_shard.cli("ZCARD", f"asgi:group:{group}")) >= expected

    try:
        row = await drive(
            servers,
            f"{route}{group}/",
            subscribers,
            messages,
            rate,
            subscribed,
            lambda i: publish(layer, group, i),
        )
        row["consumer_drops"] = sum(
            sum(s.stats()["counters"]["channels_tuning_dropped_messages_total"].values())
            for s in servers
        )
    finally:
        await layer.close_pools()
        for each in servers:
            stop_process(each.proc)
    return {"kind": kind, **row}


async def run_ceiling(subscribers: int, messages: int, rate: float | None, tmp: Path) -> dict:
    """The same burst on the ``websockets`` ceiling (benchmarks/ceiling.py): the producer
    sends each message over a WebSocket and the server calls ``websockets.broadcast``."""
    server = start_ceiling(tmp)
    try:
        async with websockets.connect(server.ws("/pub"), max_queue=None) as producer:

            async def subscribed(expected: int) -> bool:
                return server.stats()["connections"] >= expected

            async def publish(i: int) -> None:
                await producer.send(payload(i))

            row = await drive([server], "/sub", subscribers, messages, rate, subscribed, publish)
    finally:
        stop_process(server.proc)
    return {"kind": "websockets (ceiling)", "consumer_drops": 0, **row}


async def drive(servers, path, subscribers, messages, rate, subscribed, publish) -> dict:
    """Subscribers in client processes (at least CLIENT_PROCESSES, one per server at
    least) spread over ``servers`` at ``path``; once ``subscribed(n)`` (n: the
    subscribers started), ``publish(i)`` for
    each message (at ``rate`` per second, or unthrottled): what the clients got, how
    fast, and the servers' CPU (summed) and GC."""
    clients = []
    targets = [servers[i % len(servers)] for i in range(max(CLIENT_PROCESSES, len(servers)))]
    try:
        per_process = subscribers // len(targets)
        # Started together, then each waited for: their handshakes overlap.
        for target in targets:
            clients.append(start_subscribers(target.port, path, per_process, wait_ready=False))
        for client in clients:
            assert client.stdout is not None and client.stdout.readline().strip() == "READY"
        while not await subscribed(per_process * len(targets)):
            await asyncio.sleep(0.1)
        idle_objects = sum(s.stats(gc_collect=True)["gc_tracked"] for s in servers)
        gc_before = [gc_totals(s, reset_max=True) for s in servers]

        def cpu() -> float:
            return sum(cpu_seconds(s.app_pid) for s in servers)

        cpu_before, started = cpu(), time.monotonic()
        for i in range(messages):
            await publish(i)
            if rate:
                await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))
        sent_s = time.monotonic() - started
        reports = [
            json.loads(client.communicate(timeout=600)[0].splitlines()[-1]) for client in clients
        ]
        cpu_used = cpu() - cpu_before
        last = max(0.0, time.monotonic() - started - 3.0)  # minus the clients' quiet wait
        gc_after = [gc_totals(s) for s in servers]
        # A full collection now, as GC_COLLECT_INTERVAL runs one (GC_FREEZE shortens it).
        for s in servers:
            gc_totals(s, reset_max=True)
            s.stats(gc_collect=True)
        full_collection_ms = max(gc_totals(s)["gen2_max_ms"] for s in servers)
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
    got = sum(r["got"] for r in reports)
    latencies = sorted(x for r in reports for x in r["latencies"]) or [0.0]
    return {
        "expected": messages * per_process * len(targets),
        "got": got,
        "deliveries_per_s": got / last if last else 0.0,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "cpu_s": cpu_used,
        "cpu_per_10k": cpu_used / got * 10_000 if got else float("nan"),
        "us_per_delivery": cpu_used / got * 1e6 if got else float("nan"),
        "window_s": last,
        # How hard the producer pushed: an unthrottled burst's latency is queueing
        # behind the server's CPU, so it grows with the server's share of the window.
        "messages": messages,
        "send_s": sent_s,
        "server_busy": cpu_used / last if last else float("nan"),
        "gc_collections": [
            sum(
                after["collections"][g] - before["collections"][g]
                for before, after in zip(gc_before, gc_after, strict=True)
            )
            for g in range(3)
        ],
        "gc_ms": sum(
            a["pause_ms"] - b["pause_ms"] for b, a in zip(gc_before, gc_after, strict=True)
        ),
        "gen2_ms": sum(
            a["gen2_ms"] - b["gen2_ms"] for b, a in zip(gc_before, gc_after, strict=True)
        ),
        "gen2_max_ms": max(a["gen2_max_ms"] for a in gc_after),
        # For the report's plots: the latency distribution (101 quantiles, ms) and the
        # GC pauses of the burst by generation (counts per PAUSE_BUCKETS bucket).
        "latency_quantiles_ms": [
            latencies[round(q / 100 * (len(latencies) - 1))] * 1000 for q in range(101)
        ],
        "gc_histogram": [
            [
                sum(a["histogram"][g][b] for a in gc_after)
                - sum(x["histogram"][g][b] for x in gc_before)
                for b in range(len(gc_after[0]["histogram"][g]))
            ]
            for g in range(3)
        ],
        "idle_objects": idle_objects,
        "full_collection_ms": full_collection_ms,
    }


def table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(
        "| consumers | delivered/expected | dropped (counted) | deliveries/s | p50 ms | p99 ms "
        "| server CPU s per 10k deliveries | µs CPU per delivery |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['kind']} | {r['got']}/{r['expected']} ({100 * r['got'] / r['expected']:.1f} %) "
            f"| {r['consumer_drops']} | {r['deliveries_per_s']:.0f} | {r['p50_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['cpu_per_10k']:.2f} | {r['us_per_delivery']:.1f} |"
        )
    for r in rows:
        print(
            f"{r['kind']}: {r['messages']} messages sent in {r['send_s']:.1f} s, "
            f"server busy {100 * r['server_busy']:.0f} % of a core until the last delivery"
        )
    base = rows[0]
    for r in rows[1:]:
        print(
            f"{r['kind']} / {base['kind']}: delivered {r['got'] / max(base['got'], 1):.2f}x, "
            f"deliveries/s {r['deliveries_per_s'] / max(base['deliveries_per_s'], 1):.2f}x, "
            f"CPU per delivery {r['us_per_delivery'] / base['us_per_delivery']:.2f}x"
        )
    by_kind = {r["kind"]: r for r in rows}
    tuned, ceiling = by_kind.get("tuned"), by_kind.get("websockets (ceiling)")
    if tuned and ceiling:
        print(
            f"tuned / websockets (ceiling): "
            f"deliveries/s {tuned['deliveries_per_s'] / max(ceiling['deliveries_per_s'], 1):.2f}x, "
            f"CPU per delivery {tuned['us_per_delivery'] / ceiling['us_per_delivery']:.2f}x"
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--paced", type=int, default=200, help="messages in the paced run")
    parser.add_argument("--rate", type=float, default=5.0, help="messages/s in the paced run")
    parser.add_argument(
        "--shards",
        type=int,
        default=1,
        help="with --processes: Redis servers the layer shards over (channels-redis hosts)",
    )
    parser.add_argument(
        "--processes",
        default=None,
        help="instead: the tuned burst on 1, 2, ... server processes behind one Redis "
        "(e.g. 1,2,3), for sizing",
    )
    parser.add_argument(
        "--servers",
        action="store_true",
        help="instead: the tuned consumers and broadcast() on each server (daphne, "
        "channels-tuning-daphne, uvicorn, hypercorn), the burst only",
    )
    parser.add_argument(
        "--layouts",
        action="store_true",
        help="instead: the tuned burst on 2 server processes with one Redis, two shards "
        "and a Redis Cluster (3 primaries, a replica each), side by side",
    )
    parser.add_argument(
        "--group-send",
        action="store_true",
        help="instead: the burst by group_send to a handler (the quickstart's path) on "
        "plain Channels and on the package, against broadcast() and the ceiling",
    )
    parser.add_argument(
        "--offered",
        type=float,
        default=None,
        help="with --group-send: the producer paced at this many messages/s instead of "
        "unthrottled (the tail at a rate the server keeps up with, not the race)",
    )
    options = parser.parse_args()
    if options.group_send:
        await compare_group_send(options.subscribers, options.messages, options.offered)
        return
    if options.layouts:
        await compare_layouts(options.subscribers, options.messages)
        return
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        redis = start_redis(tmp)
        if options.processes:
            shards = [redis] + [start_redis(tmp) for _ in range(options.shards - 1)]
            try:
                rows = []
                for count in map(int, options.processes.split(",")):
                    row = await run_case(
                        "tuned",
                        shards if len(shards) > 1 else redis,
                        options.subscribers,
                        options.messages,
                        None,
                        tmp,
                        processes=count,
                    )
                    rows.append({**row, "kind": f"{count} process{'es' if count > 1 else ''}"})
            finally:
                for shard in shards:
                    stop_process(shard.proc)
            table(
                f"tuned, {options.subscribers} subscribers spread over N server processes, "
                f"{options.messages} x 100 B by broadcast(), unthrottled, "
                f"{options.shards} Redis server(s)",
                rows,
            )
            return
        if options.servers:
            try:
                rows = [
                    await run_case(
                        SERVER_TITLES[server],
                        redis,
                        options.subscribers,
                        options.messages,
                        None,
                        tmp,
                        server=server,
                    )
                    for server in ("tuned", "daphne", "uvicorn", "hypercorn")
                ]
            finally:
                stop_process(redis.proc)
            table(
                f"tuned consumers, {options.subscribers} subscribers, {options.messages} x 100 B "
                "by broadcast(), unthrottled, per server",
                rows,
            )
            return
        try:
            burst = [
                await run_case(kind, redis, options.subscribers, options.messages, None, tmp)
                for kind in ("plain", "tuned")
            ]
            burst.append(await run_ceiling(options.subscribers, options.messages, None, tmp))
            paced = [
                await run_case(kind, redis, options.subscribers, options.paced, options.rate, tmp)
                for kind in ("plain", "tuned")
            ]
        finally:
            stop_process(redis.proc)
    n = options.subscribers
    table(f"{n} subscribers, {options.messages} x 100 B, unthrottled", burst)
    table(f"{n} subscribers, {options.paced} x 100 B at {options.rate:g}/s", paced)


async def compare_group_send(subscribers: int, messages: int, offered: float | None) -> None:
    """The burst along the path existing code keeps: ``group_send`` of an event whose
    handler calls ``self.send`` for each subscriber. Plain Channels; the same call on
    the package (``TunedWebsocketConsumer`` handler, the tuned layer,
    ``channels-tuning-daphne``); ``broadcast()``; the ``websockets`` ceiling.
    Unthrottled, the tail is the race between producer and server for two cores
    (docs/benchmarks.md); ``offered`` paces the producer to that many messages/s."""
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        redis = start_redis(tmp)
        try:
            common = (redis, subscribers, messages, offered, tmp)
            rows = [
                await run_case("plain", *common),
                await run_case("tuned", *common, publish=publish_plain),
                await run_case("tuned", *common),
                await run_ceiling(subscribers, messages, offered, tmp),
            ]
        finally:
            stop_process(redis.proc)
    rows[0]["kind"] = "plain Channels, group_send"
    rows[1]["kind"] = "channels-tuning, group_send"
    rows[2]["kind"] = "channels-tuning, broadcast()"
    pace = f"at {offered:g}/s" if offered else "unthrottled"
    table(f"{subscribers} subscribers, {messages} x 100 B, {pace}", rows)


async def compare_layouts(subscribers: int, messages: int) -> None:
    """The tuned burst on 2 server processes, on each Redis layout in turn."""
    rows = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for title in ("one Redis", "2 shards", "Redis Cluster"):
            if title == "Redis Cluster":
                (tmp / "cluster").mkdir()
                cluster = start_redis_cluster(tmp / "cluster")
                stop = cluster.stop
                redis: object = cluster
            else:
                shards = [start_redis(tmp) for _ in range(2 if title == "2 shards" else 1)]
                redis = shards if len(shards) > 1 else shards[0]

                def stop(shards: list = shards) -> None:
                    for shard in shards:
                        stop_process(shard.proc)

            try:
                row = await run_case("tuned", redis, subscribers, messages, None, tmp, processes=2)
            finally:
                stop()
            rows.append({**row, "kind": title})
    table(
        f"tuned, {subscribers} subscribers over 2 server processes, {messages} x 100 B by "
        "broadcast(), unthrottled, per Redis layout",
        rows,
    )


if __name__ == "__main__":
    asyncio.run(main())
