"""Every use of Twisted's internals, in one place: the eager-write transport, the
bounded accept round and a listening port's own factory.

``FileDescriptor.write`` always buffers and registers the socket for writing, and
the reactor sends later: for a small WebSocket frame that is two ``epoll_ctl``
calls and a loop pass around one ``send()``, the larger part of the CPU a
broadcast costs per subscriber (profiled). :class:`EagerWriteServer` tries the
socket first when nothing is queued ahead, as asyncio's transports do; only what
the kernel does not take goes through Twisted's buffer, so flow control
(``pauseProducing``) is unchanged.

=================================================  ================================
upstream symbol                                    used for
=================================================  ================================
``twisted.internet.tcp.Server``                    the class a live transport is
                                                   switched from (same layout)
``tcp.Connection.writeSomeData``                   the non-blocking ``send()``
``FileDescriptor.dataBuffer``, ``_tempDataBuffer``  "nothing queued ahead"
``FileDescriptor._writeDisconnected``,             "still writable"
``disconnecting``, ``connected``
``web.http._GenericHTTPChannelProtocol._channel``  the TCP transport of a connection
                                                   still in its HTTP handshake (the
                                                   handshake deadline aborts it)
``HTTPChannel`` (no ``__slots__``), its           a connection lost in its handshake
``connectionLost``                                 leaves the server's count of them
                                                   (``servers.daphne.http``)
``HTTPChannel.requests``                           forget a request upgraded to a
                                                   WebSocket (a reference cycle)
``tcp.Port.numberAccepts``, ``Port.doRead``        accept at most what the server
                                                   admits in one round
                                                   (``servers.daphne.admission``)
``tcp.Port.factory`` (read by ``Port.doRead``)      the ``--health-port``'s own
                                                   factory, outside the caps on
                                                   handshakes (``servers.daphne.http``)
``AsyncioSelectorReactor._asyncioEventloop``,      a forked worker's reactor made its
``waker``, ``_internalReaders``,                   own (``--workers``,
``installWaker``; asyncio's                        ``servers.daphne.workers``): a new
``BaseSelectorEventLoop._selector``,               epoll instance, self-pipe and waker,
``_close_self_pipe``, ``_make_self_pipe``          not the ones all workers inherited
=================================================  ================================

Fallback when :func:`check` fails: transports are left as Twisted made them
(writes are buffered, as in plain daphne: correct, slower); accept rounds as Twisted
sizes them (connections accepted past the admission limit are answered 503); a
connection lost in its handshake counted until its deadline (or a cap's sweep); the
health port's connections counted with the serving port's (a client holding
``--max-half-open`` refuses the balancer's checks as well); ``--workers`` refuses to
start (run several processes with ``--reuse-port`` instead). Tested range: Twisted
22.10 to 26.
"""

from __future__ import annotations

import asyncio.selector_events
from collections.abc import Callable
from typing import Any

from twisted.internet import abstract, asyncioreactor, tcp
from twisted.internet.protocol import connectionDone
from twisted.python import failure
from twisted.web import http

from ..exceptions import UpstreamChanged
from ..runtime.writebatch import WriteBatch
from ._checker import Checker, source_of

LIBRARY = "Twisted"

features = {
    "eager_write": True,
    "forget_upgraded": True,
    "bounded_accepts": True,
    "port_factory": True,
    "report_loss": True,
    "renew_after_fork": True,
}
#: Transports switched to eager writes since start (the self-check's proof it works).
switched = 0


class EagerWriteServer(tcp.Server):
    """Twisted's TCP server transport, writing the way asyncio's transports do; while
    the :class:`~channels_tuning.runtime.writebatch.WriteBatch` it was given collects,
    its writes are held and go out together when the batch ends."""

    #: The batch of the reader that delivers to this connection (None: none).
    write_batch: WriteBatch | None = None
    #: Writes held during the current batch (None: none held).
    _held_writes: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        batch = self.write_batch
        if batch is not None and batch.collecting and data:
            held = self._held_writes
            if held is None:
                self._held_writes = [data]
                batch.hold(self)
            else:
                held.append(data)
            return
        self._write_eagerly(data)

    def flush_held(self) -> None:
        held = self._held_writes
        if held is not None:
            self._held_writes = None
            self._write_eagerly(held[0] if len(held) == 1 else b"".join(held))

    def loseConnection(self, *args: Any, **kwargs: Any) -> None:
        self.flush_held()  # a close frame may be among them
        super().loseConnection(*args, **kwargs)

    def _write_eagerly(self, data: bytes) -> None:
        if (
            data
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and not self.dataBuffer
            and not self._tempDataBuffer
        ):
            sent = self.writeSomeData(data)
            if isinstance(sent, int) and sent >= 0:
                if sent == len(data):
                    return
                data = data[sent:]
        super().write(data)


def use_write_batch(transport: Any, batch: WriteBatch | None) -> bool:
    """Give an eager-write transport the batch it holds its writes for; False for
    another kind of transport (it writes at once, as it always does)."""
    if not isinstance(transport, EagerWriteServer):
        return False
    transport.write_batch = batch
    return True


def make_eager(transport: Any) -> bool:
    """Switch a live ``tcp.Server`` transport to eager writes (no allocation: same
    layout, one method different). False when it is another kind of transport (TLS,
    a subclass) or the hook is off; writes then stay buffered."""
    global switched
    if not features["eager_write"] or type(transport) is not tcp.Server:
        return False
    transport.__class__ = EagerWriteServer
    switched += 1
    return True


def http_channel(protocol: Any) -> Any:
    """The HTTPChannel inside the protocol Twisted's HTTP factory built (a wrapper
    that can switch protocols); requests know this channel as ``request.channel``."""
    return getattr(protocol, "_channel", protocol)


def connection_transport(protocol: Any) -> Any:
    """The transport under the protocol Twisted's HTTP factory built, or None."""
    return getattr(http_channel(protocol), "transport", None)


def forget_upgraded_request(request: Any) -> None:
    """Take a request whose connection became a WebSocket out of its HTTP channel's
    list. The channel never hears of the connection again (the transport now talks
    to the WebSocket protocol), so the request, which knows its channel, and the
    channel, which lists it, would keep each other (and the connection's transport,
    headers, body) for the cycle collector: 53 objects per closed connection, frozen
    by the collector's rounds until a full collection. Out of the list, reference
    counting frees them."""
    if not features["forget_upgraded"]:
        return
    requests = getattr(getattr(request, "channel", None), "requests", None)
    if isinstance(requests, list) and request in requests:
        requests.remove(request)


def bound_accepts(port: Any, allowance: Callable[[], int]) -> bool:
    """Make each accept round of the listening ``port`` take at most ``allowance()``
    connections (at least one). Twisted's ``Port.doRead`` accepts up to
    ``numberAccepts`` connections a round, a number it grows by 20 after every full
    round: in a reconnect storm with a backlog of 1 024, one round took hundreds of
    connections past the server's admission limit. False when the hook is off or
    ``port`` is not a TCP port."""
    if not features["bounded_accepts"] or not isinstance(port, tcp.Port):
        return False
    accept_round = port.doRead

    def bounded_accept_round() -> Any:
        port.numberAccepts = max(1, min(port.numberAccepts, allowance()))
        return accept_round()

    # The reactor looks doRead up on the port at each round.
    port.doRead = bounded_accept_round  # type: ignore[method-assign]
    return True


class LossReportingChannel(http.HTTPChannel):
    """Twisted's HTTP channel, telling its factory's ``connection_lost`` when the
    connection ends: one its client closed before a whole first request then leaves
    the server's count of handshakes at once, not at its deadline (with
    ``--handshake-timeout 0`` it never left: 1 500 such sockets kept 11 990 objects,
    and the accept gate counted them among the upgrades in progress)."""

    def connectionLost(self, reason: failure.Failure = connectionDone) -> None:
        connection_lost = getattr(getattr(self, "factory", None), "connection_lost", None)
        if connection_lost is not None:
            connection_lost(self)
        super().connectionLost(reason)


def report_loss(protocol: Any) -> bool:
    """Make the HTTP channel of ``protocol`` (built by an HTTP factory) a
    :class:`LossReportingChannel`. False when the hook is off or the channel is not
    a plain ``HTTPChannel`` (HTTP/2, a subclass)."""
    channel = http_channel(protocol)
    if not features["report_loss"] or type(channel) is not http.HTTPChannel:
        return False
    channel.__class__ = LossReportingChannel
    return True


def build_with(port: Any, factory: Any) -> bool:
    """Make the listening ``port`` build its connections with ``factory`` from now on
    (daphne listens on every endpoint with its one HTTP factory). ``factory`` answers
    ``doStop`` for the factory ``port`` started with. False when the hook is off or
    ``port`` is not a TCP port."""
    if not features["port_factory"] or not isinstance(port, tcp.Port):
        return False
    port.factory = factory
    return True


def renew_after_fork(reactor: Any) -> None:
    """Give a forked process' reactor (not yet run) its own event-loop state: the
    epoll instance, asyncio's self-pipe and Twisted's waker are kernel objects that a
    fork shares, so a worker would be woken for another's sockets, or lose a wake-up
    to another, through them. What is registered moves to the new epoll instance.
    Raises :class:`UpstreamChanged` when the hook is off (a fork is then unsafe)."""
    if not features["renew_after_fork"]:
        raise UpstreamChanged(LIBRARY, "AsyncioSelectorReactor", "cannot renew after fork")
    loop = reactor._asyncioEventloop
    inherited = loop._selector
    renewed = type(inherited)()
    for key in list(inherited.get_map().values()):
        renewed.register(key.fileobj, key.events, key.data)
    inherited.close()  # this process' descriptor only: the others keep theirs
    loop._selector = renewed
    loop._close_self_pipe()
    loop._make_self_pipe()
    waker = reactor.waker
    reactor.removeReader(waker)
    reactor._internalReaders.discard(waker)
    waker.connectionLost(None)  # closes this process' ends of the inherited pipe
    reactor.waker = None
    reactor.installWaker()


#: How check() reads upstream source (a test replaces it to simulate a change).
_source = source_of


def check() -> list[UpstreamChanged]:
    checker = Checker(LIBRARY, source=lambda obj: _source(obj))
    # Its own method: FileDescriptor's inherited one only raises NotImplementedError.
    if not callable(tcp.Connection.__dict__.get("writeSomeData")):
        checker.changed("tcp.Connection.writeSomeData", "missing")
    if getattr(tcp.Server, "__slots__", None):
        checker.changed("tcp.Server", "has __slots__: __class__ cannot be switched")
    for attribute in ("dataBuffer", "_tempDataBuffer", "_writeDisconnected", "disconnecting"):
        checker.contains(
            abstract.FileDescriptor, f"FileDescriptor.{attribute}", [f"self.{attribute}"]
        )
    wrapper = getattr(http, "_GenericHTTPChannelProtocol", None)
    if wrapper is None:
        checker.changed("web.http._GenericHTTPChannelProtocol", "missing")
    else:
        checker.contains(wrapper, "web.http._GenericHTTPChannelProtocol._channel", ["_channel"])
    checker.contains(http.HTTPChannel, "HTTPChannel.requests", ["self.requests = []"])
    if getattr(http.HTTPChannel, "__slots__", None) or not callable(
        http.HTTPChannel.__dict__.get("connectionLost")
    ):
        checker.changed("HTTPChannel", "__slots__, or no connectionLost of its own")
    checker.contains(tcp.Port.doRead, "tcp.Port.numberAccepts", ["numAccepts = self.numberAccepts"])
    checker.contains(tcp.Port.doRead, "tcp.Port.factory", ["self.factory.buildProtocol"])
    _check_renewal(checker)
    return checker.problems


def _check_renewal(checker: Checker) -> None:
    loop_class = asyncio.selector_events.BaseSelectorEventLoop
    checker.callables(loop_class, "BaseSelectorEventLoop", ["_close_self_pipe", "_make_self_pipe"])
    checker.contains(loop_class.__init__, "BaseSelectorEventLoop._selector", ["self._selector"])
    reactor_class = asyncioreactor.AsyncioSelectorReactor
    checker.contains(
        reactor_class.__init__,
        "AsyncioSelectorReactor._asyncioEventloop",
        ["self._asyncioEventloop"],
    )
    checker.contains(
        reactor_class.installWaker,
        "AsyncioSelectorReactor.installWaker",
        [
            "if not self.waker:",
            "self._internalReaders.add(self.waker)",
            "self.addReader(self.waker)",
        ],
    )


def apply(problems: list[UpstreamChanged]) -> None:
    for problem in problems:
        if problem.library != LIBRARY:
            continue
        if problem.symbol == "HTTPChannel.requests":
            features["forget_upgraded"] = False
        elif problem.symbol == "tcp.Port.numberAccepts":
            features["bounded_accepts"] = False
        elif problem.symbol == "tcp.Port.factory":
            features["port_factory"] = False
        elif problem.symbol == "HTTPChannel":
            features["report_loss"] = False
        elif problem.symbol.startswith(("AsyncioSelectorReactor", "BaseSelectorEventLoop")):
            features["renew_after_fork"] = False
        else:
            features["eager_write"] = False
