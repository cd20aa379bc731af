"""Channel-layer messages for every consumer of a process, read by one task.

Plain Channels gives every consumer its own reader (``await_many_dispatch``
plus channels-redis' receive machinery: about four asyncio tasks per idle
connection). channels-redis already delivers all of a process's messages
through one Redis key (``specific.<client_prefix>!``), so one task per process
pops them and hands each to its consumer by channel name.

That task also serves plain Channels consumers of the same process (with the tuned
Redis layer, whose ``receive()`` waits on what this task hands it): one reader pops
the inbox, so a process that mixes plain and tuned consumers, as a gradual migration
does, loses nothing to a second reader taking the other side's messages.

It isolates consumers from Redis trouble too: with redis-py 8 an idle blocking read
times out every few seconds (channels_redis#422) and a restart of Redis raises
connection errors. Plain Channels crashes a consumer on each; here the reader counts
the error, backs off and retries, and every consumer stays connected.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import weakref
from typing import Any

from ...compat import channels_redis as upstream
from ...runtime.counters import DROPPED, LAYER_ERRORS
from ...runtime.writebatch import WriteBatch
from ..capabilities import message_expiry, process_liveness
from ..frames import WRITTEN_AT_ONCE
from . import keys
from .membership import restore_memberships
from .parts import in_parts

logger = logging.getLogger(__name__)

#: A message that was already waiting (the read returned within this many seconds)
#: means a backlog: the reader then takes what else is waiting too, in one round
#: trip. A reader that waits for its messages costs no extra round trip.
BURST_GAP = 0.005


class ProcessLayerReader:
    """Reads ``specific.<client_prefix>!`` of a channels-redis layer for this process."""

    #: Longest wait between attempts to read again after a Redis error: delivery
    #: resumes within about this long of Redis accepting connections again.
    max_backoff = 1.0
    #: A consumer whose handlers make no progress for this long no longer holds the
    #: reader back: reading resumes and its inbox's overflow policy applies (4002).
    max_stall = 2.0
    #: Messages handed on together at most, their frames written to each subscriber
    #: with one system call (:mod:`channels_tuning.runtime.writebatch`).
    batch_limit = 64
    #: Channels of this process whose messages wait for a first ``receive()`` (as
    #: channels-redis keeps them), at most; beyond, a message is dropped and counted.
    max_unclaimed_channels = 1000
    #: Channels recently left by their consumer, remembered so that a message that
    #: raced the disconnect is dropped (and counted) at once instead of waiting.
    max_gone_channels = 10_000

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.process_channel = keys.process_channel(layer)
        #: Tuned consumers by channel: messages are handed to them directly.
        self.consumers: dict[str, Any] = {}
        #: Channels of plain Channels consumers of this process (they wait in receive()).
        self.plain_channels: set[str] = set()
        #: Tuned consumers whose handlers' backlog reached its high-water mark, with
        #: the smallest backlog seen and when it was seen (their progress).
        self.congested: dict[str, tuple[Any, int, float]] = {}
        #: Handed to attached consumers' transports: a burst's frames for one
        #: subscriber leave in one send (runtime.writebatch).
        self.write_batch = WriteBatch()
        self._task: asyncio.Task[None] | None = None
        self._liveness: asyncio.Task[None] | None = None
        self._restore: asyncio.Task[None] | None = None
        #: Tasks told to end (cancelled), until they have: :meth:`pause` waits for
        #: them all, and each knows it must end even when the library turned the
        #: cancellation into its own error (Python 3.10 has no ``Task.cancelling()``).
        self._ending: set[asyncio.Task[None]] = set()
        #: The last batch found more messages waiting: look again.
        self._more_waiting = False
        #: Messages for channels of this process no one reads yet, by channel: (when
        #: the first arrived, the messages). Bounded; expired after the layer's expiry.
        self._unclaimed: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._pruned_at = 0.0
        self._gone: collections.OrderedDict[str, None] = collections.OrderedDict()

    def attach(self, consumer: Any) -> None:
        self.consumers[consumer.channel_name] = consumer
        consumer.transport.use_write_batch(self.write_batch)
        self._ensure_running()

    def detach(self, consumer: Any) -> None:
        channel = consumer.channel_name
        if self.consumers.get(channel) is consumer:
            del self.consumers[channel]
            self._forget(channel)
        self.congested.pop(channel, None)
        self._stop_if_idle()

    async def receive_for_plain_consumer(self, channel: str) -> dict[str, Any]:
        """A plain consumer's ``receive()``: the next message this task read for it.

        Its channel counts as live from its first receive() until a receive() is
        cancelled (Channels cancels it when the consumer ends)."""
        self.plain_channels.add(channel)
        self._ensure_running()
        buffers = upstream.receive_buffers(self.layer)
        held = self._unclaimed.pop(channel, None)
        if held is not None:
            for waiting in held[1]:
                buffers[channel].put_nowait(waiting)
        try:
            message: dict[str, Any] = await buffers[channel].get()
        except asyncio.CancelledError:
            self.plain_channels.discard(channel)
            buffers.pop(channel, None)
            self._forget(channel)
            self._stop_if_idle()
            raise
        return message

    def _start_restore(self) -> None:
        if self._restore is None or self._restore.done():
            self._restore = asyncio.get_running_loop().create_task(
                self._restore_memberships(), name="channels_tuning.restore_memberships"
            )

    async def _restore_memberships(self) -> None:
        """Re-add this process' memberships (after Redis lost them, or after producers
        took this process for gone) as soon as Redis answers (tried every 0.25 s)."""
        while self.consumers:
            self._end_if_told()
            try:
                restored = await restore_memberships(self.layer, list(self.consumers.values()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._end_if_told(exc)
                await asyncio.sleep(0.25)
                continue
            logger.warning("channels_tuning: re-added %d group memberships", restored)
            return

    def _ensure_running(self) -> None:
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name="channels_tuning.layer_reader")
            if self._liveness is not None:
                self._end(self._liveness)
            self._liveness = loop.create_task(self._say_alive(), name="channels_tuning.alive")

    async def _say_alive(self) -> None:
        """While this process reads its inbox, say so every second (``mark_alive``):
        producers then skip and count the inboxes of processes that stopped (killed,
        or stalled past the liveness TTL) instead of writing into them unseen."""
        liveness = process_liveness(self.layer)
        if liveness is None:
            return
        mark = liveness.mark_alive
        said = False
        while True:
            self._end_if_told()
            try:
                was_alive = await mark()
                if said and not was_alive:
                    # Our key had expired (the loop stalled, or Redis was away): producers
                    # counted us as gone and removed our members. Re-add them now.
                    LAYER_ERRORS.inc(("seen_as_gone",))
                    self._start_restore()
                said = True
            except Exception as exc:  # Redis down: said again at the next second
                self._end_if_told(exc)
                LAYER_ERRORS.inc((f"alive:{type(exc).__name__}",))
            await asyncio.sleep(1.0)

    async def pause(self) -> None:
        """Stop reading (the layer's pools are closing): the tasks end, so none reopens
        a connection or outlives its event loop. What was read and not yet received
        stays, and the next ``receive()`` (or consumer) starts reading again: channels
        of this process may be received on another event loop after a close
        (channels-redis' ``test_double_receive``)."""
        for task in (self._task, self._liveness, self._restore):
            if task is not None:
                self._end(task)
        self._task = self._liveness = self._restore = None
        loop = asyncio.get_running_loop()
        for gone in [task for task in self._ending if task.get_loop().is_closed()]:
            self._ending.discard(gone)  # its loop will never run it again
        here = {task for task in self._ending if task.get_loop() is loop}
        deadline = loop.time() + 5
        while here and loop.time() < deadline:
            _, here = await asyncio.wait(here, timeout=0.05)
            for task in here:
                # A library swallowed the cancellation (channels-redis 4.3 with
                # redis-py 8.2 on Python 3.11: every close waited out its 5 s, the
                # reader still reading): deliver it again.
                task.cancel()

    def _stop_if_idle(self) -> None:
        if not self.consumers and not self.plain_channels and self._task is not None:
            # No one left to read for: stop, so an idle process keeps no Redis read open.
            for task in (self._task, self._liveness, self._restore):
                if task is not None:
                    self._end(task)
            self._task = self._liveness = self._restore = None

    def _end(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        if not task.done():
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    def _end_if_told(self, exc: BaseException | None = None) -> None:
        """Raise CancelledError if the running task was told to end: the library may
        have turned our cancellation into its own error (a read cut short by it) or
        swallowed it, and the task must still end, not retry. Each loop of these
        tasks asks at every turn."""
        if asyncio.current_task() in self._ending or _being_cancelled():
            raise asyncio.CancelledError from exc

    async def _run(self) -> None:
        backoff = 0.1
        loop = asyncio.get_running_loop()
        while self.consumers or self.plain_channels:
            self._end_if_told()
            if self.congested:
                await self._wait_for_handlers()
            asked_at = loop.time()
            try:
                target, message = await upstream.receive_single(self.layer, self.process_channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._end_if_told(exc)
                kind = type(exc).__name__
                LAYER_ERRORS.inc((kind,))
                if kind == "TimeoutError":
                    # redis-py's socket timeout fired on an idle blocking read: not an error.
                    continue
                logger.warning(
                    "channels_tuning: channel layer read failed (%s: %s); retrying in %.1f s",
                    kind,
                    exc,
                    backoff,
                )
                # Redis may be restarting: its memberships would be gone with it.
                # Put them back as soon as it answers, not at the next refresh.
                self._start_restore()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 0.1
            batch = [(target, message)]
            # Not while plain Channels consumers read here: their per-channel buffers
            # drop the oldest message silently when a batch outruns their handlers.
            if not self.plain_channels and (
                self._more_waiting or loop.time() - asked_at < BURST_GAP
            ):
                # A burst: take what is already waiting too, in one round trip.
                try:
                    batch += await upstream.receive_waiting(
                        self.layer, self.process_channel, self.batch_limit - 1
                    )
                except Exception:
                    # Still in Redis, or read by the next receive_single.
                    logger.debug("channels_tuning: batch read failed", exc_info=True)
                self._more_waiting = len(batch) > 1
            for_handlers = any(m.get("type") not in WRITTEN_AT_ONCE for _, m in batch)
            for index, part in enumerate(in_parts(batch)):
                if index:
                    await asyncio.sleep(0)  # the loop runs between parts (.parts)
                with self.write_batch.collect():
                    for channels, message in part:
                        for channel in channels:
                            self._deliver(channel, message)
                    if for_handlers:
                        self.write_batch.through_next_turn()  # handlers write next turn
            if for_handlers:
                # Ask Redis again once those handlers ran: asked while they run, the
                # answer would wait for them and look like no burst (BURST_GAP), and
                # a burst would be read one message at a time.
                await asyncio.sleep(0)

    async def _wait_for_handlers(self) -> None:
        """Backpressure from handlers to producers: while a consumer's handlers are
        behind, take no more messages from Redis, so this process' inbox fills to its
        ``capacity`` and producers see a full receiver (and wait, or count a loss).
        Reading resumes as soon as every such consumer is below its high-water mark,
        or has made no progress for ``max_stall`` seconds (a stuck handler must not
        hold the other consumers of the process)."""
        loop = asyncio.get_running_loop()
        while self.congested:
            await asyncio.sleep(0.002)
            now = loop.time()
            for channel, (consumer, lowest, since) in list(self.congested.items()):
                backlog = consumer.layer_backlog
                if consumer.closing or backlog < consumer.inbox_high_water:
                    del self.congested[channel]
                elif backlog < lowest:
                    self.congested[channel] = (consumer, backlog, now)
                elif now - since > self.max_stall:
                    del self.congested[channel]
                    LAYER_ERRORS.inc(("handler_stalled",))

    def _deliver(self, channel: str, message: dict[str, Any]) -> None:
        consumer = self.consumers.get(channel)
        if consumer is not None:
            consumer.deliver_layer_message(message)
            backlog = consumer.layer_backlog
            if backlog >= consumer.inbox_high_water and channel not in self.congested:
                self.congested[channel] = (consumer, backlog, asyncio.get_running_loop().time())
            return
        if channel in self.plain_channels:
            # A plain Channels consumer of this process: its receive() takes it from
            # channels-redis' bounded per-channel buffer, as channels-redis would.
            upstream.receive_buffers(self.layer)[channel].put_nowait(message)
        elif channel in self._gone:
            # Its consumer has gone (a broadcast raced a disconnect).
            DROPPED.inc(("-", "no_receiver"))
        else:
            self._hold(channel, message)

    def _hold(self, channel: str, message: dict[str, Any]) -> None:
        """A message for a channel of this process that nobody reads yet (a worker's
        ``new_channel()`` before its first ``receive()``): kept for that receive, as
        channels-redis keeps it, but bounded (per channel by the layer's capacity, in
        channels, and in time by its expiry) and counted when dropped."""
        now = time.monotonic()
        if now - self._pruned_at > 1.0:
            self._prune(now)
        entry = self._unclaimed.get(channel)
        if entry is None:
            if len(self._unclaimed) >= self.max_unclaimed_channels:
                DROPPED.inc(("-", "no_receiver"))
                return
            entry = self._unclaimed[channel] = (now, [])
        if len(entry[1]) >= self.layer.get_capacity(channel):
            DROPPED.inc(("-", "no_receiver"))
            return
        entry[1].append(message)

    def _prune(self, now: float) -> None:
        self._pruned_at = now
        expiry = message_expiry(self.layer)
        for channel, (since, messages) in list(self._unclaimed.items()):
            if now - since > expiry:
                del self._unclaimed[channel]
                DROPPED.inc(("-", "no_receiver"), len(messages))

    def _forget(self, channel: str) -> None:
        """``channel``'s reader has gone: later messages for it are dropped at once."""
        self._unclaimed.pop(channel, None)
        gone = self._gone
        gone[channel] = None
        if len(gone) > self.max_gone_channels:
            gone.popitem(last=False)


_readers: weakref.WeakKeyDictionary[Any, ProcessLayerReader] = weakref.WeakKeyDictionary()


def _being_cancelled() -> bool:
    """Whether the running task has a cancellation pending (Python 3.11+; on 3.10
    the reader's own record of the tasks it cancelled tells)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling is not None and cancelling())


async def pause_process_reader(layer: Any) -> None:
    """Stop the tasks of ``layer``'s process reader, if it has one (its pools are
    closing); what it holds stays for the next read."""
    reader = _readers.get(layer)
    if reader is not None:
        await reader.pause()


def reader_for(layer: Any) -> ProcessLayerReader | None:
    """This process' reader of a tuned Redis layer's inbox (made at first use), or
    None when channels-redis' internals it needs changed (compat.channels_redis)."""
    if not upstream.is_redis_layer(layer) or not upstream.features["process_reader"]:
        return None
    reader = _readers.get(layer)
    if reader is None:
        reader = _readers[layer] = ProcessLayerReader(layer)
    return reader
