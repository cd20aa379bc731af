"""channels-tuning-daphne's periodic loops look at what is due, not at every
connection (channels_tuning/servers/daphne/checkers.py), and still do daphne's work:
keepalive pings go out on time, ended connections are cleaned up."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.processes import start_subscribers
from tests.support.rawws import frame, handshake, read_exact
from tests.support.waiting import wait_until

HELD = 300


def work(server) -> dict:
    return server.stats()["due_checkers"]


@pytest.mark.slow
async def test_idle_connections_cost_the_loops_nothing_until_a_ping_is_due(daphne_factory):
    """300 idle connections, daphne's keepalive every 20 s: over 5 s neither loop looks
    at any of them (daphne's own loops would have looked 300 times a second and 300
    times every two seconds)."""
    server = daphne_factory(tuned=True)
    client = start_subscribers(server.port, "/ws/echo/", HELD)
    try:
        await asyncio.sleep(3)  # past each connection's first check (at the next 2 s run)
        before = await asyncio.to_thread(work, server)
        await asyncio.sleep(5)
        after = await asyncio.to_thread(work, server)
        # Only this test's own HTTP requests for the figures (an HTTP connection is
        # checked every two seconds while it lasts, as daphne does).
        assert after["timeout_checks"] - before["timeout_checks"] <= 4
        assert after["application_checks"] - before["application_checks"] <= 4
        assert after["tracked"] >= HELD
    finally:
        client.kill()
        client.wait()
    # Ended: every connection looked at once or twice, and forgotten by daphne.
    await wait_until(lambda: work(server)["tracked"] <= 1, timeout=15)
    ended = await asyncio.to_thread(work, server)
    assert HELD <= ended["application_checks"] - after["application_checks"] <= 3 * HELD


@pytest.mark.slow
async def test_keepalive_pings_still_keep_answering_clients_alive(daphne_factory):
    """A ping each second, answered by the lean clients' WebSocket code; IDLE_TIMEOUT 3 s
    judges them by those pongs. After 7 s every client is still connected (no 4000),
    and each connection was looked at once per ping: every 1 to 1.05 s (the loop looks
    twenty times a second)."""
    server = daphne_factory(
        tuned=True,
        tuning={"IDLE_TIMEOUT": 3.0, "HEARTBEAT_INTERVAL": 1.0, "SCHEDULER_TICK": 0.2},
        extra_args=("--ping-interval", "1"),
    )
    client = start_subscribers(server.port, "/ws/echo/", HELD)
    try:
        before = await asyncio.to_thread(work, server)
        await asyncio.sleep(7)
        after = await asyncio.to_thread(work, server)
        stats = await asyncio.to_thread(server.stats)
        assert stats["connections"] == HELD
        timeouts = server.counter("channels_tuning_closes_total", "consumer=EchoConsumer,code=4000")
        assert timeouts == 0
        checks = after["timeout_checks"] - before["timeout_checks"]
        assert HELD * 4 <= checks <= HELD * 8, checks
    finally:
        client.kill()
        client.wait()


def pings_until_closed(port: int, answer: bool, limit: float) -> tuple[list[bytes], float | None]:
    """Hold one raw connection for up to ``limit`` seconds, answering the server's
    pings or not; the pings' frames and when the connection ended (None: it stayed)."""
    sock, _ = handshake(port, "/ws/echo/")
    frames: list[bytes] = []
    started = time.monotonic()
    sock.settimeout(0.2)
    try:
        while time.monotonic() - started < limit:
            try:
                head = sock.recv(2)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return frames, time.monotonic() - started
            if not head:
                return frames, time.monotonic() - started
            payload = read_exact(sock, head[1] & 0x7F)
            assert head[0] == 0x89, head  # nothing but pings on an idle echo
            frames.append(head + payload)
            if answer:
                sock.sendall(frame(0xA, payload))
        return frames, None
    finally:
        sock.close()


@pytest.mark.slow
async def test_keepalive_pings_are_prepared_frames_and_silence_is_dropped(daphne_factory):
    """The tuned keepalive (servers/daphne/keepalive.py): every ping_interval an empty
    ping, written as one prepared frame; a client that answers stays, one that answers
    nothing is dropped ping_timeout after the first ping it left unanswered, as
    autobahn's timer did (which the tuned server no longer creates per ping)."""
    server = daphne_factory(
        tuned=True,
        tuning={"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None},
        extra_args=("--ping-interval", "1", "--ping-timeout", "2"),
    )
    answering, silent = await asyncio.gather(
        asyncio.to_thread(pings_until_closed, server.port, True, 6.0),
        asyncio.to_thread(pings_until_closed, server.port, False, 8.0),
    )
    frames, ended = answering
    assert ended is None and len(frames) >= 4, answering
    assert set(frames) == {b"\x89\x00"}
    frames, ended = silent
    # First ping ~1 s after the open (+ the loop's 0.05 s), dropped 2 s after it.
    assert ended is not None and 2.9 <= ended <= 4.5, silent
    assert set(frames) == {b"\x89\x00"} and len(frames) in (2, 3), silent
