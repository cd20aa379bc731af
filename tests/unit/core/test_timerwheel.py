"""The timer wheel pops what a heap of ``(due, key)`` would, at the same calls, and
entering a deadline makes nothing the collector tracks (fake clock)."""

from __future__ import annotations

import gc
import heapq
import random

import pytest

from channels_tuning.core.timerwheel import TimerWheel


class Owner:
    """Keeps each key's due time, as the scheduler (a consumer's ``timer_due``) and
    the daphne checkers (a mapping) do."""

    def __init__(self, slot_width: float) -> None:
        self.wheel: TimerWheel[int] = TimerWheel(slot_width)
        self.due: dict[int, float] = {}
        self.returned = 0

    def schedule(self, key: int, at: float) -> None:
        self.wheel.add(key, at, self.due.get(key))
        self.due[key] = at

    def pop(self, now: float, limit: int | None = None) -> list[int]:
        taken = []
        returned = self.wheel.pop_due(now, self.due.get, limit)
        #: Keys the wheel returned, a key returned twice included (the limit's count).
        self.returned = len(returned)
        for key in returned:
            if self.due.pop(key, None) is not None:
                taken.append(key)
        return taken


class HeapModel:
    """The rule the wheel keeps: a key is popped at the first call at or after its
    latest due time."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int]] = []
        self.due: dict[int, float] = {}

    def schedule(self, key: int, at: float) -> None:
        self.due[key] = at
        heapq.heappush(self.heap, (at, key))

    def pop(self, now: float, limit: int | None = None) -> list[int]:
        """Popped in (due, key) order: where a limit cuts, which keys come first is
        the heap's order; the wheel's is its slots', so tests compare sets."""
        taken: list[int] = []
        while self.heap and self.heap[0][0] <= now:
            at, key = heapq.heappop(self.heap)
            if self.due.get(key) == at:
                del self.due[key]
                taken.append(key)
        return taken


def test_a_key_is_popped_at_the_first_call_at_or_after_its_time_not_at_its_slot():
    owner = Owner(slot_width=1.0)
    owner.schedule(1, 10.6)
    owner.schedule(2, 10.2)
    assert owner.pop(10.0) == []  # the slot has begun; neither is due
    assert owner.pop(10.2) == [2]
    assert owner.pop(10.5) == []
    assert owner.pop(10.6) == [1]
    assert len(owner.wheel) == 0


def test_a_moved_key_leaves_a_stale_entry_that_is_dropped_and_never_popped():
    owner = Owner(slot_width=1.0)
    owner.schedule(1, 5.0)
    owner.schedule(1, 9.0)  # moved later: the entry in slot 5 is stale
    assert len(owner.wheel) == 2
    assert owner.pop(6.0) == []
    assert len(owner.wheel) == 1
    owner.schedule(1, 3.0)  # moved back earlier than now: popped at the next call
    assert owner.pop(6.0) == [1]
    assert owner.pop(10.0) == []  # slot 9's entry is stale now


def test_a_move_within_a_slot_adds_no_entry():
    owner = Owner(slot_width=1.0)
    owner.schedule(1, 5.1)
    owner.schedule(1, 5.9)
    owner.schedule(1, 5.5)
    assert len(owner.wheel) == 1
    assert owner.pop(5.4) == []
    assert owner.pop(5.5) == [1]


def test_a_key_back_in_a_slot_with_its_old_entry_is_taken_once():
    owner = Owner(slot_width=1.0)
    owner.schedule(1, 5.5)
    owner.schedule(1, 2.0)
    assert owner.pop(2.0) == [1]
    owner.schedule(1, 5.2)  # slot 5 holds its first entry still
    assert owner.pop(6.0) == [1]


def test_a_gone_key_is_dropped():
    owner = Owner(slot_width=0.25)
    for key in range(100):
        owner.schedule(key, 1.0 + key / 100)
    for key in range(0, 100, 2):
        del owner.due[key]  # closed: the owner forgets it, the wheel is not told
    assert owner.pop(3.0) == list(range(1, 100, 2))
    assert len(owner.wheel) == 0


def compare_through_random_schedules(owner: Owner, model: HeapModel, limit: int | None) -> None:
    """Random schedules and pops; with a limit, the wheel's backlog is checked to be
    popped in full by later calls (what the heap holds due, the wheel holds too)."""
    rng = random.Random(25)
    now = 1000.0
    for _ in range(3_000):
        for _ in range(rng.randrange(4)):
            key = rng.randrange(200)
            at = now + rng.choice([-1.0, 0.0, rng.uniform(0, 30), round(rng.uniform(0, 5), 1)])
            owner.schedule(key, at)
            model.schedule(key, at)
        now += rng.choice([0.0, 0.1, 0.25, 0.3, 1.0, rng.uniform(0, 2)])
        popped = owner.pop(now, limit)
        if limit is not None:
            assert owner.returned <= limit
        # Every key the model holds due is popped now or left due by the wheel.
        model_due = set(model.pop(now))
        assert set(popped) <= model_due
        backlog = model_due - set(popped)
        assert all(owner.due[key] <= now for key in backlog)
        for key in backlog:  # the model forgot them when it popped them: put back
            model.schedule(key, owner.due[key])
        if limit is None:
            assert not backlog
        elif owner.returned < limit:
            assert not backlog  # room left: nothing due may have been kept back
    assert owner.due == model.due


@pytest.mark.parametrize("slot_width", [0.01, 0.25, 1.0, 7.0])
def test_the_wheel_pops_what_a_heap_pops_through_random_schedules(slot_width):
    compare_through_random_schedules(Owner(slot_width), HeapModel(), limit=None)


@pytest.mark.parametrize("limit", [1, 3, 50])
def test_popped_in_parts_the_wheel_pops_what_a_heap_pops(limit):
    compare_through_random_schedules(Owner(0.25), HeapModel(), limit=limit)


def test_a_limit_looks_at_no_key_past_it_and_leaves_the_rest_first_in_line():
    owner = Owner(slot_width=1.0)
    for key in range(10):
        owner.schedule(key, 5.0 + key / 100)  # one slot, all due at 6.0
    owner.schedule(10, 4.5)  # an earlier slot
    owner.schedule(11, 6.5)  # the slot holding ``now``, not due
    looked: list[int] = []

    def due_of(key: int) -> float | None:
        looked.append(key)
        return owner.due.get(key)

    entries = len(owner.wheel)
    assert owner.wheel.pop_due(6.0, due_of, 4) == [10, 0, 1, 2]
    assert looked == [10, 0, 1, 2]  # no due time read past the limit
    assert len(owner.wheel) == entries - 4  # nothing entered again
    for key in (10, 0, 1, 2):
        del owner.due[key]
    assert owner.pop(6.0, 3) == [3, 4, 5]
    owner.schedule(20, 5.99)  # due now too, but added after the backlog in its slot
    assert owner.pop(6.0) == [6, 7, 8, 9, 20]
    assert owner.pop(6.5) == [11]
    assert len(owner.wheel) == 0


def test_rebuild_keeps_only_what_it_is_given():
    owner = Owner(slot_width=1.0)
    for key in range(10):
        owner.schedule(key, float(key))
    owner.wheel.rebuild([(3, 3.0), (7, 7.5)])
    assert len(owner.wheel) == 2
    assert owner.pop(100.0) == [3, 7]


def test_entering_ten_thousand_deadlines_makes_only_a_list_per_slot_for_the_collector():
    """A heap of ``(due, key)`` pairs makes 10 000 tracked tuples here (the young
    collections of docs/gc.md); the wheel makes one list per slot in use."""
    keys = [f"specific.channel!{n:06d}" for n in range(10_000)]
    owner: TimerWheel[str] = TimerWheel(0.25)
    due: dict[str, float] = {}
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for round_start in (0.0, 25.0):  # entered, then every one moved a period on
            for n, key in enumerate(keys):
                at = round_start + 25.0 * n / len(keys)
                owner.add(key, at, due.get(key))
                due[key] = at
        made = len(gc.get_objects()) - before
    finally:
        gc.enable()
    assert not gc.is_tracked(due)
    assert made <= 2 * 25.0 / 0.25 + 10  # a list per slot, two periods' worth


def test_slot_width_must_be_positive():
    with pytest.raises(ValueError):
        TimerWheel(0)
