"""The private details of Channels the package relies on (Channels is otherwise used
through its public API only).

===============================================  ====================================
upstream symbol                                  used for
===============================================  ====================================
``channels.sessions.InstanceSessionWrapper``:    finding the server's own ``send``
its ``send`` ends in ``self.real_send(message)``  under Channels' ``SessionMiddleware``
                                                 (inside ``AuthMiddlewareStack``), so
                                                 that plain daphne, uvicorn and
                                                 hypercorn are recognised behind it
``InMemoryChannelLayer._clean_expired()``       expiring messages and memberships
                                                 before the tuned in-memory layer's
                                                 reporting group send, as Channels'
                                                 own ``group_send`` does
``ProtocolTypeRouter.__call__`` only looks up    channels-tuning-daphne starting a
``self.application_mapping[scope["type"]]``      WebSocket's application below the
and awaits it                                    router: one coroutine less held by
                                                 every open connection (~0.27 KB)
===============================================  ====================================

channels-tuning-daphne needs no hook: it hands its flow-controlled send to the
consumer in the scope's ``extensions`` (:mod:`channels_tuning.servers.detect`), which
every middleware passes on. Without this hook (``check()`` found a change) a consumer
behind ``AuthMiddlewareStack`` on another server takes the generic path: writes
through a task, as on any server whose ``send`` waits, and no abort of a stalled
connection. Tested range: Channels 4.0 to 4.3.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..exceptions import UpstreamChanged
from ._checker import Checker

LIBRARY = "channels"

features = {"unwrap_session_send": True, "clean_expired": True, "route_by_type": True}

#: Wrappers followed at most (a stack of middlewares is a few deep).
MAX_DEPTH = 8


@functools.cache
def _protocol_type_router() -> tuple[Any, Any]:
    """The router class and the ``__call__`` it had when first asked for: by the
    start-up check, so the one recorded is the one whose source was read."""
    from channels.routing import ProtocolTypeRouter  # Django's URL machinery: not at import

    return ProtocolTypeRouter, ProtocolTypeRouter.__call__


def _wrapper_class() -> Any:
    try:
        from channels.sessions import InstanceSessionWrapper
    except ImportError:
        return None
    return InstanceSessionWrapper


def check() -> list[UpstreamChanged]:
    checker = Checker(LIBRARY)
    wrapper = _wrapper_class()
    if wrapper is None:
        checker.changed("channels.sessions.InstanceSessionWrapper", "missing")
        return checker.problems
    checker.contains(
        wrapper.send, "InstanceSessionWrapper.send", ["return await self.real_send(message)"]
    )
    checker.contains(wrapper.__init__, "InstanceSessionWrapper.__init__", ["self.real_send = send"])
    from channels.layers import InMemoryChannelLayer

    checker.callables(InMemoryChannelLayer, "InMemoryChannelLayer", ["_clean_expired"])
    _, router_call = _protocol_type_router()  # the same object application_for compares
    checker.contains(
        router_call,
        "ProtocolTypeRouter.__call__",
        [
            'if scope["type"] in self.application_mapping:',
            'application = self.application_mapping[scope["type"]]',
            "return await application(scope, receive, send)",
        ],
    )
    return checker.problems


def apply(problems: list[UpstreamChanged]) -> None:
    for problem in problems:
        if problem.library != LIBRARY:
            continue
        if problem.symbol.startswith("InMemoryChannelLayer"):
            features["clean_expired"] = False
        elif problem.symbol.startswith("ProtocolTypeRouter"):
            features["route_by_type"] = False
        else:
            features["unwrap_session_send"] = False


def clean_expired(layer: Any) -> None:
    """Channels' in-memory layer drops expired messages and memberships. Without the
    hook, memberships older than ``group_expiry`` stay until Channels' own ``send``
    or ``receive`` cleans them (its reporting group send would still reach them)."""
    if features["clean_expired"]:
        layer._clean_expired()


def unwrap_send(send: Callable[..., Any]) -> Callable[..., Any]:
    """The ``send`` under Channels' session wrappers (``send`` itself if none)."""
    if not features["unwrap_session_send"]:
        return send
    wrapper = _wrapper_class()
    for _ in range(MAX_DEPTH):
        owner: Any = getattr(send, "__self__", None)
        if wrapper is None or type(owner) is not wrapper:
            return send
        send = owner.real_send
    return send  # deeper than MAX_DEPTH: the last one found


def application_for(application: Any, scope: dict[str, Any]) -> Any:
    """The application ``application`` would hand ``scope`` to, where that is all it
    would do: a ``ProtocolTypeRouter`` (exactly, not a subclass, which may do more) with
    an entry for the scope's type. Otherwise ``application`` itself.

    Awaiting the router's coroutine only awaits the entry's: every open connection held
    both, and the router's frame, for as long as it lived."""
    router, checked_call = _protocol_type_router()
    if (
        not features["route_by_type"]
        or type(application) is not router
        or router.__call__ is not checked_call  # replaced since (instrumentation): its own
    ):
        return application
    return application.application_mapping.get(scope.get("type"), application)
