"""/metrics scraped over HTTP from a real daphne process (issue #6)."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from tests.support.rawws import handshake, read_burst, send_text
from tests.support.waiting import wait_until


def labels(**pairs: str) -> frozenset:
    return frozenset(pairs.items())


async def test_metrics_follow_connects_messages_and_drops(daphne_factory):
    daphne = daphne_factory(tuned=True)
    before = daphne.metrics()
    assert before[("channels_tuning_messages_received_total", labels())] == 0

    clients = [await websockets.connect(daphne.ws("/ws/echo/")) for _ in range(3)]
    for ws in clients:
        await ws.send("hello")
        assert await ws.recv() == "hello"
    during = daphne.metrics()
    assert during[("channels_tuning_info", labels(server="tuned daphne"))] == 1
    assert during[("channels_tuning_open_connections", labels(consumer="EchoConsumer"))] == 3
    assert during[("channels_tuning_connections_total", labels(consumer="EchoConsumer"))] == 3
    assert during[("channels_tuning_messages_received_total", labels())] == 3
    assert during[("channels_tuning_messages_sent_total", labels())] == 3
    assert during[("channels_tuning_received_payload_bytes_total", labels())] == 15
    assert during[("channels_tuning_send_queue_depth_gcount", labels())] == 3
    assert during[("channels_tuning_consumer_instances", labels())] == 3
    # A full collection in the server is timed into generation 2 of the histogram.
    daphne.stats(gc_collect=True)
    scraped = daphne.metrics()
    pauses = scraped[("channels_tuning_gc_pause_seconds_count", labels(generation="2"))]
    assert pauses >= 1
    assert scraped[("channels_tuning_gc_pause_seconds_sum", labels(generation="2"))] > 0
    inf_bucket = labels(generation="2", le="+Inf")
    assert scraped[("channels_tuning_gc_pause_seconds_bucket", inf_bucket)] == pauses

    # A client that reads nothing during a 5000 x 1 KiB burst: drop_oldest drops.
    sock, _ = handshake(daphne.port, "/ws/burst/drop_oldest/", rcvbuf=65536)
    send_text(sock, "5000")
    await asyncio.sleep(0.3)
    got, _ = read_burst(sock)
    sock.close()
    dropped_key = (
        "channels_tuning_dropped_messages_total",
        labels(consumer="Burst_drop_oldest", reason="drop_oldest"),
    )
    await wait_until(lambda: daphne.metrics().get(dropped_key) == 5000 - len(got))

    for ws in clients:
        await ws.close()
    await wait_until(
        lambda: (
            (
                "channels_tuning_open_connections",
                labels(consumer="EchoConsumer"),
            )
            not in daphne.metrics()
        )
    )
    after = daphne.metrics()
    assert after[("channels_tuning_messages_sent_total", labels())] >= 3 + len(got)

    # Over the per-consumer limit (3): refused with 1013, counted twice.
    limited = [await websockets.connect(daphne.ws("/ws/limited/")) for _ in range(4)]
    with pytest.raises(websockets.ConnectionClosed) as refused:
        await limited[3].recv()
    assert refused.value.rcvd.code == 1013
    refusals = daphne.metrics()
    assert (
        refusals[("channels_tuning_closes_total", labels(consumer="LimitedConsumer", code="1013"))]
        == 1
    )
    rejected = [
        value
        for (name, pairs), value in refusals.items()
        if name == "channels_tuning_rejected_connections_total"
        and dict(pairs)["consumer"] == "LimitedConsumer"
    ]
    assert rejected == [1]
    for ws in limited:
        await ws.close()
