"""Where the Python client stands in each topic with history, and the recovery
request it makes from that when it reconnects (:mod:`channels_tuning.wire.offsets`)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any

from ..wire.offsets import (
    MAX_RECOVER_REQUESTS,
    RECOVER_PARAMETER,
    StreamPosition,
    recover_parameter,
)


class TopicPositions:
    """The recovery half of :class:`~channels_tuning.client.ReconnectingClient`."""

    url: str
    recover: bool
    on_recovery: Callable[[str, bool], Any] | None
    #: What the client has of each topic with history (its last epoch and offset).
    positions: dict[str, StreamPosition]
    #: Numbered messages received twice (dropped, not passed on).
    duplicates: int
    #: Times numbered messages were lost for good (``recovered`` false after the
    #: client had a position, or an offset that jumped).
    gaps: int

    def _keep(self, topic: str, position: StreamPosition) -> None:
        """Remember ``topic``'s position, most recent last; at most as many topics as
        a server accepts recovery requests for (the oldest is forgotten: a topic the
        application no longer follows must not get every reconnect refused)."""
        self.positions.pop(topic, None)
        self.positions[topic] = position
        while len(self.positions) > MAX_RECOVER_REQUESTS:
            del self.positions[next(iter(self.positions))]

    def connect_url(self) -> str:
        """The URL of the next attempt: ``url`` with a recovery request per topic."""
        if not (self.recover and self.positions):
            return self.url
        parts = urllib.parse.urlsplit(self.url)
        query = [
            (name, value)
            for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if name != RECOVER_PARAMETER
        ]
        query += [
            (RECOVER_PARAMETER, recover_parameter(topic, position))
            for topic, position in self.positions.items()
        ]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def _track(self, message: Any) -> bool:
        """Keep the topic's position; False for a message the client already has."""
        if isinstance(message, dict):
            kind, topic = message.get("kind"), message.get("topic")
            offset, epoch = message.get("offset"), message.get("epoch")
            recovered = message.get("recovered") is True
        else:
            kind, topic = getattr(message, "kind", None), getattr(message, "topic", None)
            offset, epoch = getattr(message, "offset", 0), getattr(message, "epoch", "")
            recovered = bool(getattr(message, "recovered", False))
        if kind not in ("data", "subscribed") or not topic or not epoch:
            return True
        if not isinstance(offset, int) or not isinstance(topic, str) or not isinstance(epoch, str):
            return True
        known = self.positions.get(topic)
        if kind == "subscribed":
            if not recovered or known is None or known.epoch != epoch:
                if known is not None:
                    self.gaps += 1
                self._keep(topic, StreamPosition(epoch, offset))
            if self.on_recovery is not None:
                self.on_recovery(topic, recovered)
            return True
        if known is not None and known.epoch == epoch:
            if offset <= known.offset:
                self.duplicates += 1
                return False
            if offset > known.offset + 1:
                self.gaps += 1
        self._keep(topic, StreamPosition(epoch, offset))
        return True
