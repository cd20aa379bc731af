"""A WebSocket connection's two directions on ``channels-tuning-daphne``.

- :class:`FlowControlledSend`: the application's ``send`` and the connection's
  :class:`~channels_tuning.servers.transport.Transport`. It is the streaming producer
  registered on the Twisted transport, which pauses it when more than ``bufferSize``
  (64 KiB) waits for the kernel: tuned consumers see the pause and queue (bounded,
  with their overflow policy); ``await send(...)`` waits, like asyncio's ``drain()``.
- :class:`InboundQueue`: daphne's input queue, bounded: the socket stops being read
  while ``INBOUND_HIGH_WATER`` frames wait for the application.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from ...compat import autobahn, twisted
from ...compat import daphne as daphne_hooks
from ...core.state import Liveness
from ...runtime.writebatch import WriteBatch
from ..transport import ServerKind, write_to_protocol

if TYPE_CHECKING:
    from daphne.server import Server

#: Frames waiting for the application before the server stops reading the socket.
INBOUND_HIGH_WATER = 64


@implementer(IPushProducer)
class FlowControlledSend:
    """The ASGI ``send`` of one WebSocket connection, the producer registered on its
    Twisted transport (which calls pause/resume as its write buffer fills/drains), and
    the connection's :class:`~channels_tuning.servers.transport.Transport`."""

    channels_tuning_flow_control = True
    kind = ServerKind.TUNED_DAPHNE
    #: A plain client is alive while its protocol pongs (and pings) arrive.
    liveness = Liveness.TRANSPORT
    __slots__ = (
        "_waiter",
        "closed",
        "last_activity",
        "paused",
        "protocol",
        "received_at",
        "server",
    )

    def __init__(self, server: Server, protocol: Any) -> None:
        self.server = server
        self.protocol = protocol
        self.paused = False
        self.closed = False
        #: time.monotonic() of the client's last protocol pong or ping (0: none yet),
        #: set by the tuned protocol (servers.daphne.protocol); read by the consumer's
        #: idle timeout, so that a page that only reads, whose browser answers the
        #: server's protocol pings, is alive.
        self.last_activity = 0.0
        #: time.monotonic() when the item the application last took from its input
        #: queue had arrived (InboundQueue): a client's frames are charged to its
        #: rate limit when they came, not when a busy handler got to them.
        self.received_at = 0.0
        self._waiter: asyncio.Future[None] | None = None

    # IPushProducer, called by Twisted
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._wake()

    def stopProducing(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_writable(self) -> bool:
        """Wait while the transport's buffer is above its high-water mark.
        Return False if the connection is gone."""
        while self.paused and not self.closed:
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return not self.closed

    def write_nowait(self, message: dict[str, Any]) -> None:
        if not daphne_hooks.is_writable(self.server, self.protocol):
            return
        if not self._sent_uncompressed(message):
            write_to_protocol(self.protocol, message)
            if self.server.release_deflate_contexts:
                autobahn.release_compressor(self.protocol)

    def _sent_uncompressed(self, message: dict[str, Any]) -> bool:
        """Send a short data frame without deflate; False if it is not one."""
        protocol = self.protocol
        threshold = self.server.compression_threshold
        if (
            not threshold
            or message["type"] != "websocket.send"
            or not autobahn.deflate_active(protocol)
            or protocol.state != protocol.STATE_OPEN
        ):
            return False
        payload = message.get("bytes")
        binary = payload is not None
        if not binary:
            text = message.get("text")
            payload = text.encode() if text else None
        if not payload or len(payload) >= threshold:
            return False
        autobahn.send_uncompressed(protocol, payload, binary)
        return True

    async def __call__(self, message: dict[str, Any]) -> None:
        await self.wait_writable()
        self.write_nowait(message)

    # Transport (servers.transport), for the consumer
    def can_write(self, urgent: bool = False) -> bool:
        # Urgent: a close after the backlog was dropped, written past the mark.
        return urgent or not self.paused

    async def write(self, message: dict[str, Any]) -> bool:
        if not await self.wait_writable():
            return False
        self.write_nowait(message)
        return True

    def stalled_for(self, now: float) -> float:
        return 0.0  # a close is written at once (urgent), never behind the backlog

    def abort(self) -> bool:
        return False

    def use_write_batch(self, batch: WriteBatch | None) -> None:
        twisted.use_write_batch(self.protocol.transport, batch)


class InboundQueue:
    """daphne's input queue (daphne only calls ``put_nowait``, the application only
    awaits ``get``), but reading from the socket pauses while it is long.

    Not an ``asyncio.Queue``: that is an object with a dict, three deques and an
    Event per connection (3.2 KB of an idle connection, benchmarks/connections.py
    --breakdown); one reader needs a list and at most one waiter. Items are always
    appended before the waiter is woken, so a ``get`` cancelled as it is woken
    loses nothing: the next ``get`` finds the item."""

    __slots__ = (
        "_high",
        "_items",
        "_low",
        "_protocol",
        "_reading_paused",
        "_release_decompressor",
        "_send",
        "_transport",
        "_waiter",
    )

    def __init__(
        self,
        protocol: Any,
        high_water: int,
        release_decompressor: bool,
        send: FlowControlledSend | None = None,
    ) -> None:
        #: (item, time.monotonic() of its arrival): the arrival is handed to ``send``
        #: (``received_at``) as the application takes the item.
        self._items: list[tuple[Any, float]] = []
        self._send = send
        self._waiter: asyncio.Future[None] | None = None
        self._protocol = protocol
        self._transport = protocol.transport
        self._release_decompressor = release_decompressor
        self._high = high_water
        self._low = high_water // 4
        self._reading_paused = False

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Any) -> None:
        self._items.append((item, time.monotonic()))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._release_decompressor:
            autobahn.release_decompressor(self._protocol)
        if not self._reading_paused and len(self._items) >= self._high:
            self._reading_paused = True
            self._transport.pauseProducing()

    async def get(self) -> Any:
        items = self._items
        while not items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        # At most INBOUND_HIGH_WATER items: pop(0) is cheaper than a deque's memory.
        item, arrived = items.pop(0)
        if self._send is not None:
            self._send.received_at = arrived
        if self._reading_paused and len(items) <= self._low:
            self._reading_paused = False
            self._transport.resumeProducing()
        return item
