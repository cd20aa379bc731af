"""Typed messages through a codec: :class:`CodecMixin`.

A consumer with a :class:`~channels_tuning.wire.codecs.Codec` receives decoded messages
in :meth:`~CodecMixin.receive_message` and sends with :meth:`~CodecMixin.send_message`.
Frames the codec cannot read close the connection with 1007 (logged and counted by
close code); frames of the other type (text to a binary codec) close with 1003
before decoding. Envelopes of kind ``ping`` are answered with ``pong``; ``pong``
envelopes count as liveness and go no further; envelopes of the topic and request
protocols (:mod:`.topics`, :mod:`.rpc`) that reach the codec close with 1007.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..wire.closecodes import CloseCode
from ..wire.codecs import Codec, DecodeError, Received
from .base import ManagedConnectionMixin

_PROTOCOL_KINDS = frozenset(
    {"subscribe", "unsubscribe", "unsubscribed", "request", "reply", "push"}
)


class CodecMixin(ManagedConnectionMixin):
    #: How messages become frames (a JsonCodec or a ProtobufCodec).
    codec: ClassVar[Codec[Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        codec = getattr(cls, "codec", None)
        if codec is not None:
            # The codec's frame type is the only one accepted (the other: 1003).
            cls.accept_binary_frames = codec.binary
            cls.accept_text_frames = not codec.binary
            cls._binary_pushes = codec.binary  # send_with_ack() pushes PUSH envelopes

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame = bytes_data if bytes_data is not None else text_data
        try:
            received = self.codec.decode(frame if frame is not None else b"")
        except DecodeError as error:
            self.close_nowait(CloseCode.INVALID_PAYLOAD, f"invalid message: {error}"[:120])
            return
        if received.kind == "ping":
            await self._send_frame(self.codec.encode(None, kind="pong", seq=received.seq))
        elif received.kind in _PROTOCOL_KINDS:
            # Protocol requests reach here only when the consumer has no topics table,
            # no @rpc method or request of its own pending, or the client did not offer
            # the protocol: not a message it reads.
            self.close_nowait(CloseCode.INVALID_PAYLOAD, f"unexpected {received.kind} envelope")
        elif received.kind != "pong":
            await self.receive_message(received.message, received)

    async def receive_message(self, message: Any, received: Received[Any]) -> None:
        """Called with each decoded message; ``received`` has the envelope's fields
        (kind, seq, topic, type_url, sent_at_ms, error_code, error)."""

    async def send_message(
        self,
        message: Any,
        *,
        topic: str = "",
        seq: int = 0,
        coalesce_key: Any = None,
        **fields: Any,
    ) -> None:
        """Encode ``message`` in an envelope of kind ``data`` and send it."""
        frame = self.codec.encode(message, topic=topic, seq=seq, **fields)
        await self._send_frame(frame, coalesce_key)

    async def send_envelope(self, kind: str, **fields: Any) -> None:
        """Send an envelope without a message: ``ack`` (seq=...) or ``error`` (error_code=...,
        error=...)."""
        await self._send_frame(self.codec.encode(None, kind=kind, **fields))

    def _push_frame(self, push_id: int, data: Any) -> dict[str, Any]:
        if not self.codec.binary:
            return super()._push_frame(push_id, data)
        # The message as send_message() would encode it, in an envelope of kind PUSH.
        return {
            "type": "websocket.send",
            "bytes": self.codec.encode(data, kind="push", seq=push_id),
        }

    async def _send_frame(self, frame: str | bytes, coalesce_key: Any = None) -> None:
        if isinstance(frame, bytes):
            await self.send(bytes_data=frame, coalesce_key=coalesce_key)
        else:
            await self.send(text_data=frame, coalesce_key=coalesce_key)
