"""channels-redis' pub/sub layer with the package's bounds and accounting.

``channels_redis.pubsub.RedisPubSubChannelLayer`` publishes a group message once per
group (Redis fans it out to every subscribed process), which makes bursts cheap for
Redis, but each process puts every message it receives into an unbounded
``asyncio.Queue`` per channel and deserializes it once per member. Measured earlier
with plain Channels: a burst of 2000 messages to 500 subscribers was 100 % delivered
with a p99 latency of 172 s, the queues holding the whole burst. Here
(``BACKEND: "channels_tuning.layers.RedisPubSubChannelLayer"``, same ``CONFIG``):

- **No unbounded buffer.** Tuned consumers are handed each message as it arrives
  (no queue, no task per connection, one deserialization per message for all local
  members), into their own bounds: the send queue (``SEND_QUEUE_MAX_MESSAGES`` /
  ``_BYTES``) for ``broadcast()`` frames, the event inbox (``LAYER_INBOX_MAX``) for
  handler events, each with its overflow policy and counted drops. Plain Channels
  consumers get a queue bounded by ``capacity`` (100, as channels-redis' core layer);
  past it a message is dropped and counted
  (``channels_tuning_dropped_messages_total{reason="layer_capacity"}``).
- **Encode once.** ``broadcast()`` publishes one ready frame per group; each process
  deserializes it once and shares it among its members.
- **What pub/sub can report.** ``group_send_report`` (and ``broadcast()``) returns the
  number of processes Redis delivered the message to (``PUBLISH``'s answer) in
  ``processes``; how many consumers received it is not known to the producer
  (``receivers_known`` is False). There is no "full" receiver: a producer is never
  slowed, so ``on_full`` has nothing to wait for; losses are counted where they
  happen, in the receiving process.
- **Group hygiene.** Memberships live in the process and in its Redis subscriptions:
  a consumer that ends leaves its groups (as everywhere in the package), a process that
  dies loses its subscriptions with its connection. Nothing to expire.

What pub/sub cannot promise, and the core layer can: a message published while a
process is disconnected from Redis (a restart, a network blip) is gone for that
process, silently (Redis does not queue pub/sub messages); a process that reads too
slowly is disconnected by Redis at its ``client-output-buffer-limit pubsub`` (32 MB by
default) and loses what was buffered there. The package counts reconnections of the
subscriber connection (``channels_tuning_layer_receive_errors_total``), not the
messages missed during them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer as ChannelsPubSubLayer
from channels_redis.pubsub import RedisPubSubLoopLayer, RedisSingleShardConnection

from ..compat import channels_redis as upstream
from ..runtime.counters import DROPPED, GROUP_SENDS, LAYER_ERRORS, group_label
from ..runtime.ratelog import RateLimitedLog
from ..runtime.writebatch import WriteBatch
from . import capabilities
from .membership import TrackedMembershipsMixin
from .redis import serializers as _registered  # noqa: F401  (the "channels_tuning" format)
from .report import DeliveryReport
from .sending import ReportingGroupSendMixin

#: ``capacity`` default: messages a plain consumer's queue holds.
DEFAULT_CAPACITY = 100
REASON_CAPACITY = "layer_capacity"
#: Messages already read from the subscriber connection handed on together at most.
BATCH_LIMIT = 64

_log = RateLimitedLog(logging.getLogger("channels_tuning.layers"))


class _Shard(RedisSingleShardConnection):
    """One Redis connection of the loop layer: delivers as messages arrive."""

    channel_layer: TunedPubSubLoopLayer

    async def publish(self, channel: str, message: bytes) -> int:
        async with self._lock:
            self._ensure_redis()
            receivers: int = await self._redis.publish(channel, message)
            return receivers

    async def _do_receiving(self) -> None:
        # channels-redis' loop, with its errors counted and logged once a second
        # instead of a traceback each (Redis restarting is not a bug).
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    pubsub = self._pubsub
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    if message is None:
                        continue
                    # A burst: take what else is waiting (up to BATCH_LIMIT), then hand
                    # it on with each subscriber's frames in one system call.
                    batch = [message]
                    while len(batch) < BATCH_LIMIT:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=0.0
                        )
                        if message is None:
                            break
                        batch.append(message)
                    with self.channel_layer.write_batch.collect():
                        for message in batch:
                            self._receive_message(message)
                else:
                    await asyncio.sleep(0.1)
            except (asyncio.CancelledError, asyncio.TimeoutError, GeneratorExit):
                raise
            except Exception as exc:
                LAYER_ERRORS.inc((f"pubsub:{type(exc).__name__}",))
                _log.log("channels_tuning: pub/sub subscriber connection: %r; retrying", exc)
                await asyncio.sleep(1)

    def _receive_message(self, message: Any) -> None:
        if message is None:
            return
        name = message["channel"]
        if isinstance(name, bytes):
            name = name.decode()
        self.channel_layer.dispatch(name, message["data"])


class TunedPubSubLoopLayer(RedisPubSubLoopLayer):
    """channels-redis' per-event-loop pub/sub layer, delivering into bounds."""

    def __init__(self, *args: Any, capacity: int = DEFAULT_CAPACITY, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = capacity
        upstream_shards: list[Any] = self._shards  # type: ignore[has-type]
        self._shards = [_Shard(shard.host, self) for shard in upstream_shards]
        #: Tuned consumers by channel: handed their messages directly.
        self.consumers: dict[str, Any] = {}
        #: Handed to those consumers' transports: a burst leaves in one send each.
        self.write_batch = WriteBatch()

    async def _subscribe_to_channel(self, channel: str) -> None:
        self.channels[channel] = asyncio.Queue(maxsize=self.capacity)
        await self._get_shard(channel).subscribe(channel)

    def dispatch(self, name: str, data: bytes) -> None:
        """A message from Redis for channel or group channel ``name``."""
        members = self.groups.get(name)
        targets = members if members is not None else (name,)
        decoded: Any = None
        for channel in targets:
            consumer = self.consumers.get(channel)
            if consumer is not None:
                if decoded is None:  # once for every local member
                    decoded = self.channel_layer.deserialize(data)
                consumer.deliver_layer_message(decoded)
                continue
            queue = self.channels.get(channel)
            if queue is None:
                continue  # its consumer has gone (a message raced a disconnect)
            try:
                queue.put_nowait(data)
            except asyncio.QueueFull:
                DROPPED.inc(("-", REASON_CAPACITY))


class RedisPubSubChannelLayer(
    TrackedMembershipsMixin, ReportingGroupSendMixin, ChannelsPubSubLayer
):
    """``channels_redis.pubsub.RedisPubSubChannelLayer`` with bounded delivery.

    Extra ``CONFIG``: ``capacity`` (messages a plain consumer's queue holds, 100),
    ``on_full`` and ``group_send_timeout`` as on the other tuned layers (a pub/sub
    send is never "full", so they only matter for API compatibility)."""

    #: How many consumers got a group message is unknown to a pub/sub producer.
    receivers_known = False

    def _get_layer(self) -> Any:
        if not upstream.features["pubsub_delivery"]:
            return super()._get_layer()  # channels-redis changed: its own, unbounded
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = TunedPubSubLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            upstream.wrap_close(self, loop)
        return layer

    # Direct delivery (layers.capabilities.DirectDelivery), as the Redis reader does.
    @property
    def process_delivery(self) -> bool:
        """False when channels-redis' internals changed: consumers then read their
        own channels through ``receive()``, as with channels-redis' layer."""
        return bool(upstream.features["pubsub_delivery"])

    def attach(self, consumer: Any) -> None:
        layer = self._get_layer()
        layer.consumers[consumer.channel_name] = consumer
        consumer.transport.use_write_batch(layer.write_batch)

    def detach(self, consumer: Any) -> None:
        layer = self._get_layer()
        channel = consumer.channel_name
        if layer.consumers.get(channel) is consumer:
            del layer.consumers[channel]
        # new_channel() subscribed it; channels-redis unsubscribes only in receive(),
        # which a tuned consumer never calls.
        if channel in layer.channels:
            del layer.channels[channel]
            task = asyncio.get_running_loop().create_task(
                layer._get_shard(channel).unsubscribe(channel)
            )
            task.add_done_callback(_count_failure)

    async def add_membership(self, group: str, channel: str) -> None:
        capabilities.require_valid_group_name(self, group)
        await self._get_layer().group_add(group, channel)

    async def discard_membership(self, group: str, channel: str) -> None:
        await self._get_layer().group_discard(group, channel)

    async def group_send_report(
        self, group: str, message: dict[str, Any], only: dict[str, list[str]] | None = None
    ) -> DeliveryReport:
        """Publish once; ``processes``: how many subscribed processes Redis reached."""
        assert isinstance(message, dict), "Message is not a dict"
        capabilities.require_valid_group_name(self, group)
        layer = self._get_layer()
        group_channel = layer._get_group_channel_name(group)
        shard = layer._get_shard(group_channel)
        processes = await shard.publish(group_channel, self.serialize(message))
        GROUP_SENDS.inc((group_label(group),))
        return DeliveryReport(group, processes=processes, receivers_known=False)


def _count_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        LAYER_ERRORS.inc((f"unsubscribe:{type(task.exception()).__name__}",))
