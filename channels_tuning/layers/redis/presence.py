"""Presence in Redis (the design is :mod:`channels_tuning.layers.presence`): a sorted
set per group on its shard, entries scored by when they expire."""

from __future__ import annotations

import collections
import time
from typing import Any

from ...compat import channels_redis as upstream
from ..presence import PresenceEntry, PresenceStore, presence_policy, presence_ttl

__all__ = ["RedisPresence"]


class RedisPresence(PresenceStore):
    """Presence in Redis (see the module doc)."""

    def _where(self, group: str) -> tuple[Any, str]:
        layer = self.layer
        connection = upstream.connection(layer, upstream.shard_of(layer, group))
        return connection, f"{layer.prefix}:ct:pres:{group}"

    @staticmethod
    def _member(channel: str, identity: str) -> str:
        return f"{channel} {identity}"

    async def _store_add(self, group: str, channel: str, identity: str) -> None:
        connection, key = self._where(group)
        ttl_ms = int(presence_ttl() * 1000)
        pipe = connection.pipeline(transaction=False)
        pipe.zadd(key, {self._member(channel, identity): int(time.time() * 1000) + ttl_ms})
        pipe.pexpire(key, 2 * ttl_ms)  # a group nobody refreshes any more goes away
        await pipe.execute()

    async def _store_remove(self, group: str, channel: str, identity: str) -> None:
        connection, key = self._where(group)
        await connection.zrem(key, self._member(channel, identity))

    async def count(self, group: str) -> int:
        connection, key = self._where(group)
        return int(await connection.zcount(key, int(time.time() * 1000), "+inf"))

    async def members(self, group: str) -> list[PresenceEntry]:
        connection, key = self._where(group)
        raw = await connection.zrangebyscore(key, int(time.time() * 1000), "+inf")
        entries = []
        for member in raw:
            channel, _, identity = member.decode().partition(" ")
            entries.append(PresenceEntry(identity, channel))
        return entries

    async def _refresh(self) -> None:
        """Push this process' entries forward; remove the expired entries of dead
        processes and announce them as left (only one process gets each: the script
        that removes them is atomic)."""
        now = time.time()
        expires = int((now + presence_ttl()) * 1000)
        by_shard: dict[int, list[tuple[str, list[str]]]] = collections.defaultdict(list)
        for group, members in list(self.local.items()):
            _, key = self._where(group)
            entries = [self._member(c, i) for c, i in members.items()]
            by_shard[upstream.shard_of(self.layer, group)].append((key, entries))
        ttl_ms = int(presence_ttl() * 1000)
        for shard, groups in by_shard.items():
            pipe = upstream.connection(self.layer, shard).pipeline(transaction=False)
            for key, entries in groups:
                pipe.eval(_REFRESH_LUA, 1, key, int(now * 1000), expires, 2 * ttl_ms, *entries)
            results = await pipe.execute()
            for (key, _), (expired, added) in zip(groups, results, strict=True):
                if expired or added:
                    self._announce(key, expired, added)

    def _announce(self, key: str, expired: list[bytes], added: list[bytes]) -> None:
        """Entries that expired (a dead or stalled process') left; entries of this
        process that the refresh had to add again (it was taken for dead) joined."""
        group = key[len(f"{self.layer.prefix}:ct:pres:") :]
        policy = presence_policy(group)
        if policy is None or not policy.events:
            return
        changes = self._pending.setdefault(group, collections.Counter())
        for member in expired:
            changes[member.decode().partition(" ")[2]] -= 1
        for member in added:
            changes[member.decode().partition(" ")[2]] += 1


# KEYS: a group's presence set. ARGV: now (ms), the new expiry (ms), the key's TTL (ms),
# this process' members. Removes and returns the expired entries, pushes this
# process' entries forward and returns those that were missing.
_REFRESH_LUA = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) end
local added = {}
for i = 4, #ARGV do
  if redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i]) == 1 then added[#added + 1] = ARGV[i] end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {gone, added}
"""
