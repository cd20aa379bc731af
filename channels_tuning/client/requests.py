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

The server asks too (a consumer's ``request_client()`` and ``send_with_ack()``)::

    client.on_request("page.state", lambda params: {"visible": True})

A handler (a function or coroutine, run in a task of its own) returns the result or
raises :class:`~channels_tuning.exceptions.RequestError` for an error answer with its
code; any other exception answers ``internal`` (logged here); a method without a
handler answers ``unknown_method``. A push is handed over as a message (to
``on_message``, or to ``async for``) and acknowledged once that returned; with a
binary codec it is a ``Received`` of kind ``"push"`` (its ``message`` as for data).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import websockets

from ..exceptions import RequestError
from ..wire.codecs import Codec
from ..wire.proto.envelope_pb2 import Envelope

__all__ = ["ClientRequests", "RequestFailed"]

_REPLY = '{"kind":"reply"'
_SERVER_REQUEST = '{"kind":"request"'
_PUSH = '{"kind":"push"'
#: Encoded Envelopes of kinds REQUEST (11), REPLY (12) and PUSH (13): a binary codec's.
_BINARY_REQUEST = b"\x08\x0b"
_BINARY_REPLY = b"\x08\x0c"
_BINARY_PUSH = b"\x08\x0d"
logger = logging.getLogger("channels_tuning.client")


class _Closed(Exception):
    """The connection ended while a handler of the server's request ran."""


async def _unless_closed(ws: Any, awaitable: Any) -> Any:
    """``awaitable``'s result; cancelled (raising :class:`_Closed`) when ``ws`` closes
    first, so that a handler that never returns does not outlive its connection."""
    work = asyncio.ensure_future(awaitable)
    closed = asyncio.ensure_future(ws.wait_closed())
    try:
        await asyncio.wait({work, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.cancel()
        if not work.done():
            work.cancel()
    if work.cancelled():
        raise _Closed
    return work.result()


class RequestFailed(Exception):
    """The server answered a request with an error."""

    def __init__(self, method: str, code: str, message: str = "") -> None:
        super().__init__(f"{method}: {code}" + (f" ({message})" if message else ""))
        self.method, self.code, self.message = method, code, message


class ClientRequests:
    """The request side of the client."""

    state: str
    codec: Any
    _ws: Any
    _replies: dict[int, asyncio.Future[Any]]
    _next_request: int = 0
    _request_handlers: dict[str, Callable[[Any], Any]]
    _handling: set[asyncio.Task[None]]
    #: The client's delivery of a received message (on_message, or the queue).
    _hand_over: Callable[[Any], Awaitable[None]]

    def _init_requests(self) -> None:
        #: Requests waiting for their reply, by id (request()).
        self._replies = {}
        #: The server's requests this client answers, by method (on_request()).
        self._request_handlers = {}
        self._handling = set()

    def on_request(self, method: str, handler: Callable[[Any], Any]) -> None:
        """Answer the server's requests for ``method`` with ``handler(params)``."""
        self._request_handlers[method] = handler

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
            await ws.send(self._encode_ask(request))
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

    async def _requests_frame(self, ws: Any, frame: str | bytes) -> bool:
        """True if ``frame`` was an answer to a request (handed to its caller), a
        request of the server (answered in a task) or a push (handed over, then
        acknowledged)."""
        if isinstance(frame, bytes):
            if frame[:2] == _BINARY_PUSH and self._binary:
                return await self._binary_push(ws, frame)
            return self._binary_frame(ws, frame)
        if not frame.startswith('{"kind":"'):
            return False
        if frame.startswith(_REPLY):
            return self._reply_frame(frame)
        if frame.startswith(_SERVER_REQUEST) or frame.startswith(_PUSH):
            try:
                asked = json.loads(frame)
            except ValueError:
                return False
            if not isinstance(asked, dict) or not isinstance(asked.get("id"), int):
                return False
            if asked["kind"] == "push":
                await self._hand_over(asked.get("data"))
                await self._answer(ws, {"type": "ct.reply", "id": asked["id"]})
            else:
                self._handle(ws, asked)
            return True
        return False

    def _binary_frame(self, ws: Any, frame: bytes) -> bool:
        """A binary codec's request or reply Envelope (handled here), or False."""
        mark = frame[:2]
        if not self._binary or mark not in (_BINARY_REQUEST, _BINARY_REPLY):
            return False
        try:
            envelope = Envelope.FromString(frame)
            payload = json.loads(envelope.payload) if envelope.payload else None
        except Exception:  # not an Envelope with a JSON payload: not ours
            return False
        if mark == _BINARY_REPLY:
            answer: dict[str, Any] = {"id": envelope.seq, "result": payload}
            if envelope.error:
                answer = {"id": envelope.seq, "error": envelope.error, "message": envelope.detail}
            self._settle(answer)
        else:
            asked = {"id": envelope.seq, "method": envelope.topic, "params": payload}
            self._handle(ws, asked)
        return True

    async def _binary_push(self, ws: Any, frame: bytes) -> bool:
        """A binary codec's push: handed over decoded (a ``Received`` of kind
        ``"push"``), then acknowledged."""
        try:
            received = self.codec.decode(frame)
        except ValueError:  # the codec's DecodeError: not a message of this codec
            return False
        await self._hand_over(received)
        await self._answer(ws, {"type": "ct.reply", "id": received.seq})
        return True

    def _handle(self, ws: Any, asked: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self._run_handler(ws, asked))
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)

    @property
    def _binary(self) -> bool:
        return isinstance(self.codec, Codec) and self.codec.binary

    def _encode_ask(self, request: dict[str, Any]) -> str | bytes:
        if self._binary:
            params = request.get("params")
            envelope = Envelope(kind=Envelope.REQUEST, seq=request["id"], topic=request["method"])
            if params is not None:
                envelope.payload = json.dumps(params, separators=(",", ":")).encode()
            return envelope.SerializeToString()
        return json.dumps(request, separators=(",", ":"))

    async def _run_handler(self, ws: Any, asked: dict[str, Any]) -> None:
        answer: dict[str, Any] = {"type": "ct.reply", "id": asked["id"]}
        method = asked.get("method")
        handler = self._request_handlers.get(method) if isinstance(method, str) else None
        try:
            if handler is None:
                raise RequestError("unknown_method", str(method))
            result = handler(asked.get("params"))
            if inspect.isawaitable(result):
                result = await _unless_closed(ws, result)
            answer["result"] = result
        except RequestError as error:
            answer.update(error=error.code, message=error.message)
        except _Closed:
            return  # nobody to answer: the server ended the request as "closed"
        except Exception:
            logger.exception("handler for the server's request %s raised", method)
            answer.update(error="internal", message="")
        await self._answer(ws, answer)

    async def _answer(self, ws: Any, answer: dict[str, Any]) -> None:
        frame: str | bytes = json.dumps(answer, separators=(",", ":"))
        if self._binary:
            envelope = Envelope(kind=Envelope.REPLY, seq=answer["id"])
            if "error" in answer:
                envelope.error, envelope.detail = answer["error"], answer.get("message", "")
            elif answer.get("result") is not None:
                envelope.payload = json.dumps(answer["result"], separators=(",", ":")).encode()
            frame = envelope.SerializeToString()
        # A closed connection: the server ends the request as "closed".
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(frame)

    def _reply_frame(self, frame: str) -> bool:
        """True if ``frame`` was the answer to a request (handed to its caller)."""
        try:
            answer = json.loads(frame)
        except ValueError:
            return False
        if isinstance(answer, dict):
            self._settle(answer)
        return True

    def _settle(self, answer: dict[str, Any]) -> None:
        request_id = answer.get("id")
        future = self._replies.get(request_id) if isinstance(request_id, int) else None
        if future is not None and not future.done():
            future.set_result(answer)
