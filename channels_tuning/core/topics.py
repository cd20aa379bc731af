"""Which topics a client may ask for: a consumer's declared table (no I/O).

A topic is a channel-layer group that a client joins by asking, over its open socket
(:mod:`channels_tuning.wire.topics`), rather than by the consumer's choice in
``connect()``. The consumer declares which names may be asked for, as patterns::

    topics = [
        Topic("ticker", public=True, cache=1),  # anyone; the latest price on subscribe
        Topic("user.{user_id}"),                # can_subscribe() decides
        Topic("room.{slug}", public=True),
    ]

A ``{placeholder}`` matches 1 to 64 ASCII letters, digits, ``_`` or ``-`` (no
``.``: a placeholder never spans two segments), and the literal parts must be
valid in a group name, so that every name the table admits is a group name
Channels accepts. The first matching pattern decides. A name no pattern matches is
refused (``unknown_topic``): a client can only ever join a group the consumer
declared, never one it joins for its own reasons (the user's group, a room chosen
in ``connect()``).

The topic's name *is* the group's name: the frames of a broadcast carry it and are
encoded once for every member (a mapping to another group name would cost an
encoding per connection).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .tokens import TokenBucket

__all__ = ["SubscriptionLimits", "Topic", "TopicMatch", "TopicTable"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LITERAL = re.compile(r"[A-Za-z0-9_.\-]*")
_VALUE = r"[A-Za-z0-9_\-]{1,64}"


@dataclass(frozen=True)
class Topic:
    """One row of a consumer's ``topics`` table.

    ``pattern``: the names it admits (``{name}`` placeholders). ``public``: anyone may
    subscribe (otherwise the consumer's ``can_subscribe`` must say yes; its default
    refuses). ``cache``: the latest ``cache`` messages of the topic's history are sent
    on subscribe, after ``subscribed`` (the group needs ``HISTORY``)."""

    pattern: str
    public: bool = False
    cache: int = 0
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts, names, position = [], [], 0
        for placeholder in _PLACEHOLDER.finditer(self.pattern):
            parts.append(self._literal(self.pattern[position : placeholder.start()]))
            name = placeholder.group(1)
            if name in names:
                raise ValueError(f"topic pattern {self.pattern!r} repeats {{{name}}}")
            names.append(name)
            parts.append(f"(?P<{name}>{_VALUE})")
            position = placeholder.end()
        parts.append(self._literal(self.pattern[position:]))
        if self.cache < 0:
            raise ValueError(f"topic {self.pattern!r}: cache must be >= 0")
        object.__setattr__(self, "regex", re.compile("".join(parts)))

    def _literal(self, text: str) -> str:
        if not _LITERAL.fullmatch(text):
            raise ValueError(
                f"topic pattern {self.pattern!r}: {text!r} is not valid in a group name "
                "(ASCII letters, digits, '_', '-', '.')"
            )
        return re.escape(text)

    def match(self, name: str) -> dict[str, str] | None:
        """The placeholders' values if ``name`` is one of this row's topics."""
        found = self.regex.fullmatch(name) if len(name) < 100 else None
        return found.groupdict() if found is not None else None


@dataclass(frozen=True)
class TopicMatch:
    """A client's request for ``name``, matched: what ``can_subscribe`` is given."""

    name: str
    topic: Topic
    #: The values of the pattern's placeholders (``{"user_id": "42"}``).
    args: Mapping[str, str]
    #: The request's ``params`` (client-chosen: validate before use).
    params: Mapping[str, Any] = field(default_factory=dict)


class TopicTable:
    """A consumer's topics, in order (built once per class)."""

    __slots__ = ("topics",)

    def __init__(self, topics: Iterable[Topic]) -> None:
        self.topics = tuple(topics)
        for topic in self.topics:
            if not isinstance(topic, Topic):
                raise TypeError(f"topics must hold Topic(...) rows, not {topic!r}")

    def __bool__(self) -> bool:
        return bool(self.topics)

    def match(self, name: str, params: Mapping[str, Any] | None = None) -> TopicMatch | None:
        for topic in self.topics:
            args = topic.match(name)
            if args is not None:
                return TopicMatch(name, topic, args, params or {})
        return None


@dataclass(frozen=True, slots=True)
class SubscriptionLimits:
    """What one connection may ask: ``max_subscriptions`` held at once (more:
    refused with ``too_many_subscriptions``) and requests at ``rate`` (more: the
    connection is closed, 1008)."""

    max_subscriptions: int
    rate: TokenBucket

    def take(self, tokens: float | None, counted_at: float, now: float) -> tuple[bool, float]:
        """One subscribe or unsubscribe request at ``now``: whether it is within the
        rate, and the tokens left (``tokens`` None: the connection's first request)."""
        return self.rate.take(self.rate.burst if tokens is None else tokens, counted_at, now)
