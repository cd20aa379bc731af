"""daphne's two periodic loops, at the cost of what is due.

daphne runs ``application_checker`` every second and ``timeout_checker`` every two
seconds over *every* connection it has: at 19 000 idle connections the two were 27 %
of the tuned server's CPU while idle and a stop of the loop each time they ran
(``python benchmarks/stall.py --connections 19000 --kinds tuned --profile``).
:class:`DueCheckers` keeps what they do and changes when:

- ``application_checker`` looks only at connections that disconnected or whose
  application ended (told by ``protocol_disconnected`` and the application task's
  done callback), and keeps looking at one each second while daphne still waits for
  its application to finish (``application_close_timeout``), as daphne does;
- ``timeout_checker`` calls daphne's own ``check_timeouts`` on a connection when it is
  due (the tuned protocol's, :mod:`.keepalive`): an open WebSocket when its keepalive
  ping is (``last_ping + ping_interval``, read again when it comes up: frames move
  it), its unanswered ping's ``ping_timeout`` ends, or its ``websocket_timeout`` does,
  anything else (HTTP requests, handshakes) every two seconds, as daphne does. The
  loop looks for what is due forty times a second, so pings go out spread as the
  connections opened, not in one burst every two seconds, and checks at most
  :data:`CHECKS_PER_RUN` connections a run, so connections that opened together are
  spread too. The deadlines are a
  timer wheel (:class:`~channels_tuning.core.timerwheel.TimerWheel`) of int keys,
  a key naming a connection in a weak mapping (made once per connection), so a
  closed connection is not kept and a rescheduled deadline makes nothing the
  collector tracks. (A heap of ``(time, weakref)`` entries, as before, made two
  objects per connection per ping that lived until the next one: 38 000 of the
  75 000 objects each young collection scanned at 19 000 idle connections, which
  took 70-130 ms; a heap of ``(time, key)`` pairs still made 19 000; docs/gc.md.)

The loop bodies are daphne 4.1-4.2's (``compat.daphne`` checks the source they follow;
when it changed, the server keeps daphne's own loops: ``features["due_checkers"]``).
:data:`WORK` counts the connections each loop looked at.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import reactor as _reactor

from ...compat import daphne as daphne_hooks
from ...core.timerwheel import TimerWheel
from .keepalive import keepalive_due

logger = logging.getLogger("daphne.server")
#: Twisted's reactor (its interface types callLater without ``self``).
reactor: Any = _reactor

#: daphne's cadences (seconds): application_checker, timeout_checker.
APPLICATION_CHECK_EVERY = 1
TIMEOUT_CHECK_EVERY = 2
#: How often the timeout loop looks for what is due (and the width of its wheel's
#: slots). A run with nothing due costs a comparison; each run sends the pings that
#: fell due since the last, so the cadence sets the length of each burst. At 19 000
#: connections (``benchmarks/stall.py --connections 19000 --kinds tuned``): daphne's
#: 2 s, ~2 000 pings a run, probe p99 328 ms; 0.25 s, ~240 a run (10-20 ms), p99
#: 33-52 ms; 0.05 s, ~50 a run, p99 18 ms, at the same CPU. At 16 700
#: (``--connections 16700 --kinds tuned --window 130 --slow-callbacks``), 0.05 s with
#: up to 100 a run left 178-367 runs a window over 4 ms (up to 8 ms of CPU) and a p99
#: of 10.6-13.1 ms in four runs; 0.025 s with up to 50, 17-31 runs (2.2 ms of CPU) and
#: 8.7-9.0 ms in three, at the same CPU (9.8 % of a core against 9.2-10.0). On a
#: second VM of the same kind (two runs each): 497-621 runs over 4 ms (up to 10.8 ms
#: of CPU) against 69-116 (up to 4.5), p99 14.1-18.2 against 12.0-12.6 ms, but the
#: CPU 11.1-11.8 % against 12.4-12.7: the shorter runs may cost a point of a core.
TIMEOUT_LOOP_EVERY = 0.025
#: Connections one run of the timeout loop checks at most; the rest stay in the
#: wheel, the next run's, first. Connections that opened together (a reconnect storm,
#: handshakes finished together after a pause of the loop) are due together at every
#: ping: at 19 000 idle connections, some runs held the loop 8-30 ms twice every 20 s.
#: Capped, the later ones are pinged a run or more later, so due later at every ping
#: after: spread for good. 50 a run is 2 000 a second, twice what 20 000 connections
#: pinged every 20 s need. (When the checkers took every due key and entered those
#: past the cap again, a backlog cost every run a pass over all of it: at half this
#: capacity, 21 ms of CPU a run at 16 700 connections.)
CHECKS_PER_RUN = 50
#: Connections looked at by each loop since the process started, and the connections
#: daphne tracks at the last application check (tests read it).
WORK = {"application_checks": 0, "timeout_checks": 0, "tracked": 0}
#: The context the applications' done callbacks run in (they read no context
#: variable): one for all, where ``add_done_callback`` would copy one per task.
_CALLBACK_CONTEXT = contextvars.Context()


class DueCheckers(Server):
    """daphne's ``Server`` whose periodic loops look only at what is due."""

    _settling: set[Any]
    #: Each running application's task and its connection; the bound method every
    #: task's done callback is.
    _running: dict[asyncio.Future[Any], Any]
    _ended_callback: Callable[[asyncio.Future[Any]], None]
    _deadlines: TimerWheel[int]
    #: Each watched connection's deadline (ints to floats: a mapping the collector
    #: does not track).
    _due_at: dict[int, float]
    _watched: weakref.WeakValueDictionary[int, Any]

    def _due_checkers_on(self) -> bool:
        return bool(daphne_hooks.features["due_checkers"])

    # ------------------------------------------------------------- events in

    def protocol_connected(self, protocol: Any) -> None:
        super().protocol_connected(protocol)
        if self._due_checkers_on():
            key = next(_KEYS)
            self._watched_protocols()[key] = protocol
            self._check_timeouts_at(key, time.time())  # at the next run, as daphne

    def protocol_disconnected(self, protocol: Any) -> None:
        super().protocol_disconnected(protocol)
        if self._due_checkers_on():
            self._pending().add(protocol)

    def application_started(self, protocol: Any, task: asyncio.Future[Any] | None) -> None:
        """Called with the task of a new application (whoever created it). Its done
        callback is one bound method for all, run in one empty context, and the task
        finds its connection in one mapping: a ``partial`` per connection, with the
        bound method in it and the context ``add_done_callback`` copies, held four
        tracked objects and 320 B for the connection's life (30 B now)."""
        if task is not None and self._due_checkers_on():
            tasks = self._application_tasks()
            tasks[task] = protocol
            task.add_done_callback(self._ended_callback, context=_CALLBACK_CONTEXT)

    def _application_ended(self, task: asyncio.Future[Any]) -> None:
        protocol = self._application_tasks().pop(task, None)
        if protocol is not None:
            self._pending().add(protocol)

    def _application_tasks(self) -> dict[asyncio.Future[Any], Any]:
        try:
            return self._running
        except AttributeError:  # daphne's Server has no __init__ hook for it
            self._running = {}
            self._ended_callback = self._application_ended
            return self._running

    def _pending(self) -> set[Any]:
        try:
            return self._settling
        except AttributeError:
            self._settling = set()
            return self._settling

    # ------------------------------------------------------ application checker

    def application_checker(self) -> None:
        if not self._due_checkers_on():
            return super().application_checker()
        pending, self._settling = self._pending(), set()
        WORK["application_checks"] += len(pending)
        for protocol in pending:
            details = self.connections.get(protocol)
            if details is not None and self._check_application(protocol, details):
                self._settling.add(protocol)
        WORK["tracked"] = len(self.connections)
        reactor.callLater(APPLICATION_CHECK_EVERY, self.application_checker)
        return None

    def _check_application(self, protocol: Any, details: dict[str, Any]) -> bool:
        """daphne's application_checker for one connection; True: look again in a
        second (disconnected, its application not finished yet)."""
        disconnected = details.get("disconnected")
        application_instance = details.get("application_instance")
        overdue = disconnected and time.time() - disconnected > self.application_close_timeout
        if overdue and application_instance and not application_instance.done():
            logger.warning(
                "Application instance %r for connection %s took too long to shut down "
                "and was killed.",
                application_instance,
                repr(protocol),
            )
            application_instance.cancel()
        if application_instance and application_instance.done():
            try:
                exception = application_instance.exception()
            except asyncio.CancelledError:
                pass
            else:
                if exception:
                    if isinstance(exception, KeyboardInterrupt):
                        self.stop()
                    else:
                        logger.error(
                            "Exception inside application: %s", exception, exc_info=exception
                        )
                        if not disconnected:
                            protocol.handle_exception(exception)
            del self.connections[protocol]["application_instance"]
            application_instance = None
        if not application_instance and disconnected:
            del self.connections[protocol]
            return False
        return bool(disconnected)

    # ---------------------------------------------------------- timeout checker

    def timeout_checker(self) -> None:
        if not self._due_checkers_on():
            return super().timeout_checker()
        now = time.time()
        deadlines = self._timeouts()
        due_at = self._due_at
        watched = self._watched_protocols()
        due = []
        # At most CHECKS_PER_RUN; a backlog stays in the wheel, first for the next run.
        for key in deadlines.pop_due(now, due_at.get, CHECKS_PER_RUN):
            if due_at.pop(key, None) is None:
                continue  # returned twice (moved away and back): already taken
            protocol = watched.get(key)
            if protocol is not None and protocol in self.connections:
                due.append((key, protocol))
            else:
                watched.pop(key, None)
        WORK["timeout_checks"] += len(due)
        for key, protocol in due:
            try:
                protocol.check_timeouts()
            finally:
                if protocol in self.connections:
                    self._check_timeouts_at(key, self._next_timeout(protocol, now))
                else:
                    watched.pop(key, None)
        reactor.callLater(TIMEOUT_LOOP_EVERY, self.timeout_checker)
        return None

    def _next_timeout(self, protocol: Any, now: float) -> float:
        soonest = now + TIMEOUT_CHECK_EVERY
        if not isinstance(protocol, WebSocketProtocol) or protocol.state != protocol.STATE_OPEN:
            return soonest
        due = keepalive_due(protocol, self)
        if self.websocket_timeout >= 0:
            due = min(due, protocol.socket_opened + self.websocket_timeout)
        # daphne pings when more than ping_interval passed: a little after the mark.
        return max(due + 0.01, now + TIMEOUT_LOOP_EVERY)

    def _check_timeouts_at(self, key: int, at: float) -> None:
        deadlines = self._timeouts()
        deadlines.add(key, at, self._due_at.get(key))
        self._due_at[key] = at

    def _timeouts(self) -> TimerWheel[int]:
        try:
            return self._deadlines
        except AttributeError:
            self._deadlines = TimerWheel(TIMEOUT_LOOP_EVERY)
            self._due_at = {}
            return self._deadlines

    def _watched_protocols(self) -> weakref.WeakValueDictionary[int, Any]:
        try:
            return self._watched
        except AttributeError:
            self._watched = weakref.WeakValueDictionary()
            return self._watched


#: A connection's key in the deadline wheel (unique: one entry per connection).
_KEYS = itertools.count()
