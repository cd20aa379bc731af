"""daphne with flow control, a bounded inbound queue and a graceful drain.

Run it instead of ``daphne`` (same options)::

    channels-tuning-daphne -b 127.0.0.1 -p 8000 example_project.asgi:application

What it changes, for WebSocket connections only (HTTP is daphne's, untouched):

- **Outbound flow control.** Plain daphne writes every frame into Twisted's
  buffer at once (daphne #170): a client that stops reading grows the process
  without limit. Here each connection's transport has a streaming producer
  registered; Twisted pauses it when more than ``bufferSize`` (64 KiB) is
  waiting for the kernel, and the application's ``send`` is a
  :class:`FlowControlledSend` whose ``await send(...)`` waits until the buffer
  has drained, like asyncio's ``drain()``. Tuned consumers see the pause and
  queue (bounded, with their overflow policy) instead.
- **Inbound bound.** daphne's per-connection input queue is unbounded; here,
  when ``INBOUND_HIGH_WATER`` frames are waiting for the application, the
  server stops reading the socket (TCP pushes back on the client) until the
  application has caught up to a quarter of that.
- **Graceful drain** on SIGTERM/SIGINT: stop listening, close every WebSocket
  with 1012 in batches, give applications ``--drain-timeout`` seconds to run
  their disconnect handlers (group cleanup), then cancel what is left and exit.
  A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from .transport import send_close_frame

logger = logging.getLogger("channels_tuning.server")

#: Frames waiting for the application before the server stops reading the socket.
INBOUND_HIGH_WATER = 64
SERVICE_RESTART = 1012


@implementer(IPushProducer)
class FlowControlledSend:
    """The ASGI ``send`` of one WebSocket connection, and the producer registered
    on its transport (Twisted calls pause/resume as its write buffer fills/drains)."""

    channels_tuning_flow_control = True
    __slots__ = ("_waiter", "closed", "paused", "protocol", "server")

    def __init__(self, server: Server, protocol: Any) -> None:
        self.server = server
        self.protocol = protocol
        self.paused = False
        self.closed = False
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
        details = self.server.connections.get(self.protocol)
        if details is None or "disconnected" in details:
            return
        if message["type"] == "websocket.close":
            send_close_frame(self.protocol, message.get("code", 1000), message.get("reason"))
        else:
            self.protocol.handle_reply(message)

    async def __call__(self, message: dict[str, Any]) -> None:
        await self.wait_writable()
        self.write_nowait(message)


class _InboundQueue(asyncio.Queue):  # type: ignore[type-arg]
    """daphne's input queue, but reading from the socket pauses while it is long."""

    def __init__(self, transport: Any, high_water: int) -> None:
        super().__init__()
        self._transport = transport
        self._high = high_water
        self._low = high_water // 4
        self._reading_paused = False

    def put_nowait(self, item: Any) -> None:
        super().put_nowait(item)
        if not self._reading_paused and self.qsize() >= self._high:
            self._reading_paused = True
            self._transport.pauseProducing()

    async def get(self) -> Any:
        item = await super().get()
        if self._reading_paused and self.qsize() <= self._low:
            self._reading_paused = False
            self._transport.resumeProducing()
        return item


class TunedServer(Server):
    """daphne's ``Server`` with flow control, bounded inbound queues and a graceful drain."""

    drain_timeout = 10.0
    drain_batch_size = 200
    drain_batch_interval = 0.05

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.drain_timeout = kwargs.pop("drain_timeout", self.drain_timeout)
        super().__init__(*args, **kwargs)
        self._ports: list[Any] = []
        self._draining = False

    def listen_success(self, port: Any) -> None:
        self._ports.append(port)
        super().listen_success(port)

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        if scope.get("type") != "websocket":
            return super().create_application(protocol, scope)
        assert "application_instance" not in self.connections[protocol]
        transport = protocol.transport
        send = FlowControlledSend(self, protocol)
        # daphne's HTTPChannel registered itself as the producer before the upgrade.
        transport.unregisterProducer()
        transport.registerProducer(send, True)
        input_queue = _InboundQueue(transport, INBOUND_HIGH_WATER)
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(scope=scope, receive=input_queue.get, send=send)
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            application_instance, loop=asyncio.get_event_loop()
        )
        return input_queue

    # ------------------------------------------------------------- shutdown

    def kill_all_applications(self) -> Any:
        """Twisted's "before shutdown" trigger: drain first, then cancel what is left."""
        return defer.Deferred.fromFuture(asyncio.ensure_future(self._drain()))

    async def _drain(self) -> None:
        self._draining = True
        if self.signal_handlers:
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, _exit_now)
        for port in self._ports:
            port.stopListening()
        websockets = [
            p
            for p in list(self.connections)
            if getattr(p, "application_type", None) == "websocket"
            and getattr(p, "state", None) == p.STATE_OPEN
        ]
        logger.info(
            "Draining %d WebSocket connections (close %d)", len(websockets), SERVICE_RESTART
        )
        for start in range(0, len(websockets), self.drain_batch_size):
            for protocol in websockets[start : start + self.drain_batch_size]:
                send_close_frame(protocol, SERVICE_RESTART, "server restarting")
            # Spread the clients' reconnects instead of sending all closes in one go.
            await asyncio.sleep(self.drain_batch_interval)
        pending = self._pending_applications()
        if pending:
            await asyncio.wait(pending, timeout=self.drain_timeout)
        left = [task for task in self._pending_applications() if not task.done()]
        for task in left:
            task.cancel()
        if left:
            logger.warning("Cancelled %d applications still running after the drain", len(left))
            await asyncio.wait(left, timeout=2.0)

    def _pending_applications(self) -> list[asyncio.Future[Any]]:
        return [
            details["application_instance"]
            for details in self.connections.values()
            if "application_instance" in details and not details["application_instance"].done()
        ]


def _exit_now(signum: int, frame: Any) -> None:
    logger.warning("Second signal during drain: exiting at once")
    os._exit(128 + signum)


class TunedCommandLineInterface(CommandLineInterface):
    """daphne's command line with :class:`TunedServer`."""

    server_class = TunedServer


def main() -> None:
    """Entry point of ``channels-tuning-daphne``."""
    TunedCommandLineInterface().run(sys.argv[1:])


if __name__ == "__main__":
    main()
