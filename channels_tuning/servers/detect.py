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

Middlewares wrap ``send`` (Channels' ``AuthMiddlewareStack`` does, through its
``SessionMiddleware``), so ``send`` alone cannot say which server is underneath. The
tuned server hands its flow-controlled send to the application in the scope's
``extensions`` (:data:`TRANSPORT_EXTENSION`), which every middleware passes on; a
consumer writes to it directly (a middleware's wrapper of ``send`` does not see
``websocket.send`` messages on that path: listed in the differences from Channels). For
the other servers Channels' own session wrapper is looked through
(:func:`channels_tuning.compat.channels.unwrap_send`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final, cast

from ..checks import lifespan_not_mapped, server_without_flow_control
from ..compat import autobahn, daphne
from ..compat import channels as channels_hooks
from ..core.queue import REASON_CLOSED
from ..runtime.counters import DROPPED
from ..runtime.registry import registry
from .guarantees import DETECTED_AS, summary
from .lifespan import Lifespan

GENERIC: Final = 0
DAPHNE: Final = 1
FLOW: Final = 2

_SERVER_KINDS: Final = {GENERIC: "other ASGI server", DAPHNE: "daphne", FLOW: "tuned daphne"}


#: The key of the scope's ``extensions`` under which channels-tuning-daphne puts the
#: connection's :class:`~channels_tuning.servers.daphne.FlowControlledSend`.
TRANSPORT_EXTENSION: Final = "channels_tuning.flow_control"


def detect_send_mode(send: Callable[..., Any]) -> int:
    mode = _detect(send)
    registry.server_kind = _SERVER_KINDS[mode] if mode != GENERIC else server_name(send)
    return mode


def server_send(scope: dict[str, Any], send: Callable[..., Any]) -> Callable[..., Any]:
    """The server's own ``send`` under any middlewares: the tuned server's
    flow-controlled send from the scope's extensions, else ``send`` with Channels'
    session wrappers looked through."""
    extensions = scope.get("extensions")
    if extensions:
        flow = extensions.get(TRANSPORT_EXTENSION)
        if flow is not None:
            return cast("Callable[..., Any]", flow)
    return channels_hooks.unwrap_send(send)


def kind_name(mode: int, send: Callable[..., Any]) -> str:
    """How stats and the log name the server behind ``send`` (see :data:`_SERVER_KINDS`)."""
    return _SERVER_KINDS[mode] if mode != GENERIC else server_name(send)


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


_announced = False


def announce_server(mode: int) -> None:
    """Once per process, at the first connection: say in the log which server
    serves it and which guarantees hold there (:mod:`.guarantees`).

    Plain daphne is a warning, system check channels_tuning.W006 (unless listed in
    SILENCED_SYSTEM_CHECKS). Under uvicorn and hypercorn, their private hooks are
    checked (:mod:`channels_tuning.compat`), and a missing :class:`.Lifespan` is a
    warning: without it, their shutdown does not wait for connections' cleanups."""
    global _announced
    if _announced:
        return
    _announced = True
    log = logging.getLogger("channels_tuning")
    if mode == DAPHNE:
        warning = server_without_flow_control("plain daphne")
        if not warning.is_silenced():
            log.warning("%s", warning)
        return
    server = DETECTED_AS.get(registry.server_kind)
    if server is None:
        return  # a test communicator, or a server the package does not know
    log.info("channels_tuning: %s", summary(server))
    if server in KNOWN_GENERIC_SERVERS:
        from ..compat import self_check_server

        self_check_server(server)
        if not Lifespan.started:
            log.warning("channels_tuning: %s", lifespan_not_mapped(server))


_paths: dict[type, str] = {}
#: Set by channels-tuning-daphne's server: a consumer that does not find its send in
#: the scope here has lost it to a middleware.
tuned_server_running = False


def announce_path(
    consumer_class: type, mode: int, send: Callable[..., Any], idle_timeout: float | None
) -> None:
    """Once per consumer class: say in the log (and in ``wsstats``) which way its
    connections write, and warn where a configuration falls back or cannot work."""
    if consumer_class in _paths:
        return
    path = _paths[consumer_class] = kind_name(mode, send)
    label = consumer_class.__qualname__
    registry.paths[label] = path
    log = logging.getLogger("channels_tuning")
    log.info("channels_tuning: %s writes through %s", label, path)
    if mode != FLOW and tuned_server_running:
        log.warning(
            "channels_tuning: %s runs the generic path although this process is "
            "channels-tuning-daphne: a middleware in front of it builds a scope without "
            "the server's extensions (scope['extensions'][%r]); copy the scope "
            "(dict(scope, ...)) instead, or the send queue has no flow control",
            label,
            TRANSPORT_EXTENSION,
        )
    if mode != FLOW or idle_timeout is None:
        return
    # Plain pages are alive while they answer the server's protocol pings.
    ping_interval = getattr(getattr(send, "server", None), "ping_interval", None)
    if isinstance(ping_interval, (int, float)) and ping_interval >= idle_timeout:
        log.warning(
            "channels_tuning: the server pings every %s s (--ping-interval) but %s closes "
            "clients silent for IDLE_TIMEOUT = %s s: pages that only read will be closed "
            "with 4000; make --ping-interval shorter than IDLE_TIMEOUT",
            ping_interval,
            label,
            idle_timeout,
        )


def write_to_protocol(protocol: Any, message: dict[str, Any]) -> None:
    """Write an ASGI message to a daphne (autobahn) WebSocket protocol, synchronously."""
    kind = message["type"]
    if kind == "websocket.close":
        autobahn.send_close_frame(protocol, message.get("code", 1000), message.get("reason"))
    elif kind == "websocket.send" and protocol.state == protocol.STATE_OPEN:
        autobahn.write_message(protocol, message)
    elif kind == "websocket.send" and protocol.state != protocol.STATE_CONNECTING:
        # The client closed (or the connection dropped) while this frame was on its
        # way: dropped and counted, as daphne drops it, not raised into the handler
        # (autobahn's Disconnected, which would end in a 1011 and a traceback).
        DROPPED.inc(("-", REASON_CLOSED))
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
