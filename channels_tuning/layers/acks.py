"""Acknowledged broadcasts: ``broadcast(group, payload, ack=True, timeout=5)``.

The end-to-end version of :class:`~channels_tuning.layers.report.DeliveryReport`:
how many clients *handled* the message, not how many server inboxes got it.

How it travels:

1. The producer picks an id for the broadcast (a random integer from 2**40 up, above
   any id a connection counts for its own requests, below 2**53 so that JavaScript
   reads it exactly) and a reply channel of its own, and sends one layer message:
   the usual frame for plain pages, and a push frame for the package's clients,
   ``{"kind":"push","id":<id>,"data":...}``, both encoded once.
2. Each receiving process keeps one :class:`AckTally` per broadcast: its tuned
   consumers hand the push to their clients and count it ``delivered``; a plain
   page gets the usual frame and counts as ``cannot_acknowledge``; a client's
   ``{"type":"ct.reply","id":<id>}`` counts ``acknowledged``. The tally reports its
   counts to the producer's channel when every delivered client acknowledged, and at
   the deadline unless that report said it all: one small layer message per process
   (two when some client did not answer).
3. The producer keeps each tally's last report and stops when every member the layer
   counted has answered, or every process reported all its clients answered or its
   deadline passed, or at the deadline plus :data:`REPORT_GRACE` (a process that never
   reports). ``not_in_time``: handed
   to a client that did not acknowledge in time; ``not_reached``: members the layer
   counted that no report accounts for (a full or gone process, a process whose
   report did not come, a connection that ended before the message reached it).

The deadline is the producer's wall clock plus ``timeout`` (processes that run on
clocks far apart shorten or lengthen it by their difference); a process never waits
past its own receipt plus ``timeout``. Groups with history do not take
``ack=True``: their clients recover what they missed instead. A client subscribed
to the group as a topic gets the push as a message of its own (``on_message``, the
``message`` event), not through the topic's handler.

Reports travel through the layer to the producer's reply channel: on the Redis
layer, channels-redis' per-channel ``capacity`` (100 by default) bounds how many
reports can wait there, so a producer broadcasting with ``ack=True`` to more server
processes than that at once loses the reports beyond it (counted in
``channels_tuning_layer_errors_total{operation="ack_report:ChannelFull"}`` by the
reporting process, and ``not_reached`` in the result).

Measured (``tests/e2e/test_broadcast_acks.py``, two servers and Redis on this
2-core machine): 500 clients of which 20 never read, reported 480 / 20 at the 5 s
timeout; the 480 alone, all acknowledged, in 0.05-0.07 s.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

from ..runtime.counters import BROADCAST_ACKS, LAYER_ERRORS
from .report import AckReport, DeliveryReport

__all__ = ["ACKS_TYPE", "AckTally", "collect_reports", "new_ack_id", "tally_for"]

#: The layer message type of a process' report to the producer.
ACKS_TYPE: Final = "channels_tuning.acks"
#: Seconds the producer waits past the deadline for the processes' last reports.
REPORT_GRACE: Final = 0.5
#: Broadcast ids are drawn from [ACK_ID_MIN, 2**53): a connection's own request ids
#: count from 1 and never get there.
ACK_ID_MIN: Final = 2**40


def new_ack_id() -> int:
    return random.randrange(ACK_ID_MIN, 2**53)


@dataclass(slots=True, eq=False)
class AckTally:
    """What one process' clients did with one acknowledged broadcast."""

    ack_id: int
    reply_to: str
    layer: Any
    delivered: int = 0
    acknowledged: int = 0
    cannot_acknowledge: int = 0
    #: Past its deadline: acknowledgements no longer count.
    closed: bool = False
    _reported: tuple[int, int, int] | None = None
    #: Which tally of which process a report comes from (the producer keeps the last).
    source: str = field(default_factory=lambda: uuid.uuid4().hex)

    def acknowledge(self) -> bool:
        """Count one client's acknowledgement; False when it came after the deadline."""
        if self.closed:
            return False
        self.acknowledged += 1
        if self.acknowledged >= self.delivered:
            self.report()
        return True

    def close(self) -> None:
        """The deadline: the final report, unless the last one said every client
        answered (then there is nothing more to say, and no message is left for a
        producer that may have returned already)."""
        if _tallies.get(self.ack_id) is self:
            del _tallies[self.ack_id]
        counts = (self.delivered, self.acknowledged, self.cannot_acknowledge)
        settled = self._reported == counts and self.acknowledged >= self.delivered
        self.closed = True
        if not settled:
            self.report()

    def report(self) -> None:
        """Send this process' counts so far to the producer (not twice the same;
        ``final`` once past the deadline)."""
        counts = (self.delivered, self.acknowledged, self.cannot_acknowledge)
        if counts == self._reported and not self.closed:
            return
        self._reported = counts
        message = {
            "type": ACKS_TYPE,
            "id": self.ack_id,
            "source": self.source,
            "delivered": self.delivered,
            "acknowledged": self.acknowledged,
            "cannot_acknowledge": self.cannot_acknowledge,
            "final": self.closed,
        }
        task = asyncio.get_running_loop().create_task(self._send(message))
        _sending.add(task)
        task.add_done_callback(_sending.discard)

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            await self.layer.send(self.reply_to, message)
        except Exception as error:  # the producer counts this process as not reached
            LAYER_ERRORS.inc((f"ack_report:{type(error).__name__}",))


#: This process' open tallies, by broadcast id.
_tallies: dict[int, AckTally] = {}
#: Reports being sent (a task must be referenced until it ends).
_sending: set[asyncio.Task[None]] = set()


def tally_for(layer: Any, ack: Any) -> AckTally | None:
    """The tally of the broadcast a layer message's ``ack`` field names
    (``[id, reply_to, deadline, timeout]``), opened at its first local delivery;
    None for a malformed field (the message is then delivered as an ordinary one)."""
    try:
        ack_id, reply_to = int(ack[0]), str(ack[1])
        deadline, timeout = float(ack[2]), float(ack[3])
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    tally = _tallies.get(ack_id)
    if tally is None:
        tally = _tallies[ack_id] = AckTally(ack_id, reply_to, layer)
        loop = asyncio.get_running_loop()
        loop.call_later(min(max(0.0, deadline - time.time()), timeout), tally.close)
        # After this delivery pass (every local member, in one go): a process whose
        # members all answered already, or none can, reports now.
        loop.call_soon(_report_if_settled, tally)
    return tally


def _report_if_settled(tally: AckTally) -> None:
    if tally.acknowledged >= tally.delivered:
        tally.report()


async def collect_reports(
    layer: Any, reply_to: str, ack_id: int, delivery: DeliveryReport, deadline: float
) -> AckReport:
    """Sum the processes' last reports for broadcast ``ack_id``, until every member the
    layer counted is accounted for, or the deadline (the loop's clock) plus
    :data:`REPORT_GRACE`."""
    latest: dict[str, tuple[int, int, int]] = {}
    final: set[str] = set()
    loop = asyncio.get_running_loop()
    while not _complete(latest, final, delivery):
        left = deadline + REPORT_GRACE - loop.time()
        if left <= 0:
            break
        try:
            message = await asyncio.wait_for(layer.receive(reply_to), left)
        except asyncio.TimeoutError:
            break
        if message.get("type") != ACKS_TYPE or message.get("id") != ack_id:
            continue
        delivered = int(message.get("delivered", 0))
        acknowledged = min(int(message.get("acknowledged", 0)), delivered)
        cannot = int(message.get("cannot_acknowledge", 0))
        source = str(message.get("source"))
        latest[source] = (delivered, acknowledged, cannot)
        if message.get("final"):
            final.add(source)
    result = AckReport(delivery.group, delivery)
    for delivered, acknowledged, cannot in latest.values():
        result.acknowledged += acknowledged
        result.not_in_time += delivered - acknowledged
        result.cannot_acknowledge += cannot
    accounted = result.acknowledged + result.not_in_time + result.cannot_acknowledge
    if delivery.receivers_known:
        result.not_reached = max(0, delivery.receivers - accounted)
    for outcome in ("acknowledged", "not_in_time", "not_reached", "cannot_acknowledge"):
        count = getattr(result, outcome)
        if count:
            BROADCAST_ACKS.inc((outcome,), count)
    return result


def _complete(
    latest: dict[str, tuple[int, int, int]], final: set[str], delivery: DeliveryReport
) -> bool:
    """Nothing left to wait for: every member the layer counted answered
    (acknowledged, or cannot), or every process the layer wrote to reported, each
    either final (its deadline passed) or with every client it reached answered."""
    if delivery.receivers_known:
        answered = sum(acknowledged + cannot for _, acknowledged, cannot in latest.values())
        if answered >= delivery.receivers:
            return True
    if len(latest) < delivery.processes:
        return False
    return all(
        source in final or acknowledged >= delivered
        for source, (delivered, acknowledged, _) in latest.items()
    )
