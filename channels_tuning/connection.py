"""The lifecycle every tuned consumer shares.

:class:`ManagedConnectionMixin` replaces the per-consumer machinery of
``AsyncConsumer`` with shared, bounded parts:

- **One task per idle connection.** Client frames are read by daphne's own
  application task; channel-layer events come from a per-process reader
  (:mod:`channels_tuning.layer_reader`) and run in a task that exists only while
  events are pending; outbound messages are written synchronously when the
  server allows it, and by a writer task only while a backlog exists.
- **Bounded sends.** Everything sent goes through a per-connection
  :class:`~channels_tuning.backpressure.OutboundQueue` whenever the client is
  not keeping up; its overflow policy decides what is lost, and every loss is
  counted by reason.
- **Registry and timers.** Accepted connections are in the process registry;
  the process scheduler calls :meth:`on_tick` for heartbeats and timeouts.
- **Group hygiene.** Groups joined through ``groups`` or :meth:`join_group` are
  left when the connection ends, whatever ends it: a disconnect, an exception
  in a handler, or cancellation of the application task.
- **Closes** go through :meth:`close_nowait`, which logs once and counts by code.

Concurrency note: client frames are handled in order, and layer events are
handled in order, but a layer event's handler may run while a client frame's
handler is suspended in an ``await`` (plain Channels runs one at a time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, ClassVar

from channels.exceptions import AcceptConnection, DenyConnection, StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer

from . import transport
from .asyncutil import loop_semaphore
from .backpressure import (
    REASON_CLOSED,
    REASON_INBOX_FULL,
    REASON_SLOW_CONSUMER,
    Message,
    OutboundQueue,
    Overflow,
)
from .broadcast import FRAME_TYPE, FRAMES_TYPE
from .closecodes import CloseCode, log_level
from .conf import FROM_SETTINGS, ConsumerSettings, settings_for
from .layer_reader import process_reader_for
from .layers import refresh_finished
from .registry import registry
from .scheduler import scheduler
from .stats import ACCEPTED, CLOSES, DROPPED, REJECTED, TRAFFIC

logger = logging.getLogger("channels_tuning")

#: Close code reported to ``disconnect()`` when the application task was cancelled.
ABNORMAL_CLOSURE = 1006


#: Group adds/discards in flight per process. A shutdown or a reconnect storm
#: ends or starts thousands of connections at once; unbounded, their Redis
#: commands exhaust redis-py's connection pool ("Too many connections").
MAX_CONCURRENT_GROUP_OPS = 32


def group_ops_limiter() -> asyncio.Semaphore:
    return loop_semaphore("group_ops", MAX_CONCURRENT_GROUP_OPS)


def _count_out(message: Message) -> None:
    payload = message.get("text")
    if payload is None:
        payload = message.get("bytes")
        if payload is None:
            return  # accept, close: not data
    TRAFFIC.messages_out += 1
    TRAFFIC.bytes_out += len(payload)


class ManagedConnectionMixin(AsyncWebsocketConsumer):
    """Lifecycle, bounded sends, layer events, registry and group hygiene."""

    # Per-class overrides of CHANNELS_TUNING (see channels_tuning.conf).
    scheduler_tick: Any = FROM_SETTINGS
    send_queue_max_messages: Any = FROM_SETTINGS
    send_queue_max_bytes: Any = FROM_SETTINGS
    overflow_policy: Any = FROM_SETTINGS
    layer_inbox_max: Any = FROM_SETTINGS

    #: Frame types this consumer accepts; the other type is closed with 1003.
    accept_text_frames: ClassVar[bool] = True
    accept_binary_frames: ClassVar[bool] = True

    # Per-connection state. Class-level defaults keep instances small: an
    # attribute becomes per-instance only when it is first set.
    channel_name: str | None = None
    tuning: ConsumerSettings
    registry_key: str = ""
    connected_at: float = 0.0
    last_seen: float = 0.0
    accepted: bool = False
    closing: bool = False
    _send_mode: int = transport.GENERIC
    _outq: OutboundQueue | None = None
    _writer: asyncio.Task[None] | None = None
    _inbox: deque[Message] | None = None
    _inbox_task: asyncio.Task[None] | None = None
    _layer_task: asyncio.Task[None] | None = None
    _joined: set[str] | None = None
    _registered: bool = False
    _disconnect_code: int | None = None
    _cancelled: bool = False
    _sent_close_code: int | None = None

    #: Seconds the cleanup waits for queued frames (a close among them) to be written
    #: when the application ends while the connection is still open.
    close_flush_timeout: ClassVar[float] = 2.0

    # ------------------------------------------------------------------ ASGI

    #: Instances not yet freed, in this process (``wsstats`` compares it with the
    #: live connections: more instances than connections is a leak).
    instances: ClassVar[int] = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # AsyncWebsocketConsumer.__init__ would give every instance its own empty
        # ``groups`` list: one more GC-tracked object per connection for nothing.
        ManagedConnectionMixin.instances += 1

    def __del__(self) -> None:
        ManagedConnectionMixin.instances -= 1

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self.tuning = settings_for(type(self))
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
        self.base_send = send
        self._send_mode = transport.detect_send_mode(send)
        transport.warn_if_not_flow_controlled(self._send_mode)
        self.connected_at = self.last_seen = time.monotonic()
        self.registry_key = self.channel_name or f"local.{id(self):x}"
        self._attach_layer()
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        except asyncio.CancelledError:
            # The server cancels its applications on shutdown (daphne) or when one
            # is slow to exit. Not re-raised: daphne gathers the cancelled tasks and
            # stops the loop as soon as one of them ends *cancelled*, which would cut
            # every other connection's cleanup short. A second cancel still ends the
            # task at once (it interrupts the shielded wait below).
            self._cancelled = True
        finally:
            # Shielded: the cleanup runs to the end in its own task even if this
            # task is cancelled again.
            cleanup = asyncio.get_running_loop().create_task(self._teardown())
            await asyncio.shield(cleanup)

    async def dispatch(self, message: Message) -> None:
        # Unlike AsyncConsumer.dispatch, no close_old_connections() thread hop per
        # message: database_sync_to_async already does it around each DB call.
        name = message["type"].replace(".", "_")
        handler = None if name.startswith("_") else getattr(self, name, None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        try:
            await handler(message)
        except StopConsumer:
            raise
        except Exception:
            logger.exception("channels_tuning: handler for %s raised", message["type"])
            # Keep running until the close handshake ends in websocket.disconnect:
            # an application that returns while daphne still tracks its socket
            # breaks daphne's shutdown (KeyError in kill_all_applications).
            self.close_nowait(CloseCode.INTERNAL_ERROR, "internal error")

    # ------------------------------------------------------------- lifecycle

    def admission_refusal(self) -> tuple[int, str] | None:
        """Return ``(close code, reason)`` to refuse this connection, or None.

        Mixins extend this (connection limits); it runs before anything is
        allocated for the connection."""
        return None

    async def websocket_connect(self, message: Message) -> None:
        refusal = self.admission_refusal()
        if refusal is not None:
            code, reason = refusal
            REJECTED.inc((self.consumer_label(), reason))
            # Accept, then close: browsers cannot read an HTTP status, but they
            # do see a close code, and 1013 tells them to come back later.
            self._write_or_queue({"type": "websocket.accept"}, urgent=True)
            self.close_nowait(code, reason)
            return  # websocket.disconnect follows the close handshake
        registry.add(self)
        self._registered = True
        scheduler.ensure_running(self.tuning.scheduler_tick)
        for group in self.groups or ():
            await self.join_group(group)
        try:
            await self.connect()
        except AcceptConnection:
            await self.accept()
        except DenyConnection:
            await self.close()

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers:
            message["headers"] = list(headers)
        self._write_or_queue(message, urgent=True)
        self.accepted = True
        ACCEPTED.inc((self.consumer_label(),))
        self.on_accepted(time.monotonic())

    def on_accepted(self, now: float) -> None:
        """Called once the connection is accepted (mixins start their timers here)."""

    def on_tick(self, now: float) -> None:
        """Called by the process scheduler every tick (mixins check their timers here)."""

    async def websocket_receive(self, message: Message) -> None:
        if self.closing:
            return
        self.last_seen = time.monotonic()
        payload = message.get("text")
        if payload is not None:
            if not self.accept_text_frames:
                self.close_nowait(CloseCode.UNSUPPORTED_DATA, "text frames not accepted")
                return
        elif not self.accept_binary_frames:
            self.close_nowait(CloseCode.UNSUPPORTED_DATA, "binary frames not accepted")
            return
        else:
            payload = message.get("bytes") or b""
        TRAFFIC.messages_in += 1
        TRAFFIC.bytes_in += len(payload)
        if self.filter_inbound(message):
            await super().websocket_receive(message)

    def filter_inbound(self, message: Message) -> bool:
        """Return False to stop a client frame before ``receive()`` (mixins: limits,
        heartbeat replies). A mixin that closes the connection returns False."""
        return True

    async def websocket_disconnect(self, message: Message) -> None:
        self._disconnect_code = message.get("code", ABNORMAL_CLOSURE)
        raise StopConsumer()

    async def _teardown(self) -> None:
        self._detach_layer()
        was_registered = self._registered
        if was_registered:
            registry.discard(self)
            self._registered = False
        if self._inbox_task is not None and self._inbox_task is not asyncio.current_task():
            self._inbox_task.cancel()
        still_open = self._disconnect_code is None
        if still_open and self.accepted and not self.closing:
            # The application ended (cancelled, or a handler raised StopConsumer)
            # with the socket open: close it rather than leave it without an app.
            code = CloseCode.SERVICE_RESTART if self._cancelled else CloseCode.NORMAL
            self.close_nowait(code, "server closing", urgent=True)
        await self.release()
        if was_registered:
            try:
                await self.disconnect(self._disconnect_code_for_handler())
            except Exception:
                logger.exception("channels_tuning: disconnect() raised")
        await self._flush_before_exit(still_open)

    def _disconnect_code_for_handler(self) -> int:
        if self._disconnect_code is not None:
            return self._disconnect_code  # the client's (or daphne's) code
        if self._sent_close_code is not None and not self._cancelled:
            return self._sent_close_code  # the application ended after closing
        return ABNORMAL_CLOSURE

    async def _flush_before_exit(self, still_open: bool) -> None:
        writer = self._writer
        if writer is not None and still_open:
            await asyncio.wait({writer}, timeout=self.close_flush_timeout)
        if self._writer is not None:
            self._writer.cancel()
        self._drop_backlog(REASON_CLOSED)

    async def release(self) -> None:
        """Give back what the connection holds: leaves every joined group."""
        joined, self._joined = self._joined, None
        if not joined or self.channel_layer is None:
            return
        await refresh_finished()
        for group in joined:
            try:
                async with group_ops_limiter():
                    await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:
                # Redis down: the membership expires with group_expiry instead.
                logger.warning(
                    "channels_tuning: could not leave group %s for %s",
                    group,
                    self.channel_name,
                    exc_info=True,
                )

    # ---------------------------------------------------------------- groups

    async def join_group(self, group: str) -> None:
        """Join ``group``; it is left automatically when the connection ends."""
        if self.channel_layer is None:
            raise RuntimeError("join_group() needs a channel layer (CHANNEL_LAYERS)")
        async with group_ops_limiter():
            await self.channel_layer.group_add(group, self.channel_name)
        if self._joined is None:
            self._joined = set()
        self._joined.add(group)

    async def leave_group(self, group: str) -> None:
        if self._joined is not None:
            self._joined.discard(group)
        if self.channel_layer is not None:
            await refresh_finished()
            async with group_ops_limiter():
                await self.channel_layer.group_discard(group, self.channel_name)

    def tracked_groups(self) -> frozenset[str]:
        return frozenset(self._joined or ())

    # ------------------------------------------------------------- outbound

    async def send(  # type: ignore[override]
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

    @property
    def send_queue_length(self) -> int:
        return len(self._outq) if self._outq is not None else 0

    def send_nowait(self, message: Message, coalesce_key: Any = None) -> None:
        """Send an ASGI ``websocket.send`` message, applying the overflow policy."""
        if self.closing:
            DROPPED.inc((self.consumer_label(), REASON_CLOSED))
            return
        queue = self._outq
        if queue is None:
            if self._can_write_now():
                self._write_now(message)
                return
            queue = self._new_queue()
        try:
            dropped = queue.put(message, coalesce_key)
        except Overflow:
            self._drop_backlog(REASON_SLOW_CONSUMER)
            DROPPED.inc((self.consumer_label(), REASON_SLOW_CONSUMER))
            self.close_nowait(CloseCode.SLOW_CONSUMER, "slow consumer", urgent=True)
            return
        if dropped:
            DROPPED.inc((self.consumer_label(), queue.last_drop_reason), dropped)
        self._ensure_writer()

    def close_nowait(self, code: int, reason: str | None = None, *, urgent: bool = False) -> None:
        """Close the connection with ``code``; logged once and counted."""
        if self.closing:
            return
        self.closing = True
        self._sent_close_code = int(code)
        CLOSES.inc((self.consumer_label(), str(code)))
        logger.log(
            log_level(code),
            "channels_tuning: closing %s %s with %s (%s)",
            self.consumer_label(),
            self.registry_key,
            code,
            reason or "-",
        )
        # A plain int: autobahn rejects IntEnum members.
        message: Message = {"type": "websocket.close", "code": int(code)}
        if reason:
            message["reason"] = reason
        self._write_or_queue(message, urgent=urgent)

    def _can_write_now(self) -> bool:
        mode = self._send_mode
        if mode == transport.FLOW:
            return not self.base_send.paused
        return mode == transport.DAPHNE

    def _write_now(self, message: Message) -> None:
        _count_out(message)
        if self._send_mode == transport.FLOW:
            self.base_send.write_nowait(message)
        else:
            transport.write_to_daphne(self.base_send, message)

    def _write_or_queue(self, message: Message, *, urgent: bool = False) -> None:
        """Control frames (accept, close): never dropped, kept in order with data.

        ``urgent`` writes at once even past the high-water mark (a close after
        the backlog was dropped: a few bytes, and the socket goes away)."""
        if not self._outq and (self._can_write_now() or (urgent and self._send_mode)):
            self._write_now(message)
            return
        queue = self._outq if self._outq is not None else self._new_queue()
        queue.put(message, force=True)
        self._ensure_writer()

    def _new_queue(self) -> OutboundQueue:
        # Created only when the client falls behind: idle connections carry none.
        t = self.tuning
        self._outq = OutboundQueue(
            t.send_queue_max_messages, t.send_queue_max_bytes, t.overflow_policy
        )
        return self._outq

    def _ensure_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_backlog())

    async def _write_backlog(self) -> None:
        queue = self._outq
        try:
            while queue:
                if self._send_mode == transport.FLOW:
                    if not await self.base_send.wait_writable():
                        break  # connection lost
                    while queue and not self.base_send.paused:
                        message = queue.get()
                        _count_out(message)
                        self.base_send.write_nowait(message)
                else:
                    message = queue.get()
                    _count_out(message)
                    await self.base_send(message)
        except Exception:
            logger.debug("channels_tuning: write to %s failed", self.registry_key, exc_info=True)
        finally:
            self._writer = None
            if self._outq is queue:
                self._drop_backlog(REASON_CLOSED)
                self._outq = None

    def _drop_backlog(self, reason: str) -> None:
        queue = self._outq
        if queue:
            dropped = queue.clear()
            if dropped:
                DROPPED.inc((self.consumer_label(), reason), dropped)

    # ---------------------------------------------------------- layer events

    def deliver_layer_message(self, message: Message) -> None:
        """Hand a channel-layer event to this consumer (called by the layer reader).

        Frames pre-encoded by :func:`channels_tuning.broadcast.broadcast` go straight
        to the send queue: no handler, no task, no copy (the message is shared by
        every local member and never mutated)."""
        kind = message["type"]
        if kind == FRAME_TYPE:
            self.send_nowait(message["frame"], message.get("key"))
            return
        if kind == FRAMES_TYPE:
            for frame in message["frames"]:
                self.send_nowait(frame)
            return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        if len(inbox) >= self.tuning.layer_inbox_max:
            DROPPED.inc((self.consumer_label(), REASON_INBOX_FULL))
            if self.tuning.overflow_policy == "disconnect":
                self.close_nowait(CloseCode.INBOX_OVERFLOW, "too many pending events")
            return
        inbox.append(message)
        if self._inbox_task is None:
            self._inbox_task = asyncio.get_running_loop().create_task(self._run_inbox(inbox))

    async def _run_inbox(self, inbox: deque[Message]) -> None:
        try:
            while inbox:
                await self.dispatch(inbox.popleft())
        except StopConsumer:
            pass
        finally:
            self._inbox_task = None
            if self._inbox is inbox and not inbox:
                self._inbox = None

    def _attach_layer(self) -> None:
        if self.channel_layer is None:
            return
        reader = process_reader_for(self.channel_layer)
        if reader is not None:
            reader.attach(self)
        else:
            self._layer_task = asyncio.get_running_loop().create_task(self._read_own_channel())

    def _detach_layer(self) -> None:
        if self.channel_layer is None:
            return
        reader = process_reader_for(self.channel_layer)
        if reader is not None:
            reader.detach(self)
        elif self._layer_task is not None:
            self._layer_task.cancel()
            self._layer_task = None

    async def _read_own_channel(self) -> None:
        # Layers without a process-wide channel (in-memory, third-party) need one
        # reader per connection.
        layer, channel = self.channel_layer, self.channel_name
        while True:
            self.deliver_layer_message(await layer.receive(channel))

    # ------------------------------------------------------------- helpers

    @classmethod
    def consumer_label(cls) -> str:
        """The consumer's class name as used in counters and logs."""
        return cls.__qualname__
