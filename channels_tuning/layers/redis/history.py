"""Group history in Redis (the layer's design is :mod:`channels_tuning.layers.history`):
on the group's shard, a hash ``<prefix>:ct:hmeta:<group>`` holds the epoch and the last
offset, a stream ``<prefix>:ct:hist:<group>`` the entries, one script per broadcast."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ...compat import channels_redis as upstream
from ...wire.offsets import StreamPosition
from ..history import (
    REPLAY_PAGE,
    REPLAY_PAGE_BYTES,
    Entry,
    History,
    HistoryPolicy,
    Recovery,
    meta_ttl,
    new_epoch,
)
from . import keys

__all__ = ["RedisHistory"]


class _SingleFlight:
    """Concurrent identical fetches share one: a reorder seen by every connection of
    a process is filled with one round trip, not one per connection."""

    def __init__(self) -> None:
        self._flights: dict[tuple[str, int, int], asyncio.Future[list[Entry]]] = {}

    async def run(self, key: tuple[str, int, int], fetch: Any) -> list[Entry]:
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            result: list[Entry] = await fetch()
        except BaseException as error:
            if not flight.done():
                flight.set_exception(error)
                flight.exception()  # retrieved: no "never retrieved" warning
            raise
        else:
            flight.set_result(result)
            return result
        finally:
            del self._flights[key]


_EPOCH_LUA = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
"""

# Entries are d (payload), b (binary flag), t (time in ms): field 6 is the time.
# KEYS: meta hash, stream. ARGV: epoch if new, payload, binary flag, size, ttl in ms,
# meta ttl in ms, now in ms.
_APPEND_LUA = (
    _EPOCH_LUA
    + """end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], offset .. '-0',
           'd', ARGV[2], 'b', ARGV[3], 't', ARGV[7])
local cutoff = tonumber(ARGV[7]) - tonumber(ARGV[5])
for i = 1, 16 do
  local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #head == 0 or tonumber(head[1][2][6]) >= cutoff then break end
  redis.call('XDEL', KEYS[2], head[1][1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {offset, epoch}
"""
)

# KEYS: meta hash, stream. ARGV: epoch if new, the client's epoch ('' none), its
# offset (-1 none), size, the group's ttl in ms, oldest time kept in ms. An epoch a
# join makes lives the ttl, not the meta ttl (a day): a client can join any number of
# rooms it names and never write to; the first broadcast extends it. ARGV[7], [8]:
# the page (entries returned at most, bytes after which it stops: the first of those
# missed).
# Returns {epoch, offset, recovered, entries}.
_RECOVER_LUA = (
    _EPOCH_LUA
    + """  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
local top = tonumber(redis.call('HGET', KEYS[1], 'o'))
local since = tonumber(ARGV[3])
if ARGV[2] ~= epoch or since < 0 or since > top then return {epoch, top, 0, {}} end
if since == top then return {epoch, top, 1, {}} end
if top - since > tonumber(ARGV[4]) then return {epoch, top, 0, {}} end
local entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+', 'COUNT', ARGV[7])
-- Entries run without holes up to top (trimmed from the head only): all are kept
-- if the first one missed is, and young enough.
if #entries == 0 or entries[1][1] ~= (since + 1) .. '-0' then return {epoch, top, 0, {}} end
if tonumber(entries[1][2][6]) < tonumber(ARGV[6]) then return {epoch, top, 0, {}} end
local page, size = {}, 0
for i = 1, #entries do
  page[i] = entries[i]
  size = size + string.len(entries[i][2][2])
  if size >= tonumber(ARGV[8]) then break end
end
return {epoch, top, 1, page}
"""
)


def _entries(raw: list[Any]) -> list[Entry]:
    entries: list[Entry] = []
    for entry_id, values in raw:
        # XRANGE through redis-py gives a dict; inside a script's reply, a flat list.
        fields = (
            values
            if isinstance(values, dict)
            else dict(zip(values[::2], values[1::2], strict=True))
        )
        offset = int(entry_id.split(b"-", 1)[0])
        entries.append((offset, fields[b"d"], fields[b"b"] == b"1"))
    return entries


class RedisHistory(History):
    """History in Redis, on the group's shard (see the module doc)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._single_flight = _SingleFlight()

    def _keys(self, group: str) -> tuple[Any, str, str]:
        connection = upstream.connection(self.layer, upstream.shard_of(self.layer, group))
        meta, stream = keys.history_keys(self.layer, group)
        return connection, meta, stream

    async def append(
        self, group: str, payload: bytes, binary: bool, policy: HistoryPolicy
    ) -> tuple[int, str]:
        connection, meta, stream = self._keys(group)
        offset, epoch = await connection.eval(
            _APPEND_LUA,
            2,
            meta,
            stream,
            new_epoch(),
            payload,
            "1" if binary else "0",
            policy.size,
            int(policy.ttl * 1000),
            int(meta_ttl(policy) * 1000),
            int(time.time() * 1000),
        )
        return int(offset), epoch.decode()

    async def recover(
        self,
        group: str,
        since: StreamPosition | None,
        policy: HistoryPolicy,
        page: int = REPLAY_PAGE,
    ) -> Recovery:
        connection, meta, stream = self._keys(group)
        epoch, top, recovered, raw = await connection.eval(
            _RECOVER_LUA,
            2,
            meta,
            stream,
            new_epoch(),
            since.epoch if since else "",
            since.offset if since else -1,
            policy.size,
            int(policy.ttl * 1000),
            int((time.time() - policy.ttl) * 1000),
            page,
            REPLAY_PAGE_BYTES,
        )
        return Recovery(epoch.decode(), int(top), bool(recovered), _entries(raw))

    async def fetch(self, group: str, first: int, last: int) -> list[Entry]:
        connection, _, stream = self._keys(group)

        async def fetch() -> list[Entry]:
            return _entries(await connection.xrange(stream, f"{first}-0", f"{last}-0"))

        return await self._single_flight.run((group, first, last), fetch)
