"""The tuned server's WebSocket protocol: what a hostile client controls, bounded.

daphne's protocol (autobahn underneath) answers every protocol-level ping with a pong
written straight to the socket, and assembles a fragmented message from as many
fragments as the client sends. Both bypass everything the application side bounds:
measured on plain daphne, one client that sent pings and never read grew the server
from 76 MB to 342 MB in 30 s, and a message sent as 2-byte fragments cost 28 MB of
RSS per connection (fragment objects, not bytes). Here, through autobahn's documented
``onPing`` and ``onMessageFrameBegin`` callbacks:

- **Control frames have a budget**: ``control_frame_rate`` per second with a burst
  of ``control_frame_burst`` (10 and 20 by default), a token bucket per connection;
  a client past it is closed with 1008 ("control frame flood"), logged once and
  counted (``channels_tuning_closes_total{consumer="(server)",code="1008"}``).
- **Pongs obey flow control**: while the connection's outbound buffer is above its
  high-water mark (the client is not reading), a ping gets no pong; the skipped pong
  is counted (``channels_tuning_dropped_messages_total{reason="pong_skipped"}``).
- **What a message's fragments cost is bounded as memory**, not by their count: each
  fragment is charged its payload plus :data:`FRAGMENT_OVERHEAD` bytes (the objects
  autobahn keeps per fragment), and a message may cost twice the message-size limit.
  A message within the limit in fragments of 56 bytes or more always passes (4 MiB
  in 4 KiB or 64-byte fragments: Autobahn cases 9.3/9.4, which a cap of 1 024
  fragments refused); 2-byte fragments are closed with 1009 once they cost twice the
  limit (28 MB per connection on plain daphne). ``max_fragments`` (off by default;
  ``--ws-max-fragments``) adds a cap on the count, and is the bound when no
  message-size limit is set (1 024 then).
- **The message-size limit applies while a message arrives**: the server hands the
  smaller of daphne's ``--websocket-max-message-size`` and ``MAX_MESSAGE_SIZE`` to
  autobahn, which refuses a longer message (1009) as its frames come in, instead of
  the consumer refusing it after it was buffered whole.
- **A protocol error gets a close code**: autobahn's own default drops the TCP
  connection on a client's protocol error (reserved bits, a bad opcode, invalid UTF-8:
  RFC 6455 allows either), so the client saw 1006 and nothing was counted. The tuned
  server sets autobahn's documented ``failByDrop=False``: the client gets 1002, 1007 or
  1009 in a close frame, the close is counted under the ``(server)`` consumer, and one
  line a second at most is logged.
- **The application hears of a failed connection at once**: when the server fails a
  connection (any close above), the application gets ``websocket.disconnect`` with
  that code as the close frame goes out, as it would if the connection were dropped,
  not after the client's answer (a client that never answers held it 1-2 s, the close
  handshake timeout); nothing the client still sends reaches it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ...compat import daphne as daphne_hooks
from ...compat.autobahn import (
    DefaultsRelease,
    prepared_pings,
    protocol_error_code,
    release_frame_masker,
    release_handshake,
    release_is_closed,
    send_close_frame,
    share_protocol_options,
    share_traffic_stats,
    shrink_send_queue,
    stop_assembling_messages,
)
from ...core.tokens import TokenBucket
from ...runtime.counters import CLOSES, DROPPED
from ...runtime.ratelog import RateLimitedLog
from ...wire.closecodes import CloseCode
from .keepalive import check_keepalive

logger = logging.getLogger("channels_tuning.server")

#: Bytes a fragment costs beyond its payload while a message is assembled: the bytes
#: object's header and its slot in autobahn's list (measured: a 1 MiB message in
#: 2-byte fragments, 524 288 of them, cost 28 MB).
FRAGMENT_OVERHEAD = 56
#: The fragment cap when there is neither a message-size limit nor ``max_fragments``.
DEFAULT_MAX_FRAGMENTS = 1024

SERVER_LABEL = "(server)"
_protocol_errors_log = RateLimitedLog(logger)


class ProtocolLimits:
    """The bounds :func:`tuned_protocol` enforces (one instance per server)."""

    __slots__ = ("control_frame_burst", "control_frame_rate", "max_fragments")

    def __init__(
        self,
        control_frame_rate: float = 10.0,
        control_frame_burst: float = 20.0,
        max_fragments: int | None = None,
    ) -> None:
        self.control_frame_rate = control_frame_rate
        self.control_frame_burst = control_frame_burst
        self.max_fragments = max_fragments


def tuned_protocol(
    base: type,
    limits: ProtocolLimits,
    max_message_size: int = 0,
    upgrade_settled: Callable[[Any], None] | None = None,
) -> type:
    """A subclass of daphne's WebSocket protocol class ``base`` with ``limits``, and
    ``max_message_size`` (0: none) checked as each frame of a message begins.
    ``upgrade_settled`` is called with each connection once it is open (the server's
    count of upgrades in progress)."""

    ping_budget = TokenBucket(limits.control_frame_rate, limits.control_frame_burst)
    max_fragments = limits.max_fragments
    if max_fragments is None and not max_message_size:
        max_fragments = DEFAULT_MAX_FRAGMENTS
    max_cost = 2 * max_message_size

    class TunedWebSocketProtocol(base):
        # Per-connection state as class defaults: set on an instance only when used,
        # so a connection that never pings or fragments carries none of it.
        _ct_tokens: float = limits.control_frame_burst
        _ct_tokens_at: float = 0.0
        _ct_fragments: int = 0
        _ct_bytes: int = 0
        #: Made by the first connection, once daphne's options are final.
        _ct_defaults_release: DefaultsRelease | None = None
        _ct_closing: bool = False
        #: When the oldest ping the client has not answered went out (0: none).
        _ct_ping_sent: float = 0.0

        # daphne's protocol hashes and compares by id() in Python functions; this is
        # the same identity, in C. daphne's connections dict is keyed by protocol and
        # every write asks it: 87 against 292 ns a lookup among 19 000 (timeit).
        __hash__ = object.__hash__
        __eq__ = object.__eq__

        def connectionMade(self) -> None:
            cls = type(self)
            if cls._ct_defaults_release is None:
                # daphne sets the factory's options after building it: final now.
                share_protocol_options(cls, self.factory)
                cls._ct_defaults_release = DefaultsRelease(cls)
            super().connectionMade()
            shrink_send_queue(self)
            share_traffic_stats(self)

        def onOpen(self) -> None:
            if upgrade_settled is not None:
                upgrade_settled(self)
            super().onOpen()
            # What autobahn kept of the handshake is never read again: compat.autobahn.
            release_handshake(self)
            if self._ct_defaults_release is not None:
                self._ct_defaults_release.apply(self)

        def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
            if not self._ct_closing:
                error_code = protocol_error_code(self)
                if error_code is not None:
                    CLOSES.inc((SERVER_LABEL, str(error_code)))
                    _protocol_errors_log.log(
                        "channels_tuning: %s broke the WebSocket protocol, closed with %d",
                        getattr(self, "peer", "?"),
                        error_code,
                    )
            super().onClose(wasClean, code, reason)
            # daphne has handed the disconnect to the input queue: drop the protocol's
            # references that close cycles (protocol <-> queue, protocol <-> its
            # is_closed Deferred), so reference counting frees the connection.
            self.__dict__.pop("application_queue", None)
            release_is_closed(self)

        def sendCloseFrame(
            self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False
        ) -> None:
            super().sendCloseFrame(code, reasonUtf8, isReply)
            failed = protocol_error_code(self)  # autobahn failing the client (1002, 1009...)
            if failed is not None:
                daphne_hooks.disconnect_application_now(self, failed)

        def check_timeouts(self) -> None:
            if prepared_pings() and daphne_hooks.features["due_checkers"]:
                check_keepalive(self)  # servers.daphne.keepalive
            else:
                super().check_timeouts()

        def onPong(self, payload: bytes) -> None:
            if self._ct_ping_sent:
                self._ct_ping_sent = 0.0
            # A sign of life for the consumer's idle timeout (core.state.Liveness).
            producer = getattr(self.transport, "producer", None)
            if producer is not None:
                producer.last_activity = time.monotonic()
            super().onPong(payload)

        def onPing(self, payload: bytes) -> None:
            if self._ct_ping_sent:
                self._ct_ping_sent = 0.0
            now = time.monotonic()
            counted_at = self._ct_tokens_at or now  # the first ping: a full bucket
            allowed, self._ct_tokens = ping_budget.take(self._ct_tokens, counted_at, now)
            self._ct_tokens_at = now
            if not allowed:
                _close(self, CloseCode.POLICY_VIOLATION, "control frame flood")
                return
            # The transport's producer is the connection's FlowControlledSend: paused
            # while the client does not read what it was sent. A client's keepalive
            # ping (python websockets, mobile libraries) is a sign of life.
            producer = getattr(self.transport, "producer", None)
            if producer is not None:
                producer.last_activity = now
            if producer is not None and getattr(producer, "paused", False):
                DROPPED.inc((SERVER_LABEL, "pong_skipped"))
                return
            super().onPing(payload)

        def onFrameEnd(self) -> bool | None:
            ended = super().onFrameEnd()
            # Not kept until the next frame (a heartbeat away): compat.autobahn.
            release_frame_masker(self)
            return ended

        def onMessageBegin(self, isBinary: bool) -> None:
            self._ct_fragments = 0
            self._ct_bytes = 0
            super().onMessageBegin(isBinary)

        def onMessageFrameBegin(self, length: int) -> None:
            if self._ct_ping_sent:  # any frame answers a ping, as in autobahn
                self._ct_ping_sent = 0.0
            self._ct_fragments += 1
            self._ct_bytes += length
            if max_fragments is not None and self._ct_fragments > max_fragments:
                _close(self, CloseCode.MESSAGE_TOO_BIG, "too many fragments")
                return
            if max_message_size and self._ct_bytes > max_message_size:
                # Refused as the frame begins, before its payload is buffered.
                _close(self, CloseCode.MESSAGE_TOO_BIG, f"message over {max_message_size} bytes")
                return
            if max_cost and self._ct_bytes + FRAGMENT_OVERHEAD * self._ct_fragments > max_cost:
                _close(self, CloseCode.MESSAGE_TOO_BIG, "fragments cost too much memory")
                return
            super().onMessageFrameBegin(length)

    TunedWebSocketProtocol.__qualname__ = f"Tuned{base.__qualname__}"
    return TunedWebSocketProtocol


def _close(protocol: Any, code: int, reason: str) -> None:
    if protocol._ct_closing:
        return
    protocol._ct_closing = True
    CLOSES.inc((SERVER_LABEL, str(int(code))))
    peer = getattr(protocol, "peer", "?")
    logger.warning("channels_tuning: closing %s with %d (%s)", peer, int(code), reason)
    # The client gets its close frame; autobahn drops the connection if it does not
    # answer within its closing handshake timeout.
    send_close_frame(protocol, int(code), reason)
    # Ignore what the client still sends of its message (more fragments).
    stop_assembling_messages(protocol)
    daphne_hooks.disconnect_application_now(protocol, int(code))
