"""broadcast(ack=True) end to end: two channels-tuning-daphne processes sharing
Redis, 500 clients of the package's Python client of which 20 never read, a
producer in this process (issue #28)."""

from __future__ import annotations

import asyncio
import time

import pytest
import websockets

from channels_tuning.broadcast import broadcast
from channels_tuning.client import ReconnectingClient
from channels_tuning.wire.subprotocol import SUBPROTOCOL

CLIENTS = 500
NOT_READING = 20
GROUP = "acks-e2e"


@pytest.mark.slow
async def test_500_clients_of_which_20_do_not_read_are_reported_480_and_20(
    daphne_factory, redis_or_cluster
):
    """On one Redis and on a Redis Cluster (the acknowledgements' reply channel too)."""
    quiet = {"RATE_LIMIT": None, "IDLE_TIMEOUT": 120, "HEARTBEAT_INTERVAL": 60}
    servers = [daphne_factory(tuned=True, redis=redis_or_cluster, tuning=quiet) for _ in range(2)]
    urls = [server.ws(f"/ws/group/{GROUP}/") for server in servers]
    received: list[object] = []
    clients = [
        ReconnectingClient(urls[n % 2], codec="json", on_message=received.append)
        for n in range(CLIENTS - NOT_READING)
    ]
    # Clients that offered the package's protocol and then never read a frame.
    silent = [
        await websockets.connect(urls[n % 2], subprotocols=[SUBPROTOCOL])
        for n in range(NOT_READING)
    ]
    layer = redis_or_cluster.layer()
    try:
        for start in range(0, len(clients), 50):  # 50 handshakes at a time
            batch = clients[start : start + 50]
            for client in batch:
                client.start()
            await asyncio.gather(*(client.wait_open(30) for client in batch))
        began = time.monotonic()
        report = await broadcast(GROUP, {"alert": "fire drill"}, ack=True, timeout=5, layer=layer)
        took = time.monotonic() - began
        print(
            f"ack report of {CLIENTS} clients in {took:.2f} s: {report.acknowledged} "
            f"acknowledged, {report.not_in_time} not in time, {report.not_reached} not "
            f"reached, over {report.delivery.processes} processes"
        )
        assert report.delivery.receivers == CLIENTS and report.delivery.processes == 2
        assert (report.acknowledged, report.not_in_time) == (CLIENTS - NOT_READING, NOT_READING)
        assert (report.not_reached, report.cannot_acknowledge) == (0, 0)
        assert 5 <= took < 5 + 2  # the timeout: 20 never answer (the final reports end it)
        assert received.count({"alert": "fire drill"}) == CLIENTS - NOT_READING

        # Everyone reads: the call returns when the last answer is in, not at the timeout.
        for ws in silent:
            await ws.close()
        await asyncio.sleep(0.5)  # their consumers leave the group
        began = time.monotonic()
        report = await broadcast(GROUP, "second", ack=True, timeout=5, layer=layer)
        took = time.monotonic() - began
        print(f"all {report.acknowledged} acknowledged in {took:.2f} s")
        assert (report.acknowledged, report.not_in_time, report.not_reached) == (480, 0, 0)
        assert took < 3
    finally:
        await asyncio.gather(*(client.close() for client in clients))
        await layer.close_pools()
    for server in servers:
        counted = server.stats()["counters"].get("channels_tuning_client_requests_total", {})
        assert not any("late" in key or "malformed" in key for key in counted), counted
