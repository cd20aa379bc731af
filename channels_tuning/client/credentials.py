"""A token that authenticates the client and is refreshed before it expires:
:class:`TokenCredentials`, a part of :class:`~channels_tuning.client.ReconnectingClient`.

``token`` is a string, or a function (plain or async) that returns a fresh one: it is
called at every connection and before each expiry. The token travels as the
subprotocol ``ct-token.<token>`` (not in the URL, so not in access logs), for the
server's :class:`~channels_tuning.auth.TokenAuthMiddleware`. After the accept the server
says when it expires (``{"type":"ct.token","exp":...}``); ``refresh_margin`` seconds
before that (or at two thirds of what is left, if sooner) the client sends
``{"type":"ct.refresh","token":...}`` with a new one and learns the next expiry from the
answer. These frames are never passed on as messages.

After 4005 (the token expired) the client reconnects with a new token from the
function; with a fixed string it stops (the same token would be refused again).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import websockets

from ..wire.closecodes import CloseCode
from ..wire.subprotocol import TOKEN_SUBPROTOCOL_PREFIX

logger = logging.getLogger("channels_tuning.client")

#: A token, or where to get a fresh one.
TokenSource = str | Callable[[], str | Awaitable[str]] | None
_ANNOUNCEMENTS = ('{"type":"ct.token"', '{"type":"ct.refreshed"')


class TokenCredentials:
    """The token side of the client."""

    token: TokenSource = None
    refresh_margin: float = 30.0
    #: Refreshes sent, and refreshes whose token could not be obtained.
    refreshes = 0
    refresh_failures = 0
    _refresh_task: asyncio.Task[None] | None = None

    async def _fresh_token(self) -> str | None:
        source = self.token
        if source is None or isinstance(source, str):
            return source
        value = source()
        if inspect.isawaitable(value):
            value = await value
        return str(value)

    async def _token_subprotocols(self) -> list[str]:
        token = await self._fresh_token()
        return [] if token is None else [TOKEN_SUBPROTOCOL_PREFIX + token]

    def _stops_after(self, code: int) -> bool:
        """A fixed token that expired cannot be used again."""
        return code == CloseCode.TOKEN_EXPIRED and isinstance(self.token, str)

    def _credentials_frame(self, ws: Any, frame: str | bytes) -> bool:
        """True if ``frame`` was the server's word on the token (handled here)."""
        if not isinstance(frame, str) or not frame.startswith(_ANNOUNCEMENTS):
            return False
        try:
            expires = float(json.loads(frame)["exp"])
        except (ValueError, KeyError, TypeError):
            return True
        if self.token is not None and not isinstance(self.token, str):
            self._stop_refreshing()
            left = expires - time.time()
            delay = max(0.0, min(left - self.refresh_margin, left * 2 / 3))
            loop = asyncio.get_running_loop()
            self._refresh_task = loop.create_task(self._refresh_after(ws, delay))
        return True

    async def _refresh_after(self, ws: Any, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            token = await self._fresh_token()
        except Exception as error:  # the application's token source failed
            self.refresh_failures += 1
            logger.warning("token refresh: the token source raised %r", error)
            return
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(json.dumps({"type": "ct.refresh", "token": token}, separators=(",", ":")))
            self.refreshes += 1

    def _stop_refreshing(self) -> None:
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            self._refresh_task = None
