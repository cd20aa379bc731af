"""The consumers users subclass: thin compositions of the mixins.

``TunedWebsocketConsumer`` is a drop-in for Channels' ``AsyncWebsocketConsumer``
(``connect``, ``receive``, ``disconnect``, ``send``, ``close``, ``groups`` work as
documented by Channels) with heartbeats, limits, bounded sends and guaranteed
group cleanup. ``TunedJsonWebsocketConsumer`` is the same for JSON text frames;
``TunedProtobufWebsocketConsumer`` exchanges typed protobuf messages in binary
envelopes.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..wire.closecodes import CloseCode
from ..wire.codecs import ProtobufCodec
from .codec import CodecMixin
from .mixins import ConnectionLimitMixin, HeartbeatMixin, MaxLifetimeMixin, MessageLimitMixin


class TunedWebsocketConsumer(
    HeartbeatMixin, ConnectionLimitMixin, MessageLimitMixin, MaxLifetimeMixin
):
    """``AsyncWebsocketConsumer`` with every channels-tuning behaviour."""


class TunedJsonWebsocketConsumer(TunedWebsocketConsumer):
    """JSON over text frames. Frames that are not acceptable JSON close with 1007,
    binary frames with 1003, each logged in one line (a client's mistake: no traceback).

    Acceptable: valid JSON, nested at most ``json_max_depth`` deep (64), with finite
    numbers only (``NaN``, ``Infinity`` and ``1e999999``, which Python's ``json``
    accepts and would broadcast, are refused). Override ``receive_json(content)``;
    send with ``send_json(content)``.
    """

    accept_binary_frames = False
    #: Deepest nesting of arrays and objects accepted (deeper: 1007).
    json_max_depth: int = 64

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        text = text_data or ""
        try:
            content = await self.decode_json(text)
        except (ValueError, RecursionError) as error:
            self.close_nowait(CloseCode.INVALID_PAYLOAD, _json_problem(error))
            return
        # The bracket count bounds the depth: the exact walk runs only when it could matter.
        if text.count("[") + text.count("{") > self.json_max_depth and (
            json_depth(content) > self.json_max_depth
        ):
            self.close_nowait(CloseCode.INVALID_PAYLOAD, "JSON nested too deep")
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Called with each decoded JSON message."""

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data, parse_constant=_refuse_constant, parse_float=_finite_float)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, separators=(",", ":"), allow_nan=False)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _json_problem(error: BaseException) -> str:
    if isinstance(error, RecursionError):
        return "JSON nested too deep"
    message = str(error)
    if "not a JSON number" in message or "out of range" in message:
        return "JSON number not finite"
    return "malformed JSON"


def json_depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


class TunedProtobufWebsocketConsumer(CodecMixin, TunedWebsocketConsumer):
    """Protobuf messages in binary envelopes (``channels_tuning/wire/proto/envelope.proto``).

    Declare ``message_class`` (one type) or ``message_types`` (type URL to class);
    override ``receive_message(message, received)``; send with ``send_message(msg)``.
    Text frames close with 1003, frames that do not parse with 1007. Heartbeat pings
    are the 2-byte binary frames (an envelope never starts with a 0x00 byte).
    """

    heartbeat_binary = True
    accept_text_frames = False
    message_class: Any = None
    message_types: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if cls.message_class is not None or cls.message_types is not None:
            cls.codec = ProtobufCodec(cls.message_class, types=cls.message_types)
        super().__init_subclass__(**kwargs)
