"""The tuned server's keepalive: daphne's pings, at the cost of a prepared frame.

daphne pings every open WebSocket every ``--ping-interval`` (20 s) through autobahn's
``_sendAutoPing``: a 12-byte payload of a timestamp, a sequence number and random
bytes, a frame built and logged (its debug arguments coloured even when debug is
off), and a timer per ping (``autoPingTimeout``, ``--ping-timeout``) that the pong
cancels. At 19 000 idle connections that is ~950 pings a second. Measured with 5 000
idle connections and ``--ping-interval 2`` (2 500 pings a second; server CPU over
20 s divided by the pings, so the stats rounds are in it too): a ping and its pong
cost 68 us through autobahn's pings, 40-44 us with this module and the lazy debug
arguments of ``compat.autobahn.defer_highlighting``; plain daphne, 126-130 us. Most of
what is left is the kernel's ``send()`` of the ping and Twisted's reading of the pong
(``python benchmarks/keepalive.py``).

Here :func:`check_keepalive` keeps daphne's ``check_timeouts`` rules (the
``websocket_timeout`` close, the connect timeout, a ping once ``ping_interval`` passed
without a message) and changes how:

- the ping is one prepared 2-byte frame (no payload) written to the transport;
- no timer per ping: the connection remembers when its oldest unanswered ping went
  out, anything the client sends (a pong, a ping, a frame) clears it, and the due
  loop (``servers/daphne/checkers.py``) looks again at ``ping_timeout`` after it,
  where autobahn's timer would have fired: a client that answers nothing is dropped
  then, as autobahn drops it (``onAutoPingTimeout``).

A browser or any RFC 6455 client answers an empty ping with an empty pong; autobahn
accepts a pong it did not ask for (no pending payload) without a word.
"""

from __future__ import annotations

import time
from typing import Any

from ...compat import autobahn

#: FIN + opcode 9 (ping), unmasked (a server's frame), payload length 0.
PING_FRAME = b"\x89\x00"


def check_keepalive(protocol: Any) -> None:
    """daphne's ``WebSocketProtocol.check_timeouts`` for one connection, with the
    prepared ping and the unanswered-ping deadline of this module."""
    server = protocol.server
    now = time.time()
    duration = now - protocol.socket_opened
    if server.websocket_timeout >= 0 and duration > server.websocket_timeout:
        protocol.serverClose()
    if protocol.state == protocol.STATE_CONNECTING:
        if duration > server.websocket_connect_timeout:
            protocol.serverReject()
        return
    if protocol.state != protocol.STATE_OPEN:
        return
    unanswered_since = protocol._ct_ping_sent
    if unanswered_since and server.ping_timeout and now - unanswered_since >= server.ping_timeout:
        protocol.onAutoPingTimeout()  # autobahn's own: drops the connection
        return
    if now - protocol.last_ping > server.ping_interval:
        autobahn.write_control_frame(protocol, PING_FRAME)
        protocol.last_ping = now
        if not unanswered_since:
            protocol._ct_ping_sent = now


def keepalive_due(protocol: Any, server: Any) -> float:
    """When :func:`check_keepalive` has something to do for an open connection: its
    next ping, or the end of the wait for an answer to the one unanswered."""
    due = protocol.last_ping + server.ping_interval
    unanswered_since = getattr(protocol, "_ct_ping_sent", 0.0)
    if unanswered_since and server.ping_timeout:
        due = min(due, unanswered_since + server.ping_timeout)
    return float(due)
