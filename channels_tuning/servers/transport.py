"""How a consumer writes to its server: one :class:`Transport` per connection.

The server is recognised once per connection, from the ``send`` it hands the
application (:func:`transport_for`), as a :class:`ServerKind`; the transport for
that kind is the only thing the consumer writes through, so the consumer has no
branch on the server. Three ways of writing, from best to worst guarantees:

- **Flow-controlled** (``channels-tuning-daphne``): the server's own
  :class:`~channels_tuning.servers.daphne.FlowControlledSend` *is* the transport. It
  writes synchronously and says when the client's TCP buffer is over its high-water
  mark, so the consumer queues (bounded) instead of letting Twisted buffer without
  limit. It costs no object per connection beyond the server's own.
- **Synchronous** (plain daphne, :class:`DaphneTransport`): daphne's ``send`` never
  waits for the socket (daphne #170), so frames are written at once, without a task;
  but the server buffers for a client that does not read, and bounded queues cannot
  help.
- **Awaited** (uvicorn, hypercorn, any other server, Channels' test communicator;
  :class:`AwaitingTransport`): ``send`` may suspend while the socket is full, so
  queued frames are written by a short-lived writer task. A close stuck behind a
  backlog for ``close_flush_timeout`` aborts the TCP connection through the server's
  transport where a hook exists (:mod:`channels_tuning.compat`).

Middlewares wrap ``send`` (Channels' ``AuthMiddlewareStack`` does, through its
``SessionMiddleware``), so ``send`` alone cannot say which server is underneath. The
tuned server hands its flow-controlled send to the application in the scope's
``extensions`` (:data:`TRANSPORT_EXTENSION`), which every middleware passes on; for the
other servers Channels' own session wrapper is looked through
(:func:`channels_tuning.compat.channels.unwrap_send`).

A new server: a :class:`ServerKind` member, a column in :mod:`.guarantees`, and, if
none of the three ways fits it, a transport class here (``docs/architecture.md``,
"Writing a server transport").
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final, Protocol, cast, runtime_checkable

from ..compat import autobahn, daphne
from ..compat import channels as channels_hooks
from ..core.queue import REASON_CLOSED
from ..core.state import Liveness
from ..runtime import clock
from ..runtime.counters import DROPPED
from ..runtime.writebatch import WriteBatch

Message = dict[str, Any]

#: The key of the scope's ``extensions`` under which channels-tuning-daphne puts the
#: connection's :class:`~channels_tuning.servers.daphne.FlowControlledSend`.
TRANSPORT_EXTENSION: Final = "channels_tuning.flow_control"


class ServerKind(enum.Enum):
    """The server a connection runs under. The value is the server's key in the
    guarantees table (:mod:`.guarantees`); :attr:`stats_name` is how ``wsstats``,
    ``/metrics`` and the log name it."""

    TUNED_DAPHNE = "tuned"
    DAPHNE = "daphne"
    UVICORN = "uvicorn"
    HYPERCORN = "hypercorn"
    #: Any other ASGI server, or Channels' test communicator.
    OTHER = "other"

    @property
    def stats_name(self) -> str:
        return _STATS_NAMES[self]

    @property
    def garbage_per_closed(self) -> float | None:
        """Cyclic garbage one closed connection leaves (unreachable objects, measured
        by ``tests/e2e/test_gc.py``); None: not measured. The collector starts its
        frozen-garbage estimate from it (:mod:`channels_tuning.runtime.collector`)."""
        return _GARBAGE_PER_CLOSED.get(self)

    @property
    def known(self) -> bool:
        """Whether the guarantees table has a column for it."""
        return self is not ServerKind.OTHER

    @property
    def send_waits(self) -> bool:
        """Whether its ``send`` may suspend while the socket is full."""
        return self in (ServerKind.UVICORN, ServerKind.HYPERCORN, ServerKind.OTHER)

    @classmethod
    def of_send(cls, send: Callable[..., Any]) -> ServerKind:
        """The server behind the (unwrapped) ``send`` it gave the application."""
        if getattr(send, "channels_tuning_flow_control", False):
            return cls.TUNED_DAPHNE
        if daphne.is_daphne_send(send):
            return cls.DAPHNE
        owner = getattr(send, "__self__", send)
        package = (getattr(type(owner), "__module__", None) or "").partition(".")[0]
        if package == "uvicorn":
            return cls.UVICORN
        if package == "hypercorn":
            return cls.HYPERCORN
        return cls.OTHER


_STATS_NAMES: Final = {
    ServerKind.TUNED_DAPHNE: "tuned daphne",
    ServerKind.DAPHNE: "daphne",
    ServerKind.UVICORN: "uvicorn",
    ServerKind.HYPERCORN: "hypercorn",
    ServerKind.OTHER: "other ASGI server",
}

#: ``tests/e2e/test_gc.py -k reference_cycle``: a handshake close, an end (FIN) and a
#: reset alike, the largest over the supported versions (tox.ini's oldest, where
#: Twisted 22.10 adds a cycle of its own per request, and the newest).
#: channels-tuning-daphne breaks its connections' cycles at the close: 18 on Twisted
#: 22.10, none on Twisted 23 and later.
_GARBAGE_PER_CLOSED: Final = {
    ServerKind.TUNED_DAPHNE: 18.0,
    ServerKind.DAPHNE: 78.0,
    ServerKind.UVICORN: 29.0,
    ServerKind.HYPERCORN: 55.0,
}


@runtime_checkable
class Transport(Protocol):
    """What a consumer needs from its server to write frames."""

    kind: ServerKind
    #: Which heartbeat level watches a client that does not speak the package's
    #: protocol (:class:`~channels_tuning.core.state.Liveness`).
    liveness: Liveness
    #: ``time.monotonic()`` of the client's last protocol pong or ping the server
    #: reported (0: it reports none).
    last_activity: float

    def can_write(self, urgent: bool = False) -> bool:
        """Whether :meth:`write_nowait` can take a frame now. ``urgent``: a close
        after the backlog was dropped (a few bytes, past the high-water mark)."""
        ...

    def write_nowait(self, message: Message) -> None:
        """Write an ASGI ``websocket.*`` message without suspending."""
        ...

    async def write(self, message: Message) -> bool:
        """Write a message, waiting for the socket if the server does; False if the
        connection is gone (the message was not written)."""
        ...

    def stalled_for(self, now: float) -> float:
        """Seconds a :meth:`write` has been waiting (0: none is)."""
        ...

    def abort(self) -> bool:
        """Drop the TCP connection now, no close handshake; False if the server
        offers no way to."""
        ...

    def use_write_batch(self, batch: WriteBatch | None) -> None:
        """Hold writes while ``batch`` collects (a reader handing a burst on), where
        the server can; others write at once."""
        ...


class DaphneTransport:
    """Plain daphne: synchronous writes into its WebSocket protocol."""

    __slots__ = ("send",)
    kind = ServerKind.DAPHNE
    liveness = Liveness.SERVER
    last_activity = 0.0

    def __init__(self, send: Callable[..., Any]) -> None:
        self.send = send

    def can_write(self, urgent: bool = False) -> bool:
        return True

    def write_nowait(self, message: Message) -> None:
        send = cast(Any, self.send)
        protocol = daphne.protocol_of(send)
        if daphne.is_writable(send.func.__self__, protocol):
            write_to_protocol(protocol, message)

    async def write(self, message: Message) -> bool:
        self.write_nowait(message)
        return True

    def stalled_for(self, now: float) -> float:
        return 0.0

    def abort(self) -> bool:
        return False

    def use_write_batch(self, batch: WriteBatch | None) -> None:
        pass  # daphne's buffered transport: every write is a buffer append anyway


class AwaitingTransport:
    """Servers whose ``send`` may wait for the socket (uvicorn, hypercorn, others):
    every frame goes through ``await send(...)``, from the consumer's writer task."""

    __slots__ = ("kind", "send", "server_send", "waiting_since")
    liveness = Liveness.SERVER
    last_activity = 0.0

    def __init__(
        self, kind: ServerKind, send: Callable[..., Any], server_send: Callable[..., Any]
    ) -> None:
        self.kind = kind
        #: What the middlewares handed the consumer (Channels' wrappers act on it).
        self.send = send
        #: The server's own send under them: what an abort looks through.
        self.server_send = server_send
        self.waiting_since = 0.0

    def can_write(self, urgent: bool = False) -> bool:
        return False

    def write_nowait(self, message: Message) -> None:
        raise RuntimeError("this server's send may wait: write() from a task")

    async def write(self, message: Message) -> bool:
        self.waiting_since = clock.monotonic()
        try:
            await self.send(message)
        finally:
            self.waiting_since = 0.0
        return True

    def stalled_for(self, now: float) -> float:
        since = self.waiting_since
        return now - since if since else 0.0

    def abort(self) -> bool:
        self.waiting_since = 0.0  # once
        if self.kind is ServerKind.UVICORN:
            from ..compat import uvicorn as hooks
        elif self.kind is ServerKind.HYPERCORN:
            from ..compat import hypercorn as hooks  # type: ignore[no-redef]
        else:
            return False
        transport = hooks.transport_of(self.server_send)
        if transport is None:
            return False
        transport.abort()
        return True

    def use_write_batch(self, batch: WriteBatch | None) -> None:
        pass  # each frame is an awaited send


def server_send(scope: dict[str, Any], send: Callable[..., Any]) -> Callable[..., Any]:
    """The server's own ``send`` under any middlewares: the tuned server's
    flow-controlled send from the scope's extensions, else ``send`` with Channels'
    session wrappers looked through."""
    extensions = scope.get("extensions")
    if extensions:
        flow = extensions.get(TRANSPORT_EXTENSION)
        if flow is not None:
            return cast("Callable[..., Any]", flow)
    return channels_hooks.unwrap_send(send)


def transport_for(scope: dict[str, Any], send: Callable[..., Any]) -> Transport:
    """The transport of a new connection, from its scope and the ``send`` the
    application was given."""
    own = server_send(scope, send)
    kind = ServerKind.of_send(own)
    if kind is ServerKind.TUNED_DAPHNE:
        return cast(Transport, own)
    if kind is ServerKind.DAPHNE:
        return DaphneTransport(own)
    return AwaitingTransport(kind, send, own)


def write_to_protocol(protocol: Any, message: Message) -> None:
    """Write an ASGI message to a daphne (autobahn) WebSocket protocol, synchronously."""
    kind = message["type"]
    if kind == "websocket.close":
        autobahn.send_close_frame(protocol, message.get("code", 1000), message.get("reason"))
    elif kind == "websocket.send" and protocol.state == protocol.STATE_OPEN:
        autobahn.write_message(protocol, message)
    elif kind == "websocket.send" and protocol.state != protocol.STATE_CONNECTING:
        # The client closed (or the connection dropped) while this frame was on its
        # way: dropped and counted, as daphne drops it, not raised into the handler
        # (autobahn's Disconnected, which would end in a 1011 and a traceback).
        DROPPED.inc(("-", REASON_CLOSED))
    else:
        protocol.handle_reply(message)
