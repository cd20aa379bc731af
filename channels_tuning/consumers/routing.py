"""``TunedURLRouter``: Channels' ``URLRouter`` that answers unknown paths quietly.

Channels' outermost ``URLRouter`` raises ``ValueError("No route found ...")`` for a
path no route matches, and the server logs it with a full traceback and answers
HTTP 500 (measured: one client probing paths produced 842 KB/s of log). A path is
chosen by the client, so that is a client's mistake, not the server's:

- a WebSocket handshake is refused (daphne answers HTTP 403), an HTTP request gets 404;
- one log line, at most once a second with a count of those not logged
  (``channels_tuning.routing``, WARNING);
- a counter, ``channels_tuning_rejected_connections_total{consumer="(router)",
  reason="no_route"}``.

Use it where Channels' ``URLRouter`` is the outermost router::

    application = ProtocolTypeRouter({"websocket": TunedURLRouter(websocket_urlpatterns)})
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any, cast

from asgiref.sync import markcoroutinefunction
from channels.routing import URLRouter

from ..compat import channels as channels_hooks
from ..runtime.counters import REJECTED
from ..runtime.ratelog import RateLimitedLog

logger = logging.getLogger("channels_tuning.routing")

ROUTER_LABEL = "(router)"
_NO_ROUTE = "No route found for path"


_log = RateLimitedLog(logger)


class TunedURLRouter(URLRouter):
    """``URLRouter`` whose unmatched paths get 403 (WebSocket) or 404 (HTTP), one
    rate-limited log line and a counter, instead of a traceback and a 500."""

    #: ``__call__`` returns the application's coroutine (asgiref: no double callable).
    _asgi_single_callable = True

    @markcoroutinefunction
    def __call__(self, scope: Any, receive: Any, send: Any) -> Coroutine[Any, Any, None]:
        """The coroutine of the consumer the path routes to, started directly where
        Channels' matching finds one (:func:`channels_tuning.compat.channels.route_match`):
        neither router's coroutine is held for the connection's life (1.6 KB). Any
        other case (no route, a nested router) runs :meth:`route_connection` as before."""
        matched = channels_hooks.route_match(self, scope)
        if matched is None:
            return self.route_connection(scope, receive, send)
        application, routed_scope = matched
        return cast("Coroutine[Any, Any, None]", application(routed_scope, receive, send))

    async def route_connection(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' routing, with an unmatched path refused."""
        try:
            await super().__call__(scope, receive, send)
        except ValueError as error:
            if not str(error).startswith(_NO_ROUTE) or "path_remaining" in scope:
                raise  # the application's own error, or an inner router's: not ours
            await refuse(scope, receive, send, "no_route")

    def __repr__(self) -> str:
        return f"TunedURLRouter({len(self.routes)} routes)"


async def refuse(scope: dict[str, Any], receive: Any, send: Any, reason: str) -> None:
    """Answer a connection no route takes, and say so once (rate-limited)."""
    REJECTED.inc((ROUTER_LABEL, reason))
    path = scope.get("path", "")
    _log.log(
        "channels_tuning: %s %r from %s refused: %s",
        scope.get("type"),
        path[:200],
        (scope.get("client") or ("?",))[0],
        reason,
    )
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1000})  # before accept: HTTP 403
    elif scope["type"] == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": b"Not Found"})
