"""Topics the Python client subscribes to: :class:`TopicSubscriptions`, a part of
:class:`~channels_tuning.client.ReconnectingClient`.

::

    async with ReconnectingClient(url, codec="json") as client:
        await client.subscribe("ticker")                 # returns once subscribed
        try:
            await client.subscribe("user.8")
        except SubscriptionRefused as refused:
            print(refused.reason)                        # "forbidden"
        async for message in client:                     # {"kind":"data","topic":...}
            ...

``subscribe()`` returns when the server answers ``subscribed`` and raises
:class:`SubscriptionRefused` (with the server's reason) on ``error``; a subscription
held is asked for again after every reconnect, with the position the client has
(topics with history: what was missed is replayed, in order, once). The server's own
``unsubscribed`` (a permission revoked) ends it and calls
``on_unsubscribed(topic, reason)``. Answers to the client's requests are not passed
on as messages; a topic's messages are, to the subscription's ``on_message`` if it
has one, else to ``on_message`` / ``recv()`` like any other. The wire format is
:mod:`channels_tuning.wire.topics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets

from ..wire.codecs import Codec
from ..wire.offsets import StreamPosition
from ..wire.proto.envelope_pb2 import Envelope

__all__ = ["Subscription", "SubscriptionRefused", "TopicSubscriptions"]

_ANSWERS = ('{"kind":"subscribed"', '{"kind":"error"', '{"kind":"unsubscribed"')
#: Encoded Envelopes of kinds SUBSCRIBED (6), ERROR (5), UNSUBSCRIBED (10).
_BINARY_ANSWERS = (b"\x08\x06", b"\x08\x05", b"\x08\x0a")


class SubscriptionRefused(Exception):
    """The server refused a subscribe (or unsubscribe) request; ``reason`` says why
    (``unknown_topic``, ``forbidden``, ``too_many_subscriptions``... or what the
    consumer's ``can_subscribe`` returned)."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"{topic}: {reason}")
        self.topic, self.reason = topic, reason


@dataclass(eq=False)
class Subscription:
    """One topic the client asked for."""

    topic: str
    params: dict[str, Any] = field(default_factory=dict)
    #: Called with each message of the topic (instead of the client's on_message).
    on_message: Callable[[Any], Any] | None = None
    #: "subscribing", "subscribed" or "unsubscribed".
    state: str = "subscribing"
    #: Why it ended ("client", or the server's reason).
    reason: str = ""


class TopicSubscriptions:
    """The subscription side of the client."""

    codec: Any
    state: str
    positions: dict[str, StreamPosition]
    recover: bool
    _track: Callable[[Any], bool]  # TopicPositions._track
    on_unsubscribed: Callable[[str, str], Any] | None = None
    _ws: Any
    _opened: asyncio.Event  # set while a connection is open
    _subscriptions: dict[str, Subscription]
    #: Requests waiting for their answer, by id: (topic, future).
    _pending: dict[int, tuple[str, asyncio.Future[Any]]]
    _ids: itertools.count[int]

    def _init_subscriptions(self, on_unsubscribed: Callable[[str, str], Any] | None) -> None:
        self.on_unsubscribed = on_unsubscribed
        self._subscriptions, self._pending, self._ids = {}, {}, itertools.count(1)
        self._resubscribing: set[asyncio.Task[None]] = set()

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """The topics held or being asked for."""
        return dict(self._subscriptions)

    async def subscribe(
        self,
        topic: str,
        params: dict[str, Any] | None = None,
        *,
        on_message: Callable[[Any], Any] | None = None,
        timeout: float | None = 10.0,
    ) -> Subscription:
        """Subscribe to ``topic``; returns once the server said ``subscribed`` (sent
        when the connection is open; asked again after each reconnect)."""
        if topic in self._subscriptions:
            raise ValueError(f"already subscribed to {topic!r}")
        subscription = Subscription(topic, dict(params or {}), on_message)
        self._subscriptions[topic] = subscription
        try:
            await asyncio.wait_for(self._ask(subscription), timeout)
        except BaseException:
            if self._subscriptions.get(topic) is subscription:
                del self._subscriptions[topic]
            raise
        return subscription

    async def unsubscribe(self, topic: str, *, timeout: float | None = 10.0) -> None:
        """End the subscription to ``topic`` (answered ``unsubscribed``)."""
        subscription = self._subscriptions.pop(topic, None)
        if subscription is None:
            raise ValueError(f"not subscribed to {topic!r}")
        subscription.state, subscription.reason = "unsubscribed", "client"
        if self.state == "open" and self._ws is not None:
            request = {"type": "ct.unsubscribe", "topic": topic}
            with contextlib.suppress(SubscriptionRefused):  # not_subscribed: gone anyway
                await asyncio.wait_for(self._request(self._ws, request), timeout)

    async def _ask(self, subscription: Subscription) -> None:
        """Send the subscribe request once the connection is open; wait for the answer."""
        while True:
            while self.state != "open" or self._ws is None:
                if self.state == "closed":
                    raise ConnectionError("client closed")
                # Woken by the next open at once; a close is seen within a second.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._opened.wait(), 1.0)
            ws = self._ws
            request: dict[str, Any] = {"type": "ct.subscribe", "topic": subscription.topic}
            if subscription.params:
                request["params"] = subscription.params
            position = self.positions.get(subscription.topic)
            if position is not None:
                request["since"] = {"epoch": position.epoch, "offset": position.offset}
            try:
                await self._request(ws, request)
            except (websockets.ConnectionClosed, ConnectionResetError):
                continue  # asked again on the next connection
            subscription.state = "subscribed"
            return

    async def _request(self, ws: Any, request: dict[str, Any]) -> Any:
        request_id = next(self._ids)
        request["id"] = request_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (request["topic"], future)
        try:
            await ws.send(self._encode_request(request))
            closed = asyncio.ensure_future(ws.wait_closed())
            try:
                await asyncio.wait({future, closed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
            if not future.done():
                raise ConnectionResetError("connection closed before the answer")
            return future.result()
        finally:
            self._pending.pop(request_id, None)

    def _encode_request(self, request: dict[str, Any]) -> str | bytes:
        if isinstance(self.codec, Codec) and self.codec.binary:
            since = request.get("since") or {}
            envelope = Envelope(
                kind=Envelope.SUBSCRIBE
                if request["type"] == "ct.subscribe"
                else Envelope.UNSUBSCRIBE,
                seq=request["id"],
                topic=request["topic"],
                epoch=since.get("epoch", ""),
                offset=since.get("offset", 0),
            )
            if request.get("params"):
                envelope.payload = json.dumps(request["params"]).encode()
            return envelope.SerializeToString()
        return json.dumps(request, separators=(",", ":"))

    def _resubscribe(self) -> None:
        """After a reconnect: ask again for every topic held."""
        for subscription in list(self._subscriptions.values()):
            if subscription.state == "subscribed":
                subscription.state = "subscribing"
                task = asyncio.get_running_loop().create_task(self._ask_again(subscription))
                self._resubscribing.add(task)
                task.add_done_callback(self._resubscribing.discard)

    async def _ask_again(self, subscription: Subscription) -> None:
        try:
            await self._ask(subscription)
        except SubscriptionRefused as refused:  # no longer allowed: as if revoked
            await self._ended(subscription.topic, refused.reason)
        except ConnectionError:
            pass  # the client closed

    async def _ended(self, topic: str, reason: str) -> None:
        subscription = self._subscriptions.pop(topic, None)
        if subscription is not None:
            subscription.state, subscription.reason = "unsubscribed", reason
        callback = self.on_unsubscribed
        if callback is not None:
            result = callback(topic, reason)
            if asyncio.iscoroutine(result):
                await result

    async def _answered(self, frame: str | bytes) -> bool:
        """True if ``frame`` answered a subscribe request (or ended a subscription)."""
        answer = self._topic_answer(frame)
        if answer is None:
            return False
        if self.recover and answer.get("id"):
            self._track(answer)  # a position comes with subscribed
        return await self._handle_answer(answer)

    def _topic_answer(self, frame: str | bytes) -> dict[str, Any] | None:
        """The server's answer in ``frame`` (as a dict), or None if it is not one."""
        if isinstance(frame, str):
            if not frame.startswith(_ANSWERS):
                return None
            try:
                answer = json.loads(frame)
            except ValueError:
                return None
            return answer if isinstance(answer, dict) else None
        if frame[:2] not in _BINARY_ANSWERS:
            return None
        try:
            envelope = Envelope.FromString(frame)
        except Exception:
            return None
        kind = Envelope.Kind.Name(envelope.kind).lower()
        answer = {"kind": kind, "topic": envelope.topic, "id": envelope.seq}
        if kind == "subscribed" and envelope.epoch:
            answer.update(offset=envelope.offset, epoch=envelope.epoch)
            answer["recovered"] = envelope.recovered
        elif kind == "unsubscribed":
            answer["reason"] = envelope.error
        else:
            answer["error"] = envelope.error
        return answer

    async def _handle_answer(self, answer: dict[str, Any]) -> bool:
        """True if ``answer`` was for the subscription machinery only (not passed on)."""
        kind, topic, request_id = answer.get("kind"), answer.get("topic"), answer.get("id")
        pending = self._pending.get(request_id) if isinstance(request_id, int) else None
        if pending is not None and pending[0] == topic:
            future = pending[1]
            if not future.done():
                if kind == "error":
                    future.set_exception(SubscriptionRefused(topic, str(answer.get("error"))))
                else:
                    future.set_result(answer)
            return True
        if kind == "unsubscribed" and isinstance(topic, str) and not request_id:
            await self._ended(topic, str(answer.get("reason", "")))
            return True
        return False

    def _subscription_for(self, message: Any) -> Subscription | None:
        topic = (
            message.get("topic") if isinstance(message, dict) else getattr(message, "topic", None)
        )
        subscription = self._subscriptions.get(topic) if isinstance(topic, str) else None
        return subscription if subscription is not None and subscription.on_message else None
