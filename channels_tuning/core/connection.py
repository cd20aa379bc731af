"""One WebSocket connection's state and decisions, without I/O.

:class:`ConnectionCore` owns the connection's :class:`ConnectionState`, its timers
(heartbeat, idle timeout, lifetime), its token bucket and its bounded outbound
queue with the overflow policy. It is driven by events, each given the current
time (an injected clock), and answers in two ways:

- return values for the hot paths: :meth:`receive_frame` says whether a client
  frame goes on to the application, :meth:`send` says whether a message is to be
  written now, was queued, or was dropped (:attr:`last_drop` says how many and why);
- *actions* for what the I/O side must do that it did not ask for (a ping or pong
  to send, a close to write): read them with :meth:`take_actions` after an event.

Nothing here counts, logs, or touches a socket: the consumer glue
(:mod:`channels_tuning.consumers.base`) does, from what the core returns.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

from ..exceptions import QueueOverflow
from ..wire.closecodes import CloseCode
from .policies import AdmissionContext, FrameKind, Message, PolicyChain, classify
from .queue import REASON_CLOSED, REASON_SLOW_CONSUMER, OutboundQueue
from .settings import ConnectionSettings
from .state import ConnectionState, Liveness

CONNECTING = ConnectionState.CONNECTING
OPEN = ConnectionState.OPEN
CLOSING = ConnectionState.CLOSING
CLOSED = ConnectionState.CLOSED
APPLICATION = Liveness.APPLICATION

#: Close code sent when the outbound queue overflows under ``disconnect``.
SLOW_CONSUMER_CODE = int(CloseCode.SLOW_CONSUMER)


class SendFrame(NamedTuple):
    """The core asks the I/O side to send a data frame (a ping, a pong) through
    :meth:`ConnectionCore.send`."""

    message: Message


class WriteClose(NamedTuple):
    """The core asks the I/O side to write the close frame; ``urgent`` writes it even
    past the transport's high-water mark (the backlog is gone)."""

    code: int
    reason: str | None
    urgent: bool


#: What :meth:`ConnectionCore.take_actions` returns (named tuples: typed, and as cheap
#: to make as the plain tuples they replaced).
Action = SendFrame | WriteClose


class Outcome(enum.IntEnum):
    """What :meth:`ConnectionCore.send` decided for one message."""

    #: Write it now: no backlog, and the transport said it can take it.
    WRITE = 0
    #: Queued behind a backlog (some older messages may have been dropped: see last_drop).
    QUEUED = 1
    #: This message was not kept (the connection is closing, or the policy dropped it).
    DROPPED = 2


class ConnectionCore:
    """The sans-I/O state machine of one connection."""

    __slots__ = (
        "_actions",
        "accepted_at",
        "chain",
        "close_code",
        "expires_at",
        "extra",
        "last_drop",
        "last_seen",
        "liveness",
        "next_ping",
        "queue",
        "settings",
        "state",
        "tokens",
        "tokens_at",
    )

    def __init__(self, settings: ConnectionSettings, chain: PolicyChain, now: float) -> None:
        self.settings = settings
        self.chain = chain
        self.state = CONNECTING
        #: When the connection was accepted (None: not yet).
        self.accepted_at: float | None = None
        #: When the client last sent any frame (the connection's start until then).
        self.last_seen = now
        #: Which heartbeat level watches this client (set by the I/O side at start).
        self.liveness = Liveness.APPLICATION
        #: The close code the server sent, once it closed.
        self.close_code: int | None = None
        #: The backlog: created only when the client falls behind.
        self.queue: OutboundQueue | None = None
        #: ``(count, reason)`` of the last :meth:`send` or :meth:`drop_backlog` that dropped.
        self.last_drop: tuple[int, str] | None = None
        # Per-connection state of the built-in policies (see core.policies).
        self.next_ping = 0.0
        self.tokens = 0.0
        self.tokens_at = 0.0
        self.expires_at = 0.0
        #: State of policies outside the package: ``core.extra[name]``.
        self.extra: dict[str, Any] | None = None
        self._actions: list[Action] | None = None

    # ------------------------------------------------------------------ events

    def admit(self, context: AdmissionContext) -> tuple[int, str] | None:
        """Admission policies' verdict on this new connection (None: admitted)."""
        return self.chain.admit(context)

    def accept(self, now: float) -> None:
        """The application accepted: timers start."""
        if self.state is not CONNECTING:
            return
        self.state = OPEN
        self.accepted_at = now
        for policy in self.chain.open:
            policy.on_open(self, now)

    def receive_frame(self, message: Message, now: float) -> bool:
        """A client data frame arrived; True if the application should get it."""
        if self.state is CLOSING or self.state is CLOSED:
            return False
        self.last_seen = now
        frame_policies = self.chain.frame
        if frame_policies:
            # Only a client that speaks channels-tuning's protocol sends heartbeat
            # frames: for any other, {"type":"ct.ping"} is the application's data.
            kind = classify(message) if self.liveness is APPLICATION else FrameKind.DATA
            for policy in frame_policies:
                if not policy.on_frame(self, message, kind, now):
                    return False
        return True

    def queued_arrival(self, since: float, now: float) -> float:
        """When to charge a frame read at ``now`` that may have waited in the server's
        queue since ``since`` (a handler was busy), the server not saying when it came.

        One token's worth after the last charged frame, not before ``since``, never
        after ``now``: frames an honest client sent within ``RATE_LIMIT`` while its
        handler waited are charged as if they came at that rate, not as one burst.
        The times charged only grow and never pass the clock, so over any window at
        most ``burst + rate x window`` frames pass, as when arrival times are known."""
        rate = self.settings.rate_limit
        if not rate:
            return now
        return min(now, max(self.tokens_at + 1.0 / rate, since))

    def note_activity(self, at: float) -> None:
        """The transport saw the client alive at ``at`` (a protocol pong or ping)."""
        if at > self.last_seen:
            self.last_seen = at

    def tick(self, now: float) -> None:
        """The scheduler's tick: policies check their timers."""
        if self.state is not OPEN:
            return
        for policy in self.chain.tick:
            policy.on_tick(self, now)
            if self.state is not OPEN:
                return

    def next_due(self) -> float | None:
        """When :meth:`tick` next has something to do (the earliest of the tick
        policies' deadlines); None: nothing until an event (or the connection is not
        open)."""
        if self.state is not OPEN:
            return None
        due: float | None = None
        for policy in self.chain.tick:
            at = policy.next_due(self)
            if at is not None and (due is None or at < due):
                due = at
        return due

    def send(self, message: Message, key: Any = None, writable: bool = False) -> Outcome:
        """The application (or a broadcast) sends a data frame.

        ``writable``: the transport can take it now. ``key``: the coalescing key
        (policy ``coalesce``)."""
        if self.state is CLOSING or self.state is CLOSED:
            self.last_drop = (1, REASON_CLOSED)
            return Outcome.DROPPED
        queue = self.queue
        if queue is None:
            if writable:
                return Outcome.WRITE
            queue = self._new_queue()
        try:
            dropped = queue.put(message, key)
        except QueueOverflow:
            # The backlog and this message are lost; the client is told with 4001.
            lost = queue.clear() + 1
            self.close(SLOW_CONSUMER_CODE, "slow consumer", urgent=True)
            self.last_drop = (lost, REASON_SLOW_CONSUMER)
            return Outcome.DROPPED
        if dropped:
            self.last_drop = (dropped, queue.last_drop_reason)
            if queue.last_drop_reason == "drop_newest":
                return Outcome.DROPPED
        return Outcome.QUEUED

    def send_control(self, message: Message, writable: bool) -> Outcome:
        """Accept and close messages: never dropped, kept in order with data."""
        if not self.queue and writable:
            return Outcome.WRITE
        queue = self.queue if self.queue is not None else self._new_queue()
        queue.put(message, force=True)
        return Outcome.QUEUED

    def close(self, code: int, reason: str | None = None, *, urgent: bool = False) -> bool:
        """Start closing with ``code``; False if the connection was already closing."""
        if self.state is CLOSING or self.state is CLOSED:
            return False
        self.state = CLOSING
        self.close_code = int(code)
        self._emit(WriteClose(int(code), reason, urgent))
        return True

    def connection_lost(self) -> None:
        """The transport is gone (``websocket.disconnect``, or the application ended)."""
        self.state = CLOSED

    def drop_backlog(self, reason: str) -> int:
        """Drop every queued data frame (counted under ``reason``); return how many."""
        queue = self.queue
        dropped = queue.clear() if queue else 0
        if dropped:
            self.last_drop = (dropped, reason)
        return dropped

    # ----------------------------------------------------------------- actions

    def emit_send(self, message: Message) -> None:
        """A policy wants ``message`` sent (a ping, a pong)."""
        self._emit(SendFrame(message))

    def _emit(self, action: Action) -> None:
        if self._actions is None:
            self._actions = [action]
        else:
            self._actions.append(action)

    @property
    def has_actions(self) -> bool:
        return self._actions is not None

    def take_actions(self) -> list[Action]:
        """The actions produced since the last call, oldest first."""
        actions, self._actions = self._actions, None
        return actions or []

    # ----------------------------------------------------------------- helpers

    @property
    def accepted(self) -> bool:
        return self.accepted_at is not None

    def _new_queue(self) -> OutboundQueue:
        s = self.settings
        self.queue = OutboundQueue(
            s.send_queue_max_messages, s.send_queue_max_bytes, s.overflow_policy
        )
        return self.queue

    def __repr__(self) -> str:
        return f"<ConnectionCore {self.state.value} backlog={len(self.queue or ())}>"
