"""Group history: the last messages of a group, numbered, so that clients recover
what they missed while reconnecting.

Opt-in per group with the ``HISTORY`` setting, patterns of group names (``fnmatch``)
to how much is kept::

    CHANNELS_TUNING = {"HISTORY": {"chat.*": {"size": 1000, "ttl": 300}}}

keeps, for every ``chat.*`` group, its last 1000 broadcasts and none older than 300 s
(Centrifugo's ``history_size`` and ``history_ttl``). The group's epoch and last offset
outlive the messages (:data:`META_TTL_FACTOR` times ``ttl``, at least a day): a client
that comes back after a quiet hour and missed nothing is told ``recovered: true``.

:func:`~channels_tuning.broadcast.broadcast` to such a group first appends the payload
here, which assigns it the next offset of the group's epoch, then sends it to the
group in an envelope carrying offset and epoch (:mod:`channels_tuning.wire.offsets`).
Consumers replay from here on a recovery request, and fill the gaps that concurrent
producers cause by reordering (:mod:`channels_tuning.consumers.recovery`).

On Redis (the group's shard): a hash ``<prefix>:ct:hmeta:<group>`` holds the epoch and
the last offset, a stream ``<prefix>:ct:hist:<group>`` the entries with the offset as
their id (``<offset>-0``, so ``XRANGE`` by offset needs no index), trimmed exactly to
``size`` by ``XADD MAXLEN``; entries older than ``ttl`` are trimmed from the head as
broadcasts arrive, the stream expires ``ttl`` after the last one, and a recovery that
would need an entry older than ``ttl`` is refused. One script per broadcast: one round
trip. In memory
(the in-memory layer): the same in a deque per group, gone with the process.

Measured (``python benchmarks/history.py``): see ``docs/recovery.md``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..compat import channels_redis as upstream
from ..conf import GroupPatterns
from ..wire.offsets import StreamPosition

__all__ = [
    "History",
    "HistoryPolicy",
    "MemoryHistory",
    "Recovery",
    "RedisHistory",
    "history_policy",
    "new_epoch",
]


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How much of a group's history is kept: ``size`` messages, and all of it only
    while the group has a broadcast at least every ``ttl`` seconds."""

    size: int
    ttl: float

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
            raise ValueError(f"HISTORY size must be an integer >= 1, not {self.size!r}")
        if not isinstance(self.ttl, (int, float)) or self.ttl <= 0:
            raise ValueError(f"HISTORY ttl must be a number of seconds > 0, not {self.ttl!r}")


#: An entry: (offset, payload as stored, binary).
Entry = tuple[int, bytes, bool]

#: The epoch and last offset of a group live this many times ``ttl`` (at least a day)
#: after its last broadcast.
META_TTL_FACTOR = 10


def meta_ttl(policy: HistoryPolicy) -> float:
    return max(META_TTL_FACTOR * policy.ttl, 86400.0)


@dataclass(slots=True)
class Recovery:
    """Where a group stands, and what a client missed if that could be recovered."""

    epoch: str
    offset: int
    recovered: bool
    entries: list[Entry] = field(default_factory=list)


#: The ``HISTORY`` setting's policy for a group (the first matching pattern), or None.
history_policy: GroupPatterns[HistoryPolicy] = GroupPatterns(
    "HISTORY", lambda value: HistoryPolicy(int(value["size"]), float(value["ttl"]))
)


def new_epoch() -> str:
    return secrets.token_hex(4)


class History:
    """The interface of a layer's group history (``layer.history``)."""

    async def append(
        self, group: str, payload: bytes, binary: bool, policy: HistoryPolicy
    ) -> tuple[int, str]:
        """Store one broadcast; its ``(offset, epoch)``."""
        raise NotImplementedError

    async def recover(
        self, group: str, since: StreamPosition | None, policy: HistoryPolicy
    ) -> Recovery:
        """Where ``group`` stands, and the entries after ``since`` if all are kept."""
        raise NotImplementedError

    async def fetch(self, group: str, first: int, last: int) -> list[Entry]:
        """Entries ``first`` to ``last`` (those still kept)."""
        raise NotImplementedError


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


class MemoryHistory(History):
    """History of the in-memory layer: one process, lost with it."""

    @dataclass(slots=True)
    class _Group:
        epoch: str
        offset: int = 0
        last_at: float = 0.0
        #: (offset, payload, binary, time.monotonic() of the broadcast)
        entries: deque[tuple[int, bytes, bool, float]] = field(default_factory=deque)

    def __init__(self) -> None:
        self._groups: dict[str, MemoryHistory._Group] = {}

    def _group(self, group: str, policy: HistoryPolicy) -> MemoryHistory._Group:
        state = self._groups.get(group)
        now = time.monotonic()
        if state is None or now - state.last_at > meta_ttl(policy):
            state = self._groups[group] = self._Group(new_epoch(), last_at=now)
        entries, cutoff = state.entries, now - policy.ttl
        while entries and entries[0][3] < cutoff:
            entries.popleft()
        return state

    async def append(
        self, group: str, payload: bytes, binary: bool, policy: HistoryPolicy
    ) -> tuple[int, str]:
        state = self._group(group, policy)
        state.offset += 1
        state.last_at = time.monotonic()
        state.entries.append((state.offset, payload, binary, state.last_at))
        while len(state.entries) > policy.size:
            state.entries.popleft()
        return state.offset, state.epoch

    async def recover(
        self, group: str, since: StreamPosition | None, policy: HistoryPolicy
    ) -> Recovery:
        state = self._group(group, policy)
        if since is None or since.epoch != state.epoch or since.offset > state.offset:
            return Recovery(state.epoch, state.offset, False)
        entries = [entry[:3] for entry in state.entries if entry[0] > since.offset]
        complete = len(entries) == state.offset - since.offset
        return Recovery(state.epoch, state.offset, complete, entries if complete else [])

    async def fetch(self, group: str, first: int, last: int) -> list[Entry]:
        state = self._groups.get(group)
        if state is None:
            return []
        return [entry[:3] for entry in state.entries if first <= entry[0] <= last]


# Both scripts start here: the group's epoch, made (with an empty stream and offset 0)
# from ARGV[1] if the group has none. KEYS: meta hash, stream. Ends inside the "if".
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
# offset (-1 none), size, meta ttl in ms, oldest time kept in ms.
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
local entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+')
if #entries ~= top - since then return {epoch, top, 0, {}} end
if tonumber(entries[1][2][6]) < tonumber(ARGV[6]) then return {epoch, top, 0, {}} end
return {epoch, top, 1, entries}
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
        prefix = self.layer.prefix
        connection = upstream.connection(self.layer, upstream.shard_of(self.layer, group))
        return connection, f"{prefix}:ct:hmeta:{group}", f"{prefix}:ct:hist:{group}"

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
        self, group: str, since: StreamPosition | None, policy: HistoryPolicy
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
            int(meta_ttl(policy) * 1000),
            int((time.time() - policy.ttl) * 1000),
        )
        return Recovery(epoch.decode(), int(top), bool(recovered), _entries(raw))

    async def fetch(self, group: str, first: int, last: int) -> list[Entry]:
        connection, _, stream = self._keys(group)

        async def fetch() -> list[Entry]:
            return _entries(await connection.xrange(stream, f"{first}-0", f"{last}-0"))

        return await self._single_flight.run((group, first, last), fetch)
