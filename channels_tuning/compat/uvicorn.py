"""Every use of uvicorn's internals, in one place (uvicorn is optional).

=============================================  ===================================
upstream symbol                                used for
=============================================  ===================================
``send.__self__.transport`` of its WebSocket   aborting a connection whose close
protocols (``WebSocketsSansIOProtocol``,       frame cannot be written: uvicorn's
``WSProtocol``, ``WebSocketProtocol``)         ``send`` waits while the client does
                                               not read, and ASGI has no abort
=============================================  ===================================

Without the hook (``check()`` found a change) a stalled connection is left to
uvicorn: its keepalive ping timeout closes it, but asyncio's ``transport.close()``
keeps the socket until the client reads or goes away. Tested range: uvicorn 0.50
to 0.54.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from ..exceptions import UpstreamChanged
from ._checker import Checker, source_of

LIBRARY = "uvicorn"

features = {"abort": True}

_source = source_of


def _protocol_classes() -> dict[str, Any]:
    from uvicorn.protocols.websockets import websockets_sansio_impl, wsproto_impl

    classes: dict[str, Any] = {
        "WebSocketsSansIOProtocol": websockets_sansio_impl.WebSocketsSansIOProtocol,
        "WSProtocol": wsproto_impl.WSProtocol,
    }
    # The legacy implementation (``--ws websockets``, deprecated) warns when
    # imported: checked only in a process that uses it.
    legacy = sys.modules.get("uvicorn.protocols.websockets.websockets_impl")
    if legacy is not None:
        classes["WebSocketProtocol"] = legacy.WebSocketProtocol
    return classes


def check() -> list[UpstreamChanged]:
    checker = Checker(LIBRARY, lambda obj: _source(obj))
    try:
        classes = _protocol_classes()
    except ImportError as exc:
        checker.changed("uvicorn.protocols.websockets", f"not importable: {exc}")
        return checker.problems
    for name, cls in classes.items():
        checker.contains(cls.connection_made, f"{name}.connection_made", ["self.transport ="])
    return checker.problems


def apply(problems: list[UpstreamChanged]) -> None:
    if any(problem.library == LIBRARY for problem in problems):
        features["abort"] = False


def transport_of(send: Any) -> asyncio.Transport | None:
    """The asyncio transport behind one of uvicorn's WebSocket ``send`` callables."""
    if not features["abort"]:
        return None
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    # Duck-typed: under uvloop (uvicorn[standard]) transports are not asyncio's classes.
    return transport if callable(getattr(transport, "abort", None)) else None
