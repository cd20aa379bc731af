"""Application-level heartbeat and idle timeout.

Browsers cannot see WebSocket ping frames, and daphne does not tell the
application about pongs, so liveness is checked at the application level: the
server sends a small ping frame every ``heartbeat_interval`` seconds, and a
connection that sent *no frame at all* for ``idle_timeout`` seconds is closed
with 4000. Any frame counts as liveness; pong frames are swallowed before
``receive()``. Timers run on the one process scheduler, not per connection.

Wire format (exact frames, no whitespace):

==========  ====================  ==========================
direction   text form             binary form
==========  ====================  ==========================
ping        ``{"type":"ct.ping"}``  ``b"\\x00\\x09"``
pong        ``{"type":"ct.pong"}``  ``b"\\x00\\x0a"``
==========  ====================  ==========================

The server sends pings in the form given by ``heartbeat_binary``; it accepts a
pong in either form, and answers a client's ping with a pong of the same form.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from .backpressure import Message
from .closecodes import CloseCode
from .conf import FROM_SETTINGS
from .connection import ManagedConnectionMixin

PING_TEXT: Final = '{"type":"ct.ping"}'
PONG_TEXT: Final = '{"type":"ct.pong"}'
PING_BYTES: Final = b"\x00\x09"
PONG_BYTES: Final = b"\x00\x0a"

# Shared, never mutated: sending a ping allocates nothing.
_PING_TEXT_MESSAGE: Final = {"type": "websocket.send", "text": PING_TEXT}
_PING_BYTES_MESSAGE: Final = {"type": "websocket.send", "bytes": PING_BYTES}
_PONG_TEXT_MESSAGE: Final = {"type": "websocket.send", "text": PONG_TEXT}
_PONG_BYTES_MESSAGE: Final = {"type": "websocket.send", "bytes": PONG_BYTES}


class HeartbeatMixin(ManagedConnectionMixin):
    """Server pings every ``heartbeat_interval``; close 4000 after ``idle_timeout`` of silence."""

    heartbeat_interval: Any = FROM_SETTINGS
    idle_timeout: Any = FROM_SETTINGS
    #: Send pings as binary frames (for consumers that speak only binary).
    heartbeat_binary: ClassVar[bool] = False

    _next_ping: float = 0.0

    def on_accepted(self, now: float) -> None:
        super().on_accepted(now)
        if self.tuning.heartbeat_interval is not None:
            self._next_ping = now + self.tuning.heartbeat_interval

    def on_tick(self, now: float) -> None:
        super().on_tick(now)
        if self.closing or not self.accepted:
            return
        tuning = self.tuning
        if tuning.idle_timeout is not None and now - self.last_seen >= tuning.idle_timeout:
            self.close_nowait(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
            return
        if tuning.heartbeat_interval is not None and now >= self._next_ping:
            self._next_ping = now + tuning.heartbeat_interval
            self.send_nowait(_PING_BYTES_MESSAGE if self.heartbeat_binary else _PING_TEXT_MESSAGE)

    def filter_inbound(self, message: Message) -> bool:
        if not super().filter_inbound(message):
            return False
        text = message.get("text")
        if text is not None:
            # Length first: a cheap test that skips the comparison for almost every frame.
            if len(text) == len(PONG_TEXT):
                if text == PONG_TEXT:
                    return False
                if text == PING_TEXT:
                    self.send_nowait(_PONG_TEXT_MESSAGE)
                    return False
            return True
        payload = message.get("bytes")
        if payload is not None and len(payload) == 2:
            if payload == PONG_BYTES:
                return False
            if payload == PING_BYTES:
                self.send_nowait(_PONG_BYTES_MESSAGE)
                return False
        return True
