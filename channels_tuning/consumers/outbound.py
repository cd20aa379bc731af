"""The outbound half of a tuned consumer: bounded sends that never wait.

``send()`` hands a frame to the core's decision (write now, queue, or drop by the
overflow policy) and writes it through the connection's
:class:`~channels_tuning.servers.transport.Transport` when the server can take it
at once; otherwise a writer task, which exists only while a backlog does, writes
the queue as the transport allows. Accept and close frames are never dropped and
stay in order with data. Every loss is counted by consumer and reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from channels.generic.websocket import AsyncWebsocketConsumer

from ..core import Action, ConnectionCore, ConnectionSettings, Outcome, SendFrame
from ..core.queue import REASON_CLOSED
from ..core.state import ConnectionState
from ..runtime.counters import CLOSES, DROPPED, TRAFFIC
from ..runtime.ratelog import RateLimitedLog
from ..servers.transport import Transport
from ..wire.closecodes import CloseCode, log_level

logger = logging.getLogger("channels_tuning")
#: Clients decide how often a close stalls: a line a second at most.
_stalled_log = RateLimitedLog(logger, level=logging.INFO)

Message = dict[str, Any]


def _count_out(message: Message) -> None:
    payload = message.get("text")
    if payload is None:
        payload = message.get("bytes")
        if payload is None:
            return  # accept, close: not data
    TRAFFIC.messages_out += 1
    TRAFFIC.bytes_out += len(payload)


#: Called with (consumer, code, reason) at every close a tuned consumer writes
#: (channels_tuning.testing.capture_closes; empty outside its block).
CLOSE_OBSERVERS: list[Callable[[Any, int, str | None], None]] = []


class OutboundMixin(AsyncWebsocketConsumer):
    """Bounded sends, closes and the writer task (the first layer of
    :class:`~channels_tuning.consumers.base.ManagedConnectionMixin`)."""

    #: Frame types this consumer speaks; a client frame of the other type is closed
    #: with 1003, and the package's control frames are written in the one it speaks.
    accept_text_frames: ClassVar[bool] = True
    accept_binary_frames: ClassVar[bool] = True

    # Per-connection state, set by the lifecycle (consumers.base) before any send.
    tuning: ConnectionSettings
    core: ConnectionCore
    #: How this connection writes to its server (chosen once, at its start).
    transport: Transport
    registry_key: str = ""
    _writer: asyncio.Task[None] | None = None

    #: Seconds the cleanup waits for queued frames (a close among them) to be written
    #: when the application ends while the connection is still open.
    close_flush_timeout: float = 2.0

    @classmethod
    def consumer_label(cls) -> str:
        """The consumer's class name as used in counters and logs."""
        return cls.__qualname__

    @property
    def state(self) -> ConnectionState:
        """The connection's state (see :class:`~channels_tuning.core.ConnectionState`)."""
        return self.core.state

    @property
    def accepted(self) -> bool:
        return self.core.accepted

    @property
    def closing(self) -> bool:
        """True once the server has closed (or the client has gone)."""
        state = self.core.state
        return state is ConnectionState.CLOSING or state is ConnectionState.CLOSED

    async def send_json(
        self, content: Any, close: bool = False, *, coalesce_key: Any = None
    ) -> None:
        """Channels' ``send_json`` through the bounded send queue (for a mixin in
        front of ``AsyncJsonWebsocketConsumer``, whose own ``send_json`` would go
        around it, and before ``websocket.accept`` on servers whose send waits)."""
        encode = getattr(self, "encode_json", None)
        if encode is None:
            raise TypeError(f"{type(self).__name__} has no encode_json: not a JSON consumer")
        await self.send(text_data=await encode(content), close=close, coalesce_key=coalesce_key)

    async def send(  # type: ignore[override]  # as AsyncWebsocketConsumer.send does
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
        *,
        coalesce_key: Any = None,
    ) -> None:
        """Queue a frame for the client; never waits for a slow client.

        If the client is not keeping up, the outbound queue's overflow policy
        applies. ``coalesce_key`` (policy ``coalesce``) replaces a queued frame
        with the same key."""
        if text_data is not None:
            message: Message = {"type": "websocket.send", "text": text_data}
        elif bytes_data is not None:
            message = {"type": "websocket.send", "bytes": bytes_data}
        else:
            raise ValueError("You must pass one of bytes_data or text_data")
        self.send_nowait(message, coalesce_key)
        if close:
            await self.close(close)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self.close_nowait(CloseCode.NORMAL if code in (None, True) else int(code), reason)

    async def drain(self) -> None:
        """Wait until everything queued for the client has been handed to the server."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def room_for(self, size: int, timeout: float = 10.0) -> bool:
        """Wait until a frame of ``size`` bytes fits in half the send queue's bounds
        (the client reads what is queued), at most ``timeout`` seconds. False when the
        connection is closing, the frame could never fit, or the client did not read:
        what a replay of history checks before each frame, so that it costs the queue's
        bound and never its overflow policy."""
        half_messages = self.tuning.send_queue_max_messages // 2
        half_bytes = self.tuning.send_queue_max_bytes // 2
        if size > half_bytes:
            return False
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self.core.state is not ConnectionState.OPEN:
                return False
            queue = self.core.queue
            if queue is None or (len(queue) < half_messages and queue.nbytes + size <= half_bytes):
                return True
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            writer = self._writer
            try:
                if writer is None:  # a backlog the server has not asked for yet
                    await asyncio.sleep(min(0.05, left))
                else:
                    await asyncio.wait_for(asyncio.shield(writer), left)
            except asyncio.TimeoutError:
                return False

    @property
    def send_queue_length(self) -> int:
        queue = self.core.queue
        return len(queue) if queue is not None else 0

    def send_nowait(self, message: Message, coalesce_key: Any = None) -> None:
        """Send an ASGI ``websocket.send`` message, applying the overflow policy."""
        core = self.core
        writable = core.queue is None and self.transport.can_write()
        outcome = core.send(message, coalesce_key, writable)
        if outcome is Outcome.WRITE:
            self._write_now(message)
            return
        self._count_drop()
        if core.has_actions:
            self._perform(core.take_actions())
        if outcome is Outcome.QUEUED:
            self._ensure_writer()

    def close_nowait(self, code: int, reason: str | None = None, *, urgent: bool = False) -> None:
        """Close the connection with ``code``; logged once and counted."""
        core = self.core
        if core.close(code, reason, urgent=urgent):
            self._perform(core.take_actions())

    def _perform(self, actions: list[Action]) -> None:
        """Carry out what the core decided."""
        for action in actions:
            if isinstance(action, SendFrame):
                self.send_nowait(action.message)
            else:
                self._write_close(action.code, action.reason, action.urgent)

    def _write_close(self, code: int, reason: str | None, urgent: bool) -> None:
        CLOSES.inc((self.consumer_label(), str(code)))
        for observer in CLOSE_OBSERVERS:
            observer(self, code, reason)
        logger.log(
            log_level(code),
            "channels_tuning: closing %s %s with %s (%s)",
            self.consumer_label(),
            self.registry_key,
            code,
            reason or "-",
        )
        message: Message = {"type": "websocket.close", "code": code}
        if reason:
            message["reason"] = reason
        self._send_control(message, urgent=urgent)

    def _count_drop(self) -> None:
        drop = self.core.last_drop
        if drop is not None:
            self.core.last_drop = None
            DROPPED.inc((self.consumer_label(), drop[1]), drop[0])

    def _write_now(self, message: Message) -> None:
        _count_out(message)
        self.transport.write_nowait(message)

    def _send_control(self, message: Message, *, urgent: bool = False) -> None:
        """Accept and close: never dropped, kept in order with data.

        ``urgent`` writes at once even past the high-water mark (a close after
        the backlog was dropped: a few bytes, and the socket goes away)."""
        writable = self.transport.can_write(urgent)
        if self.core.send_control(message, writable) is Outcome.WRITE:
            self._write_now(message)
        else:
            self._ensure_writer()

    def _ensure_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_backlog())

    async def _write_backlog(self) -> None:
        core, transport = self.core, self.transport
        queue = core.queue
        try:
            while queue:
                message = queue.get()
                if transport.can_write():
                    _count_out(message)
                    transport.write_nowait(message)
                elif await transport.write(message):  # waits for the socket
                    _count_out(message)
                else:  # the connection is gone: this one and the rest are dropped
                    DROPPED.inc((self.consumer_label(), REASON_CLOSED))
                    break
        except Exception:
            logger.debug("channels_tuning: write to %s failed", self.registry_key, exc_info=True)
        finally:
            self._writer = None
            if core.queue is queue:
                self._drop_backlog(REASON_CLOSED)
                core.queue = None

    def _drop_backlog(self, reason: str) -> None:
        if self.core.drop_backlog(reason):
            self._count_drop()

    async def _flush_before_exit(self, still_open: bool) -> None:
        writer = self._writer
        if writer is not None and still_open:
            await asyncio.wait({writer}, timeout=self.close_flush_timeout)
        if self._writer is not None:
            self._writer.cancel()
        self._drop_backlog(REASON_CLOSED)

    def _abort_stalled(self, waited: float) -> None:
        """The connection is closing but the server's ``send`` has not returned for
        ``waited`` seconds: the client stopped reading, and the close frame queued
        behind its backlog will never be written. Drop the TCP connection (servers
        whose ``send`` waits: uvicorn, hypercorn), so the socket and the server's
        buffers are freed now rather than when the client goes."""
        aborted = self.transport.abort()  # once: the transport forgets the wait
        _stalled_log.log(
            "channels_tuning: %s %s stopped reading; %s after %.1f s",
            self.consumer_label(),
            self.registry_key,
            "connection aborted" if aborted else "the server offers no abort, left to it",
            waited,
        )
