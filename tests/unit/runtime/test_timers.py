"""The scheduler ticks a connection only when one of its timers is due: the work of a
tick follows what is due, not what is open (fake clock, then real consumers)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from channels.testing import WebsocketCommunicator
from django.test import override_settings

from channels_tuning.core import ConnectionCore, ConnectionSettings
from channels_tuning.core.policies import HeartbeatPolicy, LifetimePolicy, Policy, PolicyChain
from channels_tuning.core.state import Liveness
from channels_tuning.runtime.registry import ConnectionRegistry
from channels_tuning.runtime.scheduler import TICK_SLICE, Scheduler, scheduler
from tests.support.consumers import Echo
from tests.support.waiting import read_at_each_loop_turn, until


class Connection:
    """What the scheduler needs of a consumer, around a real core."""

    owner_key = ""
    timer_due: float | None = None

    def __init__(self, key: str, chain: PolicyChain, now: float, liveness: Liveness) -> None:
        self.registry_key = key
        self.core = ConnectionCore(ConnectionSettings(), chain, now)
        self.core.liveness = liveness
        self.core.accept(now)
        self.ticks: list[float] = []
        self.sent: list = []

    def on_tick(self, now: float) -> None:
        self.ticks.append(now)
        self.core.tick(now)
        self.sent.extend(self.core.take_actions())

    def next_tick_at(self, now: float) -> float | None:
        return self.core.next_due()


def heartbeat_chain(interval: float | None = 25.0, idle: float | None = 60.0) -> PolicyChain:
    return PolicyChain([HeartbeatPolicy(interval, idle, binary=False)])


def test_ten_thousand_idle_connections_cost_no_tick_until_one_is_due():
    registry = ConnectionRegistry()
    timers = Scheduler(registry)
    connections = []
    for n in range(10_000):
        # Opened over 10 s, as clients arrive: their pings fall due spread out.
        c = Connection(f"c{n}", heartbeat_chain(), n / 1000, Liveness.APPLICATION)
        registry.add(c)
        timers.schedule(c, c.next_tick_at(n / 1000))
        connections.append(c)
    for now in range(11, 25):
        timers.run_once(float(now))
    assert timers.ticked == 0  # the first pings are due from 25 s on
    timers.run_once(25.0)
    assert timers.ticked == 1  # the one opened at 0 s
    timers.run_once(26.0)
    assert timers.ticked == 1_001  # opened in [0, 1] s
    assert all(len(c.sent) == 1 for c in connections[:1001])
    assert not any(c.sent for c in connections[1001:])
    for now in range(27, 36):
        timers.run_once(float(now))
    # Every connection got its one ping, each was ticked once, and the heap holds one
    # live entry per connection.
    assert timers.ticked == 10_000
    assert all(len(c.sent) == 1 for c in connections)
    assert timers.pending_timers() == 10_000


def test_a_frame_moves_the_idle_deadline_without_touching_the_timers():
    registry = ConnectionRegistry()
    timers = Scheduler(registry)
    quiet = Connection("quiet", heartbeat_chain(None, 10.0), 0.0, Liveness.TRANSPORT)
    talking = Connection("talking", heartbeat_chain(None, 10.0), 0.0, Liveness.TRANSPORT)
    for c in (quiet, talking):
        registry.add(c)
        timers.schedule(c, c.next_tick_at(0.0))
    talking.core.receive_frame({"type": "websocket.receive", "text": "hi"}, 7.0)
    assert timers.pending_timers() == 2
    timers.run_once(10.0)
    assert quiet.core.close_code == 4000 and talking.core.close_code is None
    assert talking.timer_due == 17.0  # asked again: its new deadline
    timers.run_once(16.0)
    assert talking.ticks == [10.0]
    timers.run_once(17.0)
    assert talking.core.close_code == 4000


def test_a_client_watched_by_the_server_keepalive_is_never_ticked():
    c = Connection("s", heartbeat_chain(), 0.0, Liveness.SERVER)
    assert c.next_tick_at(0.0) is None
    lifetime = Connection(
        "l",
        PolicyChain([HeartbeatPolicy(25.0, 60.0, False), LifetimePolicy(30.0, 0.0)]),
        0.0,
        Liveness.SERVER,
    )
    assert lifetime.next_tick_at(0.0) == 30.0  # the lifetime still ends it


def test_a_policy_without_next_due_is_ticked_every_tick_as_before():
    class Counting(Policy):
        def on_tick(self, core, now):
            core.extra = {"ticks": (core.extra or {}).get("ticks", 0) + 1}

    registry = ConnectionRegistry()
    timers = Scheduler(registry)
    c = Connection(
        "c",
        PolicyChain([HeartbeatPolicy(25.0, 60.0, False), Counting()]),
        0.0,
        Liveness.APPLICATION,
    )
    registry.add(c)
    timers.schedule(c, c.next_tick_at(0.0))
    for now in (1.0, 2.0, 3.0):
        timers.run_once(now)
    assert c.core.extra == {"ticks": 3}


def test_closed_connections_leave_no_live_entry_and_the_heap_is_compacted():
    registry = ConnectionRegistry()
    timers = Scheduler(registry)
    kept = []
    for n in range(5_000):
        c = Connection(f"c{n}", heartbeat_chain(), 0.0, Liveness.APPLICATION)
        registry.add(c)
        timers.schedule(c, c.next_tick_at(0.0))
        if n % 10:
            registry.discard(c)  # closed: its entry stays until it is due or compacted
        else:
            kept.append(c)
    timers.run_once(1.0)
    assert timers.pending_timers() == len(kept) == 500


class OwnTimer(Echo):
    ticks = 0

    def on_tick(self, now):
        type(self).ticks += 1
        super().on_tick(now)


@override_settings(CHANNELS_TUNING={"SCHEDULER_TICK": 0.02})
async def test_open_consumers_are_not_ticked_while_nothing_is_due():
    """200 real consumers with the default heartbeat (a ping due in 25 s): once
    accepted, a quarter of a second of ticks ticks none of them; a subclass that
    overrides on_tick (a timer of its own) is still ticked at every tick."""
    scheduler._task = None  # a fresh start reads the overridden settings
    clients = [WebsocketCommunicator(Echo.as_asgi(), "/ws/") for _ in range(200)]
    for client in clients:
        assert (await client.connect())[0]
    own = WebsocketCommunicator(OwnTimer.as_asgi(), "/ws/")
    assert (await own.connect())[0]
    await asyncio.sleep(0.1)  # the connecting ticks are over
    before, own_before = scheduler.ticked, OwnTimer.ticks
    started = time.monotonic()
    await asyncio.sleep(0.25)
    elapsed = time.monotonic() - started
    ticked = scheduler.ticked - before
    assert ticked == OwnTimer.ticks - own_before  # only the one with its own timer
    assert ticked >= min(5, int(elapsed / 0.02) // 2)
    for client in [*clients, own]:
        await client.disconnect()


def overdue_connections(registry: ConnectionRegistry, timers: Scheduler, count: int) -> list:
    """``count`` open connections whose first ping was due 75 s ago."""
    long_ago = time.monotonic() - 100
    connections = []
    for n in range(count):
        c = Connection(f"c{n}", heartbeat_chain(idle=None), long_ago, Liveness.APPLICATION)
        registry.add(c)
        timers.schedule(c, c.next_tick_at(long_ago))
        connections.append(c)
    return connections


async def test_many_due_at_once_are_ticked_in_slices_with_the_loop_served_between():
    """1 000 connections due in one tick held the loop 10-30 ms at 19 000 idle (the
    stall probe's p99): the task ticks them TICK_SLICE at a time, and other callbacks
    run between the slices."""
    registry = ConnectionRegistry()
    timers = Scheduler(registry)
    count = 2 * TICK_SLICE + 50
    connections = overdue_connections(registry, timers, count)
    seen_by_others = read_at_each_loop_turn(lambda: timers.ticked, count)
    timers.ensure_running(0.01)
    await until(lambda: timers.ticked == count, 5)
    assert {TICK_SLICE, 2 * TICK_SLICE} <= set(seen_by_others)  # served between slices
    assert all(len(c.sent) == 1 for c in connections)  # each pinged once
    await timers.stop()


async def test_a_scheduler_stopped_between_slices_leaves_the_rest_due():
    """Stopped after its first slice (a test's end, a loop closing), the scheduler
    leaves the connections it had not ticked yet due at its next start."""
    registry = ConnectionRegistry()
    timers = Scheduler(registry)
    connections = overdue_connections(registry, timers, 250)
    loop = asyncio.get_running_loop()
    timers.ensure_running(0.01)
    task = timers._task
    assert task is not None

    def stop_after_the_first_slice() -> None:
        if timers.ticked == 0:
            loop.call_soon(stop_after_the_first_slice)
        else:
            task.cancel()

    loop.call_soon(stop_after_the_first_slice)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert timers.ticked == TICK_SLICE
    timers.run_once(time.monotonic())  # the next start's first tick
    assert timers.ticked == 250
    assert all(len(c.sent) == 1 for c in connections)
