"""Deadlines of many connections, kept so that scheduling one allocates nothing the
collector scans.

A heap of ``(due, key)`` pairs makes a tuple per deadline. At 19 000 idle
connections the two heaps of a process (the scheduler's and the daphne checkers')
made 38 000 such pairs per heartbeat period, and they were what a young collection
scanned: 32-46 ms each (docs/gc.md). A :class:`TimerWheel` keeps, per slot of
``slot_width`` seconds, a list of the keys due in it, and a heap of slot numbers.
Scheduling a key appends an object the caller already holds (its registry key) to
a list that exists; slot numbers and due times are ints and floats, which the
collector never tracks. A young collection at 19 000 idle connections now finds
none of it.

The owner of the keys keeps each key's due time (a consumer's ``timer_due``, a
mapping of the daphne checkers) and passes a ``due_of`` function to
:meth:`TimerWheel.pop_due`. An entry is live while its key's due time is in the
entry's slot: a key moved to another slot leaves a stale entry, dropped when its
slot comes up, and a key that is gone (``due_of`` returns None) likewise. So the
wheel needs no removal, and the rule is the heap's: a key is popped at the first
call at or after its due time, exactly, whatever the slot width. The keys of the
slot that holds ``now`` and are not due yet stay in it and are looked at again by
the next call. A key can be returned twice (moved away and back into a slot whose
old entry is still there): the caller clears the due time of a key it takes and
skips a key whose due time is already clear. A ``limit`` on a call leaves the due
keys past it in their slots, ahead of every later one: the daphne checkers check at
most ``CHECKS_PER_RUN`` connections a run, and a backlog that waits there is not
looked at (nor entered again) until its turn.

No I/O and no clock: times are passed in (fake-clock tests in
``tests/unit/core/test_timerwheel.py``).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

__all__ = ["TimerWheel"]

Key = TypeVar("Key", bound=Hashable)


class TimerWheel(Generic[Key]):
    """Keys due at given times, popped when due."""

    __slots__ = ("_entries", "_order", "_slots", "slot_width")

    def __init__(self, slot_width: float = 0.25) -> None:
        if slot_width <= 0:
            raise ValueError("slot_width must be positive")
        #: Seconds per slot. Only a cost trade: wider slots, fewer lists and more
        #: keys looked at again while their slot is the current one.
        self.slot_width = slot_width
        self._slots: dict[int, list[Key]] = {}
        #: Slot numbers that have a list, earliest first.
        self._order: list[int] = []
        self._entries = 0

    def __len__(self) -> int:
        """Entries held, live and stale."""
        return self._entries

    def slot_of(self, at: float) -> int:
        return int(at // self.slot_width)

    def add(self, key: Key, at: float, previous: float | None = None) -> None:
        """Enter ``key`` as due at ``at``. ``previous``: its due time until now (None:
        it had none); in the same slot, its entry there stays and nothing is added.
        The caller records ``at`` as the key's due time."""
        slot = int(at // self.slot_width)
        if previous is not None and int(previous // self.slot_width) == slot:
            return
        keys = self._slots.get(slot)
        if keys is None:
            self._slots[slot] = [key]
            heapq.heappush(self._order, slot)
        else:
            keys.append(key)
        self._entries += 1

    def pop_due(
        self, now: float, due_of: Callable[[Key], float | None], limit: int | None = None
    ) -> list[Key]:
        """The keys whose due time is at or before ``now``, in slot order (within a
        slot, in the order they were added). ``due_of(key)``: the key's due time, or
        None when it is gone or has none. ``limit``: return at most that many; the
        due keys past it stay in their slots, first for the next call, and their due
        times are not read (a backlog costs nothing until its turn)."""
        due: list[Key] = []
        order, slots, width = self._order, self._slots, self.slot_width
        current = int(now // width)
        room = (1 << 62) if limit is None else limit
        while order and order[0] <= current and room > 0:
            slot = order[0]
            keys = slots[slot]
            later: list[Key] = []
            looked = 0
            for key in keys:
                if not room:
                    break
                looked += 1
                at = due_of(key)
                if at is None or int(at // width) != slot:
                    continue  # gone, or moved to another slot
                if at <= now:
                    due.append(key)
                    room -= 1
                else:
                    later.append(key)
            self._entries -= looked - len(later)
            if later or looked < len(keys):
                # The slot that holds ``now`` (every later slot starts after it), or
                # the limit: what was not looked at stays after what is not due yet,
                # both in the order they were added.
                slots[slot] = later + keys[looked:]
                break
            heapq.heappop(order)
            del slots[slot]
        return due

    def rebuild(self, live: Iterable[tuple[Key, float]]) -> None:
        """Drop every entry and enter ``live`` (key, due) pairs: what the owner does
        when stale entries outnumber live ones (churn leaves one per closed
        connection until its slot comes up)."""
        self._slots.clear()
        self._order.clear()
        self._entries = 0
        for key, at in live:
            self.add(key, at)
