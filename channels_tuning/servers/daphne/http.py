"""The HTTP side of ``channels-tuning-daphne``: a deadline for the opening handshake,
an optional cap on connections still in it, and the server's own answers (the health
check, 503 to new WebSockets while draining or while too many upgrades are pending)
before Django sees the request.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, cast

from daphne.http_protocol import HTTPFactory, WebRequest
from twisted.internet import reactor
from twisted.internet.protocol import Factory

from ...compat import daphne as daphne_hooks
from ...compat import twisted
from ...conf import project_settings
from ...core.addresses import address_group
from ...runtime.counters import REJECTED
from ...runtime.ratelog import RateLimitedLog
from .health import may_see_detail

logger = logging.getLogger("channels_tuning.server")


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
            is_health = bool(server.health_path) and self.path == server.health_path
            if not is_health and server.serves_health_only(self.getHost()):
                # A client (or a balancer's traffic) pointed at the wrong port.
                REJECTED.inc(("(server)", "health_port_only"))
                factory.refused_log.log(
                    "channels_tuning: %s %s from %s on the health port: 404",
                    self.method.decode("latin-1"),
                    self.path.decode("latin-1")[:200],
                    self.client,
                )
                return self._answer(404, b"not found\n", b"text/plain")
            if is_health:
                peer = str(getattr(self.client, "host", ""))
                relayed = self.requestHeaders.hasHeader(b"x-forwarded-for")
                status, body = server.health.verdict(
                    ready=self._asks(b"ready"), detail=may_see_detail(peer, relayed)
                )
                return self._answer(status, body, b"application/json")
            if server.health.draining and self._is_websocket_upgrade():
                # Draining: a new WebSocket would get 1012 moments later. 503 instead,
                # which a balancer retries on another server (HAProxy "retry-on 503",
                # nginx "proxy_next_upstream http_503"): the client never sees it.
                REJECTED.inc(("(server)", "draining"))
                return self._answer(503, b"draining\n", b"text/plain", retry_after=b"1")
            if self._is_websocket_upgrade() and server.upgrades_pending_full():
                # More upgrades in progress than the server finishes in time: refusing
                # costs less than serving one its client will have given up on.
                REJECTED.inc(("(server)", "pending_upgrades"))
                factory.refused_log.log(
                    "channels_tuning: upgrade from %s refused: %d upgrades pending",
                    self.client,
                    len(server.pending_upgrades),
                )
                return self._answer(503, b"busy\n", b"text/plain", retry_after=b"1")
        result = super().process()
        if self.transport is None and self._is_websocket_upgrade():
            # daphne moved the transport to the WebSocket protocol: done with HTTP.
            twisted.forget_upgraded_request(self)
        return result

    def _asks(self, name: bytes) -> bool:
        """Whether the query names ``name`` (``?ready``: Twisted's ``args`` drops a
        name without ``=``)."""
        query = self.uri.partition(b"?")[2]
        return any(item.partition(b"=")[0] == name for item in query.split(b"&"))

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
    refused at once; with ``max_half_open_per_address``, beyond that many from one
    address (an IPv6 one: its ``IPV6_CLIENT_PREFIX``), so that one client's idle
    sockets cannot fill the global cap for everyone (measured: 50 idle sockets from one
    address, re-opened every 10 s, kept every other client out). The address is the
    TCP peer: behind a balancer every socket comes from it, so set the per-address
    cap where clients connect directly (a balancer bounds its own handshakes, e.g.
    HAProxy's ``timeout http-request``). Connections to ``--health-port`` are outside
    both caps (:class:`HealthPortFactory`). Both are logged (one line a second at most)
    and counted (``rejected_connections_total{consumer="(server)",reason=...}``)."""

    def __init__(
        self,
        server: Any,
        handshake_timeout: float,
        max_half_open: int | None,
        max_half_open_per_address: int | None = None,
    ) -> None:
        super().__init__(server)
        self.handshake_timeout = handshake_timeout
        self.max_half_open = max_half_open
        self.max_half_open_per_address = max_half_open_per_address
        #: Connections in their handshake: their HTTP channel -> (protocol, deadline
        #: timer, address group). An entry leaves when the first request arrives
        #: (timer cancelled: nothing is kept for a connection past its handshake),
        #: when the connection is lost (``compat.twisted.report_loss``), at its deadline,
        #: or, at a cap, when its transport is found gone (a loss not yet processed).
        self.half_open: dict[Any, tuple[Any, Any, str]] = {}
        #: Entries of ``half_open`` per address group (only with the per-address cap).
        self.half_open_by_address: collections.Counter[str] = collections.Counter()
        #: As ``half_open``, for the connections to ``--health-port`` with a deadline:
        #: outside the caps.
        self.health_checks: dict[Any, tuple[Any, Any, str]] = {}
        self.refused_log = RateLimitedLog(logger)

    def buildProtocol(self, addr: Any) -> Any:
        if self.max_half_open is not None and len(self.half_open) >= self.max_half_open:
            self._forget_gone()
            if len(self.half_open) >= self.max_half_open:
                self._refused("half_open_limit", addr)
                return None
        group = ""
        per_address = self.max_half_open_per_address
        if per_address is not None:
            group = address_group(
                str(getattr(addr, "host", "")), project_settings()["IPV6_CLIENT_PREFIX"]
            )
            if self.half_open_by_address[group] >= per_address:
                self._forget_gone()
                if self.half_open_by_address[group] >= per_address:
                    self._refused("half_open_address_limit", addr)
                    return None
        protocol, timer = self._build_with_deadline(addr)
        self.half_open[twisted.http_channel(protocol)] = (protocol, timer, group)
        if group:
            self.half_open_by_address[group] += 1
        self._admission_changed()
        return protocol

    def build_health_check(self, addr: Any) -> Any:
        """A connection to ``--health-port``: the handshake deadline, none of the caps,
        and not counted by the accept gate (servers.daphne.health)."""
        protocol, timer = self._build_with_deadline(addr)
        if timer is not None:  # kept for its deadline only: a TCP check never sends a request
            self.health_checks[twisted.http_channel(protocol)] = (protocol, timer, "")
        return protocol

    def _build_with_deadline(self, addr: Any) -> tuple[Any, Any]:
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = _HandshakeRequest
        # The factory's connection_lost hears of the connection's end.
        twisted.report_loss(protocol)
        timer = None
        if self.handshake_timeout:
            # daphne.server (imported above) installed Twisted's asyncio reactor first.
            timer = cast(Any, reactor).callLater(
                self.handshake_timeout, self._deadline, protocol, addr
            )
        return protocol, timer

    def handshake_done(self, channel: Any) -> None:
        """The connection's first request arrived whole (``_HandshakeRequest``)."""
        self._forget(channel)

    def connection_lost(self, channel: Any) -> None:
        """The connection ended (``compat.twisted.LossReportingChannel``)."""
        self._forget(channel)

    def _forget(self, channel: Any) -> bool:
        """Drop a connection's entry (its timer cancelled); False if it had none."""
        entry = self.half_open.pop(channel, None)
        if entry is not None:
            self._admission_changed()
        else:
            entry = self.health_checks.pop(channel, None)
            if entry is None:
                return False
        _, timer, group = entry
        if timer is not None and timer.active():
            timer.cancel()
        if group:
            left = self.half_open_by_address[group] - 1
            if left > 0:
                self.half_open_by_address[group] = left
            else:
                del self.half_open_by_address[group]
        return True

    def _admission_changed(self) -> None:
        gate = getattr(self.server, "accept_gate", None)
        if gate is not None:
            gate.update()

    def _forget_gone(self) -> None:
        """At a cap: drop entries whose connection the client already closed.

        A fallback: a lost connection leaves its entry when Twisted reports the loss
        (``compat.twisted.report_loss``). This catches a loss not yet processed in the
        reactor's current pass, and every loss where that hook is off."""
        for channel, (protocol, _, _) in list(self.half_open.items()):
            transport = twisted.connection_transport(protocol)
            if transport is None or not transport.connected:
                self._forget(channel)

    def _deadline(self, protocol: Any, addr: Any) -> None:
        if not self._forget(twisted.http_channel(protocol)):
            return  # its request arrived, or it was forgotten at the cap
        transport = twisted.connection_transport(protocol)
        if transport is not None and getattr(transport, "connected", False):
            self._refused("handshake_timeout", addr)
            transport.abortConnection()

    def _refused(self, reason: str, addr: Any) -> None:
        REJECTED.inc(("(server)", reason))
        self.refused_log.log("channels_tuning: connection from %s refused: %s", addr, reason)


class HealthPortFactory(Factory):
    """What ``--health-port`` builds its connections with: ``http_factory``'s
    protocols, outside its caps on connections in their handshake and the accept
    gate's count. A client holding ``--max-half-open`` (idle sockets, a storm) would
    otherwise refuse the balancer's checks too and take the server out of rotation."""

    def __init__(self, http_factory: TunedHTTPFactory) -> None:
        self.http_factory = http_factory

    def buildProtocol(self, addr: Any) -> Any:
        return self.http_factory.build_health_check(addr)

    def doStop(self) -> None:
        # The port was started with the HTTP factory (compat.twisted.build_with).
        self.http_factory.doStop()
