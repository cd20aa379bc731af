"""The process reader on an idle inbox, against a real redis-server: its blocking pop
ends by the pop's own timeout, not by the client's socket timeout (redis-py 8's
default of 5 s is the pop's 5 s), so an idle process keeps its Redis connection."""

from __future__ import annotations

import asyncio

import pytest

from channels_tuning.runtime.counters import LAYER_ERRORS


def connections_received(redis) -> int:
    info = redis.cli("INFO", "stats")
    return int(info.split("total_connections_received:")[1].split()[0])


@pytest.mark.slow
async def test_an_idle_inbox_keeps_its_connection_and_gets_the_next_message(shared_redis):
    layer = shared_redis.layer()
    channel = await layer.new_channel()
    receiving = asyncio.ensure_future(layer.receive(channel))
    try:
        await asyncio.sleep(0.5)  # the reader's first pop is waiting
        errors, connections = (
            LAYER_ERRORS.get(("TimeoutError",)),
            connections_received(shared_redis),
        )
        # Two pops end idle (5 s each) meanwhile.
        await asyncio.sleep(2 * layer.brpop_timeout + 1)
        await layer.send(channel, {"type": "after.idle"})
        assert (await asyncio.wait_for(receiving, 5))["type"] == "after.idle"
    finally:
        receiving.cancel()
        await layer.close_pools()
    assert LAYER_ERRORS.get(("TimeoutError",)) == errors
    # The send took one connection of its own at most; the reader made none.
    assert connections_received(shared_redis) - connections <= 1


async def test_closing_the_pools_ends_the_reader_at_once(shared_redis):
    """A channel that received keeps the reader reading; closing the layer cancels
    it, and the libraries below may turn that cancellation into an error of their own
    or swallow it. The reader must end at once rather than retry. It once did not:
    on Python 3.10 (no ``Task.cancelling()``) it retried, reconnected and outlived
    the test's event loop ("Task was destroyed but it is pending" at the oldest
    edge's exit); on 3.11 with channels-redis 4.3 and redis-py 8.2 the cancellation
    was swallowed and every close waited out its 5 s."""
    layer = shared_redis.layer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "hello"})
    assert (await asyncio.wait_for(layer.receive(channel), 5))["type"] == "hello"
    tasks = {task for task in asyncio.all_tasks() if task.get_name().startswith("channels_tuning.")}
    assert "channels_tuning.layer_reader" in {task.get_name() for task in tasks}
    started = asyncio.get_running_loop().time()
    await layer.close_pools()
    assert [task.get_name() for task in tasks if not task.done()] == []
    assert asyncio.get_running_loop().time() - started < 2
