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
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ...compat import channels_redis as upstream
from ...conf import DEFAULTS, project_settings
from ...runtime.asyncutil import in_slices
from ...runtime.counters import LAYER_ERRORS
from ...runtime.registry import ConnectionRegistry
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
    members: dict[str, list[str]] = collections.defaultdict(list)
    for group, channel in memberships:
        members[group].append(channel)
    await refresh_groups(layer, members)


#: Memberships re-added per pipeline. redis-py packs a pipeline's commands and parses
#: its replies each in one step of the loop: 19 000 members in one ZADD held the loop
#: 59 ms, 1 000 at a time at most 7 ms, for 16 % more time in all (one Redis on
#: loopback; docs/gc.md). One group of 16 667 members, three runs each, the longest
#: step's CPU and the whole refresh's: 1 000, 3.8-7.4 ms and 66-119 ms; 500, 3.5-3.9
#: and 75-117; 250, 1.9-2.5 and 97-143. 500 halves the longest step for no
#: measurable total.
MEMBERS_PER_PIPELINE = 500


async def refresh_groups(layer: Any, members: dict[str, list[str]]) -> None:
    """:func:`refresh_memberships` with the channels listed by group: the periodic
    refresh builds this form, in which a membership is a string in a list, not a
    pair (19 000 pairs per refresh at 19 000 connections were enough objects to set
    off a young collection on their own, and were alive during it). Pipelines carry
    at most :data:`MEMBERS_PER_PIPELINE` memberships each."""
    by_index: dict[int, dict[str, list[str]]] = collections.defaultdict(dict)
    for group, channels in members.items():
        by_index[upstream.shard_of(layer, group)][group] = channels
    now = time.time()
    for index, groups in by_index.items():
        connection = upstream.connection(layer, index)
        pipe = connection.pipeline(transaction=False)
        in_pipe = 0
        for group, channels in groups.items():
            key = keys.group_key(layer, group)
            pipe.zremrangebyscore(key, min=0, max=int(now) - layer.group_expiry)
            for start in range(0, len(channels), MEMBERS_PER_PIPELINE):
                part = channels[start : start + MEMBERS_PER_PIPELINE]
                pipe.zadd(key, dict.fromkeys(part, now))
                pipe.expire(key, layer.group_expiry)
                in_pipe += len(part)
                if in_pipe >= MEMBERS_PER_PIPELINE:
                    await pipe.execute()
                    pipe, in_pipe = connection.pipeline(transaction=False), 0
        # Last: a producer that sees the marker sees these memberships too.
        for marker in capabilities.alive_markers(layer, groups):
            pipe.set(marker, "1")
        await pipe.execute()


class MembershipBatches:
    """Membership writes as a group commit: the ones made while a pipeline is in
    flight to a shard go together in the next, one command per group, instead of a
    round trip (or two) per membership.

    A reconnect storm is thousands of ``group_add`` calls at once: with channels-redis
    each is a ``ZADD`` and an ``EXPIRE`` awaited in turn, and redis-py's work per
    command (pool, retry, parsing) was 21 % of the server's CPU during 2000
    handshakes (py-spy, benchmarks/connections.py). A drain, or a balancer that drops
    every connection, is as many ``group_discard`` calls at once. Alone, a write costs
    what it did (one pipeline, one round trip); it returns once Redis has it, and a
    failed pipeline raises in every call it carried.

    One per layer, event loop and kind of write (a batch's futures and task belong to
    its loop); a subclass says what a batch writes (:meth:`queue_writes`)."""

    #: The flushing task's name (what a leak report shows).
    task_name = "channels_tuning.membership_writes"

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._pending: dict[int, list[tuple[str, str, asyncio.Future[None]]]] = {}
        self._flushing: dict[int, asyncio.Task[None]] = {}

    async def write(self, group: str, channel: str) -> None:
        loop = asyncio.get_running_loop()
        shard = upstream.shard_of(self.layer, group)
        waiter: asyncio.Future[None] = loop.create_future()
        self._pending.setdefault(shard, []).append((group, channel, waiter))
        if shard not in self._flushing:
            self._flushing[shard] = loop.create_task(self._flush(shard), name=self.task_name)
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
        members: dict[str, list[str]] = collections.defaultdict(list)
        for group, channel, _ in batch:
            members[group].append(channel)
        pipe = upstream.connection(self.layer, shard).pipeline(transaction=False)
        for group, channels in members.items():
            self.queue_writes(pipe, keys.group_key(self.layer, group), channels)
        await pipe.execute()

    def queue_writes(self, pipe: Any, key: str, channels: list[str]) -> None:
        raise NotImplementedError


class GroupAddBatches(MembershipBatches):
    """``group_add``: channels-redis' ``ZADD`` (scored with the time) and ``EXPIRE``."""

    task_name = "channels_tuning.group_add"

    def queue_writes(self, pipe: Any, key: str, channels: list[str]) -> None:
        now = time.time()
        pipe.zadd(key, dict.fromkeys(channels, now))
        pipe.expire(key, self.layer.group_expiry)


class GroupDiscardBatches(MembershipBatches):
    """``group_discard``: channels-redis' ``ZREM``, one per group for the batch."""

    task_name = "channels_tuning.group_discard"

    def queue_writes(self, pipe: Any, key: str, channels: list[str]) -> None:
        pipe.zrem(key, *channels)


_refresh_task: asyncio.Task[None] | None = None

#: Consumers read in one go when a refresh collects what they track, before the loop
#: serves other work: 19 000 read at once held it 23 ms once a minute, the worst stall
#: of an idle process (docs/gc.md); 2 000 were 5-8 ms of CPU at 16 700 connections,
#: 1 000 under 5 (``benchmarks/stall.py --connections 16700 --slow-callbacks``).
COLLECT_SLICE = 1000


def refresh_tracked_memberships(consumers: ConnectionRegistry | Iterable[Any]) -> None:
    """Start one task that refreshes every tracked membership of ``consumers`` in
    their channels-redis layers (skipped while the previous refresh still runs). A
    registry is read through weak references: a connection that closes before its
    slice is neither kept alive nor refreshed."""
    global _refresh_task
    if _refresh_task is not None and not _refresh_task.done():
        return
    if isinstance(consumers, ConnectionRegistry):
        refresh = _collect_and_refresh(consumers.refs(), consumers.live)
    else:
        refresh = _collect_and_refresh(list(consumers), iter)
    _refresh_task = asyncio.get_running_loop().create_task(refresh)


async def _collect_and_refresh(
    items: list[Any], consumers_of: Callable[[Sequence[Any]], Iterable[Any]]
) -> None:
    # A consumer that leaves a group meanwhile waits for this task (refresh_finished)
    # before its ZREM, whichever slice it is in.
    by_layer: dict[Any, dict[str, list[str]]] = {}
    await in_slices(items, COLLECT_SLICE, lambda part: _collect(consumers_of(part), by_layer))
    if by_layer:
        await _refresh(by_layer)


def _collect(consumers: Iterable[Any], by_layer: dict[Any, dict[str, list[str]]]) -> None:
    for consumer in consumers:
        groups = consumer.tracked_groups()
        layer = consumer.channel_layer
        if groups and upstream.is_redis_layer(layer):
            members = by_layer.get(layer)
            if members is None:
                members = by_layer[layer] = {}
            channel = consumer.channel_name
            for group in groups:
                channels = members.get(group)
                if channels is None:
                    members[group] = [channel]
                else:
                    channels.append(channel)


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


async def _refresh(by_layer: dict[Any, dict[str, list[str]]]) -> None:
    for layer, members in by_layer.items():
        try:
            await refresh_groups(layer, members)
        except Exception as exc:
            # Redis down: memberships are refreshed (re-added) by the next round.
            LAYER_ERRORS.inc((f"refresh:{type(exc).__name__}",))
            logger.warning("channels_tuning: membership refresh failed: %s", exc)
