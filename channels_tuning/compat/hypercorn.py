"""Every use of hypercorn's internals, in one place (hypercorn is optional).

=============================================  ===================================
upstream symbol                                used for
=============================================  ===================================
``WSStream.send`` -> ``H11Protocol.send`` ->   aborting a connection whose close
``TCPServer.writer`` (each protocol's ``send``  frame cannot be written: hypercorn's
is the bound method of the layer below)        ``send`` waits in ``drain()`` while
                                               the client does not read
=============================================  ===================================

Without the hook (``check()`` found a change) a stalled connection stays until the
client goes away or hypercorn stops. Tested range: hypercorn 0.16 to 0.18 (HTTP/1.1;
a WebSocket over HTTP/2 shares its TCP connection, and is never aborted).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..exceptions import UpstreamChanged
from ._checker import Checker, source_of

LIBRARY = "hypercorn"

features = {"abort": True}

_source = source_of


def check() -> list[UpstreamChanged]:
    checker = Checker(LIBRARY, lambda obj: _source(obj))
    try:
        from hypercorn.asyncio.tcp_server import TCPServer
        from hypercorn.protocol.h11 import H11Protocol
        from hypercorn.protocol.ws_stream import WSStream
    except ImportError as exc:
        checker.changed("hypercorn.protocol", f"not importable: {exc}")
        return checker.problems
    checker.contains(WSStream.__init__, "WSStream.__init__", ["self.send = send"])
    checker.contains(H11Protocol.__init__, "H11Protocol.__init__", ["self.send = send"])
    checker.contains(H11Protocol._create_stream, "H11Protocol._create_stream", ["self.stream_send"])
    checker.contains(TCPServer.protocol_send, "TCPServer.protocol_send", ["self.writer.write("])
    return checker.problems


def apply(problems: list[UpstreamChanged]) -> None:
    if any(problem.library == LIBRARY for problem in problems):
        features["abort"] = False


def transport_of(send: Any) -> asyncio.Transport | None:
    """The asyncio transport under one of hypercorn's WebSocket ``send`` callables,
    found by following each layer's ``send`` down to the TCP server's writer."""
    if not features["abort"]:
        return None
    layer = getattr(send, "__self__", None)  # WSStream
    for _ in range(3):  # WSStream -> H11Protocol -> TCPServer
        writer = getattr(layer, "writer", None)
        if isinstance(writer, asyncio.StreamWriter):
            transport = writer.transport
            # Duck-typed: under uvloop (-k uvloop) transports are not asyncio's classes.
            return transport if callable(getattr(transport, "abort", None)) else None  # type: ignore[return-value]
        layer = getattr(getattr(layer, "send", None), "__self__", None)
    return None
