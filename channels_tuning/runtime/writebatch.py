"""Coalesced writes: during a batch, each connection's frames go out in one system call.

A broadcast burst reaches the process reader as a backlog of messages for the same
subscribers. Written one by one, each frame to each subscriber is one ``send()``:
45 % of the tuned server's CPU in the 500 x 2000 burst (py-spy). So the reader (and
the pub/sub layer's subscriber loop) owns a :class:`WriteBatch`, hands it to the
transport of each consumer it delivers to when the consumer attaches
(``Transport.use_write_batch``: the tuned server's passes it to its eager-write
Twisted transport, :class:`channels_tuning.compat.twisted.EagerWriteServer`), and
collects while it hands a batch of messages on: those transports hold their writes
and register with the batch; when it ends, each writes what it holds at once, in
order. A batch is a few dozen messages handed on synchronously, so what is held is
bounded by it. Servers whose writes are not eager (plain daphne, uvicorn,
hypercorn) ignore the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class WriteBatch:
    """The transports holding writes while their owner hands a batch of messages on."""

    __slots__ = ("_held", "collecting")

    def __init__(self) -> None:
        self._held: list[Any] = []
        #: True while a batch is being handed on: transports hold their writes.
        self.collecting = False

    def hold(self, transport: Any) -> None:
        """``transport`` holds writes until the batch ends (called once per batch)."""
        self._held.append(transport)

    @contextmanager
    def collect(self) -> Iterator[None]:
        if self.collecting:  # nested: the outer one flushes
            yield
            return
        self.collecting = True
        try:
            yield
        finally:
            self.collecting = False
            transports, self._held = self._held, []
            for transport in transports:
                transport.flush_held()
