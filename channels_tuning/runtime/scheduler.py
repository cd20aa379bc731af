"""One periodic task per process drives every connection's timers and the process' jobs.

A timer handle or task per connection costs a few GC-tracked objects each; calling
every connection at every tick costs, at 19 000 connections, 19 000 calls a second
to find the few that are due. So one task wakes every ``tick`` seconds and ticks
only the connections that are due, from a timer wheel of registry keys
(:class:`~channels_tuning.core.timerwheel.TimerWheel`): each connection says when
it next needs a tick (``next_tick_at``: its earliest heartbeat, idle or lifetime
deadline) and is ticked then, not before. Deadlines are read lazily: a frame that
moves a connection's idle deadline enters nothing; the tick at the old deadline
finds it alive and asks again. The wheel holds keys, not consumers (a closed
connection's entry is skipped when it comes up, and never keeps the consumer
alive), and entering a deadline allocates nothing the collector tracks: the heap
of ``(due, key)`` pairs before it made 19 000 of them per heartbeat period at
19 000 idle connections, half of what each young collection scanned (docs/gc.md).
:attr:`Scheduler.ticked` counts the connections ticked, so a test can check that
the work follows what is due. Many due at once (connections opened together fall due
together) are ticked :data:`TICK_SLICE` at a time, the loop serving other work
between the slices.

The task exits when the registry is empty and is started again by the next
connection, so an idle process (or a test) is left with no background task.

The same task runs the process' periodic jobs (stats publishing, membership
refresh, the collector's...), but this module knows none of them: they are
registered with :meth:`Scheduler.every` by the starters that
:mod:`channels_tuning.jobs` adds with :meth:`Scheduler.on_start`, which run each
time the scheduler starts on a loop (at its first connection: start-up is over).
So the runtime imports nothing from the layers or the observability it drives.
Jobs get the registry itself, which they iterate only when they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..core.every import Every
from ..core.timerwheel import TimerWheel
from . import clock
from .asyncutil import in_slices
from .registry import ConnectionRegistry, registry

logger = logging.getLogger(__name__)

#: Due connections ticked in one go before the task lets the loop serve other work:
#: about 2 ms at the ~20 µs an idle tick costs. 19 000 idle connections opened over
#: 20 s fall due over 20 s (their idle deadlines), ~1 000 in one tick: held in one go,
#: they stopped the loop 10-30 ms once a second, the idle probe's p99 (docs/gc.md).
TICK_SLICE = 100

#: A job: called with the tick's time and the live connections (iterate them only
#: when the job has work: at 20 000 connections a pass costs milliseconds).
JobFunction = Callable[[float, Iterable[Any]], None]


@dataclass(slots=True)
class Job:
    name: str
    run: JobFunction
    #: When it runs; ``None``: at every tick.
    every: Every | None


class Scheduler:
    def __init__(self, connections: ConnectionRegistry) -> None:
        self._connections = connections
        self._task: asyncio.Task[None] | None = None
        self.tick = 1.0
        self._starters: list[Callable[[Scheduler], None]] = []
        self._jobs: dict[str, Job] = {}
        #: Set by a starter that needs the task to outlive the last connection
        #: (stats publishing: an idle process keeps saying it is alive).
        self.keep_alive = False
        #: The event loop the connections live on (set at the first connection).
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Registry keys by due time; a consumer's ``timer_due`` says which of its
        #: entries is live.
        self._timers: TimerWheel[str] = TimerWheel()
        #: Connections ticked so far (the work the timers did).
        self.ticked = 0

    # ------------------------------------------------------------- registration

    def on_start(self, starter: Callable[[Scheduler], None]) -> None:
        """Run ``starter(self)`` each time the scheduler starts on a loop (once per
        starter, however often it is added)."""
        if starter not in self._starters:
            self._starters.append(starter)

    def every(
        self, name: str, interval: float | None, run: JobFunction, *, first_at: float = 0.0
    ) -> Job:
        """Run ``run(now, consumers)`` every ``interval`` seconds (``None``: every
        tick), first at ``first_at`` (monotonic; 0: the next tick). A job of the same
        name is replaced."""
        job = Job(name, run, None if interval is None else Every(interval, first_at))
        self._jobs[name] = job
        return job

    def schedule(self, consumer: Any, at: float) -> None:
        """Tick ``consumer`` at the first tick at or after ``at`` (monotonic; 0: the
        next tick). Only ever brings its timer forward: a later deadline is found by
        asking the consumer when the earlier one comes up."""
        due = consumer.timer_due
        if due is not None and due <= at:
            return
        consumer.timer_due = at
        self._timers.add(consumer.registry_key, at, due)

    def _compact(self) -> None:
        """Drop the entries of closed connections and superseded ones (churn leaves
        them until their deadline: bounded, but not by the connections open)."""
        self._timers.rebuild(
            (consumer.registry_key, consumer.timer_due)
            for consumer in self._connections
            if consumer.timer_due is not None
        )

    def pending_timers(self) -> int:
        """Entries in the timer wheel (live and superseded)."""
        return len(self._timers)

    def cancel(self, name: str) -> None:
        self._jobs.pop(name, None)

    def jobs(self) -> list[str]:
        return list(self._jobs)

    # ------------------------------------------------------------------ running

    def ensure_running(self, tick: float) -> None:
        """Start the scheduler on the running loop if it is not running there."""
        self.tick = min(self.tick, tick) if self.is_running() else tick
        if not self.is_running():
            self.loop = asyncio.get_running_loop()
            self.keep_alive = False
            for starter in self._starters:
                try:
                    starter(self)
                except Exception:
                    logger.exception("channels_tuning: a scheduler starter failed")
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="channels_tuning.scheduler"
            )

    async def stop(self) -> None:
        """End the task on the running loop now (a test's end, before its event loop
        closes: an older pytest-asyncio closes it with the task pending, and Python
        logs "Task was destroyed but it is pending"). The next connection starts it
        again."""
        task = self._task
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._task = None

    def is_running(self) -> bool:
        task = self._task
        return (
            task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()
        )

    async def _run(self) -> None:
        while self._connections or self.keep_alive:
            await asyncio.sleep(self.tick)
            await in_slices(
                self._pop_due(clock.monotonic()),
                TICK_SLICE,
                lambda part: self._tick(part, clock.monotonic()),
                on_cancel=self._due_at_next_start,
            )
            self._run_jobs(clock.monotonic())
        self._task = None
        self._timers.rebuild(())  # every entry's connection is gone

    def run_once(self, now: float) -> None:
        """One tick at ``now``, every due connection at once (the fake-clock tests'
        tick; the task's own ticks go in slices)."""
        self._tick(self._pop_due(now), now)
        self._run_jobs(now)

    def _due_at_next_start(self, consumers: Iterable[Any]) -> None:
        """A stop between slices: the rest are ticked at the next start's first tick."""
        for consumer in consumers:
            self.schedule(consumer, 0.0)

    def _run_jobs(self, now: float) -> None:
        connections = self._connections
        for job in list(self._jobs.values()):
            every = job.every
            if every is not None:
                if not every.due(now):
                    continue
                every.ran(now)
            try:
                job.run(now, connections)
            except Exception:
                logger.exception("channels_tuning: scheduler job %s failed", job.name)

    def _pop_due(self, now: float) -> list[Any]:
        """The connections due at ``now``, taken out of the timers."""
        timers = self._timers
        if len(timers) > 2 * len(self._connections) + 1024:
            self._compact()
        lookup = self._connections.get
        due: list[Any] = []
        for key in timers.pop_due(now, functools.partial(_timer_due, lookup)):
            consumer = lookup(key)
            # Gone, or returned twice (moved away and back) and already taken.
            if consumer is not None and consumer.timer_due is not None:
                consumer.timer_due = None
                due.append(consumer)
        return due

    def _tick(self, due: Iterable[Any], now: float) -> None:
        # Ticked after the pops, so a consumer due again at once waits for the next
        # tick rather than looping here.
        connections = self._connections
        for consumer in due:
            if not connections.holds(consumer):
                continue  # closed while an earlier slice ran
            self.ticked += 1
            try:
                consumer.on_tick(now)
            except Exception:
                # One broken consumer must not stop heartbeats for all the others.
                logger.exception("channels_tuning: tick failed for %r", consumer)
            try:
                at = consumer.next_tick_at(now)
            except Exception:
                logger.exception("channels_tuning: next_tick_at failed for %r", consumer)
                at = now
            if at is not None:
                self.schedule(consumer, at)


def _timer_due(lookup: Callable[[str], Any], key: str) -> float | None:
    consumer = lookup(key)
    return None if consumer is None else consumer.timer_due


#: The scheduler of this process.
scheduler = Scheduler(registry)


def in_flight(task: asyncio.Task[Any] | None) -> bool:
    """A task still running on this loop (one left on a closed loop does not count)."""
    return task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()
