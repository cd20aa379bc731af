"""Churn against a real daphne with Redis: connect, join, disconnect, thousands of
times, half of the clients vanishing with a TCP RST (issue #6)."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from .test_e2e import wait_until
from .test_wsstats_e2e import wsstats

pytestmark = pytest.mark.e2e

HANDSHAKE = (
    b"GET /ws/group/churn/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
# A masked close frame with code 1000.
CLOSE_FRAME = bytes([0x88, 0x82]) + b"\x00\x00\x00\x00" + struct.pack("!H", 1000)
CONCURRENCY = 40
WARM_UP_CYCLES = 1500
CYCLES = 3000


async def one_cycle(port: int, abort: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HANDSHAKE)
    response = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in response
    if abort:
        sock = writer.get_extra_info("socket")
        # Linger 0: close() sends RST, as a vanished client's kernel would.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return
    writer.write(CLOSE_FRAME)
    await reader.read()  # the server's close frame, then EOF
    writer.close()


async def churn(port: int, cycles: int) -> None:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def bounded(i: int) -> None:
        async with semaphore:
            await asyncio.wait_for(one_cycle(port, abort=i % 2 == 1), 20)

    await asyncio.gather(*(bounded(i) for i in range(cycles)))


def settled(daphne) -> dict:
    """Stats once every connection's cleanup has ended: wsstats --check passes (no
    consumer instances, queued frames, extra tasks or memberships, here or in Redis)."""
    wait_until(lambda: wsstats(daphne.env, "--check").returncode == 0, timeout=30)
    return daphne.stats(gc_collect=True)


async def test_churn_leaves_no_consumers_tasks_memberships_or_memory(daphne_factory, redis_server):
    daphne = daphne_factory(tuned=True, redis=redis_server, tuning={"STATS_INTERVAL": 0.5})
    await churn(daphne.port, WARM_UP_CYCLES)
    warm = settled(daphne)
    warm_rss = daphne.rss_kb()
    rounds = [warm_rss]
    for _ in range(4):
        await churn(daphne.port, CYCLES // 4)
        final = settled(daphne)
        final_rss = daphne.rss_kb()
        rounds.append(final_rss)
    print(
        f"churn: {CYCLES} cycles, tasks {warm['tasks']} -> {final['tasks']}, "
        f"gc objects {warm['gc_objects']} -> {final['gc_objects']}, "
        "RSS after warm-up and each round (MB): " + " ".join(f"{kb / 1024:.1f}" for kb in rounds)
    )
    growth = {
        name: count - warm["gc_types"].get(name, 0)
        for name, count in final["gc_types"].items()
        if count - warm["gc_types"].get(name, 0) > 100
    }
    print("object types grown:", growth)
    assert final["tasks"] == warm["tasks"]
    assert redis_server.cli("ZCARD", "asgi:group:churn") == "0"
    accepted = final["counters"]["channels_tuning_connections_total"]
    assert accepted == {"consumer=GroupConsumer": WARM_UP_CYCLES + CYCLES}
    # Twisted frees the last round's protocol objects (Deferreds, Headers) a little
    # after their closing handshakes; then the object count is back at its level.
    wait_until(lambda: daphne.stats(gc_collect=True)["gc_objects"] < warm["gc_objects"] + 2000)
    # The allocator keeps its high-water mark; what must not happen is growth per round.
    assert final_rss - warm_rss < 6 * 1024, rounds
