"""One connection's place in one group's history: in order, exactly once.

Messages of a group with history carry ``(epoch, offset)``. They can reach a
process out of order: two producers in different processes take offsets 5 and 6
in Redis, and 6 is written to the process' inbox first; or a full inbox is retried
after the next message got through. :class:`GroupStream` decides for each arriving
message whether it is the next one (send it), one already sent (drop it: a gap fill
sent it earlier), the first after a gap (hold it and everything after it until the
gap is filled from the history), or the first of a new epoch (the history was lost:
tell the client, then send it). It also holds everything that arrives while the
connection is joining, until the replay of what the client missed has been sent.

No I/O here: :mod:`channels_tuning.consumers.recovery` fetches and sends.
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["GroupStream", "Offer"]


class Offer(enum.Enum):
    """What to do with an arriving message."""

    #: The next message: send it.
    SEND = "send"
    #: Already sent (or older): drop it.
    DUPLICATE = "duplicate"
    #: Held until :meth:`GroupStream.resume` (a join or a gap fill is under way).
    HOLD = "hold"
    #: Held; first fetch ``stream.offset + 1`` to ``offset - 1`` from the history.
    GAP = "gap"
    #: Another epoch: the history was lost. Tell the client, then send it.
    RESET = "reset"


class GroupStream:
    """The last ``(epoch, offset)`` sent to one connection for one group."""

    __slots__ = ("epoch", "held", "offset")

    def __init__(self) -> None:
        self.epoch = ""
        self.offset = 0
        #: Messages held back, in arrival order (None: not holding).
        self.held: list[tuple[str, int, Any]] | None = []

    def offer(self, epoch: str, offset: int, frame: Any) -> Offer:
        held = self.held
        if held is not None:
            held.append((epoch, offset, frame))
            return Offer.HOLD
        if epoch != self.epoch:
            self.epoch, self.offset = epoch, offset
            return Offer.RESET
        if offset <= self.offset:
            return Offer.DUPLICATE
        if offset == self.offset + 1:
            self.offset = offset
            return Offer.SEND
        self.held = [(epoch, offset, frame)]
        return Offer.GAP

    def resume(self, epoch: str, offset: int) -> list[tuple[str, int, Any]]:
        """Everything up to ``offset`` of ``epoch`` has been sent: stop holding, and
        return what was held, to be offered again in order."""
        self.epoch, self.offset = epoch, offset
        held, self.held = self.held or [], None
        return held
