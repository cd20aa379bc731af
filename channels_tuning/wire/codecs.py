"""Codecs: how a consumer's messages become WebSocket frames, and back.

One small interface, two implementations; a consumer picks one (``codec = ...``):

- :class:`JsonCodec` (text frames): ``{"kind":"data","topic":"room","seq":3,"data":{...}}``,
  empty fields omitted;
- :class:`ProtobufCodec` (binary frames): a ``channels_tuning.Envelope``
  (``channels_tuning/wire/proto/envelope.proto``) whose ``payload`` is the user's message.

Heartbeats, limits, backpressure and stats do not depend on the codec: they act on
frames before decoding and after encoding. :meth:`Codec.decode` raises
:class:`DecodeError`, and nothing else, for a frame it cannot read; the consumer
closes the connection with 1007.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, ClassVar, Generic, TypeVar

from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message as ProtobufMessage

from ..exceptions import DecodeError
from .proto.envelope_pb2 import Envelope

__all__ = [
    "KINDS",
    "KIND_NAMES",
    "Codec",
    "DecodeError",
    "JsonCodec",
    "ProtobufCodec",
    "Received",
    "now_ms",
    "type_url",
]

M = TypeVar("M")

#: Envelope kinds by name (the JSON codec writes the names, lower case).
KINDS: dict[str, Any] = {
    name.lower(): number
    for name, number in Envelope.Kind.items()
    if number != Envelope.KIND_UNSPECIFIED
}
KIND_NAMES: dict[int, str] = {number: name for name, number in KINDS.items()}


@dataclass(slots=True)
class Received(Generic[M]):
    """A decoded frame: the envelope's fields and the user's message (None unless
    ``kind`` is ``"data"`` or ``"push"``)."""

    kind: str
    message: M | None
    seq: int = 0
    topic: str = ""
    type_url: str = ""
    sent_at_ms: int = 0
    error_code: int = 0
    error: str = ""
    #: A group message's place in the group's history (:mod:`.offsets`), 0 when unused.
    offset: int = 0
    epoch: str = ""
    #: ``subscribed``: whether what the client missed follows.
    recovered: bool = False


class Codec(Generic[M]):
    #: True: binary frames (bytes); False: text frames (str).
    binary: ClassVar[bool]

    def encode(
        self, message: M | None, *, kind: str = "data", topic: str = "", seq: int = 0, **fields: Any
    ) -> str | bytes:
        raise NotImplementedError

    def decode(self, frame: str | bytes) -> Received[M]:
        raise NotImplementedError


def now_ms() -> int:
    return int(time.time() * 1000)


class JsonCodec(Codec[Any]):
    """Text frames holding a JSON object; the user's message is any JSON value."""

    binary = False

    def __init__(self, *, encoder: type[json.JSONEncoder] | None = None) -> None:
        self.encoder = encoder

    def encode(
        self, message: Any, *, kind: str = "data", topic: str = "", seq: int = 0, **fields: Any
    ) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        envelope: dict[str, Any] = {"kind": kind}
        if topic:
            envelope["topic"] = topic
        if seq:
            envelope["seq"] = seq
        envelope.update((key, value) for key, value in fields.items() if value)
        if message is not None:
            envelope["data"] = message
        return json.dumps(envelope, separators=(",", ":"), cls=self.encoder)

    def decode(self, frame: str | bytes) -> Received[Any]:
        try:
            envelope = json.loads(frame)
        except (ValueError, RecursionError) as error:
            raise DecodeError(f"not JSON: {error}") from None
        if not isinstance(envelope, dict):
            raise DecodeError("not a JSON object")
        kind = envelope.get("kind", "data")
        if kind not in KINDS:
            raise DecodeError(f"unknown kind {kind!r}")
        try:
            return Received(
                kind,
                envelope.get("data"),
                _int(envelope.get("seq", 0)),
                _str(envelope.get("topic", "")),
                _str(envelope.get("type_url", "")),
                _int(envelope.get("sent_at_ms", 0)),
                _int(envelope.get("error_code", 0)),
                _str(envelope.get("error", "")),
                _int(envelope.get("offset", 0)),
                _str(envelope.get("epoch", "")),
                envelope.get("recovered") is True,
            )
        except TypeError as error:
            raise DecodeError(str(error)) from None


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"expected an integer, got {value!r}")


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {value!r}")


P = TypeVar("P", bound=ProtobufMessage)


class ProtobufCodec(Codec[P]):
    """Binary frames holding an :class:`Envelope`; its payload is the user's message.

    ``message_class``: the one type this consumer exchanges; or ``types``: type URL
    to class, for several (the envelope's ``type_url`` picks one; on encode the
    message's own type URL is written). ``pool_envelopes`` is deprecated and ignored:
    decoding into pooled envelopes measured slower on every path (``docs/protobuf.md``;
    the comparison stays in ``benchmarks/codecs.py``); it is removed in 0.3.0."""

    binary = True

    def __init__(
        self,
        message_class: type[P] | None = None,
        *,
        types: Mapping[str, type[P]] | None = None,
        pool_envelopes: bool = False,
    ) -> None:
        if (message_class is None) == (types is None):
            raise ValueError("pass exactly one of message_class or types")
        self.message_class = message_class
        self.types = dict(types or {})
        self._type_urls = {cls: url for url, cls in self.types.items()}
        if pool_envelopes:
            warnings.warn(
                "ProtobufCodec(pool_envelopes=True) is ignored (pooled decoding measured "
                "slower) and the argument is removed in 0.3.0",
                DeprecationWarning,
                stacklevel=2,
            )

    def encode(
        self, message: P | None, *, kind: str = "data", topic: str = "", seq: int = 0, **fields: Any
    ) -> bytes:
        envelope = Envelope(kind=KINDS[kind], topic=topic, seq=seq, **fields)
        if message is not None:
            envelope.payload = message.SerializeToString()
            if self.types:
                envelope.type_url = self._type_urls[type(message)]
        # kind is never 0, so field 1 is always written: the frame is never empty.
        return envelope.SerializeToString()

    def decode(self, frame: str | bytes) -> Received[P]:
        # The hot path of every inbound binary frame: one FromString for the envelope,
        # one for the payload, no pool, no extra calls (measured in benchmarks/codecs.py).
        if not isinstance(frame, bytes):
            raise DecodeError("protobuf frames are binary")
        try:
            envelope = _envelope_from_string(frame)
        except ProtobufDecodeError as error:
            raise DecodeError(f"invalid envelope: {error}") from None
        return self._received(envelope)

    def _received(self, envelope: Envelope) -> Received[P]:
        kind = KIND_NAMES.get(envelope.kind)
        if kind is None:
            raise DecodeError(f"unknown envelope kind {envelope.kind}")
        message = None
        if kind == "data" or kind == "push":
            cls = self.message_class or self.types.get(envelope.type_url)
            if cls is None:
                raise DecodeError(f"unknown type_url {envelope.type_url!r}")
            try:
                message = cls.FromString(envelope.payload)
            except ProtobufDecodeError as error:
                raise DecodeError(f"invalid {cls.__name__}: {error}") from None
        received: _EnvelopeReceived[P] = _new_envelope_received(_EnvelopeReceived)
        received.kind = kind
        received.message = message
        received._envelope = envelope
        return received


def _envelope_field(name: str) -> Any:
    # attrgetter: the read stays in C (a Python getter doubled the cost of a read).
    return property(attrgetter(f"_envelope.{name}"), doc=f"The envelope's ``{name}``.")


class _EnvelopeReceived(Received[M]):
    """A :class:`Received` whose envelope fields stay in the protobuf envelope until
    read: a handler that looks at ``message`` and ``kind`` only (most do) never pays
    for the other six. Measured (benchmarks/codecs.py, 100 B): decode 1.0 µs instead
    of 1.8; decode and read all eight fields about the same as before. Compares and
    prints like any Received; its envelope fields are read-only."""

    __slots__ = ("_envelope",)
    _envelope: Envelope

    seq = _envelope_field("seq")
    topic = _envelope_field("topic")
    type_url = _envelope_field("type_url")
    sent_at_ms = _envelope_field("sent_at_ms")
    error_code = _envelope_field("error_code")
    error = _envelope_field("error")
    offset = _envelope_field("offset")
    epoch = _envelope_field("epoch")
    recovered = _envelope_field("recovered")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, field.name) for field in fields(Received))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Received):
            return NotImplemented
        return self._values() == tuple(getattr(other, f.name) for f in fields(Received))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        values = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(Received))
        return f"Received({values})"


_new_envelope_received = object.__new__
_envelope_from_string = Envelope.FromString


def type_url(message_class: type[ProtobufMessage], prefix: str = "type.googleapis.com/") -> str:
    """The conventional type URL of a protobuf message class."""
    return prefix + message_class.DESCRIPTOR.full_name
