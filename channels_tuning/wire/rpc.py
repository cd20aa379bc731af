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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from ..exceptions import ProtocolRequestError, RequestError
from .compact import compact_json
from .offsets import MAX_OFFSET

__all__ = ["Request", "error_reply_frame", "parse_request", "reply_frame"]

#: Longest method name, error code and message a reply carries (longer: cut).
MAX_METHOD_LENGTH: Final = 100
MAX_CODE_LENGTH: Final = 64
MAX_MESSAGE_LENGTH: Final = 500

_MARK: Final = '"ct.request"'


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
    if (
        not isinstance(request_id, int)
        or isinstance(request_id, bool)
        or not 0 < request_id <= MAX_OFFSET
    ):
        raise ProtocolRequestError("request id is not a positive integer")
    if not isinstance(method, str) or not 0 < len(method) <= MAX_METHOD_LENGTH:
        raise ProtocolRequestError("request has no method name")
    return Request(request_id, method, request.get("params"))


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
