"""One periodic task per process drives every connection's timers and the process' jobs.

A timer handle or task per connection per tick costs a few GC-tracked objects
each and, at thousands of connections, a measurable share of the loop. Instead
one task wakes every ``tick`` seconds and calls ``on_tick(now)`` on each
registered consumer, which compares a few floats (ping due? idle too long?
lifetime over?) and acts only when something is due. The task exits when the
registry is empty and is started again by the next connection, so an idle
process (or a test) is left with no background task.

The same task runs the process' periodic jobs (stats publishing, membership
refresh, the periodic collection...), but this module knows none of them: they are
registered with :meth:`Scheduler.every` by the starters that
:mod:`channels_tuning.jobs` adds with :meth:`Scheduler.on_start`, which run each
time the scheduler starts on a loop (at its first connection: start-up is over).
So the runtime imports nothing from the layers or the observability it drives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .registry import ConnectionRegistry, registry

logger = logging.getLogger(__name__)

#: A job: called with the tick's time and the consumers ticked at it.
JobFunction = Callable[[float, Sequence[Any]], None]


@dataclass(slots=True)
class Job:
    name: str
    run: JobFunction
    #: Seconds between runs; ``None``: at every tick.
    interval: float | None
    next_at: float = 0.0


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
        job = Job(name, run, interval, first_at)
        self._jobs[name] = job
        return job

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

    def is_running(self) -> bool:
        task = self._task
        return (
            task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()
        )

    async def _run(self) -> None:
        while self._connections or self.keep_alive:
            await asyncio.sleep(self.tick)
            self.run_once(time.monotonic())
        self._task = None

    def run_once(self, now: float) -> None:
        consumers = list(self._connections)
        for consumer in consumers:
            try:
                consumer.on_tick(now)
            except Exception:
                # One broken consumer must not stop heartbeats for all the others.
                logger.exception("channels_tuning: tick failed for %r", consumer)
        for job in list(self._jobs.values()):
            if job.interval is not None and now < job.next_at:
                continue
            if job.interval is not None:
                job.next_at = now + job.interval
            try:
                job.run(now, consumers)
            except Exception:
                logger.exception("channels_tuning: scheduler job %s failed", job.name)


#: The scheduler of this process.
scheduler = Scheduler(registry)


def in_flight(task: asyncio.Task[Any] | None) -> bool:
    """A task still running on this loop (one left on a closed loop does not count)."""
    return task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()
