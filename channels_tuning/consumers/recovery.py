"""A consumer's groups with history: replay on join, then in order, exactly once.

For each group with history it joins (``join_group`` or ``groups``), a consumer keeps
one :class:`~channels_tuning.core.offsets.GroupStream`. Joining goes:

1. the stream starts holding: live messages arriving from now on wait;
2. the group's position is read from the history, with whether the entries after
   the client's ``ct_recover`` offset are all still kept and the first page of
   them (one round trip: :meth:`~channels_tuning.layers.history.History.recover`),
   *before* the membership: every message numbered after the read is then this
   connection's;
3. the membership is added (live messages may arrive from here);
4. once the connection is accepted, the client gets ``subscribed`` (epoch, offset,
   recovered), then the replay, then the held live messages after the read's offset
   (older ones are dropped: the replay had them, or they were numbered before the
   join); a message numbered after the read but sent before the membership is
   fetched from the history when the next one shows the gap.

The replay is bounded (:meth:`GroupStreams._replay`): it runs after the accept, so
the connection is registered and counted against every limit; it is read page by
page (``REPLAY_PAGE``) and each frame waits for room in half the send queue, so one
replay costs a page and the queue's bound, whatever the backlog; at most
:data:`MAX_CONCURRENT_REPLAYS` run per process. A replay that cannot go on (the
client does not read, a frame larger than the queue, the entries trimmed meanwhile,
more live messages held than :data:`MAX_HELD_DURING_REPLAY`) ends with
``subscribed`` ``recovered: false`` at the group's offset: the client goes on from
there, told it missed something, instead of reconnecting into the same replay.

Afterwards, a message that arrives after a gap (reordered by concurrent producers,
or dropped at a full inbox) is held with everything after it while the gap is
fetched from the history (one fetch per process for all its connections), then all
are sent in order; if the gap is no longer kept, the client is told
``recovered: false``. Counted in ``channels_tuning_recovery_total`` by outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..core.connection import ConnectionCore
from ..core.offsets import GroupStream, Offer
from ..core.queue import message_size
from ..core.state import ConnectionState
from ..layers.history import REPLAY_PAGE, REPLAY_PAGE_BYTES, History, HistoryPolicy, Recovery
from ..runtime.asyncutil import loop_semaphore
from ..runtime.counters import RECOVERY, REPLAYED
from ..wire.offsets import StreamPosition, data_frame, subscribed_frame
from ..wire.topics import subscribed_reply

logger = logging.getLogger("channels_tuning")

#: How GroupStreams sends a frame: the consumer's ``send_nowait``.
Send = Callable[[dict[str, Any]], None]
#: Whether a frame of that many bytes may be queued, after waiting (at most the
#: given seconds) for the client to read: the consumer's ``room_for``.
Room = Callable[[int, float], Awaitable[bool]]

#: Replays running at once in a process (more wait their turn).
MAX_CONCURRENT_REPLAYS = 16
#: Seconds one replay may take once it runs: a client that reads a frame now and
#: then cannot keep a replay slot for long.
REPLAY_TIMEOUT = 30.0
#: Live messages held while a replay runs beyond which the replay ends (recovered:
#: false): a client that reads slower than the group is written to never catches up.
MAX_HELD_DURING_REPLAY = 1000

#: Running recoveries and gap fills (referenced so that they are not collected).
_tasks: set[asyncio.Task[None]] = set()


def _spawn(coroutine: Any) -> None:
    task = asyncio.get_running_loop().create_task(coroutine)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


class GroupStreams:
    """The streams of one connection, by group; created at its first such join.

    It holds no reference to its consumer (so no cycle for the collector to find):
    each call that may send is given the consumer's ``send_nowait``."""

    __slots__ = (
        "binary",
        "core",
        "history",
        "latest",
        "read",
        "replies",
        "requests",
        "starts",
        "streams",
        "waiting",
    )

    def __init__(
        self,
        history: History,
        core: ConnectionCore,
        requests: dict[str, StreamPosition],
        *,
        binary: bool,
    ) -> None:
        self.history = history
        self.core = core
        #: Control frames in the consumer's frame type (binary: protobuf envelopes).
        self.binary = binary
        self.requests = requests
        #: Topics subscribed in cache mode, by the count of latest messages they get.
        self.latest: dict[str, int] = {}
        #: The id of the client's subscribe request, by topic (answered by subscribed).
        self.replies: dict[str, int] = {}
        #: Cache mode: the offset after which the latest messages follow, by topic (the
        #: client has nothing yet: subscribed says it stands there, not at the top).
        self.starts: dict[str, int] = {}
        self.streams: dict[str, GroupStream] = {}
        #: Where each joining group stood when read (None: unreadable), until announced.
        self.read: dict[str, Recovery | None] = {}
        #: Groups joined before the connection was accepted: announced at accept.
        self.waiting: list[str] = []

    # ------------------------------------------------------------- joining

    async def start(self, group: str, policy: HistoryPolicy) -> None:
        """Before the membership is added: hold what arrives from now on, and read
        where the group stands (with what the client missed, if it asked).

        Read *before* the membership, so that every message numbered after the read
        reaches this connection: live if its send came after the membership, from
        the history (a gap fill at the next live message) if it came before. Read
        after, a loaded server would number messages that were sent to this member
        as already known to it, and drop them."""
        self.streams[group] = GroupStream()
        since = self.requests.pop(group, None)
        latest = self.latest.pop(group, 0)
        try:
            if since is None and latest:
                # Cache mode: "recover" from `latest` before the top (one more read).
                top = await self.history.recover(group, None, policy)
                since = StreamPosition(top.epoch, max(0, top.offset - latest))
                self.starts[group] = since.offset
            recovery = await self.history.recover(group, since, policy)
        except Exception as error:
            # Redis away: live messages go on; the first one starts a new epoch for
            # this connection, which tells the client recovered: false.
            RECOVERY.inc(("failed",))
            logger.warning("channels_tuning: history of %s unreadable: %r", group, error)
            self.read[group] = None
            return
        if since is not None:
            RECOVERY.inc(("recovered" if recovery.recovered else "not_recovered",))
        self.read[group] = recovery

    def forget(self, group: str) -> None:
        self.streams.pop(group, None)
        self.read.pop(group, None)
        self.replies.pop(group, None)
        self.latest.pop(group, None)
        self.starts.pop(group, None)

    def joined(self, group: str, send: Send, room: Room) -> None:
        """After the membership is added: tell the client now, or at accept (frames
        cannot precede the accept)."""
        if self.core.state is ConnectionState.CONNECTING:
            self.waiting.append(group)
            return
        self._announce(group, send, room)

    def accepted(self, send: Send, room: Room) -> None:
        waiting, self.waiting = self.waiting, []
        for group in waiting:
            self._announce(group, send, room)

    def _announce(self, group: str, send: Send, room: Room) -> None:
        """``subscribed``, the replay, then what was held: in order, once."""
        stream = self.streams.get(group)
        if stream is None or group not in self.read:
            return  # left meanwhile
        recovery = self.read.pop(group)
        request_id = self.replies.pop(group, 0)
        if recovery is None:
            if request_id:  # the subscribe request is answered, without a position
                send(subscribed_reply(group, request_id, binary=self.binary))
            self._release(group, stream, "", 0, send)  # the history could not be read
            return
        epoch = recovery.epoch
        start = self.starts.pop(group, None)
        send(
            subscribed_frame(
                group,
                recovery.offset if start is None or not recovery.recovered else start,
                epoch,
                recovery.recovered,
                binary=self.binary,
                request_id=request_id,
            )
        )
        if recovery.entries:
            _spawn(self._replay(group, stream, recovery, send, room))
        else:
            self._release(group, stream, epoch, recovery.offset, send)

    async def _replay(
        self, group: str, stream: GroupStream, recovery: Recovery, send: Send, room: Room
    ) -> None:
        """What the client missed, page by page, each frame when the send queue has
        room; then what was held. Ends ``recovered: false`` where it cannot go on."""
        epoch, top, entries = recovery.epoch, recovery.offset, recovery.entries
        sent, size, complete = 0, 0, False  # size: bytes sent (pages follow it)
        yielded_at = 0
        loop = asyncio.get_running_loop()
        async with loop_semaphore("replays", MAX_CONCURRENT_REPLAYS):
            deadline = loop.time() + REPLAY_TIMEOUT
            while self.streams.get(group) is stream:
                for offset, data, is_binary in entries:
                    frame = data_frame(group, offset, epoch, data, binary=is_binary)
                    held = stream.held
                    if held is not None and len(held) > MAX_HELD_DURING_REPLAY:
                        break
                    fits = await room(message_size(frame), deadline - loop.time())
                    if not fits or self.streams.get(group) is not stream:
                        break
                    send(frame)
                    sent += 1
                    size += len(data)
                    if size - yielded_at >= REPLAY_PAGE_BYTES:
                        # Other connections' turn: 16 replays writing half a queue
                        # each between two looks at the loop delayed an echo 50 ms.
                        yielded_at = size
                        await asyncio.sleep(0)
                else:
                    last = entries[-1][0] if entries else top
                    if last >= top:
                        complete = True
                        break
                    count = max(1, min(REPLAY_PAGE, REPLAY_PAGE_BYTES * sent // max(1, size)))
                    entries = await self._page(group, last + 1, min(last + count, top))
                    if entries:
                        continue
                break
        REPLAYED.inc((), sent)
        if self.streams.get(group) is not stream or self.core.state is not ConnectionState.OPEN:
            return  # left or closed meanwhile: nothing more to say
        if not complete:
            RECOVERY.inc(("replay_cut",))
            send(subscribed_frame(group, top, epoch, False, binary=self.binary))
        self._release(group, stream, epoch, top, send)

    async def _page(self, group: str, first: int, last: int) -> list[Any]:
        """Entries ``first`` to ``last``, or [] if any is no longer kept (or unreadable)."""
        try:
            entries = await self.history.fetch(group, first, last)
        except Exception:
            return []
        return entries if len(entries) == last - first + 1 else []

    # --------------------------------------------------------- live messages

    def deliver(self, message: dict[str, Any], send: Send) -> None:
        """A broadcast to a group with history (it carries group, epoch, offset)."""
        group = message["group"]
        stream = self.streams.get(group)
        if stream is None:
            send(message["frame"])
            return
        self._offer(group, stream, message["epoch"], message["offset"], message["frame"], send)

    def _offer(
        self, group: str, stream: GroupStream, epoch: str, offset: int, frame: Any, send: Send
    ) -> None:
        outcome = stream.offer(epoch, offset, frame)
        if outcome is Offer.SEND:
            send(frame)
        elif outcome is Offer.GAP:
            _spawn(self._fill(group, stream, offset - 1, send))
        elif outcome is Offer.DUPLICATE:
            RECOVERY.inc(("duplicate",))
        elif outcome is Offer.RESET:
            RECOVERY.inc(("epoch_changed",))
            send(subscribed_frame(group, offset - 1, epoch, False, binary=self.binary))
            send(frame)

    async def _fill(self, group: str, stream: GroupStream, last: int, send: Send) -> None:
        first, epoch = stream.offset + 1, stream.epoch
        try:
            entries = await self.history.fetch(group, first, last)
        except Exception:
            entries = []
        if len(entries) == last - first + 1:
            RECOVERY.inc(("gap_filled",))
            REPLAYED.inc((), len(entries))
            for offset, data, is_binary in entries:
                send(data_frame(group, offset, epoch, data, binary=is_binary))
        else:
            RECOVERY.inc(("gap_lost",))
            send(subscribed_frame(group, last, epoch, False, binary=self.binary))
        self._release(group, stream, epoch, last, send)

    def _release(
        self, group: str, stream: GroupStream, epoch: str, offset: int, send: Send
    ) -> None:
        for held_epoch, held_offset, frame in stream.resume(epoch, offset):
            self._offer(group, stream, held_epoch, held_offset, frame, send)
