"""Presence: who is connected to a group, across every server process.

Opt-in per group with the ``PRESENCE`` setting (``fnmatch`` patterns)::

    CHANNELS_TUNING = {"PRESENCE": {"chat.*": {"events": True}}, "PRESENCE_TTL": 10}

A tuned consumer that joins such a group (``join_group`` or ``groups``) is entered
with its identity (``presence_identity()``: the authenticated user's id, else the
channel name) and removed when it leaves or ends. Read it anywhere::

    from channels_tuning.presence import presence, presence_count
    await presence_count("chat.lobby")   # one ZCOUNT: no member list is fetched
    await presence("chat.lobby")         # [PresenceEntry(identity, channel), ...]

**How long an entry outlives its connection.** A clean close removes it at once. A
process that dies (SIGKILL, power loss) or loses Redis cannot remove its entries:
each entry carries an expiry ``PRESENCE_TTL`` seconds ahead, which its live process
pushes forward every ``PRESENCE_TTL / 3`` seconds, so a dead process' entries are gone
from ``presence`` and ``presence_count`` within ``PRESENCE_TTL`` seconds. A process
that was only stalled (or cut off from Redis) puts its entries back at its next
refresh, and they are announced as joined again.

**Join/leave events** (``"events": True``, off by default) are sent to the group's
members as one JSON text frame per process per group per second at most::

    {"kind":"presence","topic":"chat.lobby","data":{"joined":["42"],"left":["7"]}}

coalesced: a connection that leaves and joins again within the second (a reconnect)
cancels out, so a reconnect storm is not an event storm. A process that is killed
cannot say that its connections left: the first live process whose refresh finds
their entries expired removes them and sends their leave event, within
``PRESENCE_TTL`` plus a third of it.

On Redis: one sorted set per group, ``<prefix>:ct:pres:<group>`` on the group's shard,
member ``<channel> <identity>``, score the entry's expiry in ms. Memory per entry:
see ``docs/recovery.md`` (``python benchmarks/history.py``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..conf import GroupPatterns
from ..runtime.counters import LAYER_ERRORS, PRESENCE_EVENTS
from .frames import FRAME_TYPE

logger = logging.getLogger("channels_tuning")

__all__ = [
    "MemoryPresence",
    "PresenceEntry",
    "PresencePolicy",
    "PresenceStore",
    "presence_policy",
]

#: Seconds between two event frames of one process for one group.
EVENT_INTERVAL = 1.0

#: Called with ``("joined" | "left", group, identity, channel)`` as this process enters
#: or removes an entry (``channels_tuning.testing.capture_presence``); empty otherwise.
PRESENCE_OBSERVERS: list[Callable[[str, str, str, str], None]] = []


class PresenceEntry(NamedTuple):
    identity: str
    channel: str


@dataclass(frozen=True, slots=True)
class PresencePolicy:
    #: Send coalesced join/leave events to the group's members.
    events: bool = False


#: The ``PRESENCE`` setting's policy for a group (the first matching pattern), or None.
presence_policy: GroupPatterns[PresencePolicy] = GroupPatterns(
    "PRESENCE", lambda value: PresencePolicy(bool((value or {}).get("events", False)))
)


def presence_ttl() -> float:
    from ..conf import project_settings

    return float(project_settings()["PRESENCE_TTL"])  # only used where settings exist


class PresenceStore:
    """This process' presence entries, the periodic refresh, and coalesced events.

    Subclasses store the entries (:class:`MemoryPresence`, and
    :class:`~channels_tuning.layers.redis.presence.RedisPresence`)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        #: This process' entries: group -> channel -> identity.
        self.local: dict[str, dict[str, str]] = collections.defaultdict(dict)
        #: Net joins (+) and leaves (-) per group and identity since the last event.
        self._pending: dict[str, collections.Counter[str]] = {}
        self._tasks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
            weakref.WeakKeyDictionary()
        )

    async def add(self, group: str, channel: str, identity: str, policy: PresencePolicy) -> None:
        self.local[group][channel] = identity
        await self._store_add(group, channel, identity)
        if policy.events:
            self._pending.setdefault(group, collections.Counter())[identity] += 1
        for observe in PRESENCE_OBSERVERS:
            observe("joined", group, identity, channel)
        self._ensure_running()

    async def remove(self, group: str, channel: str, policy: PresencePolicy) -> None:
        members = self.local.get(group)
        identity = members.pop(channel, None) if members is not None else None
        if members is not None and not members:
            del self.local[group]
        if identity is None:
            return
        if policy.events:
            self._pending.setdefault(group, collections.Counter())[identity] -= 1
        for observe in PRESENCE_OBSERVERS:
            observe("left", group, identity, channel)
        await self._store_remove(group, channel, identity)

    async def count(self, group: str) -> int:
        raise NotImplementedError

    async def members(self, group: str) -> list[PresenceEntry]:
        raise NotImplementedError

    # ------------------------------------------------------------- storage

    async def _store_add(self, group: str, channel: str, identity: str) -> None:
        raise NotImplementedError

    async def _store_remove(self, group: str, channel: str, identity: str) -> None:
        raise NotImplementedError

    async def _refresh(self) -> None:
        """Push the expiry of every local entry forward."""

    # ------------------------------------------------------- refresh, events

    async def stop(self) -> None:
        """End the task of the running loop now (a test's end: an older pytest-asyncio
        closes the loop with the task pending, and Python logs "Task was destroyed but
        it is pending"). Events not yet sent are dropped; entries stay, and the next
        entry starts the task (their refresh) again."""
        self._pending.clear()
        task = self._tasks.pop(asyncio.get_running_loop(), None)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._tasks.get(loop)
        if task is None or task.done():
            self._tasks[loop] = loop.create_task(self._run(), name="channels_tuning.presence")

    async def _run(self) -> None:
        last_refresh = time.monotonic()
        while self.local or self._pending:
            await asyncio.sleep(EVENT_INTERVAL)
            await self._send_events()
            if time.monotonic() - last_refresh >= presence_ttl() / 3:
                last_refresh = time.monotonic()
                try:
                    await self._refresh()
                except Exception as error:  # Redis away: entries expire if it lasts
                    LAYER_ERRORS.inc((f"presence:{type(error).__name__}",))

    async def _send_events(self) -> None:
        pending, self._pending = self._pending, {}
        for group, changes in pending.items():
            joined = sorted(identity for identity, n in changes.items() if n > 0)
            left = sorted(identity for identity, n in changes.items() if n < 0)
            if not joined and not left:
                PRESENCE_EVENTS.inc(("coalesced",))
                continue  # a reconnect within the second: nothing to say
            text = json.dumps(
                {"kind": "presence", "topic": group, "data": {"joined": joined, "left": left}},
                separators=(",", ":"),
            )
            message = {
                "type": FRAME_TYPE,
                "frame": {"type": "websocket.send", "text": text},
                "control": True,  # not for plain pages: wire.subprotocol
            }
            try:
                from .sending import send_with_policy

                await send_with_policy(
                    self.layer, group, message, on_full="drop", timeout=0, raise_at_deadline=False
                )
                PRESENCE_EVENTS.inc(("sent",))
            except Exception as error:
                PRESENCE_EVENTS.inc(("failed",))
                logger.warning("channels_tuning: presence event to %s failed: %r", group, error)


class MemoryPresence(PresenceStore):
    """Presence of the in-memory layer: this process is the whole world."""

    async def count(self, group: str) -> int:
        return len(self.local.get(group, ()))

    async def members(self, group: str) -> list[PresenceEntry]:
        return [PresenceEntry(i, c) for c, i in self.local.get(group, {}).items()]

    async def _store_add(self, group: str, channel: str, identity: str) -> None:
        pass

    async def _store_remove(self, group: str, channel: str, identity: str) -> None:
        pass
