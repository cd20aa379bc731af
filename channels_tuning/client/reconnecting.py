"""The Python client's connection: :class:`ReconnectingClient` (see the package's
docstring for its behaviour)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import websockets
from websockets.typing import Origin, Subprotocol

from ..wire.codecs import Codec
from ..wire.heartbeat import PING_BYTES, PING_TEXT, PONG_BYTES, PONG_TEXT
from ..wire.offsets import (
    StreamPosition,
)
from ..wire.reconnect import ABNORMAL
from ..wire.subprotocol import SUBPROTOCOL
from .backoff import Backoff, reconnect_delay
from .credentials import TokenCredentials, TokenSource
from .positions import TopicPositions
from .requests import ClientRequests
from .subscriptions import TopicSubscriptions

logger = logging.getLogger("channels_tuning.client")

#: HTTP answers to a handshake that another attempt would get again: the client stops
#: (a missing Origin, a forbidden or unknown path, a bad request).
PERMANENT_REFUSALS: Final = frozenset({400, 401, 403, 404, 405})


def _refusal_status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


class ReconnectingClient(TokenCredentials, TopicPositions, TopicSubscriptions, ClientRequests):
    """A WebSocket client that stays connected.

    A handshake refused ``max_refusals`` times in a row with a status in
    :data:`PERMANENT_REFUSALS` stops the client (``refused_status``, ``close_reason``).

    ``codec``: None (frames as they come: ``str`` or ``bytes``), ``"json"`` (any JSON
    value per text frame, what ``TunedJsonWebsocketConsumer`` speaks), or a
    :class:`~channels_tuning.wire.codecs.Codec` (messages in envelopes; received ones are
    :class:`~channels_tuning.wire.codecs.Received`).

    Callbacks (plain functions or coroutines): ``on_open()``, ``on_message(message)``,
    ``on_reconnecting(delay, attempt, code)``, ``on_close(code, reason)`` (the client
    has stopped), ``on_unsubscribed(topic, reason)`` (the server ended a subscription:
    :meth:`subscribe`). Received messages also go to ``async for message in client``
    (a queue of at most ``max_received``; beyond that the oldest are dropped and
    counted in ``received_dropped``), unless ``on_message`` is set.
    """

    #: Refusals with a permanent status in a row after which the client stops.
    max_refusals: int = 3

    def __init__(
        self,
        url: str,
        *,
        codec: Codec[Any] | str | None = None,
        backoff: Backoff = Backoff(),  # noqa: B008  (a frozen dataclass: immutable)
        max_attempts: int | None = None,
        stable_after: float = 10.0,
        try_later_delay: float = 10.0,
        dead_after: float = 60.0,
        max_queue: int = 100,
        max_received: int = 1000,
        open_timeout: float = 10.0,
        on_open: Callable[[], Any] | None = None,
        on_message: Callable[[Any], Any] | None = None,
        on_reconnecting: Callable[[float, int, int], Any] | None = None,
        on_close: Callable[[int, str], Any] | None = None,
        recover: bool = True,
        on_recovery: Callable[[str, bool], Any] | None = None,
        origin: str | None = None,
        headers: dict[str, str] | None = None,
        token: TokenSource = None,
        refresh_margin: float = 30.0,
        on_unsubscribed: Callable[[str, str], Any] | None = None,
    ) -> None:
        self.url = url
        #: A token (or a function giving a fresh one): client/credentials.py.
        self.token, self.refresh_margin = token, refresh_margin
        #: The ``Origin`` header (servers behind Channels' AllowedHostsOriginValidator
        #: refuse a handshake without one) and any other headers of the handshake.
        self.origin, self.headers = origin, dict(headers or {})
        #: The HTTP status of a permanent refusal (403, 404...): the client stopped.
        self.refused_status: int | None = None
        self._refusals = 0
        self.codec = codec
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.stable_after = stable_after
        self.try_later_delay = try_later_delay
        self.dead_after = dead_after
        self.open_timeout = open_timeout
        self.on_open, self.on_message = on_open, on_message
        self.on_reconnecting, self.on_close = on_reconnecting, on_close
        #: "connecting", "open", "reconnecting" or "closed".
        self.state = "connecting"
        #: Messages waiting for a connection; the oldest is dropped when full.
        self.outbox: deque[str | bytes] = deque(maxlen=max_queue)
        #: Outgoing messages dropped because the outbox was full.
        self.dropped = 0
        self.received_dropped = 0
        self.attempt = 0
        self.connections = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self._received: deque[Any] = deque(maxlen=max_received)
        self._received_event = asyncio.Event()
        self._ws: Any = None
        self._task: asyncio.Task[None] | None = None
        self._opened = asyncio.Event()
        self._stopping = False
        self.recover, self.on_recovery = recover, on_recovery
        #: What the client has of each topic with history (its last epoch and offset).
        self.positions: dict[str, StreamPosition] = {}
        #: Numbered messages received twice (dropped, not passed on).
        self.duplicates = 0
        #: Times numbered messages were lost for good (``recovered`` false after the
        #: client had a position, or an offset that jumped).
        self.gaps = 0
        #: Topics (client/subscriptions.py): subscribe(), on_unsubscribed(topic, reason).
        self._init_subscriptions(on_unsubscribed)
        self._init_requests()  # request(), on_request(): client/requests.py

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def __aenter__(self) -> ReconnectingClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and stop reconnecting."""
        self._stopping = True
        if self._ws is not None:
            await self._ws.close(code, reason)
        self._set_closed(code, reason)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_open(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._opened.wait(), timeout)

    async def wait_closed(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    # ------------------------------------------------------------------ data

    async def send(self, message: Any, **envelope: Any) -> None:
        """Send ``message`` now, or queue it until the connection is open."""
        frame = self._encode(message, envelope)
        ws = self._ws
        if ws is not None and self.state == "open":
            try:
                await ws.send(frame)
                return
            except websockets.ConnectionClosed:
                pass  # queued below; sent after the reconnect
        if len(self.outbox) == self.outbox.maxlen:
            self.dropped += 1
        self.outbox.append(frame)

    async def recv(self) -> Any:
        """The next received message (when no ``on_message`` callback is set)."""
        while not self._received:
            if self.state == "closed":
                raise ConnectionError(f"client closed ({self.close_code})")
            self._received_event.clear()
            await self._received_event.wait()
        return self._received.popleft()

    async def __aiter__(self) -> AsyncIterator[Any]:
        while True:
            try:
                yield await self.recv()
            except ConnectionError:
                return

    # -------------------------------------------------------------- internals

    async def _run(self) -> None:
        code, reason = ABNORMAL, ""
        try:
            code, reason = await self._connect_until_done()
        finally:
            self._set_closed(code, reason)
            self._received_event.set()

    async def _connect_until_done(self) -> tuple[int, str]:
        code, reason = ABNORMAL, ""
        while not self._stopping:
            opened_at = await self._connect_once()
            code, reason = self._last_close()
            if opened_at is not None and time.monotonic() - opened_at >= self.stable_after:
                self.attempt = 0  # a stable connection: start the backoff again
            delay = reconnect_delay(code, self.attempt, self.backoff, self.try_later_delay)
            if self._stops_after(code):
                delay = None
            self.attempt += 1
            if (
                self._stopping
                or delay is None
                or (self.max_attempts is not None and self.attempt > self.max_attempts)
            ):
                break
            self.state = "reconnecting"
            logger.info("reconnecting in %.2f s (attempt %d, code %s)", delay, self.attempt, code)
            await self._call(self.on_reconnecting, delay, self.attempt, code)
            await asyncio.sleep(delay)
        return code, reason

    async def _connect_once(self) -> float | None:
        """One connection, until it ends; the monotonic time it opened, or None."""
        self.state = "connecting" if not self.connections else "reconnecting"
        try:
            ws = await websockets.connect(
                self.connect_url(),
                open_timeout=self.open_timeout,
                ping_interval=None,  # liveness is the server's application-level heartbeat
                # Asks for that heartbeat, envelopes and subscribed frames
                # (channels_tuning.wire.subprotocol); a plain server ignores it.
                subprotocols=[
                    Subprotocol(p) for p in (SUBPROTOCOL, *await self._token_subprotocols())
                ],
                origin=Origin(self.origin) if self.origin else None,
                additional_headers=self.headers or None,
                max_queue=None,
            )
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake) as error:
            logger.debug("connect to %s failed: %r", self.url, error)
            self._ws, self.close_code, self.close_reason = None, ABNORMAL, str(error)
            status = _refusal_status(error)
            if status in PERMANENT_REFUSALS:
                self._refusals += 1
                if self._refusals >= self.max_refusals:
                    # Asking again gets the same answer: stop, and say why. (Not at
                    # the first: daphne also answers 403 when a consumer fails before
                    # accepting, which can pass.)
                    logger.warning(
                        "%s refused the handshake %d times (HTTP %d): not retrying",
                        self.url,
                        self._refusals,
                        status,
                    )
                    self.refused_status = status
                    self.close_reason = f"HTTP {status}: refused, not retried"
                    self._stopping = True
            else:
                self._refusals = 0
            return None
        self._ws = ws
        self._refusals = 0
        self.connections += 1
        opened_at = time.monotonic()
        self.state = "open"
        self._opened.set()
        await self._flush_outbox(ws)
        self._resubscribe()
        await self._call(self.on_open)
        try:
            await self._read(ws)
        finally:
            self._stop_refreshing()
        self._opened.clear()
        return opened_at

    async def _flush_outbox(self, ws: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while self.outbox:
                await ws.send(self.outbox[0])
                self.outbox.popleft()

    async def _read(self, ws: Any) -> None:
        try:
            while True:
                try:
                    frame = await asyncio.wait_for(ws.recv(), self.dead_after)
                except asyncio.TimeoutError:
                    logger.warning(
                        "no frame from %s for %.0f s: reconnecting", self.url, self.dead_after
                    )
                    ws.transport.abort()  # the server is gone; do not wait for a close handshake
                    await ws.wait_closed()
                    return
                if frame == PING_TEXT:
                    await ws.send(PONG_TEXT)
                elif frame == PING_BYTES:
                    await ws.send(PONG_BYTES)
                elif (
                    not self._credentials_frame(ws, frame)
                    and not await self._requests_frame(ws, frame)
                    and not await self._answered(frame)
                ):
                    await self._deliver(ws, frame)
        except websockets.ConnectionClosed:
            return

    async def _deliver(self, ws: Any, frame: str | bytes) -> None:
        try:
            message = self._decode(frame)
        except ValueError:
            logger.warning("undecodable frame from %s dropped", self.url)
            return
        codec = self.codec
        if isinstance(codec, Codec):
            if message.kind == "ping":
                await ws.send(codec.encode(None, kind="pong", seq=message.seq))
                return
            if message.kind == "pong":
                return
        if self.recover and not self._track(message):
            return
        await self._hand_over(message)

    async def _hand_over(self, message: Any) -> None:
        subscription = self._subscription_for(message)
        if subscription is not None:
            await self._call(subscription.on_message, message)
            return
        if self.on_message is not None:
            await self._call(self.on_message, message)
            return
        if len(self._received) == self._received.maxlen:
            self.received_dropped += 1
        self._received.append(message)
        self._received_event.set()

    def _encode(self, message: Any, envelope: dict[str, Any]) -> str | bytes:
        codec = self.codec
        if codec is None:
            if not isinstance(message, (str, bytes)):
                raise TypeError("without a codec, send str or bytes")
            return message
        if codec == "json":
            return json.dumps(message, separators=(",", ":"))
        assert isinstance(codec, Codec)
        return codec.encode(message, **envelope)

    def _decode(self, frame: str | bytes) -> Any:
        codec = self.codec
        if codec is None:
            return frame
        if codec == "json":
            return json.loads(frame)
        assert isinstance(codec, Codec)
        return codec.decode(frame)

    def _last_close(self) -> tuple[int, str]:
        ws = self._ws
        self._ws = None
        if ws is not None:
            # websockets reports 1006 when the connection ended without a close frame.
            self.close_code = ws.close_code or ABNORMAL
            self.close_reason = ws.close_reason or ""
        return self.close_code or ABNORMAL, self.close_reason

    def _set_closed(self, code: int, reason: str) -> None:
        if self.state != "closed":
            self.state = "closed"
            self.close_code, self.close_reason = code, reason
            if self.on_close is not None:
                result = self.on_close(code, reason)
                if asyncio.iscoroutine(result):
                    asyncio.get_running_loop().create_task(result)

    @staticmethod
    async def _call(callback: Callable[..., Any] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            result = callback(*args)
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            logger.exception("client callback %r raised", callback)
