"""The ASGI lifespan handler for servers other than daphne (uvicorn, hypercorn).

Channels' ``ProtocolTypeRouter`` has no lifespan application: uvicorn with
``--lifespan on`` refuses to start, and with ``auto`` (both servers' default) the
application is never told that the server stops. Map :class:`Lifespan` and the
shutdown keeps the package's guarantees there:

- every tuned connection still open when ``lifespan.shutdown`` arrives is closed
  with 1012 (service restart: the clients reconnect, to another process if there
  is one);
- the shutdown is not acknowledged until every connection's cleanup (disconnect
  handlers, leaving its groups in the channel layer) has finished, or
  ``shutdown_timeout`` has passed. A server that exits as soon as the application
  says so would otherwise end the process with memberships still in Redis, which
  then deliver to nobody until ``group_expiry``.

When each server sends ``lifespan.shutdown`` (measured, ``tests/e2e/test_servers.py``):
uvicorn first closes every WebSocket with 1012 itself and waits for the
applications to return (``--timeout-graceful-shutdown``); hypercorn waits
``--graceful-timeout`` (3 s by default) for connections to end by themselves, then
cancels their applications, whose cleanup closes with 1012 and leaves the groups;
both then send ``lifespan.shutdown``, and this handler waits for those cleanups.

Usage::

    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": TunedURLRouter(websocket_urlpatterns),
        "lifespan": Lifespan(),
    })
"""

from __future__ import annotations

import logging
from typing import Any

from ..runtime.shutdown import close_all_connections
from .startup import tune_collector_at_start

logger = logging.getLogger("channels_tuning")


class Lifespan:
    """ASGI application for ``scope["type"] == "lifespan"``."""

    #: True once a server has started a Lifespan in this process.
    started = False

    def __init__(self, shutdown_timeout: float = 10.0) -> None:
        #: Seconds the shutdown waits for connections' cleanups before acknowledging.
        self.shutdown_timeout = shutdown_timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            raise ValueError(f"Lifespan got a {scope['type']!r} scope")
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                Lifespan.started = True
                tune_collector_at_start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                left = await close_all_connections(self.shutdown_timeout)
                if left:
                    logger.warning(
                        "channels_tuning: %d connection cleanups still running after %.0f s",
                        left,
                        self.shutdown_timeout,
                    )
                await send({"type": "lifespan.shutdown.complete"})
                return
