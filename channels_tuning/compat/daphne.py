"""Every use of daphne's internals, in one place.

``channels_tuning.servers.daphne.TunedServer`` subclasses daphne's ``Server`` and
replaces how a WebSocket application is created (to give it a flow-controlled
``send`` and a bounded input queue); tuned consumers under *plain* daphne write
synchronously through daphne's ``send``. Both rely on details daphne does not
document:

===========================================  =====================================
upstream symbol                              used for
===========================================  =====================================
``Server.create_application``                replaced for WebSockets; our version
                                             keeps its contract: ``connections
                                             [protocol]["application_instance"]``
                                             holds the task, the input queue is
                                             returned; daphne's protocols only
                                             call its ``put_nowait`` (so a
                                             one-reader queue replaces
                                             ``asyncio.Queue``)
``Server.connections`` (``"disconnected"``)  whether a protocol may still be written
``Server.handle_reply`` as a ``partial``     recognising plain daphne's ``send``
                                             (by name: importing daphne.server
                                             would install its reactor)
``Server.ws_factory`` assigned in ``run()``  switching permessage-deflate on,
                                             the tuned WebSocket protocol
``Server.http_factory`` assigned in ``run()`` the handshake deadline and the cap
                                             on half-open connections
``Server.kill_all_applications``             the graceful drain (shutdown trigger)
``Server.listen_success``                    the listening ports, to stop them
``WebRequest.handle_reply``, its              the tuned server's own answers (health
``request_start`` and ``client_addr``         check, 503 while draining), written
                                             through daphne's reply path
``Server.application_checker``,              replaced in the tuned server by loops
``Server.timeout_checker``,                   that look only at what is due
``Server.protocol_connected`` and             (``servers/daphne/checkers.py``), with
``protocol_disconnected``,                    daphne's loop bodies; they read
``WebSocketProtocol.check_timeouts``,         ``connections[protocol]`` and a
``last_ping``, ``socket_opened``              protocol's ping and open times
``CommandLineInterface.server_class``        the tuned server behind the same CLI
``Server.kill_all_applications`` (plain)     replaced (:func:`install_shutdown_fix`):
                                             it gathers the cancelled applications,
                                             so the first that ends *cancelled*
                                             stops the loop and cuts every other's
                                             cleanup short; and it raises KeyError
                                             for an upgrade not yet given its task
``endpoints.build_endpoint_description_``   ``--reuse-port``: daphne's endpoint for
``strings``: ``tcp:port=P:interface=H``;     ``-b``/``-p`` replaced by a socket bound
the ``fd`` endpoint plugin daphne ships      with SO_REUSEPORT, which the plugin
(``fd:fileno=N``)                            adopts (``servers/daphne/handoff.py``);
                                             ``--health-port``'s interface
                                             (``servers/daphne/health.py``)
``WebSocketProtocol.muted``, its             the application told at once of a
``onClose`` and ``onMessage``                 connection the server failed (1009,
                                             1002...): the disconnect put on the
                                             queue, ``muted`` so daphne sends no
                                             second one and no more frames
``WebSocketProtocol.protocol_to_accept``     left on the class once a connection is
                                             open, with autobahn's initial values:
                                             checked with them, in
                                             ``compat/autobahn/contract.py`` (its
                                             scan reads this class's methods too)
===========================================  =====================================

Fallback when :func:`check` fails: ``TunedServer`` creates applications as daphne
does (no flow control, no inbound bound; logged as an error at start), and tuned
consumers under plain daphne fall back to awaiting ``send``; ``--reuse-port`` is
refused at start (a successor could not bind the port) and ``--health-port`` listens
on 127.0.0.1. Tested range:
daphne 4.1 to 4.2.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import sys
from typing import Any

from ..exceptions import UpstreamChanged
from ._checker import Checker, source_of

LIBRARY = "daphne"

features = {
    "create_application": True,
    "sync_send": True,
    "shutdown_fix": True,
    # Off: the tuned server leaves health checks and handshakes while draining to
    # daphne and the application (no 503s of its own).
    "own_answers": True,
    # Off: the tuned server runs daphne's own periodic loops over every connection.
    "due_checkers": True,
    # Off: daphne's endpoint strings or its fd plugin changed: --reuse-port is refused,
    # --health-port listens on 127.0.0.1.
    "endpoint_strings": True,
    # Off (or create_application off): an application learns that the server failed
    # its connection when the TCP connection ends, after the close handshake (1-2 s
    # for a client that does not answer), as before.
    "early_disconnect": True,
}
logger = logging.getLogger("channels_tuning.compat")


def is_daphne_send(send: Any) -> bool:
    """Whether ``send`` is plain daphne's ``partial(Server.handle_reply, protocol)``."""
    if not features["sync_send"] or not isinstance(send, functools.partial):
        return False
    func = send.func
    return getattr(func, "__qualname__", "") == "Server.handle_reply" and getattr(
        func, "__module__", ""
    ).startswith("daphne.")


def protocol_of(send: Any) -> Any:
    return send.args[0]


def is_writable(server: Any, protocol: Any) -> bool:
    """daphne still tracks ``protocol`` and has not seen it disconnect."""
    details = server.connections.get(protocol)
    return details is not None and "disconnected" not in details


def disconnect_application_now(protocol: Any, code: int) -> None:
    """Tell the application of a connection the server is failing (its close frame
    sent) now, not when the TCP connection ends: a client that never answers the close
    frame holds that for autobahn's close handshake timeout, and daphne itself drops
    such a connection at once (so its application is told at once). daphne's own
    ``muted`` then keeps it from a second disconnect and from frames still arriving.
    Only on the tuned server's own WebSocket path: where ``create_application`` fell
    back to daphne's, the connection keeps daphne's behaviour whole."""
    on = features["early_disconnect"] and features["create_application"]
    if not on or getattr(protocol, "muted", True):
        return  # off, told already, or not daphne's protocol (no application queue)
    queue = getattr(protocol, "application_queue", None)
    if queue is not None:
        queue.put_nowait({"type": "websocket.disconnect", "code": code})
        protocol.muted = True


#: Seconds plain daphne's shutdown waits for cancelled applications to finish their
#: cleanup (close frames, group_discard) once the fix is installed.
SHUTDOWN_WAIT = 10.0
#: Seconds it then waits for those applications' connections to end. A close frame an
#: application sent sits in Twisted's write buffer until the loop runs again; a process
#: that exits first loses it (the client sees 1006), and one that exits with the
#: client's answer unread resets the connection. Autobahn ends a connection 1 s after
#: its close frame at the latest, so this bound is only reached by a stuck transport.
CLOSE_WAIT = 2.0


def install_shutdown_fix() -> bool:
    """Make plain daphne's shutdown wait for every cancelled application.

    Called when the Django app loads, which under daphne's CLI and runserver is
    before the server registers its shutdown trigger. Applications that re-raise
    CancelledError (as asyncio requires, and as tuned consumers do) no longer stop
    the loop while the others still clean up. Only when daphne is already imported:
    importing it here would install Twisted's reactor in a process that is not
    daphne's. False if not installed (daphne absent, or its shutdown changed)."""
    server_module = sys.modules.get("daphne.server")
    if server_module is None or not features["shutdown_fix"]:
        return False
    server_class = server_module.Server
    if getattr(server_class.kill_all_applications, "channels_tuning_fix", False):
        return True
    problems = [p for p in check() if p.symbol.startswith("Server.kill_all_applications")]
    if problems:
        apply(problems)
        logger.error(
            "channels_tuning: daphne changed: %s; its shutdown is left as it is", problems[0]
        )
        return False
    original = server_class.kill_all_applications

    def kill_all_applications(self: Any) -> Any:
        # The connections are taken now: once an application is done, daphne's
        # application_checker (every second) removes it from its connection's details,
        # and a connection looked up by its application afterwards would not be
        # waited for (its close frame lost in a process that exits at once).
        closing = []
        pending = []
        for protocol, details in self.connections.items():
            task = details.get("application_instance")
            if task is not None and not task.done():
                closing.append(protocol)
                pending.append(task)
        for task in pending:
            task.cancel()
        logger.info("Killed %i pending application instances", len(pending))

        async def wait() -> None:
            if not pending:
                return
            await asyncio.wait(pending, timeout=SHUTDOWN_WAIT)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + CLOSE_WAIT
            while loop.time() < deadline and any(is_writable(self, p) for p in closing):
                await asyncio.sleep(0.02)

        from twisted.internet import defer

        return defer.Deferred.fromFuture(asyncio.ensure_future(wait()))

    kill_all_applications.channels_tuning_fix = True  # type: ignore[attr-defined]
    kill_all_applications.original = original  # type: ignore[attr-defined]
    server_class.kill_all_applications = kill_all_applications
    return True


#: How check() reads upstream source (a test replaces it to simulate a change).
_source = source_of


#: The symbol a change of daphne's endpoint strings is reported under.
ENDPOINTS = "endpoints (--reuse-port, --health-port)"
#: daphne's endpoint for ``-b HOST -p PORT`` with an IPv4 address.
_TCP_ENDPOINT = re.compile(r"^tcp:port=(\d+):interface=([0-9.]+|localhost)$")


def ipv4_tcp_address(description: str) -> tuple[str, int] | None:
    """``(interface, port)`` of daphne's endpoint for ``-b``/``-p`` with an IPv4
    address; None for any other endpoint string."""
    if not features["endpoint_strings"]:
        raise UpstreamChanged(LIBRARY, ENDPOINTS, "see the start-up log")
    return _parse_tcp_endpoint(description)


def _parse_tcp_endpoint(description: str) -> tuple[str, int] | None:
    found = _TCP_ENDPOINT.match(description)
    return None if found is None else (found.group(2), int(found.group(1)))


def adopted_socket_endpoint(fileno: int) -> str:
    """The endpoint string under which daphne adopts the listening IPv4 socket
    ``fileno`` (its ``--fd`` option's, read by the ``fd`` plugin it ships)."""
    return f"fd:fileno={fileno}"


def _check_endpoints(checker: Checker) -> None:
    import socket

    from daphne.endpoints import build_endpoint_description_strings
    from twisted.internet import endpoints

    described = build_endpoint_description_strings(host="127.0.0.1", port=1)
    if [_parse_tcp_endpoint(d) for d in described] != [("127.0.0.1", 1)]:
        checker.changed(ENDPOINTS, f"-b 127.0.0.1 -p 1 is now {described}")
    try:  # parsing only: the plugin adopts the descriptor when it listens
        adopted = endpoints.serverFromString(None, "fd:fileno=1")
    except Exception as error:
        checker.changed(ENDPOINTS, f"the fd endpoint: {error!r}")
        return
    if not (
        isinstance(adopted, endpoints.AdoptedStreamServerEndpoint)
        and (adopted.fileno, adopted.addressFamily) == (1, socket.AF_INET)
    ):
        checker.changed(ENDPOINTS, f"the fd endpoint is now {adopted!r}")


def check() -> list[UpstreamChanged]:
    checker = Checker(LIBRARY, source=lambda obj: _source(obj))
    # Imported here, not at the top: importing daphne.server installs Twisted's
    # asyncio reactor, which a process under another server must not do.
    from daphne import server as daphne_server
    from daphne.cli import CommandLineInterface

    server = daphne_server.Server
    checker.callables(
        server,
        "Server",
        ("create_application", "handle_reply", "kill_all_applications", "listen_success"),
    )
    checker.contains(
        server.create_application,
        "Server.create_application",
        [
            'assert "application_instance" not in self.connections[protocol]',
            'self.connections[protocol]["application_instance"] = asyncio.ensure_future(',
            "receive=input_queue.get,",
            "send=partial(self.handle_reply, protocol),",
            "return input_queue",
        ],
    )
    checker.contains(server.handle_reply, "Server.handle_reply", ['"disconnected"'])
    kill = getattr(server.kill_all_applications, "original", server.kill_all_applications)
    checker.contains(
        kill,
        "Server.kill_all_applications",
        ['details["application_instance"]', "application_instance.cancel()"],
    )
    checker.contains(
        server.run, "Server.run", ["self.ws_factory = ", "self.http_factory = HTTPFactory(self)"]
    )
    from daphne import ws_protocol

    uses = re.findall(r"application_queue\.(\w+)", checker.source(ws_protocol, "ws_protocol") or "")
    if set(uses) - {"put_nowait"}:
        checker.changed(
            "Server.create_application queue",
            f"daphne's WebSocket protocol calls {sorted(set(uses))} on the input queue",
        )
    from daphne.http_protocol import WebRequest

    checker.callables(WebRequest, "WebRequest", ("handle_reply", "process"))
    checker.contains(
        getattr(WebRequest, "process", None),
        "WebRequest.process",
        ["self.request_start = time.time()", "self.client_addr = ["],
    )
    checker.contains(
        getattr(WebRequest, "handle_reply", None), "WebRequest.handle_reply", ["self.client_addr"]
    )
    if server.handle_reply.__qualname__ != "Server.handle_reply":
        checker.changed("Server.handle_reply", "renamed: plain daphne's send is not recognised")
    checker.callables(
        server,
        "Server",
        ("application_checker", "timeout_checker", "protocol_connected", "protocol_disconnected"),
    )
    checker.contains(
        server.application_checker,
        "Server.application_checker",
        [
            'details.get("disconnected", None)',
            'details.get("application_instance", None)',
            "self.application_close_timeout",
            "protocol.handle_exception(exception)",
            'del self.connections[protocol]["application_instance"]',
            "del self.connections[protocol]",
            "reactor.callLater(1, self.application_checker)",
        ],
    )
    checker.contains(
        server.timeout_checker,
        "Server.timeout_checker",
        ["protocol.check_timeouts()", "reactor.callLater(2, self.timeout_checker)"],
    )
    checker.contains(
        getattr(ws_protocol.WebSocketProtocol, "check_timeouts", None),
        "WebSocketProtocol.check_timeouts",
        [
            "self.server.websocket_timeout",
            "(time.time() - self.last_ping) > self.server.ping_interval",
            "self.last_ping = time.time()",
        ],
    )
    checker.attributes(ws_protocol.WebSocketProtocol, "WebSocketProtocol", ("muted",))
    checker.contains(
        getattr(ws_protocol.WebSocketProtocol, "onClose", None),
        "WebSocketProtocol.onClose muted",
        ['if not self.muted and hasattr(self, "application_queue"):'],
    )
    checker.contains(
        getattr(ws_protocol.WebSocketProtocol, "onMessage", None),
        "WebSocketProtocol.onMessage muted",
        ["if self.muted:"],
    )
    checker.contains(
        getattr(ws_protocol.WebSocketProtocol, "duration", None),
        "WebSocketProtocol.duration",
        ["time.time() - self.socket_opened"],
    )
    if getattr(CommandLineInterface, "server_class", None) is not server:
        checker.changed("CommandLineInterface.server_class", "missing")
    _check_endpoints(checker)
    return checker.problems


def apply(problems: list[UpstreamChanged]) -> None:
    for problem in problems:
        if problem.library != LIBRARY:
            continue
        if problem.symbol.startswith(("Server.create_application", "Server.run")):
            features["create_application"] = False
        if problem.symbol.startswith("Server.handle_reply"):
            features["sync_send"] = False
        if problem.symbol == ENDPOINTS:
            features["endpoint_strings"] = False
        if problem.symbol.startswith("WebRequest."):
            features["own_answers"] = False
        if problem.symbol.startswith("Server.kill_all_applications"):
            features["shutdown_fix"] = False
        if problem.symbol.startswith("WebSocketProtocol.") and "muted" in problem.symbol:
            features["early_disconnect"] = False
            continue
        if problem.symbol.startswith(
            (
                "Server.application_checker",
                "Server.timeout_checker",
                "Server.protocol_",
                "WebSocketProtocol.",
            )
        ):
            features["due_checkers"] = False
