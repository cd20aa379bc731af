"""How a group's history looks on the wire: offsets, epochs and the recovery request.

A group with history (the ``HISTORY`` setting) numbers its broadcasts 1, 2, 3...
within an *epoch*, a short random string that changes whenever the history is lost
(Redis restarted, or the group was quiet for longer than the history's ``ttl``). Every
broadcast to such a group reaches clients in an envelope that carries both::

    {"kind":"data","topic":"chat.lobby","offset":42,"epoch":"9f3a61c2","data":{...}}

(a ``bytes`` payload travels in a binary protobuf ``Envelope`` with the same fields).
When a connection joins the group, the server first sends where the group stands::

    {"kind":"subscribed","topic":"chat.lobby","offset":42,"epoch":"9f3a61c2","recovered":true}

then, if the client asked for it, every message it missed (offsets after the one it
had, in order, exactly once), then live messages. ``recovered`` is false when the
messages since the client's offset are no longer all kept (too old, another epoch,
an offset from the future): the client's state is stale and the application should
reload it. It is also sent, with the new epoch, if the history is lost while the
client is connected.

A client asks for recovery when it (re)connects, in the URL, once per group::

    ws://host/ws/chat/lobby/?ct_recover=chat.lobby:9f3a61c2:42

A connection may ask for at most :data:`MAX_RECOVER_REQUESTS` groups; a request the
server cannot parse closes the connection with 1008 (one log line, counted). A request
for a group the consumer does not join is never answered: recovery only ever replays
a group the consumer itself joined.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl

from ..exceptions import RecoveryRequestError
from .proto.envelope_pb2 import Envelope

__all__ = [
    "MAX_RECOVER_REQUESTS",
    "RECOVER_PARAMETER",
    "RecoveryRequestError",
    "StreamPosition",
    "data_frame",
    "parse_recover_requests",
    "payload_of",
    "recover_parameter",
    "subscribed_frame",
]

#: The query-string parameter of a recovery request.
RECOVER_PARAMETER: Final = "ct_recover"
#: Groups one connection may ask to recover (more: closed with 1008).
MAX_RECOVER_REQUESTS: Final = 32
#: Offsets are below 2**53, so that JavaScript numbers hold them exactly.
MAX_OFFSET: Final = 2**53 - 1

_EPOCH = re.compile(r"[0-9a-z]{1,32}")
_OFFSET = re.compile(r"[0-9]{1,16}")
# Channels' group-name rule (ASCII alphanumerics, hyphens, underscores, periods; < 100).
_GROUP = re.compile(r"[a-zA-Z0-9_.\-]{1,99}")


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """What a client says it has of a group: the last offset it received in ``epoch``."""

    epoch: str
    offset: int


def recover_parameter(group: str, position: StreamPosition) -> str:
    """One ``ct_recover`` value (what the clients put in the URL)."""
    return f"{group}:{position.epoch}:{position.offset}"


def parse_recover_requests(query_string: bytes | str) -> dict[str, StreamPosition]:
    """The recovery requests in an ASGI scope's ``query_string``, by group."""
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    if RECOVER_PARAMETER not in query_string:
        return {}
    requests: dict[str, StreamPosition] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name != RECOVER_PARAMETER:
            continue
        if len(requests) >= MAX_RECOVER_REQUESTS:
            raise RecoveryRequestError(f"more than {MAX_RECOVER_REQUESTS} recovery requests")
        group, _, rest = value.partition(":")
        epoch, _, offset = rest.partition(":")
        if not _GROUP.fullmatch(group) or not _EPOCH.fullmatch(epoch):
            raise RecoveryRequestError("recovery request is not group:epoch:offset")
        # ASCII digits only: str.isdigit() also accepts "²" and "①", which int() refuses.
        if not _OFFSET.fullmatch(offset) or int(offset) > MAX_OFFSET:
            raise RecoveryRequestError("recovery offset is not a small non-negative integer")
        requests[group] = StreamPosition(epoch, int(offset))
    return requests


def data_frame(
    group: str, offset: int, epoch: str, data: str | bytes, *, binary: bool
) -> dict[str, object]:
    """The ASGI ``websocket.send`` message of one history entry.

    ``data`` is the payload as stored: for text, its JSON encoding (inserted as it is,
    not decoded and encoded again); for binary, the bytes of the envelope's payload."""
    if binary:
        assert isinstance(data, bytes)
        envelope = Envelope(
            kind=Envelope.DATA, topic=group, offset=offset, epoch=epoch, payload=data
        )
        return {"type": "websocket.send", "bytes": envelope.SerializeToString()}
    text = data.decode() if isinstance(data, bytes) else data
    head = f'{{"kind":"data","topic":{json.dumps(group)},"offset":{offset},"epoch":"{epoch}"'
    return {"type": "websocket.send", "text": f'{head},"data":{text}}}'}


def payload_of(frame: dict[str, object]) -> dict[str, object]:
    """The frame that ``broadcast()`` sends without history, from one made by
    :func:`data_frame`: what a client that did not ask for envelopes gets."""
    data = frame.get("bytes")
    if isinstance(data, bytes):
        return {"type": "websocket.send", "bytes": Envelope.FromString(data).payload}
    text = frame["text"]
    assert isinstance(text, str)
    # The head holds the topic (a group name: no quote or colon inside), the offset
    # and the epoch: the first ',"data":' is the payload's start.
    start = text.index(',"data":') + len(',"data":')
    payload = text[start:-1]
    if payload.startswith('"'):
        return {"type": "websocket.send", "text": json.loads(payload)}  # a str payload
    return {"type": "websocket.send", "text": payload}


def subscribed_frame(
    group: str, offset: int, epoch: str, recovered: bool, *, binary: bool, request_id: int = 0
) -> dict[str, object]:
    """The ASGI message telling a client where ``group`` stands (see the module doc);
    with ``request_id``, also the answer to the client's subscribe request
    (:mod:`channels_tuning.wire.topics`)."""
    if binary:
        envelope = Envelope(
            kind=Envelope.SUBSCRIBED,
            topic=group,
            offset=offset,
            epoch=epoch,
            recovered=recovered,
            seq=request_id,
        )
        return {"type": "websocket.send", "bytes": envelope.SerializeToString()}
    answer: dict[str, object] = {"kind": "subscribed", "topic": group}
    if request_id:
        answer["id"] = request_id
    answer.update(offset=offset, epoch=epoch, recovered=recovered)
    text = json.dumps(answer, separators=(",", ":"))
    return {"type": "websocket.send", "text": text}
