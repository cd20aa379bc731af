"""daphne with flow control, a bounded inbound queue and a graceful drain.

Run it instead of ``daphne`` (same options)::

    channels-tuning-daphne -b 127.0.0.1 -p 8000 example_project.asgi:application

What it changes, for WebSocket connections only (HTTP is daphne's, untouched):

- **Outbound flow control.** Plain daphne writes every frame into Twisted's
  buffer at once (daphne #170): a client that stops reading grows the process
  without limit. Here each connection's transport has a streaming producer
  registered; Twisted pauses it when more than ``bufferSize`` (64 KiB) is
  waiting for the kernel, and the application's ``send`` is a
  :class:`FlowControlledSend` whose ``await send(...)`` waits until the buffer
  has drained, like asyncio's ``drain()``. Tuned consumers see the pause and
  queue (bounded, with their overflow policy) instead.
- **Inbound bound.** daphne's per-connection input queue is unbounded; here,
  when ``INBOUND_HIGH_WATER`` frames are waiting for the application, the
  server stops reading the socket (TCP pushes back on the client) until the
  application has caught up to a quarter of that.
- **Bounded kernel buffers** (``--ws-send-buffer``): each WebSocket's SO_SNDBUF is
  fixed (64 KiB by default) instead of autotuned up to 4 MB: with eager writes the
  kernel's buffer is the first a burst fills, outside the process and its bounds.
- **Opt-in permessage-deflate** (``--ws-compression``), see :class:`Compression`.
- **A health endpoint** for load balancers (``--health-path``, ``/_ct/health``):
  200 while serving, 503 while draining or full; see :mod:`.health`.
- **Graceful drain** on SIGTERM/SIGINT: health check 503 (and ``--drain-health-delay``
  seconds of serving, for the balancer to notice), then stop listening, close every WebSocket
  with 1012 in batches, give applications ``--drain-timeout`` seconds to run
  their disconnect handlers (group cleanup), then cancel what is left and exit.
  A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, cast

from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from .. import compat
from ..compat import autobahn, twisted
from ..compat import daphne as daphne_hooks
from ..runtime.counters import REJECTED
from ..runtime.ratelog import RateLimitedLog
from ..wire.closecodes import CloseCode
from . import detect
from .detect import TRANSPORT_EXTENSION, write_to_protocol
from .health import DEFAULT_HEALTH_PATH, Health
from .startup import run_at_server_start
from .wsprotocol import ProtocolLimits, tuned_protocol

__all__ = [
    "INBOUND_HIGH_WATER",
    "Compression",
    "FlowControlledSend",
    "TunedCommandLineInterface",
    "TunedServer",
    "main",
]

logger = logging.getLogger("channels_tuning.server")

#: Frames waiting for the application before the server stops reading the socket.
INBOUND_HIGH_WATER = 64
SERVICE_RESTART = int(CloseCode.SERVICE_RESTART)  # a plain int: autobahn rejects IntEnum members


@dataclass(frozen=True)
class Compression:
    """Opt-in permessage-deflate (RFC 7692) with memory-conscious defaults.

    zlib's own defaults (15 window bits, memLevel 8) cost a few hundred KiB per
    connection; these cost a few tens (see docs/compression.md for the measured
    figures). Frames shorter than ``threshold`` bytes are sent uncompressed: for
    small messages deflate's CPU buys nothing. ``no_context_takeover`` starts
    every message from an empty window (worse ratio, no history to keep).
    """

    threshold: int = 1024
    window_bits: int = 11
    mem_level: int = 4
    no_context_takeover: bool = True

    def accept(self, offers: list[Any]) -> Any:
        """autobahn's ``perMessageCompressionAccept`` hook."""
        for offer in offers:
            if not isinstance(offer, PerMessageDeflateOffer):
                continue
            bits = self.window_bits
            if offer.request_max_window_bits:
                bits = min(bits, offer.request_max_window_bits)
            return PerMessageDeflateOfferAccept(
                offer,
                request_no_context_takeover=(
                    self.no_context_takeover and offer.accept_no_context_takeover
                ),
                request_max_window_bits=bits if offer.accept_max_window_bits else 0,
                no_context_takeover=self.no_context_takeover,
                window_bits=bits,
                mem_level=self.mem_level,
            )
        return None


@implementer(IPushProducer)
class FlowControlledSend:
    """The ASGI ``send`` of one WebSocket connection, and the producer registered
    on its transport (Twisted calls pause/resume as its write buffer fills/drains)."""

    channels_tuning_flow_control = True
    __slots__ = ("_waiter", "closed", "last_activity", "paused", "protocol", "server")

    def __init__(self, server: Server, protocol: Any) -> None:
        self.server = server
        self.protocol = protocol
        self.paused = False
        self.closed = False
        #: time.monotonic() of the client's last protocol pong or ping (0: none yet),
        #: set by the tuned protocol (servers.wsprotocol); read by the consumer's idle
        #: timeout, so that a page that only reads, whose browser answers the server's
        #: protocol pings, is alive.
        self.last_activity = 0.0
        self._waiter: asyncio.Future[None] | None = None

    # IPushProducer, called by Twisted
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._wake()

    def stopProducing(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_writable(self) -> bool:
        """Wait while the transport's buffer is above its high-water mark.
        Return False if the connection is gone."""
        while self.paused and not self.closed:
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return not self.closed

    def write_nowait(self, message: dict[str, Any]) -> None:
        if not daphne_hooks.is_writable(self.server, self.protocol):
            return
        if not self._sent_uncompressed(message):
            write_to_protocol(self.protocol, message)
            if self.server.release_deflate_contexts:
                autobahn.release_compressor(self.protocol)

    def _sent_uncompressed(self, message: dict[str, Any]) -> bool:
        """Send a short data frame without deflate; False if it is not one."""
        protocol = self.protocol
        threshold = self.server.compression_threshold
        if (
            not threshold
            or message["type"] != "websocket.send"
            or not autobahn.deflate_active(protocol)
            or protocol.state != protocol.STATE_OPEN
        ):
            return False
        payload = message.get("bytes")
        binary = payload is not None
        if not binary:
            text = message.get("text")
            payload = text.encode() if text else None
        if not payload or len(payload) >= threshold:
            return False
        autobahn.send_uncompressed(protocol, payload, binary)
        return True

    async def __call__(self, message: dict[str, Any]) -> None:
        await self.wait_writable()
        self.write_nowait(message)


class _InboundQueue:
    """daphne's input queue (daphne only calls ``put_nowait``, the application only
    awaits ``get``), but reading from the socket pauses while it is long.

    Not an ``asyncio.Queue``: that is an object with a dict, three deques and an
    Event per connection (3.2 KB of an idle connection, benchmarks/connections.py
    --breakdown); one reader needs a list and at most one waiter. Items are always
    appended before the waiter is woken, so a ``get`` cancelled as it is woken
    loses nothing: the next ``get`` finds the item."""

    __slots__ = (
        "_high",
        "_items",
        "_low",
        "_protocol",
        "_reading_paused",
        "_release_decompressor",
        "_transport",
        "_waiter",
    )

    def __init__(self, protocol: Any, high_water: int, release_decompressor: bool) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None
        self._protocol = protocol
        self._transport = protocol.transport
        self._release_decompressor = release_decompressor
        self._high = high_water
        self._low = high_water // 4
        self._reading_paused = False

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._release_decompressor:
            autobahn.release_decompressor(self._protocol)
        if not self._reading_paused and len(self._items) >= self._high:
            self._reading_paused = True
            self._transport.pauseProducing()

    async def get(self) -> Any:
        items = self._items
        while not items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        # At most INBOUND_HIGH_WATER items: pop(0) is cheaper than a deque's memory.
        item = items.pop(0)
        if self._reading_paused and len(items) <= self._low:
            self._reading_paused = False
            self._transport.resumeProducing()
        return item


class _HandshakeRequest(WebRequest):
    """daphne's request, telling the factory when a connection's first request
    arrived whole (its handshake is over: the deadline no longer applies)."""

    def process(self) -> Any:
        factory = getattr(self.channel, "factory", None)
        if isinstance(factory, TunedHTTPFactory):
            factory.handshake_done(self.channel)
            server = factory.server
            if not daphne_hooks.features["own_answers"]:
                return super().process()
            if server.health_path and self.path == server.health_path:
                status, body = server.health.verdict()
                return self._answer(status, body, b"application/json")
            if server.health.draining and self._is_websocket_upgrade():
                # Draining: a new WebSocket would get 1012 moments later. 503 instead,
                # which a balancer retries on another server (HAProxy "retry-on 503",
                # nginx "proxy_next_upstream http_503"): the client never sees it.
                REJECTED.inc(("(server)", "draining"))
                return self._answer(503, b"draining\n", b"text/plain", retry_after=b"1")
        return super().process()

    def _is_websocket_upgrade(self) -> bool:
        upgrade = self.requestHeaders.getRawHeaders(b"upgrade") or [b""]
        return upgrade[0].lower() == b"websocket"

    def _answer(
        self, status: int, body: bytes, content_type: bytes, retry_after: bytes | None = None
    ) -> None:
        """An answer from the server itself, before Django (health, draining)."""
        self.request_start = time.time()  # what daphne's access log reads
        if hasattr(self.client, "host"):
            self.client_addr = [str(self.client.host), self.client.port]
        headers = [(b"content-type", content_type), (b"cache-control", b"no-store")]
        if retry_after is not None:
            headers.append((b"retry-after", retry_after))
        self.handle_reply({"type": "http.response.start", "status": status, "headers": headers})
        self.handle_reply({"type": "http.response.body", "body": body})


class TunedHTTPFactory(HTTPFactory):
    """daphne's HTTP factory with a deadline for the opening handshake and an
    optional cap on connections still in it.

    A TCP connection that has not sent a whole first request (the WebSocket upgrade,
    or any HTTP request) within ``handshake_timeout`` seconds is aborted: idle sockets
    and slowloris handshakes (1 byte a second) would otherwise hold a file descriptor
    each for as long as the client likes, below anything ``MAX_CONNECTIONS`` sees.
    With ``max_half_open``, connections beyond that many in their handshake are
    refused at once. Both are logged (one line a second at most) and counted
    (``rejected_connections_total{consumer="(server)",reason=...}``)."""

    def __init__(self, server: Any, handshake_timeout: float, max_half_open: int | None) -> None:
        super().__init__(server)
        self.handshake_timeout = handshake_timeout
        self.max_half_open = max_half_open
        #: Connections in their handshake: their HTTP channel -> (protocol, deadline
        #: timer). An entry leaves when the first request arrives (timer cancelled:
        #: nothing is kept for a connection past its handshake), at its deadline, or,
        #: at the cap, when its transport is found gone.
        self.half_open: dict[Any, tuple[Any, Any]] = {}
        self._log = RateLimitedLog(logger)

    def buildProtocol(self, addr: Any) -> Any:
        if self.max_half_open is not None and len(self.half_open) >= self.max_half_open:
            self._forget_gone()
            if len(self.half_open) >= self.max_half_open:
                self._refused("half_open_limit", addr)
                return None
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = _HandshakeRequest
        timer = None
        if self.handshake_timeout:
            # daphne.server (imported above) installed Twisted's asyncio reactor first.
            timer = cast(Any, reactor).callLater(
                self.handshake_timeout, self._deadline, protocol, addr
            )
        self.half_open[twisted.http_channel(protocol)] = (protocol, timer)
        return protocol

    def handshake_done(self, channel: Any) -> None:
        entry = self.half_open.pop(channel, None)
        if entry is not None and entry[1] is not None and entry[1].active():
            entry[1].cancel()

    def _forget_gone(self) -> None:
        """At the cap: drop entries whose connection the client already closed."""
        for channel, (protocol, timer) in list(self.half_open.items()):
            transport = twisted.connection_transport(protocol)
            if transport is None or not transport.connected:
                del self.half_open[channel]
                if timer is not None and timer.active():
                    timer.cancel()

    def _deadline(self, protocol: Any, addr: Any) -> None:
        if self.half_open.pop(twisted.http_channel(protocol), None) is None:
            return  # its request arrived, or it was forgotten at the cap
        transport = twisted.connection_transport(protocol)
        if transport is not None and getattr(transport, "connected", False):
            self._refused("handshake_timeout", addr)
            transport.abortConnection()

    def _refused(self, reason: str, addr: Any) -> None:
        REJECTED.inc(("(server)", reason))
        self._log.log("channels_tuning: connection from %s refused: %s", addr, reason)


def wire_message_limit(server_limit: int) -> int:
    """The message-size limit autobahn enforces as frames arrive: the smaller of the
    server's own (``--websocket-max-message-size``) and ``MAX_MESSAGE_SIZE``. A
    consumer class that allows more than ``MAX_MESSAGE_SIZE`` is capped by it here."""
    try:
        from ..conf import project_settings

        configured = project_settings()["MAX_MESSAGE_SIZE"]
    except Exception:  # Django not configured: the server's own limit
        configured = None
    if not configured:
        return int(server_limit)
    return int(min(server_limit, configured)) if server_limit else int(configured)


#: SO_SNDBUF of each WebSocket's socket (the kernel doubles it for its bookkeeping).
#: Left to the kernel, TCP autotuning grows a slow client's send buffer to several MB
#: (2.8 MB measured on loopback, tcp_wmem's ceiling is 4 MB): memory outside the
#: process, outside the send queue's bound, per slow client. 64 KiB keeps a fast
#: client's throughput on a LAN (see docs and benchmarks/slow_readers.py).
DEFAULT_SEND_BUFFER = 64 * 1024


def set_send_buffer(transport: Any, size: int) -> None:
    """Fix the kernel's send buffer of a connection's socket at ``size`` bytes."""
    try:
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError:
        logger.debug("channels_tuning: could not set SO_SNDBUF", exc_info=True)


class TunedServer(Server):
    """daphne's ``Server`` with flow control, bounded inbound queues and a graceful drain."""

    drain_timeout = 10.0
    drain_batch_size = 200
    drain_batch_interval = 0.05

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.drain_timeout = kwargs.pop("drain_timeout", self.drain_timeout)
        self.compression: Compression | None = kwargs.pop("compression", None)
        self.protocol_limits: ProtocolLimits = kwargs.pop("protocol_limits", None) or (
            ProtocolLimits()
        )
        self.handshake_timeout: float = kwargs.pop("handshake_timeout", 10.0)
        self.max_half_open: int | None = kwargs.pop("max_half_open", None)
        self.send_buffer: int = kwargs.pop("send_buffer", DEFAULT_SEND_BUFFER)
        health_path: str = kwargs.pop("health_path", DEFAULT_HEALTH_PATH)
        self.health_path = health_path.encode() if health_path else b""
        self.drain_health_delay: float = kwargs.pop("drain_health_delay", 0.0)
        self.health = Health()
        self.compression_threshold = self.compression.threshold if self.compression else 0
        self.release_deflate_contexts = bool(
            self.compression and self.compression.no_context_takeover
        )
        super().__init__(*args, **kwargs)
        # The message-size limit applies while a message arrives, not after autobahn
        # buffered it whole: the smaller of daphne's option and MAX_MESSAGE_SIZE.
        # daphne hands both to autobahn (maxMessagePayloadSize, maxFramePayloadSize).
        limit = wire_message_limit(int(getattr(self, "websocket_max_message_size", 0)))
        self.websocket_max_message_size = limit
        frame_limit = int(getattr(self, "websocket_max_frame_size", 0) or limit)
        self.websocket_max_frame_size = min(frame_limit, limit)
        self._ports: list[Any] = []
        # Every private hook checked once, before the first connection: a changed
        # upstream is logged with its fallback instead of failing silently.
        self.compat_problems = compat.self_check()
        detect.tuned_server_running = True
        # Checks that matter at run time: daphne runs none (errors stop the server).
        run_at_server_start(logging.getLogger("channels_tuning"))
        autobahn.defer_option_log()

    # daphne builds its WebSocket factory inside run(); hook its assignment to
    # switch compression on before the first connection.
    @property
    def ws_factory(self) -> Any:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: Any) -> None:
        self._ws_factory = factory
        # Pings get a budget and flow control, fragments a cap (servers.wsprotocol).
        factory.protocol = tuned_protocol(
            factory.protocol, self.protocol_limits, self.websocket_max_message_size
        )
        if self.compression is not None:
            factory.setProtocolOptions(perMessageCompressionAccept=self.compression.accept)

    # daphne builds its HTTP factory inside run() too: ours adds the handshake deadline.
    @property
    def http_factory(self) -> Any:
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory: Any) -> None:
        if type(factory) is HTTPFactory and daphne_hooks.features["create_application"]:
            factory = TunedHTTPFactory(self, self.handshake_timeout, self.max_half_open)
        self._http_factory = factory

    def listen_success(self, port: Any) -> None:
        self._ports.append(port)
        super().listen_success(port)

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        if scope.get("type") != "websocket" or not daphne_hooks.features["create_application"]:
            return super().create_application(protocol, scope)
        # What daphne's create_application does (compat.daphne names the contract),
        # with a flow-controlled send and a bounded input queue.
        assert "application_instance" not in self.connections[protocol]
        transport = protocol.transport
        twisted.make_eager(transport)
        if self.send_buffer:
            set_send_buffer(transport, self.send_buffer)
        send = FlowControlledSend(self, protocol)
        # daphne's HTTPChannel registered itself as the producer before the upgrade.
        transport.unregisterProducer()
        transport.registerProducer(send, True)
        input_queue = _InboundQueue(protocol, INBOUND_HIGH_WATER, self.release_deflate_contexts)
        scope.setdefault("asgi", {"version": "3.0"})
        # The consumer finds the flow-controlled send here, however many middlewares
        # (Channels' AuthMiddlewareStack among them) wrap ``send`` on the way.
        scope["extensions"] = {**(scope.get("extensions") or {}), TRANSPORT_EXTENSION: send}
        application_instance = self.application(scope=scope, receive=input_queue.get, send=send)
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            application_instance, loop=asyncio.get_event_loop()
        )
        return input_queue

    # ------------------------------------------------------------- shutdown

    def kill_all_applications(self) -> Any:
        """Twisted's "before shutdown" trigger: drain first, then cancel what is left."""
        return defer.Deferred.fromFuture(asyncio.ensure_future(self._drain()))

    async def _drain(self) -> None:
        if self.signal_handlers:
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, _exit_now)
        # Readiness off first: the balancer's health check sees 503 and stops sending
        # new clients here while the server still serves (servers.health).
        self.health.draining = True
        if self.drain_health_delay > 0:
            logger.info(
                "Draining: health check answers 503; closing in %.1f s", self.drain_health_delay
            )
            await asyncio.sleep(self.drain_health_delay)
        for port in self._ports:
            port.stopListening()
        websockets = [
            p
            for p in list(self.connections)
            if getattr(p, "application_type", None) == "websocket"
            and getattr(p, "state", None) == p.STATE_OPEN
        ]
        logger.info(
            "Draining %d WebSocket connections (close %d)", len(websockets), SERVICE_RESTART
        )
        for start in range(0, len(websockets), self.drain_batch_size):
            for protocol in websockets[start : start + self.drain_batch_size]:
                # Clients get the drain deadline to answer the close, not autobahn's
                # 1 s: a busy client aborted first would see 1006 instead of 1012.
                protocol.closeHandshakeTimeout = self.drain_timeout
                autobahn.send_close_frame(protocol, SERVICE_RESTART, "server restarting")
            # Spread the clients' reconnects instead of sending all closes in one go.
            await asyncio.sleep(self.drain_batch_interval)
        pending = self._pending_applications()
        if pending:
            await asyncio.wait(pending, timeout=self.drain_timeout)
        left = [task for task in self._pending_applications() if not task.done()]
        for task in left:
            task.cancel()
        if left:
            logger.warning("Cancelled %d applications still running after the drain", len(left))
            await asyncio.wait(left, timeout=2.0)

    def _pending_applications(self) -> list[asyncio.Future[Any]]:
        return [
            details["application_instance"]
            for details in self.connections.values()
            if "application_instance" in details and not details["application_instance"].done()
        ]


def _exit_now(signum: int, frame: Any) -> None:
    logger.warning("Second signal during drain: exiting at once")
    os._exit(128 + signum)


class TunedCommandLineInterface(CommandLineInterface):
    """daphne's command line with :class:`TunedServer` and its options."""

    server_class: Any = TunedServer

    def __init__(self) -> None:
        super().__init__()
        group = self.parser.add_argument_group("channels-tuning")
        group.add_argument(
            "--drain-timeout",
            type=float,
            default=TunedServer.drain_timeout,
            help="seconds disconnect handlers get after the 1012 closes on SIGTERM",
        )
        group.add_argument(
            "--health-path",
            default=DEFAULT_HEALTH_PATH,
            help="path answered 200 while serving, 503 while draining or full, for a load "
            "balancer's health check ('' turns it off)",
        )
        group.add_argument(
            "--drain-health-delay",
            type=float,
            default=0.0,
            help="seconds between SIGTERM (health check 503) and the drain (stop listening, "
            "1012 closes): the balancer's check interval times its fall count",
        )
        group.add_argument(
            "--ws-compression",
            action="store_true",
            help="accept permessage-deflate (off by default: it costs memory per connection)",
        )
        defaults = Compression()
        group.add_argument(
            "--ws-compression-threshold",
            type=int,
            default=defaults.threshold,
            help="frames shorter than this many bytes are not compressed",
        )
        group.add_argument(
            "--ws-compression-window-bits",
            type=int,
            default=defaults.window_bits,
            choices=range(9, 16),
        )
        group.add_argument(
            "--ws-compression-mem-level", type=int, default=defaults.mem_level, choices=range(1, 10)
        )
        group.add_argument(
            "--ws-compression-context-takeover",
            action="store_true",
            help="keep the deflate window between messages (better ratio, more memory)",
        )

        defaults_limits = ProtocolLimits()
        group.add_argument(
            "--ws-control-frame-rate",
            type=float,
            default=defaults_limits.control_frame_rate,
            help="pings a client may send per second (beyond the burst: close 1008)",
        )
        group.add_argument(
            "--ws-control-frame-burst",
            type=float,
            default=defaults_limits.control_frame_burst,
            help="pings a client may send at once",
        )
        group.add_argument(
            "--handshake-timeout",
            type=float,
            default=10.0,
            help="seconds a connection has to send a whole first request (0: no limit)",
        )
        group.add_argument(
            "--max-half-open",
            type=int,
            default=None,
            help="connections still in their handshake beyond which new ones are refused",
        )
        group.add_argument(
            "--ws-send-buffer",
            type=int,
            default=DEFAULT_SEND_BUFFER,
            help="SO_SNDBUF of each WebSocket's socket in bytes (0: the kernel's autotuning)",
        )
        group.add_argument(
            "--ws-max-fragments",
            type=int,
            default=defaults_limits.max_fragments,
            help="fragments one message may have (beyond: close 1009)",
        )

    def run(self, args: list[str]) -> None:
        options, _ = self.parser.parse_known_args(args)
        compression = None
        if options.ws_compression:
            compression = Compression(
                threshold=options.ws_compression_threshold,
                window_bits=options.ws_compression_window_bits,
                mem_level=options.ws_compression_mem_level,
                no_context_takeover=not options.ws_compression_context_takeover,
            )
        limits = ProtocolLimits(
            control_frame_rate=options.ws_control_frame_rate,
            control_frame_burst=options.ws_control_frame_burst,
            max_fragments=options.ws_max_fragments,
        )
        server_class = type(self).server_class
        if not (isinstance(server_class, type) and issubclass(server_class, TunedServer)):
            # A subclass chose a server of its own (daphne's CLI tests do): it gets
            # daphne's options only, as daphne's CLI would hand them.
            super().run(args)
            return
        self.server_class = functools.partial(
            server_class,
            compression=compression,
            drain_timeout=options.drain_timeout,
            protocol_limits=limits,
            handshake_timeout=options.handshake_timeout,
            max_half_open=options.max_half_open,
            send_buffer=options.ws_send_buffer,
            health_path=options.health_path,
            drain_health_delay=options.drain_health_delay,
        )
        super().run(args)


def main() -> None:
    """Entry point of ``channels-tuning-daphne``."""
    TunedCommandLineInterface().run(sys.argv[1:])


if __name__ == "__main__":
    main()
