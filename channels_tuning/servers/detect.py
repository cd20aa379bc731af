"""How a consumer writes to its server: detected once per connection from ``send``.

Three cases, from best to worst guarantees:

``FLOW``
    channels-tuning's daphne server (:mod:`channels_tuning.servers.daphne`): ``send``
    is a :class:`~channels_tuning.servers.daphne.FlowControlledSend`, which writes
    synchronously and knows when the client's TCP buffer is above its high-water
    mark, so the consumer can queue
    (bounded) instead of letting Twisted buffer without limit.
``DAPHNE``
    Plain daphne: ``send`` never waits for the socket (daphne #170). Writes are
    synchronous and complete at once, so they are done without a task, but the
    server buffers for a client that does not read: bounded queues cannot help.
``GENERIC``
    Any other ASGI server or Channels' test communicator: ``send`` may suspend,
    so queued messages are written by a short-lived writer task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from ..checks import server_without_flow_control
from ..compat import autobahn, daphne
from ..runtime.registry import registry

GENERIC: Final = 0
DAPHNE: Final = 1
FLOW: Final = 2

_SERVER_KINDS: Final = {GENERIC: "other ASGI server", DAPHNE: "daphne", FLOW: "tuned daphne"}


def detect_send_mode(send: Callable[..., Any]) -> int:
    mode = _detect(send)
    registry.server_kind = _SERVER_KINDS[mode] if mode != GENERIC else server_name(send)
    return mode


def server_name(send: Callable[..., Any]) -> str:
    """The top-level package that ``send`` comes from ("uvicorn", "hypercorn"...),
    or "other ASGI server"."""
    owner = getattr(send, "__self__", send)
    package = (getattr(type(owner), "__module__", None) or "").partition(".")[0]
    return package if package in KNOWN_GENERIC_SERVERS else _SERVER_KINDS[GENERIC]


#: ASGI servers whose ``send`` waits for the socket, named in stats and checks.
KNOWN_GENERIC_SERVERS: Final = frozenset({"uvicorn", "hypercorn"})


def _detect(send: Callable[..., Any]) -> int:
    if getattr(send, "channels_tuning_flow_control", False):
        return FLOW
    if daphne.is_daphne_send(send):
        return DAPHNE
    return GENERIC


_warned = False


def warn_if_not_flow_controlled(mode: int) -> None:
    """Once per process under plain daphne, state system check channels_tuning.W006
    in the log (unless listed in SILENCED_SYSTEM_CHECKS).

    Only plain daphne: other servers' ``send`` may wait for the socket (uvicorn
    does), and then the writer task applies backpressure through it."""
    global _warned
    if mode != DAPHNE or _warned:
        return
    _warned = True
    warning = server_without_flow_control("plain daphne")
    if not warning.is_silenced():
        logging.getLogger("channels_tuning").warning("%s", warning)


def write_to_protocol(protocol: Any, message: dict[str, Any]) -> None:
    """Write an ASGI message to a daphne (autobahn) WebSocket protocol, synchronously."""
    kind = message["type"]
    if kind == "websocket.close":
        autobahn.send_close_frame(protocol, message.get("code", 1000), message.get("reason"))
    elif kind == "websocket.send" and protocol.state == protocol.STATE_OPEN:
        autobahn.write_message(protocol, message)
    else:
        protocol.handle_reply(message)


def write_to_daphne(send: Any, message: dict[str, Any]) -> None:
    """Write ``message`` through plain daphne's ``send`` without suspending."""
    protocol = daphne.protocol_of(send)
    if daphne.is_writable(send.func.__self__, protocol):
        write_to_protocol(protocol, message)


def abort_connection(send: Callable[..., Any]) -> bool:
    """Drop the TCP connection behind a waiting server's ``send`` at once (no close
    handshake). Used only when a close frame could not be written within
    ``close_flush_timeout``: the client stopped reading. False if the server is
    unknown or its hook is off (:mod:`channels_tuning.compat`)."""
    name = server_name(send)
    if name == "uvicorn":
        from ..compat import uvicorn as hooks
    elif name == "hypercorn":
        from ..compat import hypercorn as hooks  # type: ignore[no-redef]
    else:
        return False
    transport = hooks.transport_of(send)
    if transport is None:
        return False
    transport.abort()
    return True
