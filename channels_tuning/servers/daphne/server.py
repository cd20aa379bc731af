"""``TunedServer``: daphne's ``Server`` with flow control, bounded inbound queues, the
options of :class:`TunedOptions`, and a graceful drain on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from typing import Any

from daphne.http_protocol import HTTPFactory
from twisted.internet import defer

from ... import compat
from ...compat import autobahn, twisted
from ...compat import channels as channels_hooks
from ...compat import daphne as daphne_hooks
from ...core.headers import process_headers
from ...wire.closecodes import CloseCode
from .. import detect
from ..startup import run_at_server_start, tune_collector_at_start
from ..transport import TRANSPORT_EXTENSION
from .admission import AcceptGate
from .checkers import DueCheckers
from .compression import Compression
from .handoff import reuse_port_endpoints
from .health import DEFAULT_HEALTH_PATH, Health, health_port_endpoint
from .http import HealthPortFactory, TunedHTTPFactory
from .protocol import ProtocolLimits, tuned_protocol
from .send import INBOUND_HIGH_WATER, FlowControlledSend, InboundQueue
from .workers import serve_forked

logger = logging.getLogger("channels_tuning.server")

SERVICE_RESTART = int(CloseCode.SERVICE_RESTART)  # a plain int: autobahn rejects IntEnum members
#: Seconds a client has to answer the server's close frame before the connection is
#: dropped (autobahn's ``closeHandshakeTimeout``; its own default is 1).
CLOSE_HANDSHAKE_TIMEOUT = 2


def wire_message_limit(server_limit: int) -> int:
    """The message-size limit autobahn enforces as frames arrive: the smaller of the
    server's own (``--websocket-max-message-size``) and ``MAX_MESSAGE_SIZE``. A
    consumer class that allows more than ``MAX_MESSAGE_SIZE`` is capped by it here."""
    try:
        from ...conf import project_settings

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


#: WebSocket upgrades in progress (their application neither accepted nor rejected
#: them yet) beyond which a new upgrade is answered 503 with ``Retry-After`` before
#: Django sees it. Without a bound a reconnect storm collapses: past what the server
#: completes within the clients' handshake timeout, every upgrade is served too late,
#: its client has given up, and the server spends the storm on handshakes nobody
#: waits for. Measured (``python benchmarks/storm.py --connections 19000``, one process
#: restarted under 19 000 clients): without the bound 255 were back after 100 s, with
#: 500 all of them after 41-94 s. 500 is about a third of a second of handshakes here.
DEFAULT_MAX_PENDING_UPGRADES = 500


def set_send_buffer(transport: Any, size: int) -> None:
    """Fix the kernel's send buffer of a connection's socket at ``size`` bytes."""
    try:
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError:
        logger.debug("channels_tuning: could not set SO_SNDBUF", exc_info=True)


#: Seconds between two batches of the drain's closes (``--drain-rate`` sets their size).
DRAIN_BATCH_INTERVAL = 0.05


@dataclass(frozen=True)
class TunedOptions:
    """What ``channels-tuning-daphne`` adds to daphne's options; its command line
    (:mod:`.cli`) fills one from its arguments."""

    #: Seconds disconnect handlers get after the 1012 closes (--drain-timeout).
    drain_timeout: float = 10.0
    #: WebSocket closes per second in the drain (--drain-rate), sent in batches every
    #: 50 ms: how fast its clients come back to the others (or to a successor).
    drain_rate: float = 200 / DRAIN_BATCH_INTERVAL  # 200 closes a batch, as before
    #: permessage-deflate, off unless given (--ws-compression and its options).
    compression: Compression | None = None
    #: Ping budget and fragment cap (--ws-control-frame-rate/-burst, --ws-max-fragments).
    protocol_limits: ProtocolLimits = field(default_factory=ProtocolLimits)
    #: Seconds a connection has to send a whole first request; 0: none.
    handshake_timeout: float = 10.0
    #: Connections still in their handshake beyond which new ones are refused.
    max_half_open: int | None = None
    #: The same, per client address (an IPv6 one: its IPV6_CLIENT_PREFIX).
    max_half_open_per_address: int | None = None
    #: WebSocket upgrades whose application has not accepted or rejected yet at which
    #: the server stops accepting connections (servers.daphne.admission) and answers
    #: an upgrade already accepted 503 before Django (--max-pending-upgrades; None: no
    #: limit).
    max_pending_upgrades: int | None = DEFAULT_MAX_PENDING_UPGRADES
    #: Stop accepting at that limit (servers.daphne.admission); False: accept, and
    #: answer every upgrade beyond it 503 (--no-accept-gate).
    accept_gate: bool = True
    #: SO_SNDBUF of each WebSocket's socket; 0: the kernel's autotuning.
    send_buffer: int = DEFAULT_SEND_BUFFER
    #: Path answered by the health check; "": none.
    health_path: str = DEFAULT_HEALTH_PATH
    #: Seconds of serving with the health check at 503 before the drain.
    drain_health_delay: float = 0.0
    #: A port answering the health check only, never paused by the accept gate
    #: (--health-port; servers.daphne.health).
    health_port: int | None = None
    #: Listen with SO_REUSEPORT, so that a successor can listen before this one
    #: drains (--reuse-port; servers.daphne.handoff).
    reuse_port: bool = False
    #: Serving processes forked once the application is loaded, on one IPv4 address
    #: with SO_REUSEPORT (--workers; servers.daphne.workers); 1: this process serves.
    workers: int = 1
    #: daphne's access log, a line per request, connect and disconnect on stdout at its
    #: default verbosity; False: none, the rest of the log unchanged (--no-access-log).
    access_log: bool = True


_OPTION_FIELDS = tuple(f.name for f in dataclass_fields(TunedOptions))


class TunedServer(DueCheckers):
    """daphne's ``Server`` with flow control, bounded inbound queues and a graceful
    drain. ``options``: a :class:`TunedOptions` (or its fields as keywords)."""

    #: daphne's endpoint strings (its __init__ sets them; --reuse-port rewrites them).
    endpoints: list[str]
    drain_batch_interval = DRAIN_BATCH_INTERVAL

    def __init__(self, *args: Any, options: TunedOptions | None = None, **kwargs: Any) -> None:
        fields = {name: kwargs.pop(name) for name in _OPTION_FIELDS if name in kwargs}
        options = replace(options or TunedOptions(), **fields)
        self.options = options
        self.drain_timeout = options.drain_timeout
        self.drain_batch_size = max(1, round(options.drain_rate * self.drain_batch_interval))
        self.compression = options.compression
        self.protocol_limits = options.protocol_limits
        self.handshake_timeout = options.handshake_timeout
        self.max_half_open = options.max_half_open
        self.max_half_open_per_address = options.max_half_open_per_address
        self.max_pending_upgrades = options.max_pending_upgrades
        #: Upgrades given an application that has not accepted or rejected them yet.
        self.pending_upgrades: set[Any] = set()
        #: Stops accepting while max_pending_upgrades wait for their application.
        gate_limit = options.max_pending_upgrades if options.accept_gate else None
        self.accept_gate = AcceptGate(
            gate_limit,
            self.upgrades_in_progress,
            lambda callback: asyncio.get_event_loop().call_soon(callback),
        )
        self.send_buffer = options.send_buffer
        self.health_path = options.health_path.encode() if options.health_path else b""
        self.drain_health_delay = options.drain_health_delay
        self.health_port = options.health_port
        self.health = Health()
        self.compression_threshold = self.compression.threshold if self.compression else 0
        self.release_deflate_contexts = bool(
            self.compression and self.compression.no_context_takeover
        )
        if not options.access_log:
            kwargs["action_logger"] = None  # daphne writes its access log through this
        super().__init__(*args, **kwargs)
        # The message-size limit applies while a message arrives, not after autobahn
        # buffered it whole: the smaller of daphne's option and MAX_MESSAGE_SIZE.
        # daphne hands both to autobahn (maxMessagePayloadSize, maxFramePayloadSize).
        limit = wire_message_limit(int(getattr(self, "websocket_max_message_size", 0)))
        self.websocket_max_message_size = limit
        frame_limit = int(getattr(self, "websocket_max_frame_size", 0) or limit)
        self.websocket_max_frame_size = min(frame_limit, limit)
        # Every private hook checked once, before the first connection: a changed
        # upstream is logged with its fallback instead of failing silently.
        self.compat_problems = compat.self_check()
        if self.health_port:
            health_endpoint = health_port_endpoint(self.endpoints, self.health_port)
            self.endpoints = [*self.endpoints, health_endpoint]
        if options.reuse_port and options.workers <= 1:  # workers listen in run()
            self.endpoints = reuse_port_endpoints(self.endpoints)  # servers.daphne.handoff
        detect.tuned_server_running = True
        # Checks that matter at run time: daphne runs none (errors stop the server).
        run_at_server_start(logging.getLogger("channels_tuning"))
        tune_collector_at_start()
        autobahn.defer_option_log()
        autobahn.defer_highlighting()

    def run(self) -> None:
        """daphne's ``run()``; with ``workers`` > 1, in that many forked processes."""
        if self.options.workers <= 1:
            super().run()
            return
        status = serve_forked(self, super().run, self.options.workers)
        if status:
            raise SystemExit(status)

    # daphne builds its WebSocket factory inside run(); hook its assignment to
    # switch compression on before the first connection.
    @property
    def ws_factory(self) -> Any:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: Any) -> None:
        self._ws_factory = factory
        # Pings get a budget and flow control, fragments a cap (servers.daphne.protocol).
        factory.protocol = tuned_protocol(
            factory.protocol,
            self.protocol_limits,
            self.websocket_max_message_size,
            upgrade_settled=self.upgrade_settled,
        )
        # autobahn's timers round a deadline down to the whole second (txaio's batched
        # timer: int(now + delay)): its default 1 s for the client's answer to a close
        # fired 0-1 s after the close frame, 0.2 s in a measured case, and a client
        # still busy writing then saw 1006 instead of the close code. 2 gives 1-2 s.
        # failByDrop=False: a client's protocol error is answered with its close code
        # (1002, 1007, 1009) instead of a dropped connection (servers.daphne.protocol).
        factory.setProtocolOptions(closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT, failByDrop=False)
        if self.compression is not None:
            factory.setProtocolOptions(perMessageCompressionAccept=self.compression.accept)

    # daphne builds its HTTP factory inside run() too: ours adds the handshake deadline.
    @property
    def http_factory(self) -> Any:
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory: Any) -> None:
        if type(factory) is HTTPFactory and daphne_hooks.features["create_application"]:
            factory = TunedHTTPFactory(
                self, self.handshake_timeout, self.max_half_open, self.max_half_open_per_address
            )
        self._http_factory = factory

    def listen_success(self, port: Any) -> None:
        health_only = self.serves_health_only(port.getHost())
        if health_only and isinstance(self.http_factory, TunedHTTPFactory):
            twisted.build_with(port, HealthPortFactory(self.http_factory))
        self.accept_gate.add_port(port, gated=not health_only)
        super().listen_success(port)

    def serves_health_only(self, local_address: Any) -> bool:
        """Whether ``local_address`` (Twisted's, a UNIX socket's too) is on the
        ``--health-port``."""
        return bool(self.health_port) and getattr(local_address, "port", None) == self.health_port

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        if scope.get("type") != "websocket" or not daphne_hooks.features["create_application"]:
            queue = super().create_application(protocol, scope)
            details = self.connections.get(protocol) or {}
            self.application_started(protocol, details.get("application_instance"))
            return queue
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
        input_queue = InboundQueue(
            protocol, INBOUND_HIGH_WATER, self.release_deflate_contexts, send
        )
        scope.setdefault("asgi", {"version": "3.0"})
        process_headers.share(scope.get("headers"))  # any consumer's, held for its life
        # The consumer finds the flow-controlled send here, however many middlewares
        # (Channels' AuthMiddlewareStack among them) wrap ``send`` on the way.
        scope["extensions"] = {**(scope.get("extensions") or {}), TRANSPORT_EXTENSION: send}
        # A ProtocolTypeRouter's coroutine would only await its entry's, for the
        # connection's whole life: the entry is started instead (compat.channels).
        application = channels_hooks.application_for(self.application, scope)
        application_instance = application(scope=scope, receive=input_queue.get, send=send)
        if protocol not in self.connections:
            return None
        task = asyncio.ensure_future(application_instance, loop=asyncio.get_event_loop())
        self.connections[protocol]["application_instance"] = task
        self.application_started(protocol, task)
        self.pending_upgrades.add(protocol)
        self.accept_gate.update()
        return input_queue

    def upgrades_pending_full(self) -> bool:
        """Whether a new WebSocket upgrade should get 503 now (see
        :data:`DEFAULT_MAX_PENDING_UPGRADES`)."""
        limit = self.max_pending_upgrades
        return limit is not None and len(self.pending_upgrades) >= limit

    def upgrades_in_progress(self) -> int:
        """What the accept gate counts: the upgrades waiting for their application, and
        connections not past their first request, these up to half the limit (so
        that idle sockets cannot close the gate: servers.daphne.admission)."""
        factory = getattr(self, "_http_factory", None)
        handshaking = len(getattr(factory, "half_open", ()))
        return len(self.pending_upgrades) + min(handshaking, self.accept_gate.half_open_share)

    def upgrade_settled(self, protocol: Any) -> None:
        """The application accepted ``protocol`` (it is open), or it is gone."""
        if protocol in self.pending_upgrades:
            self.pending_upgrades.discard(protocol)
            self.accept_gate.update()

    def protocol_disconnected(self, protocol: Any) -> None:
        self.upgrade_settled(protocol)
        super().protocol_disconnected(protocol)

    # ------------------------------------------------------------- shutdown

    def kill_all_applications(self) -> Any:
        """Twisted's "before shutdown" trigger: drain first, then cancel what is left."""
        return defer.Deferred.fromFuture(asyncio.ensure_future(self._drain()))

    async def _drain(self) -> None:
        if self.signal_handlers:
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, _exit_now)
        # Readiness off first: the balancer's health check sees 503 and stops sending
        # new clients here while the server still serves (servers.daphne.health).
        started_at = time.monotonic()
        self.health.draining = True
        if self.drain_health_delay > 0:
            logger.info(
                "Draining: health check answers 503; closing in %.1f s", self.drain_health_delay
            )
            await asyncio.sleep(self.drain_health_delay)
        self.accept_gate.stop_listening()
        websockets = [
            p
            for p in list(self.connections)
            if getattr(p, "application_type", None) == "websocket"
            and getattr(p, "state", None) == p.STATE_OPEN
        ]
        logger.info(
            "Draining %d WebSocket connections (close %d)", len(websockets), SERVICE_RESTART
        )
        closing_at = time.monotonic()
        for start in range(0, len(websockets), self.drain_batch_size):
            for protocol in websockets[start : start + self.drain_batch_size]:
                # Clients get the drain deadline to answer the close, not autobahn's
                # 1 s: a busy client aborted first would see 1006 instead of 1012.
                protocol.closeHandshakeTimeout = self.drain_timeout
                autobahn.send_close_frame(protocol, SERVICE_RESTART, "server restarting")
            # Spread the clients' reconnects instead of sending all closes in one go.
            await asyncio.sleep(self.drain_batch_interval)
        closed_at = time.monotonic()
        pending = self._pending_applications()
        if pending:
            await asyncio.wait(pending, timeout=self.drain_timeout)
        left = [task for task in self._pending_applications() if not task.done()]
        for task in left:
            task.cancel()
        if left:
            logger.warning("Cancelled %d applications still running after the drain", len(left))
            await asyncio.wait(left, timeout=2.0)
        # The phases an operator (and benchmarks/storm.py) compares with the restart's
        # whole time: what is left after this line is the reactor's and Python's exit.
        logger.info(
            "Drained in %.1f s: closes sent in %.1f s, applications finished in %.1f s",
            time.monotonic() - started_at,
            closed_at - closing_at,
            time.monotonic() - closed_at,
        )

    def _pending_applications(self) -> list[asyncio.Future[Any]]:
        return [
            details["application_instance"]
            for details in self.connections.values()
            if "application_instance" in details and not details["application_instance"].done()
        ]


def _exit_now(signum: int, frame: Any) -> None:
    logger.warning("Second signal during drain: exiting at once")
    os._exit(128 + signum)
