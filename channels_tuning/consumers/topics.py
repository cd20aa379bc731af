"""Topics a client subscribes to over its open socket, with authorization:
:class:`TopicsMixin`.

A consumer declares the topics a client may ask for (``topics``, a table of
:class:`~channels_tuning.core.topics.Topic` patterns) and who may have each
(:meth:`TopicsMixin.can_subscribe`); a client of the package's protocol then asks
with ``ct.subscribe`` / ``ct.unsubscribe`` (:mod:`channels_tuning.wire.topics`) and
is answered ``subscribed`` (with the position, and the latest messages in cache
mode, when the topic has ``HISTORY``), ``unsubscribed`` or ``error`` with a reason.
What is guaranteed:

- a client only ever joins a group the table admits, and only after
  ``can_subscribe`` said yes for this connection, in this request;
- a held subscription is asked about again ``authorization_ttl`` seconds after the
  last decision (60 s): a permission revoked in the database ends it with
  ``unsubscribed`` ``forbidden`` within that time; ``unsubscribe_user()``
  (:mod:`channels_tuning.users`) ends it on every server at once;
- client-controlled input is bounded: ``max_subscriptions`` held (more: refused,
  ``too_many_subscriptions``), requests at ``subscribe_rate`` (more: closed with
  1008), an unreadable request closed with 1008; each refusal is a line in the log
  (a second at most) and ``channels_tuning_topic_requests_total{outcome}``;
- a subscription is left when the connection ends, as every group is
  (:mod:`.memberships`).

A consumer without a ``topics`` table pays one attribute test per frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..core.tokens import TokenBucket
from ..core.topics import SubscriptionLimits, Topic, TopicMatch, TopicTable
from ..exceptions import ProtocolRequestError
from ..runtime import clock
from ..runtime.counters import TOPIC_REQUESTS
from ..runtime.ratelog import RateLimitedLog
from ..runtime.scheduler import scheduler
from ..wire.closecodes import CloseCode
from ..wire.topics import (
    MAX_REASON_LENGTH,
    TopicRequest,
    error_frame,
    parse_topic_request,
    subscribed_reply,
    unsubscribed_frame,
)
from .server_requests import ServerRequestsMixin

logger = logging.getLogger("channels_tuning")
#: Clients decide how often they are refused: a line a second at most (all counted).
_refused_log = RateLimitedLog(logger, interval=1.0, level=logging.INFO)

#: Re-authorizations running (referenced so that they are not collected).
_checks: set[asyncio.Task[None]] = set()


class TopicsMixin(ServerRequestsMixin):
    """The topic protocol (a layer of
    :class:`~channels_tuning.consumers.base.ManagedConnectionMixin`)."""

    #: The topics a client may ask for (empty: the protocol is off).
    topics: ClassVar[Sequence[Topic]] = ()
    #: Subscriptions one connection may hold at once.
    max_subscriptions: ClassVar[int] = 100
    #: Subscribe and unsubscribe requests a second, and the burst saved up.
    subscribe_rate: ClassVar[TokenBucket] = TokenBucket(rate=10.0, burst=50.0)
    #: Seconds a ``can_subscribe`` decision is kept for a held subscription.
    authorization_ttl: ClassVar[float] = 60.0

    _topic_table: ClassVar[TopicTable] = TopicTable(())
    _has_topics: ClassVar[bool] = False
    _topic_limits: ClassVar[SubscriptionLimits]
    _subscribe_tokens: float | None = None
    _subscribe_counted_at: float = 0.0
    #: Monotonic time the held subscriptions are next asked about (None: none held).
    _authorize_due: float | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._topic_table = TopicTable(cls.topics)
        cls._has_topics = bool(cls._topic_table)
        cls._reads_protocol = cls._has_topics or cls._has_methods
        cls._topic_limits = SubscriptionLimits(cls.max_subscriptions, cls.subscribe_rate)

    async def _protocol_frame(self, message: dict[str, Any]) -> bool:
        """True if ``message`` was a request of the package's protocol (a token
        refresh, a request to an ``@rpc`` method, a topic request): handled here, never
        given to ``receive()``."""
        if self.credentials_deadline is not None and await self._credentials_frame(message):
            return True
        if not self.tuned_client:
            return False
        asked = self._pending_replies is not None or self._broadcast_acks is not None
        if (self._has_methods or asked) and await self._request_frame(message):
            return True
        return self._has_topics and await self._topic_frame(message)

    # ------------------------------------------------------------- the hooks

    async def can_subscribe(
        self, user: Any, scope: Mapping[str, Any], topic: TopicMatch
    ) -> bool | str:
        """Whether this connection may have ``topic`` (its name, its table row, the
        pattern's values in ``topic.args``, the client's ``topic.params``). Asked at
        every subscribe and again every ``authorization_ttl`` while it is held.
        Return True, False (``forbidden``) or a short reason for the client. The
        default: the row's ``public``."""
        return topic.topic.public

    @property
    def subscriptions(self) -> frozenset[str]:
        """The topics this connection's client subscribed to."""
        return frozenset(self._subscriptions or ())

    async def unsubscribe_topic(self, name: str, reason: str = "server") -> bool:
        """End the client's subscription to ``name`` (told ``unsubscribed`` with
        ``reason``); False if it had none."""
        subscriptions = self._subscriptions
        if subscriptions is None or subscriptions.pop(name, None) is None:
            return False
        TOPIC_REQUESTS.inc((self.consumer_label(), "revoked"))
        await self._leave_topic(name)
        if not self.closing:
            self.send_nowait(unsubscribed_frame(name, reason, binary=self._binary_frames()))
        return True

    async def channels_tuning_unsubscribe(self, event: dict[str, Any]) -> None:
        """The layer event of :func:`channels_tuning.users.unsubscribe_user`."""
        name, reason = event.get("topic"), event.get("reason")
        if isinstance(name, str):
            reason = reason[:MAX_REASON_LENGTH] if isinstance(reason, str) else "revoked"
            await self.unsubscribe_topic(name, reason)

    # ------------------------------------------------------------ requests

    async def _topic_frame(self, message: dict[str, Any]) -> bool:
        """True if ``message`` was a topic request (handled here, not delivered)."""
        try:
            request = parse_topic_request(message)
        except ProtocolRequestError as error:
            self._topic_refused("malformed", str(error))
            self.close_nowait(CloseCode.POLICY_VIOLATION, "unreadable topic request")
            return True
        if request is None:
            return False
        now = clock.monotonic()
        allowed, self._subscribe_tokens = self._topic_limits.take(
            self._subscribe_tokens, self._subscribe_counted_at, now
        )
        self._subscribe_counted_at = now
        if not allowed:
            self._topic_refused("flood", "topic requests over the rate")
            self.close_nowait(CloseCode.POLICY_VIOLATION, "too many topic requests")
            return True
        if request.action == "subscribe":
            await self._subscribe(request)
        else:
            await self._unsubscribe(request)
        return True

    async def _subscribe(self, request: TopicRequest) -> None:
        name = request.topic
        match = self._topic_table.match(name, request.params)
        subscriptions = self._subscriptions
        if match is None:
            return self._refuse(request, "unknown_topic")
        if (subscriptions and name in subscriptions) or name in self.tracked_groups():
            return self._refuse(request, "already_subscribed")
        if subscriptions and len(subscriptions) >= self._topic_limits.max_subscriptions:
            return self._refuse(request, "too_many_subscriptions")
        refusal = await self._authorize(match)
        if refusal is not None:
            return self._refuse(request, refusal)
        if self.closing:
            return None
        if self._subscriptions is None:
            self._subscriptions = {}
        self._subscriptions[name] = match  # before the join: its frames are enveloped
        streams = self._streams_for(name)
        if streams is not None:  # with history: the stream's subscribed answers
            streams.replies[name] = request.id
            if request.since is not None:
                streams.requests[name] = request.since
            elif match.topic.cache:
                streams.latest[name] = match.topic.cache
        try:
            await self.join_group(name)
        except Exception as error:
            self._subscriptions.pop(name, None)
            logger.warning("channels_tuning: could not join topic %s: %r", name, error)
            return self._refuse(request, "unavailable")
        TOPIC_REQUESTS.inc((self.consumer_label(), "subscribed"))
        if streams is None:
            self.send_nowait(subscribed_reply(name, request.id, binary=self._binary_frames()))
        if self._authorize_due is None:
            self._authorize_due = clock.monotonic() + self.authorization_ttl
            if self._registered:
                scheduler.schedule(self, self._authorize_due)
        return None

    async def _unsubscribe(self, request: TopicRequest) -> None:
        name = request.topic
        subscriptions = self._subscriptions
        if subscriptions is None or subscriptions.pop(name, None) is None:
            return self._refuse(request, "not_subscribed")
        TOPIC_REQUESTS.inc((self.consumer_label(), "unsubscribed"))
        await self._leave_topic(name)
        if not self.closing:
            frame = unsubscribed_frame(name, "client", request.id, binary=self._binary_frames())
            self.send_nowait(frame)
        return None

    async def _authorize(self, match: TopicMatch) -> str | None:
        """None if ``can_subscribe`` says yes, else the reason for the client."""
        verdict = await self.can_subscribe(self.scope.get("user"), self.scope, match)
        if verdict is True:
            return None
        if isinstance(verdict, str) and verdict:
            return verdict[:MAX_REASON_LENGTH]
        return "forbidden"

    async def _leave_topic(self, name: str) -> None:
        try:
            await self.leave_group(name)
        except Exception as error:  # Redis away: the membership expires instead
            logger.warning("channels_tuning: could not leave topic %s: %r", name, error)

    def _refuse(self, request: TopicRequest, reason: str) -> None:
        self._topic_refused(reason, f"{request.action} {request.topic[:100]!r}: {reason}")
        if not self.closing:
            frame = error_frame(request.topic, request.id, reason, binary=self._binary_frames())
            self.send_nowait(frame)

    def _topic_refused(self, outcome: str, detail: str) -> None:
        label = self.consumer_label()
        TOPIC_REQUESTS.inc((label, outcome if outcome in _OUTCOMES else "forbidden"))
        _refused_log.log("channels_tuning: %s topic request refused: %s", label, detail)

    # ---------------------------------------------- asking again, on the clock

    def next_tick_at(self, now: float) -> float | None:
        due = super().next_tick_at(now)
        again = self._authorize_due
        if again is not None and (due is None or again < due):
            return again
        return due

    def on_tick(self, now: float) -> None:
        again = self._authorize_due
        if again is not None and now >= again:
            self._authorize_due = None
            if self._subscriptions:
                task = asyncio.get_running_loop().create_task(self._authorize_again())
                _checks.add(task)
                task.add_done_callback(_checks.discard)
        super().on_tick(now)

    async def _authorize_again(self) -> None:
        """Ask ``can_subscribe`` about every held subscription; end those it refuses."""
        for name, match in list((self._subscriptions or {}).items()):
            if self.closing:
                return
            try:
                refusal = await self._authorize(match)
            except Exception:
                logger.exception("channels_tuning: can_subscribe(%r) raised", name)
                refusal = "forbidden"
            if refusal is not None and (self._subscriptions or {}).get(name) is match:
                await self.unsubscribe_topic(name, "forbidden")
        if self._subscriptions and not self.closing:
            self._authorize_due = clock.monotonic() + self.authorization_ttl
            if self._registered:
                scheduler.schedule(self, self._authorize_due)


_OUTCOMES = frozenset(
    {
        "unknown_topic",
        "forbidden",
        "too_many_subscriptions",
        "already_subscribed",
        "not_subscribed",
        "unavailable",
        "malformed",
        "flood",
    }
)
