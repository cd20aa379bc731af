"""A tuned consumer's channel-layer events, without a task per idle connection.

Events come from the process reader (:mod:`channels_tuning.layers.redis.reader`), or, on
layers without one, from a reader task per connection that survives failed reads.
Frames pre-encoded by :func:`channels_tuning.broadcast.broadcast` go straight to the
send queue; other events wait in a bounded inbox (``LAYER_INBOX_MAX``) for a task
that exists only while some are pending, which runs their handlers in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from channels.exceptions import StopConsumer

from ..core.queue import REASON_INBOX_FULL
from ..layers.delivery import process_reader_for
from ..layers.frames import DISCONNECT_TYPE, FRAME_TYPE, FRAMES_TYPE, payload_frame
from ..runtime.counters import DROPPED, LAYER_ERRORS
from ..runtime.ratelog import RateLimitedLog
from ..wire.closecodes import MAX_REASON_BYTES, CloseCode, application_may_send
from ..wire.topics import topic_data_frame
from .memberships import MembershipMixin

logger = logging.getLogger("channels_tuning")
#: Redis decides how often a read fails (every 5 s of quiet with redis-py 8): a line
#: a minute at most; every failure is counted in channels_tuning_layer_errors_total.
_reader_log = RateLimitedLog(logger, interval=60.0, level=logging.WARNING)

Message = dict[str, Any]


class LayerInboxMixin(MembershipMixin):
    """Layer events for the handlers (the third layer of
    :class:`~channels_tuning.consumers.base.ManagedConnectionMixin`)."""

    _inbox: deque[Message] | None = None
    _inbox_task: asyncio.Task[None] | None = None
    _layer_task: asyncio.Task[None] | None = None

    @property
    def layer_backlog(self) -> int:
        """Channel-layer events waiting for this consumer's handlers."""
        inbox = self._inbox
        return len(inbox) if inbox is not None else 0

    @property
    def inbox_high_water(self) -> int:
        """Backlog at which the process reader stops taking messages from the layer
        (so producers see a full receiver and wait) rather than let it overflow: a
        tenth of ``LAYER_INBOX_MAX``, so the pause ends soon after handlers catch up."""
        return max(1, self.tuning.layer_inbox_max // 10)

    def deliver_layer_message(self, message: Message) -> None:
        """Hand a channel-layer event to this consumer (called by the layer reader).

        Frames pre-encoded by :func:`channels_tuning.broadcast.broadcast` go straight
        to the send queue: no handler, no task, no copy (the message is shared by
        every local member and never mutated)."""
        kind = message["type"]
        if kind == DISCONNECT_TYPE:  # disconnect_user(): now, not behind the inbox
            self._disconnect_from_layer(message)
            return
        if kind == FRAME_TYPE:
            if "exclude" in message and message["exclude"] == self.channel_name:
                return  # broadcast(exclude=...): the sender's own connection
            if "ack" in message:
                self._deliver_acknowledged(message)
                return
            if "offset" in message:
                if self._group_streams is not None:
                    self._group_streams.deliver(message, self.send_nowait)  # in order, once
                    return
                if not self.tuned_client:
                    # A plain page gets what broadcast() was given, not the envelope.
                    self.send_nowait(payload_frame(message), message.get("key"))
                    return
            elif not self.tuned_client and message.get("control"):
                return  # presence events: only for clients that asked for them
            elif self._subscriptions is not None and message.get("group") in self._subscriptions:
                # A topic the client asked for: in an envelope naming it.
                self.send_nowait(topic_data_frame(message), message.get("key"))
                return
            self.send_nowait(message["frame"], message.get("key"))
            return
        if kind == FRAMES_TYPE:
            if "exclude" in message and message["exclude"] == self.channel_name:
                return
            if self._subscriptions is not None and message.get("group") in self._subscriptions:
                for index in range(len(message["frames"])):
                    self.send_nowait(topic_data_frame(message, index))
                return
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

    def _deliver_acknowledged(self, message: Message) -> None:
        """A broadcast whose clients acknowledge it (``broadcast(ack=True)``): sent as
        an ordinary one here; the request layer of the consumer asks for the
        acknowledgement (:mod:`channels_tuning.layers.acks`)."""
        self.send_nowait(message["frame"], message.get("key"))

    def _disconnect_from_layer(self, message: Message) -> None:
        code, reason = message.get("code"), message.get("reason")
        # A forged event gets what disconnect_user() would have sent.
        close_code = code if application_may_send(code) else int(CloseCode.USER_DISCONNECTED)
        if isinstance(reason, str):  # within a close frame on every server
            reason = reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
        self.close_nowait(close_code, reason if isinstance(reason, str) else None)

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
        # Layers without a process-wide channel (channels-redis' own, third-party)
        # need one reader per connection. A failed read is counted and retried: with
        # redis-py 8, channels-redis' blocking read times out after 5 s of quiet
        # (channels_redis#422), and a reader task that ended there would leave its
        # consumer connected and deaf (plain Channels ends the consumer instead).
        layer, channel = self.channel_layer, self.channel_name
        backoff = 0.0
        while True:
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                LAYER_ERRORS.inc((f"receive:{type(error).__name__}",))
                _reader_log.log(
                    "channels_tuning: %s could not read its channel (%r); retrying",
                    self.consumer_label(),
                    error,
                )
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2 or 0.05)
                continue
            backoff = 0.0
            self.deliver_layer_message(message)
