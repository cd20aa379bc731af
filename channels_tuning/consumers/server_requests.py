"""The server asks its client: :meth:`~ServerRequestsMixin.request_client` and
:meth:`~ServerRequestsMixin.send_with_ack`, :class:`ServerRequestsMixin`.

::

    class OrderConsumer(TunedJsonWebsocketConsumer):
        async def order_shipped(self, event):              # a group event
            delivered = await self.send_with_ack({"shipped": event["order"]}, timeout=5)
            if not delivered:
                await notify_by_mail(event["order"])
            state = await self.request_client("page.state")  # the client's handler's result

Both clients answer (their ``on_request`` handlers, and their message handling for a
push); the wire format is :mod:`channels_tuning.wire.rpc`. What is guaranteed:

- each call ends: the client's result (or ``True`` for an acknowledged push), its
  error (:class:`~channels_tuning.exceptions.ClientRequestFailed` with its code, or
  ``False``), ``timeout`` after ``timeout`` seconds (the consumer's
  ``client_request_timeout``, 10), or ``closed`` when the connection ends first;
- at most ``max_client_requests`` (64) are in flight per connection. Requests only
  pile up when the client reads frames and does not answer them, so one more closes
  the connection with 4006 (``UNANSWERED_REQUESTS``): logged once, counted;
- a reply is matched by its id to a request of this connection: a reply to no pending
  request (after its timeout, a second one, one never asked) is dropped and counted as
  ``late``; an unreadable one closes with 1008;
- counted in ``channels_tuning_client_requests_total{consumer, outcome}``.

A request waits for a reply that the task reading client frames brings in, so it
cannot be made from that task (``receive()``, ``connect()``, ``@rpc`` methods): it
raises ``RuntimeError`` there rather than wait out its timeout. Layer event handlers
run in their own task; from ``receive()``, start a task. A consumer with a protobuf
codec asks in envelopes, and pushes its codec's messages in envelopes of kind ``PUSH``;
a consumer of other binary frames raises ``unsupported`` for a push.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from ..exceptions import ClientRequestFailed, ProtocolRequestError
from ..layers.acks import AckTally, tally_for
from ..runtime.counters import CLIENT_REQUESTS
from ..runtime.ratelog import RateLimitedLog
from ..wire.closecodes import CloseCode
from ..wire.rpc import Reply, parse_reply, push_frame, server_request_frame
from .rpc import RpcMixin

logger = logging.getLogger("channels_tuning")
#: Clients decide how often they send unreadable or late replies: a line a second.
_reply_log = RateLimitedLog(logger, interval=1.0, level=logging.INFO)

_PUSH = "push"


class ServerRequestsMixin(RpcMixin):
    """Requests to the client (a layer of
    :class:`~channels_tuning.consumers.base.ManagedConnectionMixin`)."""

    #: Seconds a request or push waits for the client's answer by default.
    client_request_timeout: ClassVar[float] = 10.0
    #: Requests and pushes waiting for the client's answer at once; one more closes 4006.
    max_client_requests: ClassVar[int] = 64

    #: Id -> the waiting future; None until this connection first asks its client.
    _pending_replies: dict[int, asyncio.Future[Reply]] | None = None
    _ask_ids: itertools.count[int]
    _frames_task: asyncio.Task[Any] | None = None
    #: Whether client frames may be of the package's protocol (topics, @rpc, replies):
    #: set on the class by its declarations, on a connection when it first asks.
    _reads_protocol: bool = False
    #: Whether this class encodes pushes as binary frames (a protobuf codec's consumer).
    _binary_pushes: ClassVar[bool] = False
    #: Acknowledged broadcasts handed to the client, by id, until it answers.
    _broadcast_acks: dict[int, AckTally] | None = None

    async def request_client(
        self, method: str, params: Any = None, *, timeout: float | None = None
    ) -> Any:
        """Call the client's handler for ``method`` and return its result; raises
        :class:`~channels_tuning.exceptions.ClientRequestFailed` (its ``code``: the
        client's error, ``timeout``, ``closed``, ``unsupported``)."""
        binary = self._binary_frames()
        reply = await self._ask(
            method, lambda i: server_request_frame(i, method, params, binary=binary), timeout
        )
        if reply.error is not None:
            raise ClientRequestFailed(method, reply.error, reply.message)
        return reply.result

    async def send_with_ack(self, data: Any, *, timeout: float | None = None) -> bool:
        """Send ``data`` (JSON; a protobuf codec's consumer: its message) as a message
        the client acknowledges once its message handling returned: True when it did
        within ``timeout``, False when it did not (timeout, an error in its handler,
        the connection ended)."""
        if self._binary_frames() and not self._binary_pushes:
            raise ClientRequestFailed(_PUSH, "unsupported", "binary pushes need a codec")
        try:
            reply = await self._ask(_PUSH, lambda i: self._push_frame(i, data), timeout)
        except ClientRequestFailed as failure:
            if failure.code == "unsupported":
                raise
            return False
        return reply.error is None

    def _push_frame(self, push_id: int, data: Any) -> dict[str, Any]:
        """The frame of push ``push_id`` (JSON text; a binary codec's envelope)."""
        return push_frame(push_id, data)

    async def _ask(
        self, method: str, frame_for: Callable[[int], dict[str, Any]], timeout: float | None
    ) -> Reply:
        """Send the frame ``frame_for(id)`` gives and wait for the client's reply to it."""
        if asyncio.current_task() is self._frames_task:
            raise RuntimeError(
                "request_client()/send_with_ack() from the task that reads client frames "
                "(receive, connect, an @rpc method) would wait for a reply only that task "
                "can read: call it from a layer event handler or a task of its own"
            )
        if not self.tuned_client:
            raise ClientRequestFailed(method, "unsupported", "the client cannot answer")
        label = self.consumer_label()
        if self.closing:
            CLIENT_REQUESTS.inc((label, "closed"))
            raise ClientRequestFailed(method, "closed")
        pending = self._pending_replies
        if pending is None:
            pending = self._pending_replies = {}
            self._ask_ids = itertools.count(1)
            self._reads_protocol = True  # this connection's frames may be replies now
        if len(pending) >= self.max_client_requests:
            CLIENT_REQUESTS.inc((label, "unanswered"))
            self.close_nowait(CloseCode.UNANSWERED_REQUESTS, "requests unanswered")
            self._fail_pending()
            raise ClientRequestFailed(method, "closed", "requests unanswered")
        ask_id = next(self._ask_ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        pending[ask_id] = future
        try:
            self.send_nowait(frame_for(ask_id))
            wait = self.client_request_timeout if timeout is None else timeout
            reply = await asyncio.wait_for(future, wait)
        except asyncio.TimeoutError:
            CLIENT_REQUESTS.inc((label, "timeout"))
            raise ClientRequestFailed(method, "timeout") from None
        except ConnectionResetError:
            CLIENT_REQUESTS.inc((label, "closed"))
            raise ClientRequestFailed(method, "closed") from None
        except asyncio.CancelledError:
            # The connection's teardown cancels the task that asked (its layer
            # events' task) before it fails what is pending: ended by the close too.
            CLIENT_REQUESTS.inc((label, "closed"))
            raise
        finally:
            pending.pop(ask_id, None)
        CLIENT_REQUESTS.inc((label, "ok" if reply.error is None else "error"))
        return reply

    def _deliver_acknowledged(self, message: dict[str, Any]) -> None:
        push = message.get("ack_frame")
        # A field that is not what broadcast(ack=True) sends: an ordinary broadcast.
        tally = tally_for(self.channel_layer, message["ack"]) if isinstance(push, dict) else None
        if (
            tally is None
            or not isinstance(push, dict)
            or not self.tuned_client
            or self._binary_frames()
        ):
            if tally is not None:
                # A plain page, or a client of binary frames (the push is JSON text):
                # the ordinary frame, as for any broadcast.
                tally.cannot_acknowledge += 1
            super()._deliver_acknowledged(message)
            return
        if self.closing:
            return  # not reached
        acks = self._broadcast_acks
        if acks is None:
            acks = self._broadcast_acks = {}
        elif len(acks) >= self.max_client_requests:
            for ack_id in [i for i, waiting in acks.items() if waiting.closed]:
                del acks[ack_id]  # past their deadline: an answer no longer counts
        acks[tally.ack_id] = tally
        tally.delivered += 1
        self._reads_protocol = True  # this connection's frames may be replies now
        self.send_nowait(push, message.get("key"))

    async def _request_frame(self, message: dict[str, Any]) -> bool:
        pending = self._pending_replies
        if pending is not None or self._broadcast_acks is not None:
            try:
                reply = parse_reply(message, binary=self._binary_frames())
            except ProtocolRequestError as error:
                CLIENT_REQUESTS.inc((self.consumer_label(), "malformed"))
                _reply_log.log(
                    "channels_tuning: %s reply refused: %s", self.consumer_label(), error
                )
                self.close_nowait(CloseCode.POLICY_VIOLATION, "unreadable reply")
                return True
            if reply is not None:
                acks = self._broadcast_acks
                tally = acks.pop(reply.id, None) if acks is not None else None
                if tally is not None:
                    if reply.error is None and not tally.acknowledge():
                        CLIENT_REQUESTS.inc((self.consumer_label(), "late"))
                    return True
                future = pending.get(reply.id) if pending is not None else None
                if future is None or future.done():
                    CLIENT_REQUESTS.inc((self.consumer_label(), "late"))
                    _reply_log.log(
                        "channels_tuning: %s reply to no pending request (id %s) dropped",
                        self.consumer_label(),
                        reply.id,
                    )
                else:
                    future.set_result(reply)
                return True
        return self._has_methods and await super()._request_frame(message)

    def _fail_pending(self) -> None:
        """The connection is closing: every request waiting for its client ends."""
        for future in (self._pending_replies or {}).values():
            if not future.done():
                future.set_exception(ConnectionResetError())

    async def release(self) -> None:
        self._fail_pending()
        await super().release()
