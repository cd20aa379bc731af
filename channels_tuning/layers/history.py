"""Group history: the last messages of a group, numbered, so that clients recover
what they missed while reconnecting.

Opt-in per group with the ``HISTORY`` setting, patterns of group names (``fnmatch``)
to how much is kept::

    CHANNELS_TUNING = {"HISTORY": {"chat.*": {"size": 1000, "ttl": 300}}}

keeps, for every ``chat.*`` group, its last 1000 broadcasts and none older than 300 s
(Centrifugo's ``history_size`` and ``history_ttl``). The group's epoch and last offset
outlive the messages (:data:`META_TTL_FACTOR` times ``ttl``, at least a day): a client
that comes back after a quiet hour and missed nothing is told ``recovered: true``. An
epoch that a join made (nothing was ever broadcast to the group) lives ``ttl`` only:
group names come from clients, and 3 000 joined-and-left rooms kept 1.9 MB of Redis
for a day when a join made it live as long.

:func:`~channels_tuning.broadcast.broadcast` to such a group first appends the payload
here, which assigns it the next offset of the group's epoch, then sends it to the
group in an envelope carrying offset and epoch (:mod:`channels_tuning.wire.offsets`).
Consumers replay from here on a recovery request, and fill the gaps that concurrent
producers cause by reordering (:mod:`channels_tuning.consumers.recovery`).

On Redis (:mod:`.redis.history`, on the group's shard): a hash
``<prefix>:ct:hmeta:<group>`` holds the epoch and the last offset, a stream
``<prefix>:ct:hist:<group>`` the entries with the offset as their id
(``<offset>-0``, so ``XRANGE`` by offset needs no index), trimmed exactly to
``size`` by ``XADD MAXLEN``; entries older than ``ttl`` are trimmed from the head as
broadcasts arrive, the stream expires ``ttl`` after the last one, and a recovery
that would need an entry older than ``ttl`` is refused. One script per broadcast:
one round trip. In memory (the in-memory layer): the same in a deque per group, gone
with the process.

Measured (``python benchmarks/history.py``): see ``docs/recovery.md``.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from ..conf import GroupPatterns
from ..wire.offsets import StreamPosition

__all__ = [
    "History",
    "HistoryPolicy",
    "MemoryHistory",
    "Recovery",
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


#: Entries read from the history at once: the first page comes with the recovery's
#: read (one round trip for the common short replay), the rest page by page while
#: they are written, so a replay costs one page of memory, not the whole backlog
#: (60 concurrent replays of 500 x 12 KB grew a server by 480 MB when read whole).
REPLAY_PAGE = 100
#: ...and at most about this many bytes (a page stops after the entry that passes it):
#: 60 handshakes each reading 100 entries of 12 KB held 72 MB before any was sent.
REPLAY_PAGE_BYTES = 64 * 1024


def meta_ttl(policy: HistoryPolicy) -> float:
    return max(META_TTL_FACTOR * policy.ttl, 86400.0)


@dataclass(slots=True)
class Recovery:
    """Where a group stands, and whether what a client missed is all kept: then
    ``entries`` holds the first of them (a page at most; the rest up to ``offset``
    are fetched while they are written)."""

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
        self,
        group: str,
        since: StreamPosition | None,
        policy: HistoryPolicy,
        page: int = REPLAY_PAGE,
    ) -> Recovery:
        """Where ``group`` stands, whether the entries after ``since`` are all kept, and
        the first ``page`` of them if so."""
        raise NotImplementedError

    async def fetch(self, group: str, first: int, last: int) -> list[Entry]:
        """Entries ``first`` to ``last`` (those still kept)."""
        raise NotImplementedError


class MemoryHistory(History):
    """History of the in-memory layer: one process, lost with it."""

    @dataclass(slots=True)
    class _Group:
        epoch: str
        #: When the epoch is forgotten (time.monotonic()): the ttl after a join that
        #: made it, the meta ttl after a broadcast, as in Redis.
        expires_at: float
        offset: int = 0
        #: (offset, payload, binary, time.monotonic() of the broadcast)
        entries: deque[tuple[int, bytes, bool, float]] = field(default_factory=deque)

    #: Groups past their expiry are swept every this many new groups, so a client
    #: joining rooms it names costs memory for the ttl, not for the process' life.
    sweep_every = 1000

    def __init__(self) -> None:
        self._groups: dict[str, MemoryHistory._Group] = {}
        self._created = 0

    def _group(self, group: str, policy: HistoryPolicy) -> MemoryHistory._Group:
        state = self._groups.get(group)
        now = time.monotonic()
        if state is None or now > state.expires_at:
            state = self._groups[group] = self._Group(new_epoch(), now + policy.ttl)
            self._created += 1
            if self._created % self.sweep_every == 0:
                self._sweep(now)
        entries, cutoff = state.entries, now - policy.ttl
        while entries and entries[0][3] < cutoff:
            entries.popleft()
        return state

    def _sweep(self, now: float) -> None:
        for name in [name for name, state in self._groups.items() if now > state.expires_at]:
            del self._groups[name]

    def __len__(self) -> int:
        """Groups whose epoch is kept."""
        return len(self._groups)

    async def append(
        self, group: str, payload: bytes, binary: bool, policy: HistoryPolicy
    ) -> tuple[int, str]:
        state = self._group(group, policy)
        state.offset += 1
        now = time.monotonic()
        state.expires_at = now + meta_ttl(policy)
        state.entries.append((state.offset, payload, binary, now))
        while len(state.entries) > policy.size:
            state.entries.popleft()
        return state.offset, state.epoch

    async def recover(
        self,
        group: str,
        since: StreamPosition | None,
        policy: HistoryPolicy,
        page: int = REPLAY_PAGE,
    ) -> Recovery:
        state = self._group(group, policy)
        if since is None or since.epoch != state.epoch or since.offset > state.offset:
            return Recovery(state.epoch, state.offset, False)
        missed = state.offset - since.offset
        kept = state.entries
        # Entries are contiguous up to the last offset: all are kept if the first is.
        complete = missed == 0 or (bool(kept) and kept[0][0] <= since.offset + 1)
        if not complete:
            return Recovery(state.epoch, state.offset, False)
        skip = since.offset + 1 - kept[0][0] if missed else 0
        entries: list[Entry] = []
        size = 0
        for n in range(min(page, missed)):
            entry = kept[skip + n][:3]
            entries.append(entry)
            size += len(entry[1])
            if size >= REPLAY_PAGE_BYTES:
                break
        return Recovery(state.epoch, state.offset, True, entries)

    async def fetch(self, group: str, first: int, last: int) -> list[Entry]:
        state = self._groups.get(group)
        if state is None:
            return []
        return [entry[:3] for entry in state.entries if first <= entry[0] <= last]


# Both scripts start here: the group's epoch, made (with an empty stream and offset 0)
# from ARGV[1] if the group has none. KEYS: meta hash, stream. Ends inside the "if".
