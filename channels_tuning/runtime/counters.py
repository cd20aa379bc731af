"""Per-process counters: closes by code, drops by reason, rejected connections,
messages and bytes in and out.

Counters are plain integers in a dict keyed by label tuples: no lock (the event
loop is single-threaded), no objects kept per increment. Exporters (Prometheus,
``manage.py wsstats``) read :func:`snapshot`.
"""

from __future__ import annotations

from typing import Final


class Counter:
    """A monotonically increasing count per label tuple."""

    __slots__ = ("_values", "description", "labelnames", "name")

    def __init__(self, name: str, description: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.description = description
        self.labelnames = labelnames
        self._values: dict[tuple[str, ...], int] = {}

    def inc(self, labels: tuple[str, ...], amount: int = 1) -> None:
        self._values[labels] = self._values.get(labels, 0) + amount

    def get(self, labels: tuple[str, ...]) -> int:
        return self._values.get(labels, 0)

    def total(self) -> int:
        return sum(self._values.values())

    def items(self) -> list[tuple[tuple[str, ...], int]]:
        return list(self._values.items())

    def clear(self) -> None:
        self._values.clear()


CLOSES: Final = Counter(
    "channels_tuning_closes_total",
    "WebSocket connections closed by the server, by consumer and close code.",
    ("consumer", "code"),
)
DROPPED: Final = Counter(
    "channels_tuning_dropped_messages_total",
    "Messages dropped by a policy, by consumer and reason.",
    ("consumer", "reason"),
)
REJECTED: Final = Counter(
    "channels_tuning_rejected_connections_total",
    "Connections refused at connect time, by consumer and reason.",
    ("consumer", "reason"),
)
ACCEPT_PAUSES: Final = Counter(
    "channels_tuning_accept_pauses_total",
    "Times the server stopped accepting connections because max_pending_upgrades "
    "upgrades waited for their application (servers.daphne.admission).",
    (),
)
ACCEPTED: Final = Counter(
    "channels_tuning_connections_total",
    "Connections accepted, by consumer.",
    ("consumer",),
)
LAYER_ERRORS: Final = Counter(
    "channels_tuning_layer_receive_errors_total",
    "Errors of the per-process channel-layer reader (retried), by kind.",
    ("kind",),
)

GROUP_SENDS: Final = Counter(
    "channels_tuning_group_sends_total",
    "Group sends made through a channels-tuning layer, by group (see group_label).",
    ("group",),
)
GROUP_SEND_DROPPED: Final = Counter(
    "channels_tuning_group_send_dropped_total",
    "Receivers that missed a group send, by group and reason (over_capacity, raised, "
    "deadline, process_gone, redis_state_lost).",
    ("group", "reason"),
)
MISSED: Final = Counter(
    "channels_tuning_group_messages_missed_total",
    "Group messages for this process' consumers that producers (any process) could not "
    "deliver because its layer inbox was full, by reason.",
    ("reason",),
)
GROUP_LABELS_FOLDED: Final = Counter(
    "channels_tuning_group_labels_folded_total",
    'Group sends counted under group="other" because GROUP_LABEL_LIMIT distinct groups '
    "were already labelled.",
    (),
)

RECOVERY: Final = Counter(
    "channels_tuning_recovery_total",
    "Group-history events of tuned consumers, by outcome: recovered / not_recovered "
    "(a client's request at join), gap_filled / gap_lost (messages that arrived out of "
    "order, filled from the history or no longer kept), duplicate (arrived after its "
    "gap was filled: not sent twice), epoch_changed (history lost while connected), "
    "failed (the history could not be read).",
    ("outcome",),
)
REPLAYED: Final = Counter(
    "channels_tuning_replayed_messages_total",
    "Messages sent to clients from a group's history (recovery and gap fills).",
    (),
)

PRESENCE_EVENTS: Final = Counter(
    "channels_tuning_presence_events_total",
    "Join/leave event frames of groups with presence events, by outcome: sent (one "
    "per process, group and second at most), coalesced (joins and leaves cancelled "
    "out: nothing sent), failed.",
    ("outcome",),
)

TOPIC_REQUESTS: Final = Counter(
    "channels_tuning_topic_requests_total",
    "Topic subscriptions of tuned consumers (channels_tuning.consumers.topics), by "
    "consumer and outcome: subscribed, unsubscribed (asked by the client), refused "
    "reasons (unknown_topic, forbidden, too_many_subscriptions, already_subscribed, "
    "not_subscribed, unavailable), revoked (can_subscribe said no to a held "
    "subscription, or unsubscribe_user()), malformed and flood (closed with 1008).",
    ("consumer", "outcome"),
)
CLIENT_REQUESTS: Final = Counter(
    "channels_tuning_client_requests_total",
    "Requests and acknowledged pushes a tuned consumer sent its client "
    "(channels_tuning.consumers.server_requests), by consumer and outcome: ok, error "
    "(the client's error answer), timeout, closed (the connection ended first), "
    "unanswered (too many in flight: closed 4006), late (a reply to no pending id: "
    "after its timeout, twice, or never asked), malformed (closed 1008).",
    ("consumer", "outcome"),
)

BROADCAST_ACKS: Final = Counter(
    "channels_tuning_broadcast_acks_total",
    "Clients of acknowledged broadcasts (broadcast(ack=True), counted by the producer's "
    "process), by outcome: acknowledged, not_in_time, not_reached, cannot_acknowledge "
    "(plain pages).",
    ("outcome",),
)

REQUESTS: Final = Counter(
    "channels_tuning_requests_total",
    "Client requests to @rpc methods of tuned consumers (channels_tuning.consumers.rpc), "
    "by consumer and outcome: ok, error (the method's RequestError), unknown_method, "
    "timeout, internal (the method raised something else), malformed (closed 1008).",
    ("consumer", "outcome"),
)


class GroupLabels:
    """Group names are chosen by clients (rooms): a counter keyed by them would grow
    without bound. Off (the default), every group counts as ``"*"``; on
    (``PROMETHEUS_GROUP_LABELS``), the first ``limit`` distinct groups get their own
    label and the rest ``"other"`` (counted in GROUP_LABELS_FOLDED)."""

    __slots__ = ("enabled", "limit", "seen")

    def __init__(self) -> None:
        self.enabled = False
        self.limit = 1000
        self.seen: set[str] = set()

    def configure(self, enabled: bool, limit: int = 1000) -> None:
        self.enabled = enabled
        self.limit = limit
        self.seen.clear()

    def label(self, group: str) -> str:
        if not self.enabled:
            return "*"
        if group in self.seen:
            return group
        if len(self.seen) < self.limit:
            self.seen.add(group)
            return group
        GROUP_LABELS_FOLDED.inc(())
        return "other"


GROUP_LABELS: Final = GroupLabels()
group_label = GROUP_LABELS.label


class Traffic:
    """Data frames and payload sizes through tuned consumers, in and out.

    Four integer attributes on one object: counting a frame is two attribute
    increments, with no dict lookup, label tuple or GC-tracked object per message.
    Sizes are payload lengths: bytes for binary frames, characters for text frames
    (counting UTF-8 bytes would encode every text frame once more)."""

    __slots__ = ("bytes_in", "bytes_out", "messages_in", "messages_out")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.messages_in = self.bytes_in = self.messages_out = self.bytes_out = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


TRAFFIC: Final = Traffic()

ALL_COUNTERS: Final = (
    CLOSES,
    DROPPED,
    REJECTED,
    ACCEPT_PAUSES,
    ACCEPTED,
    LAYER_ERRORS,
    GROUP_SENDS,
    GROUP_SEND_DROPPED,
    MISSED,
    GROUP_LABELS_FOLDED,
    RECOVERY,
    REPLAYED,
    PRESENCE_EVENTS,
    TOPIC_REQUESTS,
    REQUESTS,
    CLIENT_REQUESTS,
    BROADCAST_ACKS,
)


def snapshot() -> dict[str, dict[str, int]]:
    """All counters as ``{name: {"label=value,...": count}}`` (JSON-friendly)."""
    result: dict[str, dict[str, int]] = {}
    for counter in ALL_COUNTERS:
        result[counter.name] = {
            ",".join(f"{k}={v}" for k, v in zip(counter.labelnames, labels, strict=False)): value
            for labels, value in counter.items()
        }
    return result


def reset() -> None:
    """Zero every counter (tests)."""
    for counter in ALL_COUNTERS:
        counter.clear()
    TRAFFIC.clear()
    GROUP_LABELS.seen.clear()
