"""Which server serves this process, said once: the log line naming it and its
guarantees (:mod:`.guarantees`), the warnings where a configuration cannot give them,
and, per consumer class, which way its connections write. How a connection writes is
:mod:`.transport`.
"""

from __future__ import annotations

import logging

from ..checks import lifespan_not_mapped, server_without_flow_control
from ..runtime.registry import registry
from .guarantees import summary
from .lifespan import Lifespan
from .transport import TRANSPORT_EXTENSION, ServerKind, Transport

_announced = False


def announce_server(kind: ServerKind) -> None:
    """Once per process, at the first connection: say in the log which server
    serves it and which guarantees hold there (:mod:`.guarantees`).

    Plain daphne is a warning, system check channels_tuning.W006 (unless listed in
    SILENCED_SYSTEM_CHECKS). Under uvicorn and hypercorn, their private hooks are
    checked (:mod:`channels_tuning.compat`), and a missing :class:`.Lifespan` is a
    warning: without it, their shutdown does not wait for connections' cleanups."""
    global _announced
    registry.server_kind = kind.stats_name
    registry.garbage_per_closed = kind.garbage_per_closed
    if _announced:
        return
    _announced = True
    log = logging.getLogger("channels_tuning")
    if kind is ServerKind.DAPHNE:
        warning = server_without_flow_control("plain daphne")
        if not warning.is_silenced():
            log.warning("%s", warning)
        return
    if not kind.known:
        return  # a test communicator, or a server the package does not know
    log.info("channels_tuning: %s", summary(kind.value))
    if kind.send_waits:
        from ..compat import self_check_server

        self_check_server(kind.value)
        if not Lifespan.started:
            log.warning("channels_tuning: %s", lifespan_not_mapped(kind.value))


_paths: dict[type, str] = {}
#: Set by channels-tuning-daphne's server: a consumer that does not find its send in
#: the scope here has lost it to a middleware.
tuned_server_running = False


def announce_path(consumer_class: type, transport: Transport, idle_timeout: float | None) -> None:
    """Once per consumer class: say in the log (and in ``wsstats``) which way its
    connections write, and warn where a configuration falls back or cannot work."""
    if consumer_class in _paths:
        return
    flow = transport.kind is ServerKind.TUNED_DAPHNE
    path = _paths[consumer_class] = transport.kind.stats_name
    label = consumer_class.__qualname__
    registry.paths[label] = path
    log = logging.getLogger("channels_tuning")
    log.info("channels_tuning: %s writes through %s", label, path)
    if not flow and tuned_server_running:
        log.warning(
            "channels_tuning: %s runs the generic path although this process is "
            "channels-tuning-daphne: a middleware in front of it builds a scope without "
            "the server's extensions (scope['extensions'][%r]); copy the scope "
            "(dict(scope, ...)) instead, or the send queue has no flow control",
            label,
            TRANSPORT_EXTENSION,
        )
    if not flow or idle_timeout is None:
        return
    # Plain pages are alive while they answer the server's protocol pings.
    ping_interval = getattr(getattr(transport, "server", None), "ping_interval", None)
    if isinstance(ping_interval, (int, float)) and ping_interval >= idle_timeout:
        log.warning(
            "channels_tuning: the server pings every %s s (--ping-interval) but %s closes "
            "clients silent for IDLE_TIMEOUT = %s s: pages that only read will be closed "
            "with 4000; make --ping-interval shorter than IDLE_TIMEOUT",
            ping_interval,
            label,
            idle_timeout,
        )
