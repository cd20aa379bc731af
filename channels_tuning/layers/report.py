"""What a group send reached: :class:`DeliveryReport`, shared by every tuned layer."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DeliveryReport:
    """What one group send reached."""

    group: str
    #: Channels (consumers) that were members of the group.
    receivers: int = 0
    #: Receiving processes (channel-layer keys) written to.
    processes: int = 0
    #: Channels whose process key was full: they did not get the message.
    receivers_over_capacity: int = 0
    #: Sends retried because receivers were full (``broadcast(on_full="wait")``).
    retries: int = 0
    #: The group had no member because its Redis shard lost its state (a restart:
    #: memberships not back yet). The message reached no one, and is counted.
    state_lost: bool = False
    #: False on the pub/sub layer: Redis reports the processes it reached, not the
    #: consumers (``receivers`` and ``delivered`` are then 0, meaning unknown).
    receivers_known: bool = True
    #: Channels whose server process is gone (its liveness key expired: killed, or
    #: its event loop stalled for LIVENESS_TTL): not written, counted by the sender.
    receivers_gone: int = 0
    #: Per process key still full: the channels behind it (for retries).
    full: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def delivered(self) -> int:
        return self.receivers - self.receivers_over_capacity - self.receivers_gone

    @property
    def complete(self) -> bool:
        return self.receivers_over_capacity == 0


@dataclass
class AckReport:
    """What an acknowledged broadcast (``broadcast(..., ack=True)``) reached: how
    many clients handled it, end to end (:mod:`channels_tuning.layers.acks`)."""

    group: str
    #: What the layer reached (server processes and their members).
    delivery: DeliveryReport
    #: Clients whose message handling returned within the timeout.
    acknowledged: int = 0
    #: Clients it was handed to that did not acknowledge in time (not reading, slow,
    #: their handler failed, or gone since).
    not_in_time: int = 0
    #: Members the layer counted that it did not reach: a full or gone server
    #: process, a process whose report did not come, a connection that ended first.
    #: 0 on the pub/sub layer, which does not know its members.
    not_reached: int = 0
    #: Plain pages (without the ``channels-tuning.v1`` subprotocol): they got the
    #: message as an ordinary broadcast and cannot acknowledge it.
    cannot_acknowledge: int = 0
