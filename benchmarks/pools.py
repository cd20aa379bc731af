"""Bounded object and buffer pools (Go's ``sync.Pool`` idea), kept here for the
comparison in ``benchmarks/codecs.py``: they left the package in 0.2.0 because every
pooled path measured slower in CPython.

CPython frees most objects by reference counting the moment they are dropped, and
protobuf's upb message objects are not tracked by the cyclic GC, so a pool saves
only the allocation itself, and costs a ``Clear()`` (or a reset) per use. Measured
by ``benchmarks/codecs.py`` (numbers in ``docs/protobuf.md``). Pools are synchronous
(no ``await`` between taking and returning), so coroutines of one event loop can
share them without locks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError as ProtobufDecodeError

from channels_tuning.exceptions import DecodeError
from channels_tuning.wire.codecs import P, ProtobufCodec, Received
from channels_tuning.wire.proto.envelope_pb2 import Envelope

__all__ = [
    "BufferPool",
    "ObjectPool",
    "PooledProtobufCodec",
]

T = TypeVar("T")


class ObjectPool(Generic[T]):
    """At most ``maxsize`` idle objects made by ``factory``; ``reset`` runs on release.

    ``acquire()`` returns an idle object or a new one; ``release(obj)`` resets it and
    keeps it if the pool has room, otherwise drops it (the pool never grows beyond
    ``maxsize``). An object must not be used after its release."""

    __slots__ = ("_factory", "_idle", "_reset", "created", "maxsize", "reused")

    def __init__(
        self, factory: Callable[[], T], reset: Callable[[T], object], maxsize: int = 64
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._factory = factory
        self._reset = reset
        self._idle: list[T] = []
        self.maxsize = maxsize
        self.created = 0
        self.reused = 0

    def acquire(self) -> T:
        if self._idle:
            self.reused += 1
            return self._idle.pop()
        self.created += 1
        return self._factory()

    def release(self, obj: T) -> None:
        if len(self._idle) < self.maxsize:
            self._reset(obj)
            self._idle.append(obj)

    @contextmanager
    def borrowed(self) -> Iterator[T]:
        obj = self.acquire()
        try:
            yield obj
        finally:
            self.release(obj)

    def __len__(self) -> int:
        """Idle objects in the pool."""
        return len(self._idle)


class BufferPool:
    """Reusable ``bytearray`` buffers for assembling frames.

    ``acquire()`` returns an empty buffer; ``release(buf)`` keeps it if it is not
    larger than ``max_buffer_size`` (one huge frame must not pin its memory forever)
    and the pool holds fewer than ``maxsize``."""

    __slots__ = ("_idle", "max_buffer_size", "maxsize")

    def __init__(self, maxsize: int = 16, max_buffer_size: int = 64 * 1024) -> None:
        self._idle: list[bytearray] = []
        self.maxsize = maxsize
        self.max_buffer_size = max_buffer_size

    def acquire(self) -> bytearray:
        return self._idle.pop() if self._idle else bytearray()

    def release(self, buffer: bytearray) -> None:
        if len(self._idle) < self.maxsize and len(buffer) <= self.max_buffer_size:
            buffer.clear()
            self._idle.append(buffer)

    def __len__(self) -> int:
        return len(self._idle)


class PooledProtobufCodec(ProtobufCodec[P]):
    """``ProtobufCodec`` decoding into envelopes taken from an :class:`ObjectPool`
    (what ``pool_envelopes=True`` did before 0.2.0)."""

    def __init__(self, message_class: type[P]) -> None:
        super().__init__(message_class)
        self._pool: ObjectPool[Envelope] = ObjectPool(Envelope, Envelope.Clear, maxsize=64)

    def decode(self, frame: str | bytes) -> Received[P]:
        return self._decode_pooled(frame)

    def _decode_pooled(self, frame: str | bytes) -> Received[P]:
        if not isinstance(frame, bytes):
            raise DecodeError("protobuf frames are binary")
        pool = self._pool
        envelope = pool.acquire()
        try:
            try:
                envelope.ParseFromString(frame)
            except ProtobufDecodeError as error:
                raise DecodeError(f"invalid envelope: {error}") from None
            received = self._received(envelope)
            # The envelope goes back to the pool: copy its fields out now.
            return Received(*(getattr(received, f.name) for f in fields(Received)))
        finally:
            pool.release(envelope)
