"""Every use of autobahn's internals, in one place (daphne speaks WebSocket through it).

=============================================  ===================================
upstream symbol                                used for
=============================================  ===================================
``WebSocketServerProtocol.sendCloseFrame``     closing with any code (daphne's
                                               ``sendClose`` path accepts only 1000
                                               and 3000-4999 and drops the reason)
``...STATE_CONNECTING/STATE_OPEN``, ``state``  when a close or a frame may be sent
``factory.prepareMessage``, ``payloadHybi``    frame a broadcast once, write the
                                               same bytes to every subscriber
``_perMessageCompress``, ``send_queue``        the fast path is taken only without
                                               deflate and with nothing queued
``PerMessageDeflate._compressor`` /            free zlib state between messages
``_decompressor``                              (no context takeover)
``autobahn.util.encode_truncate``              a close reason within 123 bytes
``WebSocketProtocol.failedByMe``               stop assembling a message of a
                                               client being closed (the tuned
                                               protocol's fragment cap)
``failedByMe``, ``localCloseCode``             count the close autobahn sent for
                                               a client's protocol error
``is_closed`` (resolved with the protocol)     replaced once fired (a reference
                                               cycle)
``autoPingPending``, ``onAutoPingTimeout``,    the tuned keepalive: a prepared ping
``send_queue``                                 written to the transport; a pong not
                                               asked for is accepted in silence
``protocol.pformat`` in ``_connectionMade``    formatted only when autobahn's
                                               debug log is on
``hltype``, ``hlval`` of ``autobahn.websocket  coloured (click) only when a debug
.protocol`` and ``autobahn.twisted.websocket`` line is written
``CONFIG_ATTRS``, ``_connectionMade``'s        the factory's options as class
``hasattr(self, configAttr)``                  attributes of the protocol: not
                                               copied into every connection
``current_frame_masker``, ``current_frame``    a received frame's masker let go
(``processData``, ``onFrameEnd``)              when the frame ends
``http_headers``, ``http_request_data``, ...   the handshake's copies let go once
(read by ``processHandshake`` and              open; ``send_queue`` an empty list
``succeedHandshake`` only), ``send_queue``     (56 bytes) instead of a deque (760)
``trafficStats`` (only added to)               one per process, not per connection
``wasClean``, ``localCloseCode``, ... (never   an open connection's attributes that
named as strings nor deleted upstream)         hold their initial value live on the
                                               class: its dict 832 bytes, not 1 584
=============================================  ===================================

Each hook has a safe fallback: when :func:`check` finds a symbol missing, the
fast path is off and autobahn's public ``sendMessage`` is used instead, and zlib
objects are left to autobahn. Tested range: autobahn 23 to 26.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import autobahn.websocket.protocol as autobahn_protocol_module
from autobahn.util import encode_truncate
from autobahn.websocket import xormasker
from autobahn.websocket.protocol import TrafficStats
from twisted.internet.defer import succeed

from ...core.frames import RecentFrames
from ...exceptions import UpstreamChanged
from ...runtime.lazytext import LazyPformat, lazy
from .._checker import Checker, source_of
from . import contract
from .contract import HANDSHAKE_ATTRIBUTES, HIGHLIGHTING_MODULES, RELEASED_DEFAULTS

LIBRARY = "autobahn"

#: Turned off by the server's self-check when autobahn's internals changed.
features = {
    "prepared_fast_path": True,
    "release_deflate": True,
    "stop_assembling": True,
    "shared_options": True,
    "lazy_option_log": True,
    "lazy_highlight": True,
    "protocol_error_code": True,
    "release_is_closed": True,
    "prepared_pings": True,
    "release_frame_masker": True,
    "release_handshake": True,
    "small_send_queue": True,
    "release_defaults": True,
    "shared_traffic_stats": True,
}


def defer_option_log() -> None:
    """Stop autobahn from pretty-printing its ~29 options at every connection.

    ``_connectionMade`` calls ``log.debug("{attrs}", attrs=pformat(...))``: the
    argument is built whether or not debug logging is on, 4 % of the tuned
    server's CPU during a reconnect storm (py-spy, benchmarks/connections.py). The
    module's ``pformat`` becomes a lazy one: the same text when the line is logged."""
    if features["lazy_option_log"]:
        autobahn_protocol_module.pformat = LazyPformat  # type: ignore[assignment]


def defer_highlighting() -> None:
    """Stop autobahn from colouring the arguments of debug lines nobody writes.

    autobahn passes ``hltype(...)``/``hlval(...)`` (click-coloured text) to
    ``log.debug`` on every chunk a connection receives and every frame it sends; the
    arguments are built when debug logging is off: 4 % of the tuned server's samples
    while reading pongs (``benchmarks/stall.py --profile``). In those two modules they
    become lazy: the same text when a debug line is written."""
    if not features["lazy_highlight"]:
        return
    for module in HIGHLIGHTING_MODULES:
        for name in ("hltype", "hlval"):
            current = getattr(module, name)
            if not hasattr(current, "original"):
                setattr(module, name, lazy(current))


def share_protocol_options(protocol_class: type, factory: Any) -> None:
    """Make the factory's protocol options class attributes of ``protocol_class``.

    autobahn copies each of its ~29 options (``CONFIG_ATTRS``) from the factory into
    every connection's ``__dict__`` unless the protocol already has the attribute.
    Those copies push a daphne connection's dict past 85 keys, into a table twice
    the size: 3.3 KB per connection instead of 1.6 (benchmarks/connections.py
    --breakdown). Same values, read through the class; an option autobahn or the
    application sets on one connection still goes into that connection's dict.
    Call it once the factory's options are final (at the first connection)."""
    if not features["shared_options"]:
        return
    for name in protocol_class.CONFIG_ATTRS:  # type: ignore[attr-defined]
        if not hasattr(protocol_class, name):
            value = getattr(factory, name)
            # A function option (perMessageCompressionAccept) must not become a method.
            setattr(protocol_class, name, staticmethod(value) if callable(value) else value)


def send_close_frame(protocol: Any, code: int, reason: str | None) -> None:
    """Close a daphne WebSocket protocol with any valid code.

    daphne hands ``websocket.close`` to autobahn's ``sendClose``, which accepts
    only 1000 and 3000-4999 from a server and raises for 1001, 1003, 1007-1013;
    it also drops the reason. The frame-level method has no such restriction."""
    if protocol.state == protocol.STATE_CONNECTING:
        protocol.serverReject()  # not accepted yet: daphne answers HTTP 403
    elif protocol.state == protocol.STATE_OPEN:
        reason_bytes = encode_truncate(reason, 123) if reason else None
        protocol.sendCloseFrame(code=code, reasonUtf8=reason_bytes, isReply=False)


#: Key under which a ``websocket.send`` message keeps its framed bytes, so a
#: broadcast frame shared by every local subscriber is framed once.
PREPARED_KEY = "channels_tuning.prepared"

#: One table for the process: the factory is part of every match.
_recent_frames = RecentFrames()


def write_message(protocol: Any, message: dict[str, Any]) -> None:
    """Write a ``websocket.send`` message synchronously (the protocol must be open).

    Data frames are framed once per message object (autobahn's PreparedMessage,
    gorilla's PreparedMessage idea): a broadcast reaching 500 local subscribers
    builds its frame once and writes the same bytes 500 times; so are messages of
    their own carrying a ``str`` or ``bytes`` object framed recently
    (:class:`channels_tuning.core.frames.RecentFrames`: a ``group_send`` handler's
    ``self.send(text_data=event["text"])``, framed once for all local members)."""
    if not features["prepared_fast_path"]:
        payload = message.get("bytes")
        if payload is None:
            protocol.sendMessage(message["text"].encode(), False)
        else:
            protocol.sendMessage(payload, True)
        return
    prepared = message.get(PREPARED_KEY)
    if prepared is None:
        content: Any = message.get("bytes")
        binary = content is not None
        if not binary:
            content = message["text"]
        prepared = _recent_frames.get(content, protocol.factory)
        if prepared is None:
            data = content if binary else content.encode()
            prepared = protocol.factory.prepareMessage(data, binary)
            _recent_frames.put(content, protocol.factory, prepared)  # str, bytes: immutable
        message[PREPARED_KEY] = prepared
    if protocol._perMessageCompress is None and not protocol.send_queue:
        # What sendPreparedMessage -> sendData does, minus the debug-log call
        # whose arguments autobahn formats (with colours) on every frame even
        # when debug logging is off: an eighth of a broadcast's CPU, profiled.
        protocol.transport.write(prepared.payloadHybi)
    else:
        protocol.sendPreparedMessage(prepared)


def stop_assembling_messages(protocol: Any) -> None:
    """Make autobahn ignore the rest of the message being received (its frames and
    fragments are dropped as they come), as it does after failing a connection."""
    if features["stop_assembling"]:
        protocol.failedByMe = True


def protocol_error_code(protocol: Any) -> int | None:
    """The close code autobahn itself sent because the client broke the protocol
    (1002, 1007, 1009...), or None: the close was not autobahn's own failing of the
    connection, it was a normal one (1000), or the hook is off. Read at close."""
    if not features["protocol_error_code"] or not getattr(protocol, "failedByMe", False):
        return None
    code = getattr(protocol, "localCloseCode", None)
    return int(code) if code is not None and code != 1000 else None


def prepared_pings() -> bool:
    """Whether the tuned keepalive may write its own ping frames (else daphne's
    ``check_timeouts`` and autobahn's ``_sendAutoPing`` run, as in plain daphne)."""
    return bool(features["prepared_pings"])


def write_control_frame(protocol: Any, frame: bytes) -> None:
    """Write a prepared control frame, unless a message is being sent in pieces
    (autobahn's ``send_queue``): then it goes behind them through autobahn."""
    if protocol.send_queue:
        protocol.sendPing()
    else:
        protocol.transport.write(frame)


def release_is_closed(protocol: Any) -> None:
    """autobahn resolves ``protocol.is_closed`` with the protocol itself: the protocol
    holds the Deferred, the Deferred holds the protocol, and a closed connection waits
    for the cycle collector. Once it has fired, the attribute becomes a Deferred
    fired with None (whoever holds the old one still gets the protocol)."""
    closed: Any = getattr(protocol, "is_closed", None)
    if not features["release_is_closed"] or not getattr(closed, "called", False):
        return
    if closed.result is protocol:
        protocol.is_closed = succeed(None)


#: A connection's ``current_frame_masker`` between frames (never used: a frame's
#: header sets its own).
SPENT_MASKER: Any = xormasker.XorMaskerNull()


def release_frame_masker(protocol: Any) -> None:
    """autobahn keeps a received frame's masker until the next frame: an object per
    connection per pong, alive until the next heartbeat, so scanned by the young
    collections (19 000 of 75 000 objects at 19 000 idle connections; docs/gc.md).
    Once the frame has ended it is never read again: point at :data:`SPENT_MASKER`."""
    if features["release_frame_masker"] and protocol.current_frame is None:
        protocol.current_frame_masker = SPENT_MASKER


#: What a released connection's headers are (autobahn's and daphne's ``request``'s).
NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def release_handshake(protocol: Any) -> None:
    """Once a connection is open, let go of autobahn's copies of its handshake: the
    raw request, its headers as a dict (also held by daphne's ``request``), the raw
    response, the key. The scope keeps daphne's own copy of the headers. With
    :func:`shrink_send_queue`: 15.5-15.8 KB per idle connection instead of 17.6
    (``benchmarks/connections.py --connections 5000``), more with a browser's cookies."""
    if not features["release_handshake"]:
        return
    for name in HANDSHAKE_ATTRIBUTES:
        setattr(protocol, name, NO_HEADERS if name == "http_headers" else None)
    request: Any = getattr(protocol, "request", None)
    if getattr(request, "headers", None) is not None:
        request.headers = NO_HEADERS


class DefaultsRelease:
    """An open connection's attributes that hold their initial values, let go of;
    planned once per protocol class. The class gets the values
    (:data:`.contract.RELEASED_DEFAULTS`), and the first open connection decides
    whether a rebuilt ``__dict__`` is smaller at all (not on Python 3.10, where a
    dict costs 24 bytes per entry, not 16, and an instance's dict may still share
    its keys with the class's others). Deciding per class, not per connection:
    3.4 us per handshake instead of 8.1 (0.7 % of one)."""

    __slots__ = ("names", "rebuild_pays")

    def __init__(self, protocol_class: type) -> None:
        #: The attributes this class holds for its connections (none: the hook is off).
        self.names: frozenset[str] = frozenset()
        #: Whether dropping them shrinks a connection's dict (None: not known yet).
        self.rebuild_pays: bool | None = None
        if features["release_defaults"]:
            for name, value in RELEASED_DEFAULTS.items():
                setattr(protocol_class, name, value)
            self.names = frozenset(RELEASED_DEFAULTS)

    def apply(self, protocol: Any) -> None:
        """Rebuild an open connection's ``__dict__`` without the attributes that hold
        what its class holds: 752 bytes less per idle connection. autobahn's next
        write of one puts it back on the instance."""
        if not (self.names and features["release_defaults"]) or self.rebuild_pays is False:
            return
        attributes = vars(protocol)
        # A new dict: deleting keys would leave the table at its size for 70.
        rebuilt = {
            k: v
            for k, v in attributes.items()
            if k not in self.names or v is not RELEASED_DEFAULTS[k]
        }
        if self.rebuild_pays is None:
            self.rebuild_pays = sys.getsizeof(rebuilt) < sys.getsizeof(attributes)
        if self.rebuild_pays:
            protocol.__dict__ = rebuilt


class SendQueue(list[Any]):
    """autobahn's queue of data sent in pieces (``sendData(sync=True)`` or
    ``chopsize``, which daphne never asks for), as a list: empty, 56 bytes instead
    of an empty deque's 760 on every connection. Never more than a few entries."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


#: The traffic counters every tuned connection of this process adds to.
SHARED_TRAFFIC_STATS = TrafficStats()


def share_traffic_stats(protocol: Any) -> None:
    """autobahn gives each connection a :class:`TrafficStats` of twelve counters (176
    bytes) that it only ever adds to and nobody reads (daphne has no use for them):
    a new connection adds to the process's :data:`SHARED_TRAFFIC_STATS` instead."""
    if features["shared_traffic_stats"]:
        protocol.trafficStats = SHARED_TRAFFIC_STATS


def shrink_send_queue(protocol: Any) -> None:
    """Replace a new connection's empty ``send_queue`` deque by a :class:`SendQueue`."""
    if features["small_send_queue"] and not protocol.send_queue:
        protocol.send_queue = SendQueue()


def send_uncompressed(protocol: Any, payload: bytes, binary: bool) -> None:
    protocol.sendMessage(payload, binary, doNotCompress=True)


def deflate_active(protocol: Any) -> bool:
    return protocol._perMessageCompress is not None


def release_compressor(protocol: Any) -> None:
    """Without context takeover a message's deflate state is never reused, but
    autobahn keeps the zlib object until the next message (tens of KiB per
    connection, measured in docs/compression.md). Free it now."""
    pmce = protocol._perMessageCompress
    if pmce is not None and features["release_deflate"]:
        pmce._compressor = None


def release_decompressor(protocol: Any) -> None:
    pmce = protocol._perMessageCompress
    if pmce is not None and pmce.client_no_context_takeover and features["release_deflate"]:
        pmce._decompressor = None


#: How check() reads upstream source (a test replaces it to simulate a change).
_source = source_of


def check() -> list[UpstreamChanged]:
    """What no longer matches in the installed autobahn (empty: all hooks hold)."""
    checker = Checker(LIBRARY, source=lambda obj: _source(obj))
    contract.check(checker)
    return checker.problems


def apply(problems: list[UpstreamChanged]) -> None:
    """Switch off the hooks the problems concern (their safe fallbacks take over)."""
    for problem in problems:
        if problem.library == LIBRARY:
            features[contract.feature_of(problem.symbol)] = False
