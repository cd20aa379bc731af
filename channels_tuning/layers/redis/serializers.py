"""A channels-redis serializer for frames: bytes in, the same bytes out.

Registered when the app is ready (outside Django: import this module), then
chosen with ``"serializer_format": "channels_tuning"`` in a Redis layer's ``CONFIG``.

Messages made by :func:`channels_tuning.broadcast.broadcast` (a ready frame, one
``channels_tuning.frame`` event) are written as a :class:`LayerFrame` protobuf: the
frame's bytes are carried as they are, with no msgpack map around them, and the
receiving process gets back bytes equal to those sent. Every other message falls
back to plain msgpack, channels-redis' default, so processes on the default
serializer still read those, and this one reads theirs. A LayerFrame is marked by
a leading 0x01 byte, which never starts a msgpack map.
"""

from __future__ import annotations

from typing import Any

import msgpack
from channels_redis.serializers import BaseMessageSerializer, registry

from ...wire.proto.envelope_pb2 import LayerFrame
from ..frames import FRAME_TYPE

__all__ = [
    "FORMAT",
    "FrameSerializer",
]

FORMAT = "channels_tuning"
_FRAME_KEYS = frozenset({"type", "frame", "key", "group", "json", "__asgi_channel__"})
_LAYER_FRAME = b"\x01"


class FrameSerializer(BaseMessageSerializer):
    def as_bytes(self, message: dict[str, Any], *args: Any, **kwargs: Any) -> bytes:
        encoded = _as_layer_frame(message)
        if encoded is not None:
            return _LAYER_FRAME + encoded
        return msgpack.packb(message, use_bin_type=True)

    def from_bytes(self, message: bytes, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if message[:1] == _LAYER_FRAME:
            return _from_layer_frame(LayerFrame.FromString(message[1:]))
        return msgpack.unpackb(message, raw=False)


def _as_layer_frame(message: dict[str, Any]) -> bytes | None:
    if message.get("type") != FRAME_TYPE or not _FRAME_KEYS.issuperset(message):
        return None
    frame, key = message["frame"], message.get("key")
    if key is not None and not isinstance(key, str):
        return None  # only string coalesce keys have a field
    layer_frame = LayerFrame()
    if frame.get("text") is not None:
        layer_frame.text, layer_frame.is_text = frame["text"], True
    else:
        layer_frame.binary = frame["bytes"]
    if key is not None:
        layer_frame.coalesce_key, layer_frame.has_coalesce_key = key, True
    if "group" in message:
        layer_frame.group = message["group"]
        layer_frame.text_is_json = bool(message.get("json"))
    channels = message.get("__asgi_channel__")
    if isinstance(channels, list):
        layer_frame.channels.extend(channels)
        layer_frame.channels_is_list = True
    elif channels is not None:
        layer_frame.channels.append(channels)
    return layer_frame.SerializeToString()


def _from_layer_frame(layer_frame: LayerFrame) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "websocket.send"}
    if layer_frame.is_text:
        frame["text"] = layer_frame.text
    else:
        frame["bytes"] = layer_frame.binary
    message: dict[str, Any] = {"type": FRAME_TYPE, "frame": frame}
    if layer_frame.has_coalesce_key:
        message["key"] = layer_frame.coalesce_key
    if layer_frame.group:
        message["group"] = layer_frame.group
        if layer_frame.text_is_json:
            message["json"] = True
    if layer_frame.channels_is_list:
        message["__asgi_channel__"] = list(layer_frame.channels)
    elif layer_frame.channels:
        message["__asgi_channel__"] = layer_frame.channels[0]
    return message


registry.register_serializer(FORMAT, FrameSerializer)
