"""Ready frames carried through a channel layer (what ``broadcast()`` sends).

A broadcast's payload is encoded once by the producer into an ASGI
``websocket.send`` message and travels as one layer event of type
:data:`FRAME_TYPE` (or :data:`FRAMES_TYPE` for a batch); tuned consumers put it
straight into their send queue. Kept apart from :mod:`.broadcast` so that the
consumer side needs neither Channels' layer registry nor Redis to recognise one.
"""

from __future__ import annotations

from typing import Any, Final, cast

from ..wire.compact import compact_json

#: Layer message types carrying ready frames (handled by tuned consumers). A message
#: with ``"control": True`` (presence events) goes only to clients that speak
#: channels-tuning's protocol (:mod:`channels_tuning.wire.subprotocol`).
FRAME_TYPE: Final = "channels_tuning.frame"
FRAMES_TYPE: Final = "channels_tuning.frames"
#: Layer message type that closes the tuned consumers that get it, with its ``code``
#: and ``reason`` (:func:`channels_tuning.users.disconnect_user`): handled as it
#: arrives, ahead of the events waiting for handlers.
DISCONNECT_TYPE: Final = "channels_tuning.disconnect"
#: What a tuned consumer writes (or closes on) as the message is handed to it; every
#: other type waits for a handler (:mod:`channels_tuning.consumers.inbox`).
WRITTEN_AT_ONCE: Final = frozenset({FRAME_TYPE, FRAMES_TYPE, DISCONNECT_TYPE})
#: Layer message type that ends the tuned consumers' subscriptions to its ``topic``
#: (:func:`channels_tuning.users.unsubscribe_user`): run by the consumers' handler
#: ``channels_tuning_unsubscribe`` (:mod:`channels_tuning.consumers.topics`).
UNSUBSCRIBE_TYPE: Final = "channels_tuning.unsubscribe"


def encode_frame(payload: Any) -> dict[str, Any]:
    """The ASGI ``websocket.send`` message for ``payload`` (encoded once): a ``str`` as a
    text frame, ``bytes`` as a binary frame, anything else as compact JSON text."""
    if isinstance(payload, str):
        return {"type": "websocket.send", "text": payload}
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return {"type": "websocket.send", "bytes": bytes(payload)}
    return {"type": "websocket.send", "text": compact_json(payload)}


def payload_frame(message: dict[str, Any]) -> dict[str, Any]:
    """The plain frame of a numbered :data:`FRAME_TYPE` message (history): its payload
    without the envelope, for clients that did not ask for envelopes. Worked out once
    per process and message (kept in the message, which every local member shares)."""
    plain = message.get("plain")
    if plain is None:
        from ..wire.offsets import payload_of

        plain = message["plain"] = payload_of(message["frame"])
    return cast("dict[str, Any]", plain)
