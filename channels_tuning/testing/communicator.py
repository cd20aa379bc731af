"""Channels' ``WebsocketCommunicator`` for tuned consumers: :class:`TunedCommunicator`.

It speaks what the package's clients speak, so a test sees what a user's client sees:

- offers the ``channels-tuning.v1`` subprotocol (heartbeats, envelopes, ``subscribed``
  frames and the topic protocol are then on, as for the package's clients; pass
  ``tuned=False`` to test what a plain page gets);
- answers the server's heartbeat pings as it reads them and never returns them
  (``pings`` counts them; a test that reads nothing for longer than ``IDLE_TIMEOUT``
  is closed with 4000, as a client that stopped answering would be;
  ``receive_nothing()`` answers them too);
- ``subscribe()`` / ``unsubscribe()`` a topic of the consumer's ``topics`` table and
  return the answer, or raise :class:`~channels_tuning.client.SubscriptionRefused`;
- ``receive_topic_message()``: the next message of a topic, unwrapped;
- ``request(method, params)``: call an ``@rpc`` method; its result, or
  :class:`~channels_tuning.client.RequestFailed`; ``assert_reply()`` and
  ``assert_push()`` say the same as assertions;
- ``receive_server_request()`` and ``reply()``: what the consumer's
  ``request_client()`` / ``send_with_ack()`` sent, and the answer to it.

Frames that arrive while it waits for an answer are kept, in order, for the next
``receive_from()``::

    async def test_dashboard():
        comm = TunedCommunicator(DashboardConsumer.as_asgi(), "/ws/dashboard/")
        assert (await comm.connect())[0]
        await comm.subscribe("ticker")
        await broadcast("ticker", {"px": 12.5})
        assert await comm.receive_topic_message() == ("ticker", {"px": 12.5})
        with pytest.raises(SubscriptionRefused):
            await comm.subscribe("user.8")
        await comm.disconnect()
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from typing import Any

from channels.testing import WebsocketCommunicator

from ..client.requests import RequestFailed
from ..client.subscriptions import SubscriptionRefused
from ..wire.heartbeat import PING_BYTES, PING_TEXT, PONG_BYTES, PONG_TEXT
from ..wire.subprotocol import SUBPROTOCOL

__all__ = ["TunedCommunicator"]

#: Frames in which the server asks its client (ids of the server's own count).
_SERVER_ASKS = frozenset({"request", "push"})


class TunedCommunicator(WebsocketCommunicator):
    """A ``WebsocketCommunicator`` that speaks the package's protocol."""

    def __init__(
        self,
        application: Any,
        path: str,
        headers: Any = None,
        subprotocols: list[str] | None = None,
        *,
        tuned: bool = True,
        **kwargs: Any,
    ) -> None:
        offered = [SUBPROTOCOL, *(subprotocols or [])] if tuned else subprotocols
        super().__init__(application, path, headers, offered, **kwargs)
        #: Heartbeat pings the server sent (answered, not returned).
        self.pings = 0
        self._kept: deque[str | bytes] = deque()
        self._ids = itertools.count(1)

    async def receive_from(self, timeout: float = 1) -> str | bytes:
        """The next frame that is not a heartbeat ping (those are answered)."""
        if self._kept:
            return self._kept.popleft()
        return await self._next_frame(timeout)

    async def receive_nothing(self, timeout: float = 0.1, interval: float = 0.01) -> bool:
        """True when nothing but heartbeat pings arrived within ``timeout`` (they
        are answered: a test that only checks for silence keeps its connection)."""
        deadline = time.monotonic() + timeout
        while True:
            quiet = await super().receive_nothing(max(0.0, deadline - time.monotonic()), interval)
            answered = await self._answer_waiting_pings()
            if quiet or not answered or time.monotonic() >= deadline:
                return not self._kept and self.output_queue.empty()

    async def _answer_waiting_pings(self) -> int:
        """Answer the heartbeat pings waiting in the output queue, leaving every other
        message in its place; how many there were."""
        queue = self.output_queue
        waiting = [queue.get_nowait() for _ in range(queue.qsize())]
        pongs: list[str | bytes] = []
        for message in waiting:
            if message.get("type") == "websocket.send" and message.get("text") == PING_TEXT:
                pongs.append(PONG_TEXT)
            elif message.get("type") == "websocket.send" and message.get("bytes") == PING_BYTES:
                pongs.append(PONG_BYTES)
            else:
                queue.put_nowait(message)
        for pong in pongs:
            self.pings += 1
            if isinstance(pong, bytes):
                await self.send_to(bytes_data=pong)
            else:
                await self.send_to(text_data=pong)
        return len(pongs)

    async def _next_frame(self, timeout: float) -> str | bytes:
        while True:
            frame: str | bytes = await super().receive_from(timeout)
            if frame == PING_TEXT:
                self.pings += 1
                await self.send_to(text_data=PONG_TEXT)
            elif frame == PING_BYTES:
                self.pings += 1
                await self.send_to(bytes_data=PONG_BYTES)
            else:
                return frame

    async def subscribe(
        self,
        topic: str,
        params: dict[str, Any] | None = None,
        *,
        since: dict[str, Any] | None = None,
        timeout: float = 1,
    ) -> dict[str, Any]:
        """Ask for ``topic``; the ``subscribed`` answer (with the position when the
        topic has history), or :class:`SubscriptionRefused` with the server's reason."""
        request: dict[str, Any] = {"type": "ct.subscribe", "topic": topic}
        if params is not None:
            request["params"] = params
        if since is not None:
            request["since"] = since
        return await self._request(request, timeout)

    async def unsubscribe(self, topic: str, *, timeout: float = 1) -> dict[str, Any]:
        """End the subscription to ``topic``; the ``unsubscribed`` answer."""
        return await self._request({"type": "ct.unsubscribe", "topic": topic}, timeout)

    async def request(self, method: str, params: Any = None, *, timeout: float = 1) -> Any:
        """Call the consumer's ``@rpc`` method ``method``: its result, or
        :class:`~channels_tuning.client.RequestFailed` with the server's code."""
        request: dict[str, Any] = {"type": "ct.request", "method": method}
        if params is not None:
            request["params"] = params
        answer = await self._exchange(request, timeout)
        if "error" in answer:
            raise RequestFailed(method, str(answer["error"]), str(answer.get("message", "")))
        return answer.get("result")

    async def receive_topic_message(self, timeout: float = 1) -> tuple[str, Any]:
        """``(topic, data)`` of the next topic message (frames before it are kept for
        ``receive_from()``)."""
        skipped: list[str | bytes] = []
        try:
            while True:
                frame = await self.receive_from(timeout)
                message = _json_object(frame)
                if message is not None and message.get("kind") == "data" and "topic" in message:
                    return message["topic"], message.get("data")
                skipped.append(frame)
        finally:
            self._kept.extendleft(reversed(skipped))

    async def assert_push(
        self, expected: Any, *, topic: str | None = None, timeout: float = 1
    ) -> None:
        """Fail unless the next message is ``expected``: the next message of ``topic``
        when given (unwrapped; other topics' messages before it fail the test), else
        the next frame, JSON-decoded (Phoenix's ``assert_push``)."""
        if topic is not None:
            got = await self.receive_topic_message(timeout)
            if got != (topic, expected):
                raise AssertionError(f"pushed {got!r}, expected {(topic, expected)!r}")
            return
        frame = await self.receive_from(timeout)
        data = json.loads(frame) if isinstance(frame, str) else frame
        if data != expected:
            raise AssertionError(f"pushed {data!r}, expected {expected!r}")

    async def assert_reply(
        self, method: str, params: Any = None, *, expected: Any = None, timeout: float = 1
    ) -> None:
        """Call ``method`` and fail unless its result is ``expected`` (Phoenix's
        ``assert_reply``; an error answer raises
        :class:`~channels_tuning.client.RequestFailed`)."""
        result = await self.request(method, params, timeout=timeout)
        if result != expected:
            raise AssertionError(f"{method} replied {result!r}, expected {expected!r}")

    async def receive_server_request(self, timeout: float = 1) -> dict[str, Any]:
        """The next request of the consumer to its client (``{"kind": "request", "id",
        "method", "params"}``) or acknowledged push (``{"kind": "push", "id", "data"}``);
        frames before it are kept for ``receive_from()``. Answer with :meth:`reply`."""
        skipped: list[str | bytes] = []
        try:
            while True:
                frame = await self.receive_from(timeout)
                message = _json_object(frame)
                if message is not None and message.get("kind") in _SERVER_ASKS:
                    return message
                skipped.append(frame)
        finally:
            self._kept.extendleft(reversed(skipped))

    async def reply(
        self, request_id: int, result: Any = None, *, error: str | None = None, message: str = ""
    ) -> None:
        """Answer the server's request ``request_id``: ``result``, or ``error`` (a code)
        with ``message``; ``reply(id)`` acknowledges a push."""
        answer: dict[str, Any] = {"type": "ct.reply", "id": request_id}
        if error is not None:
            answer.update(error=error, message=message)
        elif result is not None:
            answer["result"] = result
        await self.send_to(text_data=json.dumps(answer))

    async def _request(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        answer = await self._exchange(request, timeout)
        if answer.get("kind") == "error":
            raise SubscriptionRefused(request["topic"], str(answer.get("error")))
        return answer

    async def _exchange(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send ``request`` with the next id; its answer (frames before it are kept)."""
        request["id"] = request_id = next(self._ids)
        await self.send_to(text_data=json.dumps(request))
        while True:
            frame = await self._next_frame(timeout)
            answer = _json_object(frame)
            if (
                answer is not None
                and answer.get("id") == request_id
                and answer.get("kind") not in _SERVER_ASKS
            ):
                return answer
            self._kept.append(frame)  # a frame that came first: for receive_from()


def _json_object(frame: str | bytes) -> dict[str, Any] | None:
    if not isinstance(frame, str) or not frame.startswith("{"):
        return None
    try:
        value = json.loads(frame)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
