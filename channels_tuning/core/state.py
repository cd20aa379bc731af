"""The one state of a connection, replacing the six booleans it used to be."""

from __future__ import annotations

import enum


class ConnectionState(enum.Enum):
    """Where a connection is in its life. Transitions only go forward::

    CONNECTING ──accept──> OPEN ──close──> CLOSING ──disconnect──> CLOSED
         └────────────close (refused)────────┘                        ^
         └──────────────────────disconnect (client left first)────────┘
    """

    #: The ASGI scope arrived; the application has not accepted yet.
    CONNECTING = "connecting"
    #: Accepted: frames flow both ways.
    OPEN = "open"
    #: The server sent (or queued) its close frame; nothing more is sent or delivered.
    CLOSING = "closing"
    #: The connection is gone (``websocket.disconnect`` or the application ended).
    CLOSED = "closed"


class Liveness(enum.Enum):
    """How a connection's client is known to be alive: which of the three heartbeat
    levels watches it. Chosen once per connection, at its start.

    The levels, from the wire up:

    1. *The server's keepalive* (protocol ping/pong, RFC 6455 5.5.2): daphne's
       ``--ping-interval``/``--ping-timeout``, uvicorn's ``--ws-ping-interval``,
       hypercorn's ``websocket_ping_interval``. Every WebSocket stack, browsers
       included, answers protocol pings by itself; no page ever sees them.
    2. *The consumer's idle timeout* (``IDLE_TIMEOUT``, close 4000): silence for that
       long ends the connection. What counts as a sign of life depends on what the
       server lets the application see (below).
    3. *The application-level heartbeat* (``ct.ping``/``ct.pong`` data frames,
       :mod:`channels_tuning.wire.heartbeat`): only for clients that asked for it by
       offering the ``channels-tuning`` subprotocol, because a browser cannot see
       protocol pings and needs frames of its own to notice a dead server.
    """

    #: The client speaks channels-tuning's protocol: ``ct.ping`` every
    #: ``HEARTBEAT_INTERVAL``; any frame (its ``ct.pong`` among them) counts.
    APPLICATION = "application"
    #: A plain client on a server that reports protocol frames to the application
    #: (channels-tuning-daphne): the server's protocol pings are answered by the
    #: client's WebSocket stack, and those pongs (and the client's own pings) count as
    #: well as data. Nothing is sent that a page could see.
    TRANSPORT = "transport"
    #: A plain client on a server that keeps protocol frames to itself (plain daphne,
    #: uvicorn, hypercorn): the server's own keepalive closes a vanished client; the
    #: consumer sends nothing and does not close for silence (a page that only reads
    #: is silent).
    SERVER = "server"
