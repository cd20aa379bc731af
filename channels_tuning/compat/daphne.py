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
                                             returned
``Server.connections`` (``"disconnected"``)  whether a protocol may still be written
``Server.handle_reply`` as a ``partial``     recognising plain daphne's ``send``
                                             (by name: importing daphne.server
                                             would install its reactor)
``Server.ws_factory`` assigned in ``run()``  switching permessage-deflate on
``Server.kill_all_applications``             the graceful drain (shutdown trigger)
``Server.listen_success``                    the listening ports, to stop them
``CommandLineInterface.server_class``        the tuned server behind the same CLI
===========================================  =====================================

Fallback when :func:`check` fails: ``TunedServer`` creates applications as daphne
does (no flow control, no inbound bound; logged as an error at start), and tuned
consumers under plain daphne fall back to awaiting ``send``. Tested range:
daphne 4.1 to 4.2.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from ..exceptions import UpstreamChanged

LIBRARY = "daphne"

features = {"create_application": True, "sync_send": True}


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


def check() -> list[UpstreamChanged]:
    problems: list[UpstreamChanged] = []

    def changed(symbol: str, detail: str) -> None:
        problems.append(UpstreamChanged(LIBRARY, symbol, detail))

    try:
        from daphne import server as daphne_server  # installs no reactor by itself
    except ImportError as exc:  # pragma: no cover
        changed("daphne.server", f"import failed: {exc}")
        return problems
    server_class = daphne_server.Server
    for name in ("create_application", "handle_reply", "kill_all_applications", "listen_success"):
        if not callable(getattr(server_class, name, None)):
            changed(f"Server.{name}", "missing")
    try:
        create = inspect.getsource(server_class.create_application)
    except (OSError, TypeError, AttributeError) as exc:
        changed("Server.create_application", f"source unavailable: {exc}")
    else:
        normalized = " ".join(create.split())
        for fragment in (
            'assert "application_instance" not in self.connections[protocol]',
            'self.connections[protocol]["application_instance"] = asyncio.ensure_future(',
            "receive=input_queue.get,",
            "send=partial(self.handle_reply, protocol),",
            "return input_queue",
        ):
            if fragment not in normalized:
                changed("Server.create_application", f"no longer contains {fragment!r}")
    try:
        reply = inspect.getsource(server_class.handle_reply)
        run = inspect.getsource(server_class.run)
    except (OSError, TypeError, AttributeError) as exc:
        changed("Server.handle_reply/run", f"source unavailable: {exc}")
    else:
        if '"disconnected"' not in reply:
            changed("Server.handle_reply", 'no longer checks connections[protocol]["disconnected"]')
        if "self.ws_factory = " not in run:
            changed("Server.run", "no longer assigns self.ws_factory")
    if server_class.handle_reply.__qualname__ != "Server.handle_reply":
        changed("Server.handle_reply", "renamed: plain daphne's send is not recognised")
    from daphne.cli import CommandLineInterface

    if getattr(CommandLineInterface, "server_class", None) is not server_class:
        changed("CommandLineInterface.server_class", "missing")
    return problems


def apply(problems: list[UpstreamChanged]) -> None:
    for problem in problems:
        if problem.library != LIBRARY:
            continue
        if problem.symbol.startswith(("Server.create_application", "Server.run")):
            features["create_application"] = False
        if problem.symbol.startswith("Server.handle_reply"):
            features["sync_send"] = False
