"""The topic protocol on the wire: what a client asks, what the server answers.

A client of the package's protocol asks for a topic over its open socket (JSON text,
the frame a consumer with a ``topics`` table reads before ``receive()``)::

    {"type":"ct.subscribe","id":1,"topic":"room.lobby","params":{...},
     "since":{"epoch":"9f3a61c2","offset":42}}
    {"type":"ct.unsubscribe","id":2,"topic":"room.lobby"}

``id`` is the client's (a positive integer below 2**53), echoed in the answer;
``params`` (an object) and ``since`` (where the client stands in the topic's
history) are optional. A consumer of binary frames reads the same requests as protobuf
``Envelope`` s of kind ``SUBSCRIBE`` / ``UNSUBSCRIBE`` (``seq`` the id, ``epoch`` and
``offset`` the position, ``payload`` the parameters as a JSON object).

Answers, in the envelope family of :mod:`.offsets`::

    {"kind":"subscribed","topic":"room.lobby","id":1}            (no history)
    {"kind":"subscribed","topic":"room.lobby","id":1,"offset":42,"epoch":"9f3a61c2",
     "recovered":true}                                            (with history)
    {"kind":"error","topic":"room.lobby","id":1,"error":"forbidden"}
    {"kind":"unsubscribed","topic":"room.lobby","id":2,"reason":"client"}
    {"kind":"unsubscribed","topic":"room.lobby","reason":"forbidden"}   (the server's)

and every broadcast to a subscribed topic arrives as
``{"kind":"data","topic":"room.lobby","data":...}`` (with ``offset`` and ``epoch``
when the topic has history). A request the server cannot read closes the
connection with 1008 (:class:`TopicRequestError`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final, cast

from ..exceptions import TopicRequestError
from .compact import compact_json
from .offsets import MAX_OFFSET, StreamPosition
from .proto.envelope_pb2 import Envelope

__all__ = [
    "ERROR_REASONS",
    "MAX_REASON_LENGTH",
    "TopicRequest",
    "TopicRequestError",
    "error_frame",
    "parse_topic_request",
    "subscribed_reply",
    "topic_data_frame",
    "unsubscribed_frame",
]

#: Why a subscribe or unsubscribe request was refused (the ``error`` of the answer).
ERROR_REASONS: Final = frozenset(
    {
        "unknown_topic",  # no pattern of the consumer's table matches the name
        "forbidden",  # can_subscribe() said no (or the topic is not public)
        "too_many_subscriptions",  # the connection holds max_subscriptions already
        "already_subscribed",
        "not_subscribed",  # unsubscribe of a topic the connection does not hold
        "unavailable",  # the layer failed (Redis away): try again later
    }
)

#: Longest reason a client is given for a refusal or an unsubscription (longer: cut,
#: or refused by unsubscribe_user()).
MAX_REASON_LENGTH: Final = 64

#: Text requests are JSON objects with one of these near their start; other frames
#: are not parsed.
_TEXT_MARKS: Final = ('"ct.subscribe"', '"ct.unsubscribe"')
#: An encoded Envelope starts with its kind (field 1, a varint): 08 08 or 08 09.
_BINARY_MARKS: Final = (b"\x08\x08", b"\x08\x09")
_EPOCH = re.compile(r"[0-9a-z]{1,32}")


@dataclass(frozen=True, slots=True)
class TopicRequest:
    """One ``subscribe`` or ``unsubscribe`` request of a client."""

    action: str  # "subscribe" or "unsubscribe"
    id: int
    topic: str
    params: dict[str, Any] = field(default_factory=dict)
    since: StreamPosition | None = None


def parse_topic_request(message: dict[str, Any]) -> TopicRequest | None:
    """The request in a ``websocket.receive`` message; None when the frame is not
    one (the application's own data); :class:`TopicRequestError` when it is one the
    server cannot read."""
    text = message.get("text")
    if text is not None:
        if text[:1] != "{" or not any(mark in text[:48] for mark in _TEXT_MARKS):
            return None
        try:
            request = json.loads(text)
        except ValueError:
            return None
        if not isinstance(request, dict) or request.get("type") not in (
            "ct.subscribe",
            "ct.unsubscribe",
        ):
            return None
        return _checked(
            request["type"][3:],
            request.get("id"),
            request.get("topic"),
            request.get("params", {}),
            request.get("since"),
        )
    data = message.get("bytes")
    if not data or data[:2] not in _BINARY_MARKS:
        return None
    try:
        envelope = Envelope.FromString(data)
    except Exception as error:  # protobuf's DecodeError: not ours to judge
        raise TopicRequestError("topic request is not a protobuf Envelope") from error
    params: Any = {}
    if envelope.payload:
        try:
            params = json.loads(envelope.payload)
        except ValueError as error:
            raise TopicRequestError("topic request parameters are not JSON") from error
    since = {"epoch": envelope.epoch, "offset": envelope.offset} if envelope.epoch else None
    action = "subscribe" if envelope.kind == Envelope.SUBSCRIBE else "unsubscribe"
    return _checked(action, envelope.seq, envelope.topic, params, since)


def _checked(action: str, id: Any, topic: Any, params: Any, since: Any) -> TopicRequest:
    if not isinstance(id, int) or isinstance(id, bool) or not 0 < id <= MAX_OFFSET:
        raise TopicRequestError("topic request id is not a positive integer")
    # Channels' group-name rule bounds a topic name (a topic is a group).
    if not isinstance(topic, str) or not 0 < len(topic) < 100:
        raise TopicRequestError("topic request has no topic name")
    if not isinstance(params, dict):
        raise TopicRequestError("topic request parameters are not an object")
    position = None
    if since is not None:
        if (
            not isinstance(since, dict)
            or not isinstance(since.get("epoch"), str)
            or not _EPOCH.fullmatch(since["epoch"])
            or not isinstance(since.get("offset"), int)
            or not 0 <= since["offset"] <= MAX_OFFSET
        ):
            raise TopicRequestError("topic request position is not {epoch, offset}")
        position = StreamPosition(since["epoch"], since["offset"])
    return TopicRequest(action, id, topic, params, position)


def subscribed_reply(topic: str, request_id: int, *, binary: bool) -> dict[str, Any]:
    """``subscribed`` for a topic without history (with history, the stream's own
    ``subscribed`` frame answers: :func:`.offsets.subscribed_frame`)."""
    if binary:
        envelope = Envelope(kind=Envelope.SUBSCRIBED, topic=topic, seq=request_id)
        return {"type": "websocket.send", "bytes": envelope.SerializeToString()}
    text = compact_json({"kind": "subscribed", "topic": topic, "id": request_id})
    return {"type": "websocket.send", "text": text}


def error_frame(topic: str, request_id: int, reason: str, *, binary: bool) -> dict[str, Any]:
    """The refusal of request ``request_id`` (``reason``: one of :data:`ERROR_REASONS`,
    or what ``can_subscribe`` returned)."""
    if binary:
        envelope = Envelope(kind=Envelope.ERROR, topic=topic, seq=request_id, error=reason)
        return {"type": "websocket.send", "bytes": envelope.SerializeToString()}
    text = compact_json({"kind": "error", "topic": topic, "id": request_id, "error": reason})
    return {"type": "websocket.send", "text": text}


def unsubscribed_frame(
    topic: str, reason: str, request_id: int = 0, *, binary: bool
) -> dict[str, Any]:
    """The end of a subscription: asked by the client (``request_id``, reason
    ``client``) or the server's decision (no id: ``forbidden``, ``revoked``...)."""
    if binary:
        envelope = Envelope(kind=Envelope.UNSUBSCRIBED, topic=topic, seq=request_id, error=reason)
        return {"type": "websocket.send", "bytes": envelope.SerializeToString()}
    answer: dict[str, Any] = {"kind": "unsubscribed", "topic": topic}
    if request_id:
        answer["id"] = request_id
    answer["reason"] = reason
    return {"type": "websocket.send", "text": compact_json(answer)}


def topic_data_frame(message: dict[str, Any], index: int = -1) -> dict[str, Any]:
    """The frame of a broadcast to ``message["group"]`` (a group without history; with
    ``index``, frame ``index`` of a batch) in a ``data`` envelope naming its topic, for
    a subscribed client. Built once per process and frame: kept in the layer message,
    which every local member shares (as
    :func:`channels_tuning.layers.frames.payload_frame` keeps the plain one)."""
    cache = message.get("enveloped")
    if cache is None:
        cache = message["enveloped"] = {}
    enveloped = cache.get(index)
    if enveloped is None:
        enveloped = cache[index] = _envelope(message, index)
    return cast("dict[str, Any]", enveloped)


def _envelope(message: dict[str, Any], index: int) -> dict[str, Any]:
    group = message["group"]
    flags = message.get("json")
    if index < 0:
        frame, is_json = message["frame"], bool(flags)
    else:
        frame, is_json = message["frames"][index], bool(flags and flags[index])
    data = frame.get("bytes")
    if data is not None:
        envelope = Envelope(kind=Envelope.DATA, topic=group, payload=data)
        return {"type": "websocket.send", "bytes": envelope.SerializeToString()}
    text = frame["text"]
    body = text if is_json else compact_json(text)
    head = f'{{"kind":"data","topic":{json.dumps(group)}'
    return {"type": "websocket.send", "text": f'{head},"data":{body}}}'}
