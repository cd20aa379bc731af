"""Channel layers whose group sends report what they could not deliver.

``CHANNEL_LAYERS = {"default": {"BACKEND": "channels_tuning.layers.RedisChannelLayer",
"CONFIG": {...}}}`` takes channels-redis' configuration unchanged.

channels-redis writes one message per receiving *process* (its ``specific.<prefix>!``
key), and drops it inside its Lua script when that key holds ``capacity`` messages,
with only an INFO log. Here ``group_send`` returns a :class:`DeliveryReport` and counts
every receiver that missed the message (``channels_tuning_group_send_dropped_total``);
:func:`channels_tuning.broadcast.broadcast` uses the report to wait for room instead.

The expiry of old messages and of old group members is done in the same round trips
as the send (one pipeline, one script per shard), not in extra ones.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer
from channels_redis.core import RedisChannelLayer as ChannelsRedisChannelLayer

from .stats import GROUP_SEND_DROPPED, GROUP_SENDS, LAYER_ERRORS

logger = logging.getLogger("channels_tuning")

# Per key: drop expired messages, then add the message unless the key is full.
# Returns the 1-based indexes of the keys that were full.
_GROUP_SEND_LUA = """
local full = {}
local now = tonumber(ARGV[#ARGV - 1])
local expiry = tonumber(ARGV[#ARGV])
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, now - expiry)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + #KEYS]) then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        full[#full + 1] = i
    end
end
return full
"""


@dataclass
class DeliveryReport:
    """What one group send reached."""

    group: str
    #: Channels (consumers) that were members of the group.
    receivers: int = 0
    #: Receiving processes (channel-layer keys) written to.
    processes: int = 0
    #: Channels whose process key was full: they did not get the message.
    receivers_over_capacity: int = 0
    #: Sends retried because receivers were full (``broadcast(on_full="wait")``).
    retries: int = 0
    #: Per process key still full: the channels behind it (for retries).
    full: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def delivered(self) -> int:
        return self.receivers - self.receivers_over_capacity

    @property
    def complete(self) -> bool:
        return self.receivers_over_capacity == 0


class ReportingGroupSendMixin:
    """``group_send`` on top of a layer's ``group_send_report``."""

    async def group_send_report(
        self, group: str, message: dict[str, Any], only: dict[str, list[str]] | None = None
    ) -> DeliveryReport:
        raise NotImplementedError

    async def group_send(self, group: str, message: dict[str, Any]) -> DeliveryReport:
        """Send to every member; return what was delivered. Never raises for full
        receivers: they are counted (reason ``over_capacity``) and reported."""
        report = await self.group_send_report(group, message)
        if report.receivers_over_capacity:
            GROUP_SEND_DROPPED.inc((group, "over_capacity"), report.receivers_over_capacity)
        return report


class RedisChannelLayer(ReportingGroupSendMixin, ChannelsRedisChannelLayer):
    """channels-redis' layer with reporting group sends and membership refresh."""

    async def group_send_report(
        self, group: str, message: dict[str, Any], only: dict[str, list[str]] | None = None
    ) -> DeliveryReport:
        """One attempt, nothing counted as dropped. ``only``: retry just these keys
        (from an earlier report's ``full``) instead of the whole group."""
        assert self.require_valid_group_name(group), "Group name not valid"
        report = DeliveryReport(group)
        if only is None:
            channels = await self._group_members(group)
        else:
            channels = [channel for names in only.values() for channel in names]
        report.receivers = len(channels)
        if not channels:
            return report
        by_connection, key_message, key_capacity = self._map_channel_keys_to_connection(
            channels, message
        )
        channels_by_key = _channels_by_key(self, channels)
        for index, keys in by_connection.items():
            args = [key_message[key] for key in keys]
            args += [key_capacity[key] for key in keys]
            args += [time.time(), self.expiry]
            full = await self.connection(index).eval(_GROUP_SEND_LUA, len(keys), *keys, *args)
            report.processes += len(keys)
            for position in full:
                key = keys[int(position) - 1]
                report.full[key] = channels_by_key[key]
                report.receivers_over_capacity += len(channels_by_key[key])
        GROUP_SENDS.inc((group,))
        return report

    async def _group_members(self, group: str) -> list[str]:
        key = self._group_key(group)
        connection = self.connection(self.consistent_hash(group))
        pipe = connection.pipeline(transaction=False)
        pipe.zremrangebyscore(key, min=0, max=int(time.time()) - self.group_expiry)
        pipe.zrange(key, 0, -1)
        _, members = await pipe.execute()
        return [member.decode("utf8") for member in members]

    async def refresh_memberships(self, memberships: list[tuple[str, str]]) -> None:
        """Re-add ``(group, channel)`` pairs with the current time and drop members
        older than ``group_expiry`` from those groups.

        Called by the process scheduler for every tracked membership, so members of
        a process that died (SIGKILL, power loss) expire after ``group_expiry``
        instead of staying a day, and memberships lost with a Redis restart return."""
        await refresh_memberships(self, memberships)


def _channels_by_key(layer: Any, channels: list[str]) -> dict[str, list[str]]:
    by_key: dict[Any, list[str]] = collections.defaultdict(list)
    for channel in channels:
        name = layer.non_local_name(channel) if "!" in channel else channel
        by_key[layer.prefix + name].append(channel)
    return by_key


async def refresh_memberships(layer: Any, memberships: list[tuple[str, str]]) -> None:
    """:meth:`RedisChannelLayer.refresh_memberships` for any channels-redis layer."""
    by_index: dict[int, dict[str, list[str]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for group, channel in memberships:
        by_index[layer.consistent_hash(group)][group].append(channel)
    now = time.time()
    for index, groups in by_index.items():
        pipe = layer.connection(index).pipeline(transaction=False)
        for group, channels in groups.items():
            key = layer._group_key(group)
            pipe.zremrangebyscore(key, min=0, max=int(now) - layer.group_expiry)
            pipe.zadd(key, dict.fromkeys(channels, now))
            pipe.expire(key, layer.group_expiry)
        await pipe.execute()


class InMemoryChannelLayer(ReportingGroupSendMixin, ChannelsInMemoryChannelLayer):
    """Channels' in-memory layer, with reporting group sends, and direct delivery
    to tuned consumers: no reader task per connection, no deep copy per member."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._receivers: dict[str, Any] = {}

    # The interface of channels_tuning.layer_reader.ProcessLayerReader.
    def attach(self, consumer: Any) -> None:
        self._receivers[consumer.channel_name] = consumer

    def detach(self, consumer: Any) -> None:
        channel = consumer.channel_name
        if self._receivers.get(channel) is consumer:
            del self._receivers[channel]

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        consumer = self._receivers.get(channel)
        if consumer is not None:
            consumer.deliver_layer_message(message)
        else:
            await super().send(channel, message)

    async def group_send_report(
        self, group: str, message: dict[str, Any], only: dict[str, list[str]] | None = None
    ) -> DeliveryReport:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        report = DeliveryReport(group)
        channels = list(self.groups.get(group, {})) if only is None else list(only)
        for channel in channels:
            report.receivers += 1
            consumer = self._receivers.get(channel)
            if consumer is not None:
                # One shared message for all local consumers: they never mutate it.
                consumer.deliver_layer_message(message)
                continue
            try:
                await super().send(channel, message)
            except ChannelFull:
                report.receivers_over_capacity += 1
                report.full[channel] = [channel]
        report.processes = 1 if report.receivers else 0
        GROUP_SENDS.inc((group,))
        return report


_refresh_task: asyncio.Task[None] | None = None


def refresh_tracked_memberships(consumers: Any) -> None:
    """Start one task that refreshes every tracked membership of ``consumers`` in
    their channels-redis layers (skipped while the previous refresh still runs)."""
    global _refresh_task
    if _refresh_task is not None and not _refresh_task.done():
        return
    by_layer: dict[Any, list[tuple[str, str]]] = collections.defaultdict(list)
    for consumer in consumers:
        groups = consumer.tracked_groups()
        layer = consumer.channel_layer
        if groups and isinstance(layer, ChannelsRedisChannelLayer):
            by_layer[layer].extend((group, consumer.channel_name) for group in groups)
    if by_layer:
        _refresh_task = asyncio.get_running_loop().create_task(_refresh(by_layer))


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
