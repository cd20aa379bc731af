"""Request/reply on the wire: a client asks a consumer's declared method, the server
answers once.

A client of the package's protocol sends (JSON text, read before ``receive()`` by a
consumer that declares methods with :func:`channels_tuning.consumers.rpc.rpc`)::

    {"type":"ct.request","id":7,"method":"cart.save","params":{...}}

``id`` is the client's (a positive integer below 2**53), echoed in the answer; ``params``
is any JSON value (optional). The answer is one of::

    {"kind":"reply","id":7,"result":...}
    {"kind":"reply","id":7,"error":"not_found","message":"no such cart"}

Errors the package gives: ``unknown_method`` (not declared), ``timeout`` (the method
took longer than the consumer's ``request_timeout``), ``internal`` (the method raised
something other than :class:`~channels_tuning.exceptions.RequestError`: logged with its
traceback on the server, never sent). A method raises ``RequestError(code, message)``
for its own. A request the server cannot read closes the connection with 1008.

The server asks a client the same way (``request_client()`` and ``send_with_ack()`` of
:mod:`channels_tuning.consumers.server_requests`); ids are the server's, per
connection::

    {"kind":"request","id":3,"method":"page.state","params":...}
    {"kind":"push","id":4,"data":...}        # a message to hand over, then acknowledge

and the client answers each once::

    {"type":"ct.reply","id":3,"result":...}
    {"type":"ct.reply","id":3,"error":"not_found","message":"..."}
    {"type":"ct.reply","id":4}               # the push was handled
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from ..exceptions import ProtocolRequestError, RequestError
from .compact import compact_json
from .offsets import MAX_OFFSET

__all__ = [
    "Reply",
    "Request",
    "error_reply_frame",
    "parse_reply",
    "parse_request",
    "push_frame",
    "reply_frame",
    "server_request_frame",
]

#: Longest method name, error code and message a reply carries (longer: cut).
MAX_METHOD_LENGTH: Final = 100
MAX_CODE_LENGTH: Final = 64
MAX_MESSAGE_LENGTH: Final = 500

_MARK: Final = '"ct.request"'
_REPLY_MARK: Final = '"ct.reply"'


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    method: str
    params: Any = None


def parse_request(message: dict[str, Any]) -> Request | None:
    """The request in a ``websocket.receive`` message; None when the frame is not one;
    :class:`~channels_tuning.exceptions.ProtocolRequestError` when it is one the
    server cannot read."""
    text = message.get("text")
    if text is None or text[:1] != "{" or _MARK not in text[:48]:
        return None
    try:
        request = json.loads(text)
    except ValueError:
        return None
    if not isinstance(request, dict) or request.get("type") != "ct.request":
        return None
    request_id, method = request.get("id"), request.get("method")
    if not _valid_id(request_id):
        raise ProtocolRequestError("request id is not a positive integer")
    if not isinstance(method, str) or not 0 < len(method) <= MAX_METHOD_LENGTH:
        raise ProtocolRequestError("request has no method name")
    return Request(request_id, method, request.get("params"))


@dataclass(frozen=True, slots=True)
class Reply:
    """A client's answer to a request of the server."""

    id: int
    result: Any = None
    error: str | None = None
    message: str = ""


def _valid_id(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_OFFSET


def parse_reply(message: dict[str, Any]) -> Reply | None:
    """The client's reply in a ``websocket.receive`` message; None when the frame is
    not one; :class:`~channels_tuning.exceptions.ProtocolRequestError` when it is one
    the server cannot read."""
    text = message.get("text")
    if text is None or text[:1] != "{" or _REPLY_MARK not in text[:48]:
        return None
    try:
        reply = json.loads(text)
    except ValueError:
        return None
    if not isinstance(reply, dict) or reply.get("type") != "ct.reply":
        return None
    if not _valid_id(reply.get("id")):
        raise ProtocolRequestError("reply id is not a positive integer")
    error = reply.get("error")
    if error is None:
        return Reply(reply["id"], reply.get("result"))
    if not isinstance(error, str) or not error:
        raise ProtocolRequestError("reply error is not a code")
    message_text = reply.get("message")
    message_text = message_text if isinstance(message_text, str) else ""
    return Reply(reply["id"], None, error[:MAX_CODE_LENGTH], message_text[:MAX_MESSAGE_LENGTH])


def server_request_frame(request_id: int, method: str, params: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"kind": "request", "id": request_id, "method": method}
    if params is not None:
        request["params"] = params
    return {"type": "websocket.send", "text": compact_json(request)}


def push_frame(push_id: int, data: Any) -> dict[str, Any]:
    text = compact_json({"kind": "push", "id": push_id, "data": data})
    return {"type": "websocket.send", "text": text}


def reply_frame(request_id: int, result: Any) -> dict[str, Any]:
    text = compact_json({"kind": "reply", "id": request_id, "result": result})
    return {"type": "websocket.send", "text": text}


def error_reply_frame(request_id: int, error: RequestError) -> dict[str, Any]:
    answer = {
        "kind": "reply",
        "id": request_id,
        "error": error.code[:MAX_CODE_LENGTH],
        "message": error.message[:MAX_MESSAGE_LENGTH],
    }
    return {"type": "websocket.send", "text": compact_json(answer)}
