"""Connections per owner across processes, on a real redis-server: two layer instances
are two processes (each its own ``client_prefix``)."""

from __future__ import annotations

import asyncio

import pytest

from channels_tuning.layers.redis import RedisChannelLayer
from channels_tuning.layers.redis import owners as owners_module


async def _layers(url: str, count: int = 2) -> list[RedisChannelLayer]:
    return [RedisChannelLayer(hosts=[url]) for _ in range(count)]


@pytest.fixture(params=["redis", "cluster"])
def one_redis_or_cluster(request: pytest.FixtureRequest):
    """The session's redis-server, then its Redis Cluster (owner counts in one slot)."""
    name = "shared_redis" if request.param == "redis" else "shared_redis_cluster"
    return request.getfixturevalue(name)


async def test_one_limit_for_all_processes(one_redis_or_cluster):
    first, second = one_redis_or_cluster.layer(), one_redis_or_cluster.layer()
    try:
        a, b = first.owner_counts, second.owner_counts
        assert await a.acquire("addr:203.0.113.9", 3)
        assert await b.acquire("addr:203.0.113.9", 3)
        assert await a.acquire("addr:203.0.113.9", 3)
        assert not await b.acquire("addr:203.0.113.9", 3)  # 3 held across the two
        assert not await a.acquire("addr:203.0.113.9", 3)
        assert await b.acquire("addr:198.51.100.7", 3)  # another owner is not affected
        a.release("addr:203.0.113.9")
        await asyncio.sleep(0.05)  # the batched release is written
        assert await b.acquire("addr:203.0.113.9", 3)
    finally:
        await first.close_pools()
        await second.close_pools()


async def test_concurrent_handshakes_cannot_all_pass(one_redis_or_cluster):
    layers = [one_redis_or_cluster.layer() for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(layer.owner_counts.acquire("user:7", 5) for layer in layers for _ in range(10))
        )
        assert sum(results) == 5
    finally:
        for layer in layers:
            await layer.close_pools()


async def test_releases_of_one_turn_are_one_batch_and_leave_no_key(shared_redis):
    (layer,) = await _layers(shared_redis.url, 1)
    try:
        counts = layer.owner_counts
        for _ in range(50):
            assert await counts.acquire("user:1", 100)
        for _ in range(50):
            counts.release("user:1")
        await asyncio.sleep(0.05)
        assert shared_redis.keys("*ct:owner:*") == []
    finally:
        await layer.close_pools()


async def test_a_dead_process_stops_counting_after_its_word_expires(shared_redis, monkeypatch):
    monkeypatch.setattr(owners_module, "ALIVE_TTL", 0.3)
    dead, live = await _layers(shared_redis.url)
    try:
        for _ in range(2):
            assert await dead.owner_counts.acquire("user:1", 2)
        assert not await live.owner_counts.acquire("user:1", 2)
        # ``dead`` says nothing more (no refresh): gone once its word expired.
        await asyncio.sleep(0.4)
        assert await live.owner_counts.acquire("user:1", 2)
        assert await live.owner_counts.acquire("user:1", 2)
        assert not await live.owner_counts.acquire("user:1", 2)
    finally:
        await dead.close_pools()
        await live.close_pools()


async def test_counts_come_back_after_redis_lost_them(shared_redis):
    first, second = await _layers(shared_redis.url)
    try:
        for _ in range(2):
            assert await first.owner_counts.acquire("user:1", 2)
        shared_redis.cli("FLUSHALL")  # a restart without persistence
        held = {"user:1": 2}
        await first.owner_counts.refresh(lambda: held)  # finds its word gone
        assert not await second.owner_counts.acquire("user:1", 2)
    finally:
        await first.close_pools()
        await second.close_pools()


async def test_a_stalled_process_writes_its_counts_again(shared_redis, monkeypatch):
    """Others dropped the counts of a process that stalled past its word; at its next
    refresh it writes them back."""
    monkeypatch.setattr(owners_module, "ALIVE_TTL", 0.3)
    stalled, other = await _layers(shared_redis.url)
    try:
        assert await stalled.owner_counts.acquire("user:1", 1)
        await asyncio.sleep(0.4)
        assert await other.owner_counts.acquire("user:1", 2)  # drops stalled's count
        other.owner_counts.release("user:1")
        await asyncio.sleep(0.05)
        await stalled.owner_counts.refresh(lambda: {"user:1": 1})
        assert not await other.owner_counts.acquire("user:1", 1)
    finally:
        await stalled.close_pools()
        await other.close_pools()


async def test_a_process_renews_its_word_before_counting(shared_redis, monkeypatch):
    """After its word expired (its scheduler stood still with no connection), a
    process says it again before it counts: others do not drop what it then holds."""
    monkeypatch.setattr(owners_module, "ALIVE_TTL", 0.3)
    quiet, other = await _layers(shared_redis.url)
    try:
        assert await quiet.owner_counts.acquire("user:1", 2)
        await asyncio.sleep(0.4)
        assert await quiet.owner_counts.acquire("user:1", 2)
        assert not await other.owner_counts.acquire("user:1", 2)
    finally:
        await quiet.close_pools()
        await other.close_pools()


async def test_releases_while_redis_is_away_are_counted_then_written_again(redis_server, tmp_path):
    """A release that cannot be written is counted (no task error), and the next
    refresh writes every count this process holds: the owner is not over-counted for
    the hour until the periodic full refresh."""
    from channels_tuning.runtime.counters import LAYER_ERRORS
    from tests.support.processes import start_redis, stop_process

    (layer,) = await _layers(redis_server.url, 1)
    counts = layer.owner_counts
    try:
        for _ in range(2):
            assert await counts.acquire("user:1", 2)
        stop_process(redis_server.proc)
        counts.release("user:1")
        await asyncio.sleep(0.2)
        assert sum(n for labels, n in LAYER_ERRORS.items() if labels[0].startswith("owners:"))
        (tmp_path / "again").mkdir()
        restarted = start_redis(tmp_path / "again", redis_server.port)
        try:
            await counts.refresh(lambda: {"user:1": 1})
            assert restarted.cli("HGET", "asgi:ct:owner:user:1", counts.process).strip() == "1"
        finally:
            stop_process(restarted.proc)
    finally:
        await layer.close_pools()
