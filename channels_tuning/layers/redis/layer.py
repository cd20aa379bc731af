"""channels-redis' layer with group sends that never lose silently.

``CHANNEL_LAYERS = {"default": {"BACKEND": "channels_tuning.layers.RedisChannelLayer",
"CONFIG": {...}}}`` takes channels-redis' configuration unchanged, plus:

==========================  =========================================================
CONFIG key                  meaning
==========================  =========================================================
``on_full``                 what ``group_send`` does for receivers whose process inbox
                            is full: ``"wait"`` (default), ``"drop"`` (channels-redis'
                            behaviour, counted), ``"raise"`` (see :mod:`.sending`)
``group_send_timeout``      seconds ``"wait"`` waits before dropping and counting (2)
``group_expiry``            as in channels-redis; **when not given**, derived from
                            ``GROUP_REFRESH_INTERVAL`` (5 intervals: 300 s by
                            default) instead of channels-redis' 86 400 s, so
                            members of a killed process vanish in minutes
==========================  =========================================================

channels-redis writes one message per receiving *process* (its ``specific.<prefix>!``
key), and drops it inside its Lua script when that key holds ``capacity`` messages,
with only an INFO log. Here ``group_send`` returns a :class:`DeliveryReport`, waits
for room by default, and counts every receiver that missed a message, in the sender
and in the receiving process. The expiry of old messages and of old group members
is done in the same round trips as the send (one pipeline, one script per shard).

In a process that mixes plain Channels consumers and tuned ones, one task reads the
process inbox for both (:mod:`.reader`): a plain consumer's ``receive()`` waits on
what that task hands it instead of popping the inbox itself, so neither side takes
the other's messages.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import weakref
from typing import Any

from channels_redis.core import RedisChannelLayer as ChannelsRedisChannelLayer

from ...compat import channels_redis as upstream
from ...runtime.counters import GROUP_SENDS, MISSED, group_label
from .. import capabilities
from ..membership import TrackedMembershipsMixin
from ..report import DeliveryReport
from ..sending import ReportingGroupSendMixin
from . import keys
from .history import RedisHistory
from .inboxes import decode_members, map_to_inboxes
from .membership import (
    GroupAddBatches,
    GroupDiscardBatches,
    MembershipBatches,
    derived_group_expiry,
    refresh_memberships,
)
from .owners import RedisOwnerCounts
from .presence import RedisPresence
from .reader import pause_process_reader, reader_for

logger = logging.getLogger("channels_tuning")

#: Connections each shard's pool may open (a ``hosts`` entry's own ``max_connections``
#: wins). redis-py 5 had no practical bound; redis-py 8 bounds a pool at 100 and
#: raises MaxConnectionsError past it instead of waiting (redis/redis-py pull request
#: 4082): 300 concurrent ``send()`` from one process were 200 errors, with
#: channels-redis' layer as with this one before (``pytest
#: tests/e2e/test_layer_conformance.py -k concurrent``).
POOL_MAX_CONNECTIONS = 2**31

#: Seconds a Redis read may take beyond the blocking pop's own timeout
#: (``brpop_timeout``, 5 s) before the connection counts as dead. redis-py 8's default
#: socket timeout (5 s; redis-py 5 had none) equals that pop's: every idle pop of a
#: process' inbox ended in a TimeoutError, a dropped connection and a new one, one
#: each 5 s per process (``pytest tests/e2e/test_reader_idle.py``).
READ_TIMEOUT_MARGIN = 5

#: Seconds a receiving process' missed-message counter lives in Redis if that
#: process never collects it (it died).
MISSED_TTL = 600

_COLLECT_MISSED_LUA = """
local counts = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return counts
"""


class RedisChannelLayer(
    TrackedMembershipsMixin, ReportingGroupSendMixin, ChannelsRedisChannelLayer
):
    """channels-redis' layer with reporting group sends, a default ``on_full="wait"``,
    a derived ``group_expiry``, and membership refresh."""

    #: The process reader serves this layer's plain ``receive()`` too (see :mod:`.reader`).
    process_reader_capable = True
    #: Keys read by one script share a hash tag (Redis Cluster, :mod:`.keys`).
    hash_tags = False

    def __init__(
        self,
        hosts: Any = None,
        prefix: str = "asgi",
        expiry: int = 60,
        group_expiry: int | None = None,
        **kwargs: Any,
    ) -> None:
        derived = group_expiry is None
        if group_expiry is None:
            group_expiry = derived_group_expiry()
        hosts = upstream.pool_hosts(
            hosts,
            max_connections=POOL_MAX_CONNECTIONS,
            socket_timeout=self.brpop_timeout + READ_TIMEOUT_MARGIN,
        )
        super().__init__(hosts, prefix, expiry, group_expiry, **kwargs)
        self.group_expiry_derived = derived
        #: Groups' recent broadcasts (groups with HISTORY), on each group's shard.
        self.history = RedisHistory(self)
        #: Who is in groups with presence, across processes.
        self.presence = RedisPresence(self)
        #: Connections per owner across processes (MAX_CONNECTIONS_PER_USER); None:
        #: counted per process (channels-redis' layer attributes changed).
        self.owner_counts = (
            RedisOwnerCounts(self) if upstream.features["shared_owner_counts"] else None
        )
        #: Where this process has seen the servers' marker (keys.alive_key): shards,
        #: hash slots on a cluster (marker_home).
        self._alive_seen: set[int] = set()
        self._alive_set_at: dict[int, float] = {}
        #: Membership writes batched per event loop and kind (:mod:`.membership`).
        self._membership_batches: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[type, MembershipBatches]
        ] = weakref.WeakKeyDictionary()
        if derived:
            _log_derived_expiry(group_expiry)

    # ------------------------------------------------------------------ sends

    async def group_send_report(
        self, group: str, message: dict[str, Any], only: dict[str, list[str]] | None = None
    ) -> DeliveryReport:
        """One attempt, nothing counted as dropped. ``only``: retry just these keys
        (from an earlier report's ``full``) instead of the whole group."""
        capabilities.require_valid_group_name(self, group)
        report = DeliveryReport(group)
        if only is None:
            channels, alive = await self._group_members(group)
            report.state_lost = self._state_lost(group, alive) if not channels else False
            if alive:
                self._alive_seen.add(self.marker_home(group))
        else:
            channels = [channel for names in only.values() for channel in names]
        report.receivers = len(channels)
        if not channels:
            return report
        inboxes = await map_to_inboxes(self, channels, message)
        channels_by_key = inboxes.channels
        dead_members: list[str] = []
        batches = self.inbox_batches(inboxes.by_shard)
        results = await asyncio.gather(
            *(
                self._write_inboxes(index, batch, inboxes.messages, inboxes.capacities)
                for index, batch in batches
            )
        )
        for (_, batch), (full, gone) in zip(batches, results, strict=True):
            report.processes += len(batch) - len(gone)
            for position in full:
                key = batch[int(position) - 1]
                report.full[key] = channels_by_key[key]
                report.receivers_over_capacity += len(channels_by_key[key])
            for position in gone:
                dead = channels_by_key[batch[int(position) - 1]]
                report.receivers_gone += len(dead)
                dead_members.extend(dead)
        if dead_members:
            # Counted once, not at every send until group_expiry: their clients have
            # reconnected elsewhere by now. A process that was only stalled re-adds
            # them itself when it next says it is alive (reader._say_alive).
            connection = upstream.connection(self, upstream.shard_of(self, group))
            await connection.zrem(keys.group_key(self, group), *dead_members)
        GROUP_SENDS.inc((group_label(group),))
        return report

    def inbox_batches(self, by_connection: dict[int, list[str]]) -> list[tuple[int, list[str]]]:
        """The scripts a group send runs, as ``(shard, inbox keys)``: one per shard here
        (each shard is one Redis); the cluster layer runs one per hash slot."""
        return list(by_connection.items())

    async def _write_inboxes(
        self,
        index: int,
        inboxes: list[str],
        key_message: dict[str, bytes],
        key_capacity: dict[str, int],
    ) -> tuple[list[int], list[int]]:
        """One script: each inbox that is not full and whose process is not gone gets
        its message. Returns the positions (from 1) of the full ones and the gone ones."""
        args: list[Any] = [key_message[key] for key in inboxes]
        args += [key_capacity[key] for key in inboxes]
        args += [time.time(), self.expiry]
        processes = [key[len(self.prefix) :] for key in inboxes]
        liveness = [keys.live_key(self, p) for p in processes]
        liveness += [keys.seen_key(self, p) for p in processes]
        full, gone = await upstream.connection(self, index).eval(
            upstream.GROUP_SEND_LUA, 3 * len(inboxes), *inboxes, *liveness, *args
        )
        return full, gone

    async def _group_members(self, group: str) -> tuple[list[str], bool]:
        """The group's members, and whether its shard holds the servers' marker."""
        key = keys.group_key(self, group)
        connection = upstream.connection(self, upstream.shard_of(self, group))
        pipe = connection.pipeline(transaction=False)
        pipe.zremrangebyscore(key, min=0, max=int(time.time()) - self.group_expiry)
        pipe.zrange(key, 0, -1)
        pipe.exists(self.alive_marker(self.marker_home(group)))
        _, members, alive = await pipe.execute()
        return decode_members(members), bool(alive)

    def _state_lost(self, group: str, alive: bool) -> bool:
        """An empty group on a shard that lost the servers' marker since this process
        last saw it: Redis restarted and the memberships are not back yet."""
        home = self.marker_home(group)
        if alive:
            self._alive_seen.add(home)
            return False
        return home in self._alive_seen

    def marker_home(self, group: str) -> int:
        """Which servers' marker (:func:`keys.alive_key`) vouches for ``group``'s
        memberships: its shard's (each shard is one Redis)."""
        return upstream.shard_of(self, group)

    def alive_marker(self, home: int) -> str:
        """The marker's key for ``home`` (one name: each shard has its own)."""
        return keys.alive_key(self)

    async def mark_alive(self) -> bool:
        """Say that this process reads its inbox (every second, from its reader):
        producers skip and count the inboxes of processes that stopped saying so.
        Returns whether the previous word was still valid (False: taken for gone)."""
        process = keys.process_channel(self)
        connection = upstream.connection(self, upstream.shard_of(self, process))
        pipe = connection.pipeline(transaction=False)
        pipe.exists(keys.live_key(self, process))
        pipe.set(keys.live_key(self, process), "1", px=int(LIVENESS_TTL * 1000))
        pipe.set(keys.seen_key(self, process), "1", ex=max(self.group_expiry, 60))
        was_alive, _, _ = await pipe.execute()
        return bool(was_alive)

    async def close_pools(self) -> None:
        """channels-redis' ``close_pools``, after this process' reader has stopped
        reading (a reader left running would reopen a connection and outlive the
        loop); what it read and no one has received yet stays for the next read."""
        await pause_process_reader(self)
        await super().close_pools()

    # ------------------------------------------------- losses seen by receivers

    async def record_missed(self, full: dict[str, list[str]], reason: str) -> None:
        """Count, next to each full process inbox, the messages its consumers missed."""
        by_shard: dict[int, list[tuple[str, int]]] = collections.defaultdict(list)
        for key, channels in full.items():
            process = key[len(self.prefix) :]  # the inbox key is prefix + process channel
            by_shard[upstream.shard_of(self, process)].append(
                (keys.missed_key(self, process), len(channels))
            )
        for shard, counts in by_shard.items():
            pipe = upstream.connection(self, shard).pipeline(transaction=False)
            for missed_key, count in counts:
                pipe.hincrby(missed_key, reason, count)
                pipe.expire(missed_key, MISSED_TTL)
            await pipe.execute()

    async def collect_missed(self) -> int:
        """Move this process' missed-message counts from Redis into its counters."""
        process = keys.process_channel(self)
        key = keys.missed_key(self, process)
        connection = upstream.connection(self, upstream.shard_of(self, process))
        flat = await connection.eval(_COLLECT_MISSED_LUA, 1, key)
        total = 0
        for field, value in zip(flat[::2], flat[1::2], strict=True):
            reason = field.decode() if isinstance(field, bytes) else str(field)
            MISSED.inc((reason,), int(value))
            total += int(value)
        return total

    # -------------------------------------------- plain consumers, one process reader

    async def receive(self, channel: str) -> dict[str, Any]:
        """channels-redis' ``receive``; for this process' ``specific.`` channels,
        served by the process reader (one task pops the inbox for plain and tuned
        consumers). Other process-local channels (``new_channel(prefix="x")``) have
        an inbox of their own, read as channels-redis reads it; an invalid name
        raises at once, as there."""
        capabilities.require_valid_channel_name(self, channel)
        reader = reader_for(self) if "!" in channel else None
        if reader is None or not channel.startswith(reader.process_channel):
            message: dict[str, Any] = await super().receive(channel)
            return message
        return await reader.receive_for_plain_consumer(channel)

    # ---------------------------------------------------- memberships, tracked

    async def add_membership(self, group: str, channel: str) -> None:
        """channels-redis' ZADD + EXPIRE, batched with the group adds in flight."""
        capabilities.require_valid_group_name(self, group)
        capabilities.require_valid_channel_name(self, channel)
        await self._batches(GroupAddBatches).write(group, channel)
        home = self.marker_home(group)
        if time.monotonic() - self._alive_set_at.get(home, -60.0) > 30.0:
            self._alive_set_at[home] = time.monotonic()
            connection = upstream.connection(self, upstream.shard_of(self, group))
            await connection.set(self.alive_marker(home), "1")

    async def discard_membership(self, group: str, channel: str) -> None:
        """channels-redis' ZREM, batched with the group discards in flight."""
        capabilities.require_valid_group_name(self, group)
        capabilities.require_valid_channel_name(self, channel)
        await self._batches(GroupDiscardBatches).write(group, channel)

    def _batches(self, kind: type[MembershipBatches]) -> MembershipBatches:
        by_kind = self._membership_batches.setdefault(asyncio.get_running_loop(), {})
        batches = by_kind.get(kind)
        if batches is None:
            batches = by_kind[kind] = kind(self)
        return batches

    async def refresh_memberships(self, memberships: list[tuple[str, str]]) -> None:
        """Re-add ``(group, channel)`` pairs now and drop members older than
        ``group_expiry`` (see :mod:`channels_tuning.layers.redis.membership`)."""
        await refresh_memberships(self, memberships)


#: Seconds a server process' liveness key outlives its last tick (ticks are 1 s apart).
#: A process killed, or whose event loop stalls this long, is "gone" to producers.
LIVENESS_TTL = 5.0


_logged_expiry = False


def _log_derived_expiry(group_expiry: int) -> None:
    global _logged_expiry
    if _logged_expiry:
        return
    _logged_expiry = True
    logger.info(
        "channels_tuning: group_expiry is not set in the Redis layer's CONFIG: using %d s "
        "(5 x GROUP_REFRESH_INTERVAL) instead of channels-redis' 86400 s; live memberships "
        "are refreshed, those of a killed process expire after %d s",
        group_expiry,
        group_expiry,
    )
