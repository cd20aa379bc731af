"""A batch read from the process inbox, in parts the event loop runs between (issue #25).

The process reader (:mod:`.reader`) hands a batch of up to 64 messages to this
process' consumers synchronously. One broadcast to 19 000 members of one process was
one such hand-over, and the loop answered nothing else until every member's frame was
written: an HTTP request to that process waited 783 ms
(``python benchmarks/stall.py --connections 19000 --kinds tuned --broadcast``). The
reader now hands a batch on in parts of at most :data:`DELIVERIES_PER_PART`
deliveries, and the loop runs between parts: 52-121 ms over five runs, the last frame
out after 486-810 ms (was 821).

A part keeps each member's messages of a *run* together (consecutive messages with
the same receivers: a burst to one group is one run), so what a member gets from a
batch still leaves in one ``send()`` (:mod:`channels_tuning.runtime.writebatch`), and
every member gets its messages in order. A run too large for one part is split by
members, not by messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

#: Deliveries handed on between two turns of the loop: a few ms each. A request
#: needs several turns (accept, read, answer), so it waits a part per turn: with parts
#: of 2 000 an HTTP probe waited 228 ms (under py-spy) during a broadcast to 19 000,
#: with 500 52 ms.
#: The bursts' cost did not move (4.6-5.6 µs per delivery with parts of 500, 5.2-6.6
#: without, alternating runs of ``python benchmarks/fanout.py``'s tuned burst).
DELIVERIES_PER_PART: Final = 500

#: ``(channel or channels, message)``, as the reader gets them from Redis.
Batch = list[tuple[Any, dict[str, Any]]]


def _runs(batch: Batch) -> Iterator[tuple[list[Any], list[dict[str, Any]]]]:
    """Consecutive messages with equal receivers: (receivers, messages)."""
    receivers: list[Any] | None = None
    messages: list[dict[str, Any]] = []
    for target, message in batch:
        channels = target if isinstance(target, list) else [target]
        if channels != receivers:
            if receivers is not None:
                yield receivers, messages
            receivers, messages = channels, []
        messages.append(message)
    if receivers is not None:
        yield receivers, messages


def in_parts(batch: Batch, limit: int = DELIVERIES_PER_PART) -> Iterator[Batch]:
    """``batch`` as parts of at most ``limit`` deliveries: the same deliveries, each
    member's in the order of the batch. A run too large is split by members; one
    member's messages of a run stay in one part even beyond ``limit`` (a batch holds
    64 messages at most)."""
    part: Batch = []
    size = 0
    for receivers, messages in _runs(batch):
        cost = len(receivers) * len(messages)
        if size + cost <= limit:
            part += [(receivers, message) for message in messages]
            size += cost
            continue
        if part:
            yield part
        part, size = [], 0
        step = max(1, limit // len(messages))
        for start in range(0, len(receivers), step):
            if part:
                yield part
            piece = receivers[start : start + step]
            part = [(piece, message) for message in messages]
            size = len(piece) * len(messages)
    if part:
        yield part
