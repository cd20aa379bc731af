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

Events for handlers (plain ``group_send``, the quickstart's path) are not written
while the batch is handed on: each consumer's handlers run in a task at the loop's
next turn. When a batch queued such events, the owner calls :meth:`through_next_turn`
and the batch stays open until the callbacks already scheduled (those tasks' first
steps) have run: a callback scheduled behind them ends it. A handler that does not
suspend (``self.send()`` of a tuned consumer does not) thus writes its subscriber's
frames of the batch in one ``send()`` too; what a suspending handler writes later
goes out at once, as always. Writes wait at most one turn of the loop. Measured with
``python benchmarks/fanout.py --group-send`` (500 x 2000 by ``group_send``): one
``send()`` per event per subscriber was 43 % of the server's CPU (py-spy).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class WriteBatch:
    """The transports holding writes while their owner hands a batch of messages on."""

    __slots__ = ("_held", "_next_turn", "collecting")

    def __init__(self) -> None:
        self._held: list[Any] = []
        #: True while a batch is being handed on: transports hold their writes.
        self.collecting = False
        #: The batch ends at the loop's next turn, not with :meth:`collect`.
        self._next_turn = False

    def hold(self, transport: Any) -> None:
        """``transport`` holds writes until the batch ends (called once per batch)."""
        self._held.append(transport)

    def through_next_turn(self) -> None:
        """Keep the current batch open until the callbacks scheduled so far have run
        (the handlers' first steps); see the module docstring."""
        if self.collecting:
            self._next_turn = True

    @contextmanager
    def collect(self) -> Iterator[None]:
        if self.collecting:  # nested, or still open from the last batch: that one flushes
            yield
            return
        self.collecting = True
        try:
            yield
        finally:
            if self._next_turn:
                asyncio.get_running_loop().call_soon(self._end)
            else:
                self._end()

    def _end(self) -> None:
        self.collecting = self._next_turn = False
        transports, self._held = self._held, []
        for transport in transports:
            transport.flush_held()
