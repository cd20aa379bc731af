"""Kernel memory behind slow clients (issue #16): the tuned server fixes each
WebSocket's SO_SNDBUF (``--ws-send-buffer``, 64 KiB by default) instead of letting TCP
autotuning grow a slow client's kernel buffer to several MB, so 200 clients that stop
reading cost bounded memory in the process *and* in the kernel, while a normal client
on the same process receives everything."""

from __future__ import annotations

import asyncio
import time

import pytest
import websockets

from channels_tuning.broadcast import broadcast
from channels_tuning.layers import RedisChannelLayer as TunedRedisChannelLayer
from channels_tuning.servers.daphne import DEFAULT_SEND_BUFFER
from tests.support.processes import tcp_kernel_bytes
from tests.support.rawws import open_non_reading_client
from tests.support.waiting import recv_data, wait_until

QUIET = {"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None, "RATE_LIMIT": None}


async def test_send_buffer_is_fixed_on_websocket_sockets(daphne_factory):
    fixed = daphne_factory(tuned=True, tuning=QUIET)
    autotuned = daphne_factory(tuned=True, tuning=QUIET, extra_args=("--ws-send-buffer", "0"))
    async with (
        websockets.connect(fixed.ws("/ws/echo/")),
        websockets.connect(autotuned.ws("/ws/echo/")),
    ):
        # Linux reports twice the size set (its bookkeeping share).
        assert fixed.stats()["send_buffers"] == [2 * DEFAULT_SEND_BUFFER]
        assert autotuned.stats()["send_buffers"] != [2 * DEFAULT_SEND_BUFFER]


@pytest.mark.slow
async def test_200_slow_readers_bounded_in_process_and_kernel(daphne_factory, shared_redis):
    """200 clients stop reading while 500 x 1 KiB/s are broadcast for 8 s: the
    kernel's TCP memory grows by less than 40 MB (200 x 128 KiB of send buffer is
    25 MB), server RSS plus kernel by less than 96 MB, every slow client is closed
    with 4001, and a normal client gets all 4000 messages in order."""
    server = daphne_factory(tuned=True, redis=shared_redis, tuning=QUIET)
    normal = await websockets.connect(server.ws("/ws/group/slow200/"), max_size=None)
    slow = [open_non_reading_client(server.port, "/ws/group/slow200/") for _ in range(200)]
    await wait_until(lambda: shared_redis.cli("ZCARD", "asgi:group:slow200") == "201")
    await asyncio.sleep(0.5)
    rss_start, kernel_start = server.rss_kb() * 1024, tcp_kernel_bytes()
    layer = TunedRedisChannelLayer(hosts=[shared_redis.url])
    total, rate = 4000, 500
    received: list[int] = []

    async def read_normal() -> None:
        while len(received) < total:
            received.append(int((await recv_data(normal, timeout=10))[:6]))

    reader = asyncio.ensure_future(read_normal())
    peak = kernel_peak = 0
    started = time.monotonic()
    for i in range(total):
        await broadcast("slow200", f"{i:06d}" + "x" * 1018, on_full="wait", timeout=10, layer=layer)
        if i % 50 == 49:
            kernel = tcp_kernel_bytes() - kernel_start
            kernel_peak = max(kernel_peak, kernel)
            peak = max(peak, server.rss_kb() * 1024 - rss_start + kernel)
            delay = started + (i + 1) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    await asyncio.wait_for(reader, 20)
    print(
        f"200 slow readers: peak growth of RSS + kernel TCP memory {peak / 2**20:.1f} MB, "
        f"of which kernel {kernel_peak / 2**20:.1f} MB"
    )
    assert received == list(range(total))
    # The kernel's share: 200 x 2 x 64 KiB of send buffer (25 MB) plus its overhead;
    # autotuned, the same load takes 459 MB (benchmarks/slow_reader.py --slow 200).
    assert kernel_peak < 40 * 2**20
    assert peak < 96 * 2**20
    closed = server.counter("channels_tuning_closes_total", "consumer=GroupConsumer,code=4001")
    assert closed == 200
    for sock in slow:
        sock.close()
    await normal.close()
    await layer.close_pools()
