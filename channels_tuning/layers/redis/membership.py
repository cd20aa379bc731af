"""Membership refresh: tracked group memberships re-added in Redis on a schedule.

channels-redis keeps a group member until ``group_expiry`` (a day by default)
unless it is discarded, so members of a process that died without cleaning up
(SIGKILL, power loss) linger. Every ``GROUP_REFRESH_INTERVAL`` the scheduler
re-adds every membership this process tracks (one pipeline per shard) and drops
members older than ``group_expiry``: live members stay, dead ones expire, and
memberships lost with a Redis restart return.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterable
from typing import Any

from ...compat import channels_redis as upstream
from ...conf import DEFAULTS, project_settings
from ...runtime.counters import LAYER_ERRORS
from .. import capabilities
from . import keys

logger = logging.getLogger("channels_tuning")


#: ``group_expiry`` of a tuned Redis layer whose CONFIG does not set it, in refresh
#: intervals: long enough that a live membership survives four missed refreshes.
EXPIRY_IN_REFRESH_INTERVALS = 5


def derived_group_expiry() -> int:
    """The ``group_expiry`` a tuned Redis layer uses when its CONFIG has none."""
    try:
        interval = project_settings()["GROUP_REFRESH_INTERVAL"]
    except Exception:  # Django settings not configured: a layer made by hand
        interval = DEFAULTS["GROUP_REFRESH_INTERVAL"]
    if not interval:
        return 86400  # refresh off: channels-redis' own default
    return max(1, int(EXPIRY_IN_REFRESH_INTERVALS * interval))


async def refresh_memberships(layer: Any, memberships: list[tuple[str, str]]) -> None:
    """Re-add ``(group, channel)`` pairs with the current time and drop members
    older than ``group_expiry`` from those groups, for any channels-redis layer."""
    by_index: dict[int, dict[str, list[str]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for group, channel in memberships:
        by_index[upstream.shard_of(layer, group)][group].append(channel)
    now = time.time()
    for index, groups in by_index.items():
        pipe = upstream.connection(layer, index).pipeline(transaction=False)
        for group, channels in groups.items():
            key = keys.group_key(layer, group)
            pipe.zremrangebyscore(key, min=0, max=int(now) - layer.group_expiry)
            pipe.zadd(key, dict.fromkeys(channels, now))
            pipe.expire(key, layer.group_expiry)
        # Last: a producer that sees the marker sees these memberships too.
        for marker in capabilities.alive_markers(layer, groups):
            pipe.set(marker, "1")
        await pipe.execute()


class GroupAddBatches:
    """``group_add`` as a group commit: the memberships added while one pipeline is
    in flight to a shard go together in the next, one ``ZADD`` per group and its
    ``EXPIRE``, instead of two round trips per membership.

    A reconnect storm is thousands of ``group_add`` calls at once: with channels-redis
    each is a ``ZADD`` and an ``EXPIRE`` awaited in turn, and redis-py's work per
    command (pool, retry, parsing) was 21 % of the server's CPU during 2000
    handshakes (py-spy, benchmarks/connections.py). Alone, a ``group_add`` costs what
    it did (one pipeline, one round trip); it returns once its membership is in
    Redis, and a failed pipeline raises in every ``group_add`` it carried.

    One per layer and event loop (a batch's futures and task belong to its loop)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._pending: dict[int, list[tuple[str, str, asyncio.Future[None]]]] = {}
        self._flushing: dict[int, asyncio.Task[None]] = {}

    async def add(self, group: str, channel: str) -> None:
        loop = asyncio.get_running_loop()
        shard = upstream.shard_of(self.layer, group)
        waiter: asyncio.Future[None] = loop.create_future()
        self._pending.setdefault(shard, []).append((group, channel, waiter))
        if shard not in self._flushing:
            self._flushing[shard] = loop.create_task(
                self._flush(shard), name="channels_tuning.group_add"
            )
        await waiter

    async def _flush(self, shard: int) -> None:
        try:
            while batch := self._pending.pop(shard, None):
                try:
                    await self._write(shard, batch)
                except Exception as exc:
                    for _, _, waiter in batch:
                        if not waiter.done():  # not cancelled with its caller
                            waiter.set_exception(exc)
                else:
                    for _, _, waiter in batch:
                        if not waiter.done():
                            waiter.set_result(None)
        finally:
            del self._flushing[shard]

    async def _write(self, shard: int, batch: list[tuple[str, str, asyncio.Future[None]]]) -> None:
        layer = self.layer
        now = time.time()
        members: dict[str, dict[str, float]] = collections.defaultdict(dict)
        for group, channel, _ in batch:
            members[group][channel] = now
        pipe = upstream.connection(layer, shard).pipeline(transaction=False)
        for group, channels in members.items():
            key = keys.group_key(layer, group)
            pipe.zadd(key, channels)
            pipe.expire(key, layer.group_expiry)
        await pipe.execute()


_refresh_task: asyncio.Task[None] | None = None


def refresh_tracked_memberships(consumers: Iterable[Any]) -> None:
    """Start one task that refreshes every tracked membership of ``consumers`` in
    their channels-redis layers (skipped while the previous refresh still runs)."""
    global _refresh_task
    if _refresh_task is not None and not _refresh_task.done():
        return
    by_layer: dict[Any, list[tuple[str, str]]] = collections.defaultdict(list)
    for consumer in consumers:
        groups = consumer.tracked_groups()
        layer = consumer.channel_layer
        if groups and upstream.is_redis_layer(layer):
            by_layer[layer].extend((group, consumer.channel_name) for group in groups)
    if by_layer:
        _refresh_task = asyncio.get_running_loop().create_task(_refresh(by_layer))


async def restore_memberships(layer: Any, consumers: Iterable[Any]) -> int:
    """Re-add every membership ``consumers`` track in ``layer`` at once (after Redis
    lost them in a restart); return how many. Raises while Redis is unreachable."""
    memberships = [
        (group, consumer.channel_name)
        for consumer in consumers
        for group in consumer.tracked_groups()
    ]
    if memberships:
        await refresh_memberships(layer, memberships)
    else:
        for index in range(layer.ring_size):
            await upstream.connection(layer, index).set(keys.alive_key(layer), "1")
    return len(memberships)


async def refresh_finished() -> None:
    """Wait for a membership refresh in flight. A consumer leaving a group calls
    this before its ``group_discard``: the refresh may have collected the
    membership already, and its ZADD must reach Redis before the ZREM, or the
    membership would be re-added after the consumer left."""
    task = _refresh_task
    if task is not None and not task.done():
        await asyncio.shield(task)


async def _refresh(by_layer: dict[Any, list[tuple[str, str]]]) -> None:
    for layer, memberships in by_layer.items():
        try:
            await refresh_memberships(layer, memberships)
        except Exception as exc:
            # Redis down: memberships are refreshed (re-added) by the next round.
            LAYER_ERRORS.inc((f"refresh:{type(exc).__name__}",))
            logger.warning("channels_tuning: membership refresh failed: %s", exc)
