"""The Python client's backoff schedule and close-code policy, and its behaviour
against a local ``websockets`` server (daphne end-to-end: tests/e2e/test_client.py)."""

from __future__ import annotations

import asyncio
import random
import statistics

import pytest
import websockets

from channels_tuning.client import Backoff, ReconnectingClient, reconnect_delay
from tests.support.waiting import until


def test_backoff_caps_grow_by_the_factor_up_to_the_maximum():
    backoff = Backoff(initial_delay=0.5, factor=2.0, max_delay=20.0)
    assert [backoff.cap(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 20, 20]
    assert backoff.cap(10_000) == 20.0  # no overflow for absurd attempt counts


def test_full_jitter_stays_within_bounds_and_spreads_uniformly():
    backoff, rng = Backoff(), random.Random(7)
    for attempt in range(10):
        delays = [backoff.delay(attempt, rng.random) for _ in range(5000)]
        cap = backoff.cap(attempt)
        assert min(delays) >= 0 and max(delays) <= cap
        # Uniform on [0, cap]: mean cap/2, and every tenth of the range is used.
        assert statistics.mean(delays) == pytest.approx(cap / 2, rel=0.05)
        deciles = {int(10 * d / cap) for d in delays}
        assert deciles >= set(range(10))


def test_close_code_policy():
    backoff, always_max = Backoff(), (lambda: 1.0)
    for code in (1000, 1003, 1007, 1009):
        assert reconnect_delay(code, 0, backoff, 10.0) is None
    assert reconnect_delay(1001, 5, backoff, 10.0, always_max) == 0.5  # at once, jittered
    assert reconnect_delay(1013, 2, backoff, 10.0, always_max) == 12.0  # later: 10 + 2
    assert reconnect_delay(1008, 0, backoff, 10.0, lambda: 0.0) == 10.0
    for code in (1006, 1011, 1012, 4000, 4001):
        assert reconnect_delay(code, 3, backoff, 10.0, always_max) == 4.0


async def serve(handler):
    return await websockets.serve(handler, "127.0.0.1", 0)


async def test_attempts_grow_then_reset_after_a_stable_connection():
    opened = 0

    async def handler(ws):
        nonlocal opened
        opened += 1
        if opened == 4:
            await asyncio.sleep(0.3)  # longer than stable_after: a stable connection
        await ws.close(1011)

    server = await serve(handler)
    port = server.sockets[0].getsockname()[1]
    attempts: list[int] = []
    client = ReconnectingClient(
        f"ws://127.0.0.1:{port}/",
        backoff=Backoff(initial_delay=0.01, max_delay=0.05),
        stable_after=0.2,
        on_reconnecting=lambda delay, attempt, code: attempts.append(attempt),
    )
    client.start()
    await until(lambda: len(attempts) >= 6)
    await client.close()
    server.close()
    assert attempts[:6] == [1, 2, 3, 1, 2, 3]


async def test_stops_on_a_do_not_come_back_code_and_reports_it():
    async def handler(ws):
        await ws.close(1003, "binary only")

    server = await serve(handler)
    port = server.sockets[0].getsockname()[1]
    closes: list[tuple[int, str]] = []
    client = ReconnectingClient(f"ws://127.0.0.1:{port}/", on_close=lambda *c: closes.append(c))
    client.start()
    await asyncio.wait_for(client.wait_closed(), 5)
    server.close()
    assert closes == [(1003, "binary only")] and client.connections == 1


async def test_max_attempts_stops_reconnecting():
    client = ReconnectingClient(
        "ws://127.0.0.1:9/",  # nothing listens on the discard port
        backoff=Backoff(initial_delay=0.01, max_delay=0.01),
        max_attempts=3,
    )
    client.start()
    await asyncio.wait_for(client.wait_closed(), 5)
    assert (client.state, client.attempt, client.connections) == ("closed", 4, 0)


def test_keeps_at_most_the_newest_32_topic_positions_and_asks_for_no_more():
    """A client of a consumer with more history groups than a server accepts recovery
    requests for must not be refused (1008) on every reconnect."""
    client = ReconnectingClient("ws://127.0.0.1:1/ws/?room=1", codec="json")
    for i in range(40):
        client._track({"kind": "data", "topic": f"t{i}", "offset": 1, "epoch": "e"})
    client._track({"kind": "data", "topic": "t0", "offset": 2, "epoch": "e"})  # seen again
    assert len(client.positions) == 32
    assert "t0" in client.positions and "t8" not in client.positions  # the oldest went
    assert client.connect_url().count("ct_recover=") == 32
    assert "room=1" in client.connect_url()
