"""Connections per owner counted across processes, for ``MAX_CONNECTIONS_PER_USER``.

Counted per process, a limit of 5 is 5 x N behind a balancer with N processes (one
client measured 40 connections through 8 processes under a limit of 5). Here every
owner (a user, or a client's address group) has one hash on its shard::

    <prefix>:ct:owner:<owner>    process -> connections it holds for that owner
    <prefix>:ct:owners:alive     process -> when its word expires (ms), on every shard

Guarantees, and what they cost:

- **Admission is one script** (:data:`_ACQUIRE_LUA`): the live processes' counts are
  summed and this one's incremented only if the sum is under the limit, atomically, so
  concurrent handshakes on several processes cannot all pass.
- **A dead process' connections stop counting** within :data:`ALIVE_TTL` of its last
  word: every process refreshes its own field of the ``alive`` hash on each shard
  every :data:`REFRESH_INTERVAL` (one command per shard, whatever the connections),
  and an admission drops the counts of processes whose word expired.
- **A Redis that lost its data gets the counts back**: a refresh that finds its own
  ``alive`` field missing re-writes every count this process holds on that shard;
  so does a refresh every :data:`FULL_REFRESH_INTERVAL` (the owner hashes' TTL is
  several times that, so a held count never expires).
- Releases are batched: closes within one event-loop turn are one pipeline.

Failure is open, per process: when Redis does not answer, the admission falls back to
the process' own count (the limit as it was before), one log line a second, counted
in ``channels_tuning_layer_errors_total{operation="owners:<error>"}``. Counts may be off
by the connections in flight while a refresh re-writes them (over or under by those,
until the next refresh).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any

from ...compat import channels_redis as upstream
from ...runtime.counters import LAYER_ERRORS
from ...runtime.registry import registry
from . import keys

__all__ = ["RedisOwnerCounts"]

#: Seconds between a process' words on each shard.
REFRESH_INTERVAL = 2.0
#: Seconds a process' counts survive its last word (a process stalled longer than this
#: is taken for dead; its connections are counted again at its next refresh).
ALIVE_TTL = 10.0
#: Seconds between re-writes of every count this process holds (and their TTL).
FULL_REFRESH_INTERVAL = 3600.0
OWNER_KEY_TTL = int(4 * FULL_REFRESH_INTERVAL)

# KEYS: the owner's hash, the shard's alive hash. ARGV: this process, the limit, now
# (ms), the owner key's TTL (s). 1: admitted and counted; 0: at the limit.
_ACQUIRE_LUA = """
local counts = redis.call('HGETALL', KEYS[1])
local now = tonumber(ARGV[3])
local total = 0
for i = 1, #counts, 2 do
  local process = counts[i]
  local live = process == ARGV[1]
  if not live then
    local expires = redis.call('HGET', KEYS[2], process)
    live = expires and tonumber(expires) >= now
  end
  if live then total = total + tonumber(counts[i + 1])
  else redis.call('HDEL', KEYS[1], process) end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: an owner's hash. ARGV: this process, how many of its connections closed.
_RELEASE_LUA = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2])) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
"""

# KEYS: the shard's alive hash. ARGV: this process, its new expiry (ms), now (ms).
# Returns 1 when this process had no valid word there (its first, the data was lost,
# or it stalled past its word: others may have dropped its counts). Expired words of
# other processes are removed (the hash holds live processes only).
_ALIVE_LUA = """
local now = tonumber(ARGV[3])
local mine = redis.call('HGET', KEYS[1], ARGV[1])
local words = redis.call('HGETALL', KEYS[1])
for i = 1, #words, 2 do
  if tonumber(words[i + 1]) < now then redis.call('HDEL', KEYS[1], words[i]) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if mine and tonumber(mine) >= now then return 0 end
return 1
"""


class RedisOwnerCounts:
    """Connections per owner across the processes of one Redis layer."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._releases: collections.Counter[str] = collections.Counter()
        self._release_task: asyncio.Task[None] | None = None
        self._full_refresh_at = 0.0
        #: Whether this process counted an owner here yet (refreshes start then).
        self.used = False
        self.refresh_interval = REFRESH_INTERVAL
        #: When this process' word is half expired (monotonic): renewed before counting.
        self._renew_by = 0.0

    @property
    def process(self) -> str:
        return f"{self.layer.client_prefix}"

    def _owner_key(self, owner: str) -> str:
        return keys.owner_key(self.layer, owner)

    def _alive_key(self) -> str:
        return keys.owners_alive_key(self.layer)

    def _connection(self, owner: str) -> Any:
        return upstream.connection(self.layer, upstream.shard_of(self.layer, owner))

    async def acquire(self, owner: str, limit: int) -> bool:
        """Count one more connection of ``owner`` here if all processes together hold
        fewer than ``limit``; False (nothing counted) when they hold that many."""
        if time.monotonic() >= self._renew_by:
            # Others drop the counts of a process without a valid word: say it first
            # (the first handshake, or after the scheduler stood still; concurrent
            # handshakes may each say it: it is idempotent).
            await self.refresh()
        self.used = True
        now_ms = int(time.time() * 1000)
        admitted = await self._connection(owner).eval(
            _ACQUIRE_LUA,
            2,
            self._owner_key(owner),
            self._alive_key(),
            self.process,
            limit,
            now_ms,
            OWNER_KEY_TTL,
        )
        return bool(admitted)

    def release(self, owner: str) -> None:
        """One connection of ``owner`` closed here (written with the others of this
        event-loop turn)."""
        self._releases[owner] += 1
        if self._release_task is None or self._release_task.done():
            self._release_task = asyncio.get_running_loop().create_task(self._write_releases())

    async def _write_releases(self) -> None:
        await asyncio.sleep(0)  # the closes of this turn join the batch
        releases, self._releases = self._releases, collections.Counter()
        by_shard: dict[int, list[tuple[str, int]]] = collections.defaultdict(list)
        for owner, closed in releases.items():
            by_shard[upstream.shard_of(self.layer, owner)].append((owner, closed))
        for shard, owners in by_shard.items():
            pipe = upstream.connection(self.layer, shard).pipeline(transaction=False)
            for owner, closed in owners:
                pipe.eval(_RELEASE_LUA, 1, self._owner_key(owner), self.process, closed)
            try:
                await pipe.execute()
            except Exception as exc:  # Redis away: the next refresh writes every count
                LAYER_ERRORS.inc((f"owners:{type(exc).__name__}",))
                self._full_refresh_at = 0.0

    async def refresh(self, held: Callable[[], dict[str, int]] | None = None) -> None:
        """Say this process is alive on every shard; re-write its counts (``held()``:
        owner -> connections here; the registry's by default) on shards that lost
        them, and everywhere every :data:`FULL_REFRESH_INTERVAL`."""
        held = held or registry.owner_counts
        started = time.monotonic()
        now = time.time()
        now_ms = int(now * 1000)
        expires = now_ms + int(ALIVE_TTL * 1000)
        lost: list[int] = []
        for shard in range(self.layer.ring_size):
            connection = upstream.connection(self.layer, shard)
            first = await connection.eval(
                _ALIVE_LUA, 1, self._alive_key(), self.process, expires, now_ms
            )
            if first:
                lost.append(shard)
        self._renew_by = started + ALIVE_TTL / 2
        everywhere = now >= self._full_refresh_at
        if not lost and not everywhere:
            return
        if everywhere:
            self._full_refresh_at = now + FULL_REFRESH_INTERVAL
        by_shard: dict[int, list[tuple[str, int]]] = collections.defaultdict(list)
        for owner, count in held().items():
            shard = upstream.shard_of(self.layer, owner)
            if everywhere or shard in lost:
                by_shard[shard].append((owner, count))
        for shard, owners in by_shard.items():
            pipe = upstream.connection(self.layer, shard).pipeline(transaction=False)
            for owner, count in owners:
                key = self._owner_key(owner)
                pipe.hset(key, self.process, count)
                pipe.expire(key, OWNER_KEY_TTL)
            await pipe.execute()
