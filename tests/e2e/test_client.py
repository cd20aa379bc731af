"""The Python client against real daphne processes (issue #7)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import websockets
from google.protobuf.wrappers_pb2 import StringValue

from channels_tuning.client import Backoff, ReconnectingClient
from channels_tuning.wire.codecs import ProtobufCodec
from tests.support.processes import start_daphne, stop_process
from tests.support.waiting import until

FAST_HEARTBEAT = {"HEARTBEAT_INTERVAL": 0.5, "IDLE_TIMEOUT": 1.5, "SCHEDULER_TICK": 0.1}
QUICK = Backoff(initial_delay=0.1, factor=2.0, max_delay=0.5)


@pytest.mark.slow
async def test_heartbeat_replies_keep_an_idle_connection_open(daphne_factory):
    daphne = daphne_factory(tuned=True, tuning=FAST_HEARTBEAT)
    silent = await websockets.connect(daphne.ws("/ws/echo/"), ping_interval=None)
    async with ReconnectingClient(daphne.ws("/ws/echo/"), dead_after=5) as client:
        await client.wait_open(5)
        await asyncio.sleep(4)  # well past IDLE_TIMEOUT (1.5 s)
        assert (client.state, client.connections) == ("open", 1)
        await client.send("still here")
        assert await asyncio.wait_for(client.recv(), 5) == "still here"
    # The same wait without answering pings ends with 4000 (heartbeat timeout).
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(silent.recv(), 5)
    assert silent.close_code == 4000


@pytest.mark.slow
async def test_survives_a_restart_and_bounds_its_outbox(tmp_path):
    daphne = start_daphne(tmp_path, tuned=True)
    reconnecting: list[tuple[float, int, int]] = []
    client = ReconnectingClient(
        daphne.ws("/ws/echo/"),
        backoff=QUICK,
        max_queue=5,
        on_reconnecting=lambda *event: reconnecting.append(event),
    )
    try:
        client.start()
        await client.wait_open(5)
        await client.send("before")
        assert await asyncio.wait_for(client.recv(), 5) == "before"

        stop_process(daphne.proc)  # SIGTERM: the tuned server drains with 1012
        await until(lambda: client.state == "reconnecting")
        assert reconnecting[0][2] == 1012
        for i in range(8):
            await client.send(f"queued {i}")
        assert (len(client.outbox), client.dropped) == (5, 3)  # the oldest three dropped
        await until(lambda: len(reconnecting) >= 3)  # failed attempts while it is down

        daphne = start_daphne(tmp_path, tuned=True, port=daphne.port)
        received = [await asyncio.wait_for(client.recv(), 10) for _ in range(5)]
        assert received == [f"queued {i}" for i in range(3, 8)]
        await client.send("after")
        assert await asyncio.wait_for(client.recv(), 5) == "after"
        assert client.connections == 2 and not client.outbox
    finally:
        await client.close()
        stop_process(daphne.proc)


@pytest.mark.slow
async def test_a_frozen_server_is_detected_by_missing_heartbeats(daphne_factory):
    daphne = daphne_factory(tuned=True, tuning=FAST_HEARTBEAT)
    client = ReconnectingClient(
        daphne.ws("/ws/echo/"), backoff=QUICK, dead_after=1.5, open_timeout=1
    )
    try:
        client.start()
        await client.wait_open(5)
        os.kill(daphne.pid, signal.SIGSTOP)  # alive, silent: no close frame, no RST
        await until(lambda: client.state == "reconnecting", timeout=5)
        assert client.close_code == 1006
        os.kill(daphne.pid, signal.SIGCONT)
        await until(lambda: client.state == "open" and client.connections == 2, timeout=15)
    finally:
        os.kill(daphne.pid, signal.SIGCONT)
        await client.close()


async def test_protobuf_envelopes_and_do_not_come_back_codes(daphne_factory):
    daphne = daphne_factory(tuned=True)
    codec = ProtobufCodec(StringValue)
    async with ReconnectingClient(daphne.ws("/ws/proto/room/"), codec=codec) as client:
        await client.send(StringValue(value="typed"), seq=3)
        reply = await asyncio.wait_for(client.recv(), 5)
        assert (reply.message.value, reply.seq) == ("TYPED", 3)
    closes: list[tuple[int, str]] = []
    raw = ReconnectingClient(daphne.ws("/ws/proto/room/"), on_close=lambda *c: closes.append(c))
    raw.start()
    await raw.wait_open(5)
    await raw.send("a text frame")  # 1003: the client must not come back
    await asyncio.wait_for(raw.wait_closed(), 5)
    assert closes[0][0] == 1003 and raw.connections == 1


async def test_try_again_later_code_gets_the_longer_delay(daphne_factory):
    daphne = daphne_factory(tuned=True)
    holders = [await websockets.connect(daphne.ws("/ws/limited/")) for _ in range(3)]
    delays: list[tuple[float, int, int]] = []
    client = ReconnectingClient(
        daphne.ws("/ws/limited/"),
        backoff=QUICK,
        try_later_delay=0.8,
        on_reconnecting=lambda *event: delays.append(event),
    )
    client.start()
    await until(lambda: len(delays) >= 1)
    delay, _, code = delays[0]
    assert code == 1013 and 0.8 <= delay <= 0.8 + QUICK.cap(0)
    await holders[0].close()  # room again: the next attempt gets in
    await until(lambda: client.state == "open", timeout=10)
    await client.close()
    for ws in holders[1:]:
        await ws.close()


async def test_the_client_sends_an_origin_and_stops_on_a_permanent_refusal(daphne_factory):
    """The example's AllowedHostsOriginValidator refuses a handshake without an Origin
    (HTTP 403): asking again gets the same answer, so the client stops after three in
    a row (daphne also answers 403 when a consumer fails before accepting, which can
    pass) and says why; with ``origin`` it connects."""
    server = daphne_factory(tuned=True, application="example_project.asgi:application")
    refused = ReconnectingClient(server.ws("/ws/echo/"), backoff=Backoff(initial_delay=0.05))
    async with refused:
        await asyncio.wait_for(refused.wait_closed(), 5)
    assert (refused.refused_status, refused.connections, refused.attempt) == (403, 0, 3)
    assert refused.close_reason == "HTTP 403: refused, not retried"

    origin = f"http://127.0.0.1:{server.port}"
    async with ReconnectingClient(
        server.ws("/ws/echo/"), origin=origin, headers={"X-Request-Id": "t1"}
    ) as client:
        await client.wait_open(5)
        await client.send("hello")
        assert await asyncio.wait_for(client.recv(), 5) == "hello"
