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
``URLRouter.__call__`` reads only ``routes`` and  ``TunedURLRouter`` finding the
each route's ``pattern``, ``default_args`` and    consumer a path goes to and starting
``callback``, and awaits                         it below both routers' coroutines
``callback(routed_scope, receive, send)``        (``route_match``): 1.6 KB less held
                                                 per connection
``AsyncConsumer.as_asgi``'s inner ``app``        knowing a route's application is a
(its code object)                                consumer, never a router that raises
                                                 ``Resolver404`` to try the next route
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

features = {
    "unwrap_session_send": True,
    "clean_expired": True,
    "route_by_type": True,
    "route_by_path": True,
}

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
    from channels.routing import URLRouter

    checker.contains(
        URLRouter.__call__,
        "URLRouter.__call__",
        [
            "for route in self.routes:",
            "match = route.pattern.match(path)",
            "kwargs.update(route.default_args)",
            "application = route.callback",
            "return await application(",
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
        elif problem.symbol.startswith("URLRouter"):
            features["route_by_path"] = False
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


class _MatchOnly:
    """A route as ``URLRouter.__call__`` reads it, whose application, when called,
    returns what it was given instead of running."""

    __slots__ = ("route",)

    def __init__(self, route: Any) -> None:
        self.route = route

    @property
    def pattern(self) -> Any:
        return self.route.pattern

    @property
    def default_args(self) -> Any:
        return self.route.default_args

    @property
    def callback(self) -> Callable[..., Any]:
        application = self.route.callback

        async def found(scope: dict[str, Any], receive: Any, send: Any) -> Any:
            return _Found(application, scope)

        return found


class _Found:
    __slots__ = ("application", "scope")

    def __init__(self, application: Any, scope: dict[str, Any]) -> None:
        self.application, self.scope = application, scope


class _Matcher:
    """What ``URLRouter.__call__`` reads of a router: its routes, each match-only."""

    __slots__ = ("routes",)

    def __init__(self, routes: Any) -> None:
        self.routes = [_MatchOnly(route) for route in routes]


@functools.cache
def _consumer_application_code() -> Any:
    from channels.consumer import AsyncConsumer

    application: Any = AsyncConsumer.as_asgi()
    return application.__code__


def route_match(router: Any, scope: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
    """The consumer application a ``URLRouter`` would start for ``scope`` and the scope
    it would give it (Channels' own matching runs, with each route's application
    replaced by one that returns at once), or None: no route, a route to anything but
    a consumer's ``as_asgi()`` application (a nested router may raise ``Resolver404``
    for the outer one to try its next route), the hook off, or anything unexpected.
    On None the router's own coroutine does everything, as before.

    Awaiting ``URLRouter.__call__`` only awaits the consumer's application once a route
    matched, yet every open connection held the router's frame, its subclass' frame and
    the scope before routing: 1.6 KB per connection (``tracemalloc``, Python 3.11)."""
    if not features["route_by_path"]:
        return None
    from channels.routing import URLRouter

    router_call: Any = URLRouter.__call__  # receive and send: a match-only route never calls them
    step = router_call(_Matcher(router.routes), scope, None, None)
    try:
        step.send(None)
    except StopIteration as finished:
        found = finished.value
        if (
            type(found) is _Found
            and getattr(found.application, "__code__", None) is _consumer_application_code()
        ):
            return found.application, found.scope
        return None
    except Exception:  # no route, or a change: the router's own coroutine raises it
        return None
    step.close()  # suspended: not what Channels' router does; never seen
    return None
