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
    """JSON over text frames. Malformed JSON closes with 1007, binary frames with 1003.

    Override ``receive_json(content)``; send with ``send_json(content)``.
    """

    accept_binary_frames = False

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            content = await self.decode_json(text_data or "")
        except ValueError:
            self.close_nowait(CloseCode.INVALID_PAYLOAD, "malformed JSON")
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Called with each decoded JSON message."""

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, separators=(",", ":"))


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
