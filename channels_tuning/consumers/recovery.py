"""A consumer's groups with history: replay on join, then in order, exactly once.

For each group with history it joins (``join_group`` or ``groups``), a consumer keeps
one :class:`~channels_tuning.core.offsets.GroupStream`. Joining goes:

1. the stream starts holding: live messages arriving from now on wait;
2. the membership is added (live messages may arrive from here);
3. once the connection is accepted, the group's position is read from the history,
   with the entries after the client's ``ct_recover`` offset if all are still kept
   (one round trip: :meth:`~channels_tuning.layers.history.History.recover`);
4. the client gets ``subscribed`` (epoch, offset, recovered), then the replay, then
   the held live messages after the replay's last offset (older ones are dropped:
   the replay had them).

Afterwards, a message that arrives after a gap (reordered by concurrent producers,
or dropped at a full inbox) is held with everything after it while the gap is
fetched from the history (one fetch per process for all its connections), then all
are sent in order; if the gap is no longer kept, the client is told
``recovered: false``. Counted in ``channels_tuning_recovery_total`` by outcome.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..core.offsets import GroupStream, Offer
from ..core.state import ConnectionState
from ..layers.history import HistoryPolicy
from ..observability.stats import RECOVERY, REPLAYED
from ..wire.offsets import StreamPosition, data_frame, subscribed_frame

logger = logging.getLogger("channels_tuning")

#: Running recoveries and gap fills (referenced so that they are not collected).
_tasks: set[asyncio.Task[None]] = set()


def _spawn(coroutine: Any) -> None:
    task = asyncio.get_running_loop().create_task(coroutine)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


class GroupStreams:
    """The streams of one connection, by group; created at its first such join."""

    __slots__ = ("binary", "consumer", "requests", "streams", "waiting")

    def __init__(self, consumer: Any, requests: dict[str, StreamPosition]) -> None:
        self.consumer = consumer
        #: Control frames in the consumer's frame type (binary: protobuf envelopes).
        self.binary = not type(consumer).accept_text_frames
        self.requests = requests
        self.streams: dict[str, GroupStream] = {}
        #: Groups joined before the connection was accepted: recovered at accept.
        self.waiting: list[tuple[str, HistoryPolicy]] = []

    # ------------------------------------------------------------- joining

    def start(self, group: str) -> GroupStream:
        """Before the membership is added: hold what arrives from now on."""
        stream = self.streams[group] = GroupStream()
        return stream

    def forget(self, group: str) -> None:
        self.streams.pop(group, None)

    async def joined(self, group: str, policy: HistoryPolicy) -> None:
        """After the membership is added: recover now, or at accept."""
        if self.consumer.core.state is ConnectionState.CONNECTING:
            self.waiting.append((group, policy))
            return
        await self._recover(group, policy)

    def accepted(self) -> None:
        waiting, self.waiting = self.waiting, []
        for group, policy in waiting:
            _spawn(self._recover(group, policy))

    async def _recover(self, group: str, policy: HistoryPolicy) -> None:
        stream = self.streams.get(group)
        if stream is None:
            return  # left meanwhile
        since = self.requests.pop(group, None)
        send = self.consumer.send_nowait
        try:
            recovery = await self.consumer.channel_layer.history.recover(group, since, policy)
        except Exception as error:
            # Redis away: live messages go on; the first one starts a new epoch for
            # this connection, which tells the client recovered: false.
            RECOVERY.inc(("failed",))
            logger.warning("channels_tuning: history of %s unreadable: %r", group, error)
            self._release(group, stream, "", 0)
            return
        if since is not None:
            RECOVERY.inc(("recovered" if recovery.recovered else "not_recovered",))
        binary = self.binary
        send(
            subscribed_frame(
                group, recovery.offset, recovery.epoch, recovery.recovered, binary=binary
            )
        )
        epoch = recovery.epoch
        for offset, data, is_binary in recovery.entries:
            send(data_frame(group, offset, epoch, data, binary=is_binary))
        if recovery.entries:
            REPLAYED.inc((), len(recovery.entries))
        self._release(group, stream, epoch, recovery.offset)

    # --------------------------------------------------------- live messages

    def deliver(self, message: dict[str, Any]) -> None:
        """A broadcast to a group with history (it carries group, epoch, offset)."""
        group = message["group"]
        stream = self.streams.get(group)
        if stream is None:
            self.consumer.send_nowait(message["frame"])
            return
        self._offer(group, stream, message["epoch"], message["offset"], message["frame"])

    def _offer(self, group: str, stream: GroupStream, epoch: str, offset: int, frame: Any) -> None:
        outcome = stream.offer(epoch, offset, frame)
        if outcome is Offer.SEND:
            self.consumer.send_nowait(frame)
        elif outcome is Offer.GAP:
            _spawn(self._fill(group, stream, offset - 1))
        elif outcome is Offer.DUPLICATE:
            RECOVERY.inc(("duplicate",))
        elif outcome is Offer.RESET:
            RECOVERY.inc(("epoch_changed",))
            self.consumer.send_nowait(
                subscribed_frame(group, offset - 1, epoch, False, binary=self.binary)
            )
            self.consumer.send_nowait(frame)

    async def _fill(self, group: str, stream: GroupStream, last: int) -> None:
        first, epoch = stream.offset + 1, stream.epoch
        try:
            entries = await self.consumer.channel_layer.history.fetch(group, first, last)
        except Exception:
            entries = []
        if len(entries) == last - first + 1:
            RECOVERY.inc(("gap_filled",))
            REPLAYED.inc((), len(entries))
            for offset, data, is_binary in entries:
                self.consumer.send_nowait(data_frame(group, offset, epoch, data, binary=is_binary))
        else:
            RECOVERY.inc(("gap_lost",))
            self.consumer.send_nowait(
                subscribed_frame(group, last, epoch, False, binary=self.binary)
            )
        self._release(group, stream, epoch, last)

    def _release(self, group: str, stream: GroupStream, epoch: str, offset: int) -> None:
        for held_epoch, held_offset, frame in stream.resume(epoch, offset):
            self._offer(group, stream, held_epoch, held_offset, frame)
