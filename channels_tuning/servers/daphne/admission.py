"""Admission: how many WebSocket upgrades a server process takes in at once.

A server that accepts every connection the kernel offers spends a reconnect storm
parsing requests it then refuses: with ``--max-pending-upgrades`` answering 503 alone,
the process restarted under 19 000 clients answered 27 000-76 000 of them 503 and its
busiest second completed 1 274-1 535 handshakes (``benchmarks/storm.py``). So, as Go's
``netutil.LimitListener`` does, :class:`AcceptGate` stops reading the listening
sockets while ``limit`` upgrades wait for their application to accept; new
connections wait in the kernel's listen backlog (past it the kernel drops their SYNs,
which clients send again), at no cost to the process, and are read again as soon as
one is settled. The connections accepted but not yet past their first request count
too, up to half the limit: a storm's clients send their request at once, and
without them the gate overshot by every round accepted before those requests were
parsed (7 000-18 000 503s in the storm); idle sockets and slowloris clients stay
there until their handshake deadline, and counted whole they would close the gate for
everyone (``--max-half-open`` and the deadline bound them). Each accept round takes
at most a tenth of the limit (:func:`channels_tuning.compat.twisted.bound_accepts`;
Twisted grows its rounds by 20 connections after each full one). An upgrade that
still finds the limit reached gets the 503 as before.

Measured with the gate (``python benchmarks/storm.py --connections 19000 --kinds
tuned``): see docs/benchmarks.md, "A reconnect storm after a restart". What it trades:
while the gate is closed, a health check or plain HTTP request waits in the backlog with
the upgrades, for as long as the pending upgrades take (a fraction of a second in the
storm; up to daphne's ``--websocket_connect_timeout`` if applications do not accept).
A balancer's checks go to ``--health-port`` instead, which is never paused and whose
connections are not counted (servers.daphne.health says what they did on the serving
port).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ...compat import twisted
from ...runtime.counters import ACCEPT_PAUSES
from ...runtime.ratelog import RateLimitedLog

logger = logging.getLogger("channels_tuning.server")


class AcceptGate:
    """Stop reading the listening ports while ``in_progress()`` (the upgrades waiting
    for their application, and :attr:`half_open_share` of the connections in their
    handshake at most) is at ``limit`` or more; read them again once it is below,
    checked after the callback running now. ``limit`` None: the ports are always read,
    in rounds as Twisted sizes them. The server's listening ports are kept here only:
    the drain stops them through :meth:`stop_listening`."""

    def __init__(
        self,
        limit: int | None,
        in_progress: Callable[[], int],
        call_soon: Callable[[Callable[[], None]], Any],
    ) -> None:
        self.limit = limit
        self.in_progress = in_progress
        #: Runs a callback after the one running now (the event loop's ``call_soon``).
        self.call_soon = call_soon
        #: The most connections one accept round takes.
        self.round_limit = max(1, (limit or 0) // 10)
        #: How many connections still in their handshake count, at most.
        self.half_open_share = (limit or 0) // 2
        #: Every listening port; the paused ones are ``gated_ports``.
        self.ports: list[Any] = []
        self.gated_ports: list[Any] = []
        self.paused = False
        #: A check for room to read the ports again is scheduled.
        self.resume_scheduled = False
        #: Set by the drain: its ports stopped listening, never read them again.
        self.closed = False
        self._log = RateLimitedLog(logger)

    def add_port(self, port: Any, gated: bool = True) -> None:
        """A listening port; ``gated`` False: never paused (``--health-port``)."""
        self.ports.append(port)
        if gated:
            self.gated_ports.append(port)
            if self.limit is not None:
                twisted.bound_accepts(port, self.allowance)

    def allowance(self) -> int:
        """Connections one accept round may take."""
        if self.limit is None:
            return 1 << 30
        return min(self.limit - self.in_progress(), self.round_limit)

    def update(self) -> None:
        """Call whenever ``in_progress()`` may have changed."""
        if self.limit is None or self.closed:
            return
        full = self.in_progress() >= self.limit
        if full and not self.paused:
            self.paused = True
            ACCEPT_PAUSES.inc(())
            self._log.log(
                "channels_tuning: not accepting connections: %d upgrades pending", self.limit
            )
            for port in self.gated_ports:
                port.stopReading()
        elif self.paused and not full and not self.resume_scheduled:
            # Resume after the callback running now, if there is still room then: an
            # upgrade's first request leaves the half-open count and, in the same
            # call, its application enters the pending one; resuming between the two
            # would stop the ports again at once (two epoll_ctl calls per upgrade).
            self.resume_scheduled = True
            self.call_soon(self._resume_if_room)

    def stop_listening(self) -> None:
        """The drain: the ports stop listening and are never read again."""
        self.paused, self.closed = False, True
        for port in self.ports:
            port.stopListening()

    def _resume_if_room(self) -> None:
        self.resume_scheduled = False
        if not self.paused or self.closed or self.in_progress() >= (self.limit or 0):
            return
        self.paused = False
        for port in self.gated_ports:
            port.startReading()
