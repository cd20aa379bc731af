"""Coalesced writes: during a batch, each connection's frames go out in one system call.

A broadcast burst reaches the process reader as a backlog of messages for the same
subscribers. Written one by one, each frame to each subscriber is one ``send()``:
45 % of the tuned server's CPU in the 500 x 2000 burst (py-spy, issue #16). While
:func:`coalesced_writes` is active, the eager-write transports
(:class:`channels_tuning.compat.twisted.EagerWriteServer`) hold their writes and
register here; when it ends, each writes what it holds at once, in order. A batch is
a few dozen messages handed on synchronously, so what is held is bounded by it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Transports holding writes in the current batch (None: no batch, write at once).
held: list[Any] | None = None


@contextmanager
def coalesced_writes() -> Iterator[None]:
    global held
    if held is not None:  # nested: the outer batch flushes
        yield
        return
    held = []
    try:
        yield
    finally:
        transports, held = held, None
        for transport in transports:
            transport.flush_held()
