"""The application-level heartbeat frames (exact bytes; both clients send the same).

Browsers cannot see WebSocket ping frames, and daphne does not tell the application
about pongs, so liveness is checked with small data frames:

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
