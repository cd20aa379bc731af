"""channels-redis' layer whose group sends report what they could not deliver.

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

import collections
import time
from typing import Any

from channels_redis.core import RedisChannelLayer as ChannelsRedisChannelLayer

from ..compat import channels_redis as upstream
from ..observability.stats import GROUP_SENDS
from . import keys
from .membership import refresh_memberships
from .report import DeliveryReport, ReportingGroupSendMixin


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
        by_connection, key_message, key_capacity = upstream.map_channel_keys(
            self, channels, message
        )
        channels_by_key = _channels_by_key(self, channels)
        for index, shard_keys in by_connection.items():
            args: list[Any] = [key_message[key] for key in shard_keys]
            args += [key_capacity[key] for key in shard_keys]
            args += [time.time(), self.expiry]
            full = await upstream.connection(self, index).eval(
                upstream.GROUP_SEND_LUA, len(shard_keys), *shard_keys, *args
            )
            report.processes += len(shard_keys)
            for position in full:
                key = shard_keys[int(position) - 1]
                report.full[key] = channels_by_key[key]
                report.receivers_over_capacity += len(channels_by_key[key])
        GROUP_SENDS.inc((group,))
        return report

    async def _group_members(self, group: str) -> list[str]:
        key = keys.group_key(self, group)
        connection = upstream.connection(self, upstream.shard_of(self, group))
        pipe = connection.pipeline(transaction=False)
        pipe.zremrangebyscore(key, min=0, max=int(time.time()) - self.group_expiry)
        pipe.zrange(key, 0, -1)
        _, members = await pipe.execute()
        return [member.decode("utf8") for member in members]

    async def refresh_memberships(self, memberships: list[tuple[str, str]]) -> None:
        """Re-add ``(group, channel)`` pairs now and drop members older than
        ``group_expiry`` (see :mod:`channels_tuning.layers.membership`)."""
        await refresh_memberships(self, memberships)


def _channels_by_key(layer: Any, channels: list[str]) -> dict[str, list[str]]:
    by_key: dict[str, list[str]] = collections.defaultdict(list)
    for channel in channels:
        by_key[keys.channel_key(layer, channel)].append(channel)
    return by_key
