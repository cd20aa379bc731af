"""Heartbeats: which of the three levels does what, and the application-level frames.

1. **The server's keepalive**: the server sends protocol pings, every WebSocket stack
   (browsers included) answers them by itself; daphne and uvicorn drop a client that
   stops answering. No page ever sees these frames.
2. **The consumer's idle timeout** (``IDLE_TIMEOUT``, close 4000): nothing is sent;
   any sign of life restarts the clock, on ``channels-tuning-daphne`` the client's
   protocol pongs and pings too.
3. **The application-level heartbeat**: the consumer sends the frames below every
   ``HEARTBEAT_INTERVAL`` to clients that offered ``channels-tuning.v1``, and the
   package's clients answer them (a browser cannot see protocol pings, and needs
   frames of its own to notice a dead server).

Which level watches a connection is decided once, at its start
(:class:`channels_tuning.core.state.Liveness`); the frames of level 3, exact bytes,
the same for both clients:

==========  ======================  ==========================
direction   text form               binary form
==========  ======================  ==========================
ping        ``{"type":"ct.ping"}``  ``b"\\x00\\x09"``
pong        ``{"type":"ct.pong"}``  ``b"\\x00\\x0a"``
==========  ======================  ==========================

The server sends pings in the form its consumer speaks; it accepts a pong in either
form and answers a client's ping with a pong of the same form. A protobuf envelope
never starts with a 0x00 byte, so the binary forms cannot collide with one.
"""

from __future__ import annotations

from typing import Any, Final

PING_TEXT: Final = '{"type":"ct.ping"}'
PONG_TEXT: Final = '{"type":"ct.pong"}'
PING_BYTES: Final = b"\x00\x09"
PONG_BYTES: Final = b"\x00\x0a"

# Shared ASGI messages, never mutated: sending a ping or pong allocates nothing.
PING_TEXT_MESSAGE: Final[dict[str, Any]] = {"type": "websocket.send", "text": PING_TEXT}
PING_BYTES_MESSAGE: Final[dict[str, Any]] = {"type": "websocket.send", "bytes": PING_BYTES}
PONG_TEXT_MESSAGE: Final[dict[str, Any]] = {"type": "websocket.send", "text": PONG_TEXT}
PONG_BYTES_MESSAGE: Final[dict[str, Any]] = {"type": "websocket.send", "bytes": PONG_BYTES}
