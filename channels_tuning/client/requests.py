"""Requests to a consumer's declared methods: :class:`ClientRequests`, a part of
:class:`~channels_tuning.client.ReconnectingClient`.

::

    result = await client.request("cart.save", {"items": [3, 4]}, timeout=10)

returns the method's result, or raises :class:`RequestFailed` with the server's
``code`` and ``message`` (``unknown_method``, ``timeout``, ``internal``, or the
method's own ``RequestError``). A request is sent once: when the connection drops
before the answer it raises ``ConnectionResetError`` (the method may or may not have
run: the application decides whether asking again is safe). The wire format is
:mod:`channels_tuning.wire.rpc`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

__all__ = ["ClientRequests", "RequestFailed"]

_REPLY = '{"kind":"reply"'


class RequestFailed(Exception):
    """The server answered a request with an error."""

    def __init__(self, method: str, code: str, message: str = "") -> None:
        super().__init__(f"{method}: {code}" + (f" ({message})" if message else ""))
        self.method, self.code, self.message = method, code, message


class ClientRequests:
    """The request side of the client."""

    state: str
    _ws: Any
    _replies: dict[int, asyncio.Future[Any]]
    _next_request: int = 0

    async def request(self, method: str, params: Any = None, *, timeout: float = 10.0) -> Any:
        """Call ``method`` on the server (the connection must be open)."""
        ws = self._ws
        if ws is None or self.state != "open":
            raise ConnectionError("not connected")
        self._next_request += 1
        request_id = self._next_request
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        request = {"type": "ct.request", "id": request_id, "method": method}
        if params is not None:
            request["params"] = params
        try:
            await ws.send(json.dumps(request, separators=(",", ":")))
            closed = asyncio.ensure_future(ws.wait_closed())
            try:
                done, _ = await asyncio.wait(
                    {future, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                closed.cancel()
            if future in done:
                answer = future.result()
            elif done:
                raise ConnectionResetError(f"connection closed before the answer to {method}")
            else:
                raise asyncio.TimeoutError(f"no answer to {method} in {timeout} s")
        except websockets.ConnectionClosed as error:
            raise ConnectionResetError(f"connection closed before {method} was sent") from error
        finally:
            self._replies.pop(request_id, None)
        if "error" in answer:
            raise RequestFailed(method, str(answer["error"]), str(answer.get("message", "")))
        return answer.get("result")

    def _reply_frame(self, frame: str | bytes) -> bool:
        """True if ``frame`` was the answer to a request (handed to its caller)."""
        if not isinstance(frame, str) or not frame.startswith(_REPLY):
            return False
        try:
            answer = json.loads(frame)
        except ValueError:
            return False
        request_id = answer.get("id") if isinstance(answer, dict) else None
        future = self._replies.get(request_id) if isinstance(request_id, int) else None
        if future is not None and not future.done():
            future.set_result(answer)
        return True
