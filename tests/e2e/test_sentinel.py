"""Redis Sentinel (channels-redis' sentinel hosts): the primary is SIGKILLed while a
producer broadcasts; the sentinel promotes the replica, the server and the producer
follow it, delivery resumes, and what was lost is told (issue #15). Real processes:
a primary, its replica and a sentinel (redis-server in sentinel mode)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import pytest
import websockets

from channels_tuning.broadcast import broadcast
from channels_tuning.layers import RedisChannelLayer
from tests.support.processes import start_redis, start_sentinel, stop_process
from tests.support.waiting import wait_until

RATE = 50  # messages per second


def role(server) -> str:
    try:
        return server.cli("ROLE").split()[0]
    except Exception:
        return "down"


@pytest.mark.slow
async def test_failover_while_broadcasting(daphne_factory, tmp_path):
    primary = start_redis(tmp_path)
    replica = start_redis(tmp_path, None, "--replicaof", "127.0.0.1", str(primary.port))
    sentinel = start_sentinel(tmp_path, primary)
    started = [primary, replica, sentinel]
    layer = None
    try:
        await wait_until(lambda: "master_link_status:up" in replica.cli("INFO", "replication"))
        await wait_until(
            lambda: (
                "num-slaves" in sentinel.cli("SENTINEL", "MASTER", "main")
                and sentinel.cli("SENTINEL", "REPLICAS", "main") != ""
            )
        )
        env = {"REDIS_SENTINELS": f"127.0.0.1:{sentinel.port}", "REDIS_MASTER_NAME": "main"}
        tuning = {"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None, "GROUP_REFRESH_INTERVAL": 1}
        server = daphne_factory(tuned=True, tuning=tuning, **env)
        clients = [await websockets.connect(server.ws("/ws/group/failover/")) for _ in range(20)]
        await wait_until(lambda: primary.cli("ZCARD", "asgi:group:failover") == "20")
        layer = RedisChannelLayer(
            hosts=[{"sentinels": [("127.0.0.1", sentinel.port)], "master_name": "main"}]
        )
        received: list[list[int]] = [[] for _ in clients]

        async def read(i: int, ws) -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for frame in ws:
                    received[i].append(int(frame))

        readers = [asyncio.ensure_future(read(i, ws)) for i, ws in enumerate(clients)]
        told: dict[int, str] = {}  # seq -> what the producer was told
        delivered_to: dict[int, int] = {}
        stop = asyncio.Event()

        async def produce() -> None:
            seq, began = 0, time.monotonic()
            while not stop.is_set():
                try:
                    report = await broadcast(
                        "failover", str(seq), on_full="drop", timeout=2, layer=layer
                    )
                    delivered_to[seq] = report.delivered
                    if report.state_lost:
                        told[seq] = "state lost"
                except Exception as exc:  # the producer hears of every failed send
                    told[seq] = type(exc).__name__
                seq += 1
                await asyncio.sleep(max(0.0, began + seq / RATE - time.monotonic()))

        producer = asyncio.ensure_future(produce())
        await asyncio.sleep(1.5)
        killed_at = time.monotonic()
        os.kill(primary.proc.pid, signal.SIGKILL)
        primary.proc.wait()
        await wait_until(lambda: role(replica) == "master", timeout=20)
        promoted_after = time.monotonic() - killed_at
        counts_at_promotion = [len(r) for r in received]
        await wait_until(
            lambda: all(len(r) > c for r, c in zip(received, counts_at_promotion, strict=True)),
            timeout=20,
        )
        resumed_after = time.monotonic() - killed_at
        await asyncio.sleep(2)
        stop.set()
        await producer
        await asyncio.sleep(1)
        for ws in clients:
            await ws.close()
        await asyncio.gather(*readers)

        sent = len(delivered_to) + len(told)
        lost_silently = duplicated = 0
        for numbers in received:
            assert numbers == sorted(numbers), "out of order"
            duplicated += len(numbers) - len(set(numbers))
            got = set(numbers)
            lost_silently += sum(1 for seq in range(sent) if seq not in got and seq not in told)
        print(
            f"\nprimary SIGKILLed: replica promoted after {promoted_after:.1f} s, delivery "
            f"resumed after {resumed_after:.1f} s; {sent} broadcasts, {len(told)} told to "
            f"the producer ({sorted(set(told.values()))}), {lost_silently} deliveries lost "
            f"without a word (of {sent * len(clients)}), {duplicated} duplicated"
        )
        assert resumed_after < 20
        assert duplicated == 0
        # Async replication: what the primary had accepted but not yet sent to its
        # replica is gone, the one loss the producer cannot be told of.
        assert lost_silently <= 2 * len(clients), lost_silently
    finally:
        if layer is not None:
            await layer.close_pools()
        for each in started:
            if each.proc.poll() is None:
                stop_process(each.proc)
