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

A consumer of binary frames (a codec) reads and writes requests and replies as protobuf
``Envelope`` s instead: kind ``REQUEST`` (``seq`` the id, ``topic`` the method,
``payload`` the params as JSON) and kind ``REPLY`` (``seq`` the id, ``payload`` the
result as JSON, or ``error`` the code and ``detail`` the message), both ways. Its
pushes (``send_with_ack``) are envelopes of kind ``PUSH``: ``seq`` the id, ``payload``
the codec's message as in ``DATA``; the client answers ``REPLY`` with the same ``seq``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from ..exceptions import ProtocolRequestError, RequestError
from .compact import compact_json
from .offsets import MAX_OFFSET
from .proto.envelope_pb2 import Envelope

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
#: An encoded Envelope starts with its kind (field 1, a varint): 08 0b, 08 0c.
_BINARY_REQUEST: Final = b"\x08\x0b"
_BINARY_REPLY: Final = b"\x08\x0c"


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    method: str
    params: Any = None


def parse_request(message: dict[str, Any], *, binary: bool = False) -> Request | None:
    """The request in a ``websocket.receive`` message (``binary``: a protobuf Envelope,
    for consumers of binary frames); None when the frame is not one;
    :class:`~channels_tuning.exceptions.ProtocolRequestError` when it is one the
    server cannot read."""
    if binary:
        envelope = _envelope(message, _BINARY_REQUEST)
        if envelope is None:
            return None
        if not _valid_id(envelope.seq):
            raise ProtocolRequestError("request id is not a positive integer")
        if not 0 < len(envelope.topic) <= MAX_METHOD_LENGTH:
            raise ProtocolRequestError("request has no method name")
        return Request(envelope.seq, envelope.topic, _json_payload(envelope))
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


def parse_reply(message: dict[str, Any], *, binary: bool = False) -> Reply | None:
    """The client's reply in a ``websocket.receive`` message (``binary``: a protobuf
    Envelope); None when the frame is not one;
    :class:`~channels_tuning.exceptions.ProtocolRequestError` when it is one the server
    cannot read."""
    if binary:
        envelope = _envelope(message, _BINARY_REPLY)
        if envelope is None:
            return None
        if not _valid_id(envelope.seq):
            raise ProtocolRequestError("reply id is not a positive integer")
        if envelope.error:
            code, detail = envelope.error[:MAX_CODE_LENGTH], envelope.detail[:MAX_MESSAGE_LENGTH]
            return Reply(envelope.seq, None, code, detail)
        return Reply(envelope.seq, _json_payload(envelope))
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


def _envelope(message: dict[str, Any], mark: bytes) -> Envelope | None:
    data = message.get("bytes")
    if not data or data[:2] != mark:
        return None
    try:
        return Envelope.FromString(data)
    except Exception as error:  # protobuf's DecodeError: the client's mistake
        raise ProtocolRequestError("request is not a protobuf Envelope") from error


def _json_payload(envelope: Envelope) -> Any:
    if not envelope.payload:
        return None
    try:
        return json.loads(envelope.payload)
    except ValueError as error:
        raise ProtocolRequestError("request payload is not JSON") from error


def _binary_frame(envelope: Envelope) -> dict[str, Any]:
    return {"type": "websocket.send", "bytes": envelope.SerializeToString()}


def _json_bytes(value: Any) -> bytes:
    return b"" if value is None else compact_json(value).encode()


def server_request_frame(
    request_id: int, method: str, params: Any, *, binary: bool = False
) -> dict[str, Any]:
    if binary:
        envelope = Envelope(
            kind=Envelope.REQUEST, seq=request_id, topic=method, payload=_json_bytes(params)
        )
        return _binary_frame(envelope)
    request: dict[str, Any] = {"kind": "request", "id": request_id, "method": method}
    if params is not None:
        request["params"] = params
    return {"type": "websocket.send", "text": compact_json(request)}


def push_frame(push_id: int, data: Any) -> dict[str, Any]:
    text = compact_json({"kind": "push", "id": push_id, "data": data})
    return {"type": "websocket.send", "text": text}


def reply_frame(request_id: int, result: Any, *, binary: bool = False) -> dict[str, Any]:
    if binary:
        envelope = Envelope(kind=Envelope.REPLY, seq=request_id, payload=_json_bytes(result))
        return _binary_frame(envelope)
    text = compact_json({"kind": "reply", "id": request_id, "result": result})
    return {"type": "websocket.send", "text": text}


def error_reply_frame(
    request_id: int, error: RequestError, *, binary: bool = False
) -> dict[str, Any]:
    code, detail = error.code[:MAX_CODE_LENGTH], error.message[:MAX_MESSAGE_LENGTH]
    if binary:
        envelope = Envelope(kind=Envelope.REPLY, seq=request_id, error=code, detail=detail)
        return _binary_frame(envelope)
    answer = {"kind": "reply", "id": request_id, "error": code, "message": detail}
    return {"type": "websocket.send", "text": compact_json(answer)}
