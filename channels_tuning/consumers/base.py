"""The Channels glue around the sans-I/O core: :class:`ManagedConnectionMixin`.

Every decision about a connection (is this frame delivered, is this message
written, queued or dropped, is it time to ping or to close) is made by its
:class:`~channels_tuning.core.ConnectionCore`. This module only does the I/O
around it, replacing the per-consumer machinery of ``AsyncConsumer`` with shared,
bounded parts:

- **One task per idle connection.** Client frames are read by the server's own
  application task; channel-layer events come from a per-process reader
  (:mod:`channels_tuning.layers.reader`) and run in a task that exists only while
  events are pending; outbound messages are written synchronously when the server
  allows it, and by a writer task only while a backlog exists.
- **Bounded sends.** The core's outbound queue and overflow policy decide what is
  lost when the client is not keeping up; every loss is counted here by reason.
- **Registry and timers.** Accepted connections are in the process registry; the
  process scheduler calls :meth:`on_tick`, which ticks the core.
- **Group hygiene.** Groups joined through ``groups`` or :meth:`join_group` are left
  when the connection ends, whatever ends it: a disconnect, an exception in a
  handler, or cancellation of the application task.
- **Closes** go through :meth:`close_nowait`, which logs once and counts by code.

Policies (heartbeat, limits, lifetime) are an explicit ordered list
(:meth:`policy_chain`, :mod:`channels_tuning.core.policies`); the mixins in
:mod:`channels_tuning.consumers.mixins` are shortcuts that add one each.

Concurrency note: client frames are handled in order, and layer events are
handled in order, but a layer event's handler may run while a client frame's
handler is suspended in an ``await`` (plain Channels runs one at a time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar, cast

from channels.exceptions import AcceptConnection, DenyConnection, StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.core.signals import setting_changed

from ..conf import FROM_SETTINGS, settings_for
from ..core import (
    Action,
    AdmissionContext,
    ConnectionCore,
    ConnectionSettings,
    ConnectionState,
    Liveness,
    Outcome,
    Policy,
)
from ..core.policies import PolicyChain, ordered_policy_classes
from ..core.queue import REASON_CLOSED, REASON_INBOX_FULL
from ..exceptions import RecoveryRequestError
from ..jobs import install as install_process_jobs
from ..layers.frames import FRAME_TYPE, FRAMES_TYPE, payload_frame
from ..layers.history import history_policy
from ..layers.membership import refresh_finished
from ..layers.presence import presence_policy
from ..layers.reader import process_reader_for
from ..runtime.asyncutil import loop_semaphore
from ..runtime.counters import ACCEPTED, CLOSES, DROPPED, LAYER_ERRORS, REJECTED, TRAFFIC
from ..runtime.ratelog import RateLimitedLog
from ..runtime.registry import registry
from ..runtime.scheduler import scheduler
from ..runtime.shutdown import track_cleanup
from ..servers import detect
from ..wire.closecodes import ABNORMAL_CLOSURE, CloseCode, log_level
from ..wire.offsets import StreamPosition, parse_recover_requests
from ..wire.subprotocol import SUBPROTOCOL, offers_subprotocol, speaks_tuned_protocol
from .recovery import GroupStreams

logger = logging.getLogger("channels_tuning")
#: Clients decide how often a close stalls: a line a second at most.
_stalled_log = RateLimitedLog(logger, level=logging.INFO)
_refused_log = RateLimitedLog(logger, level=logging.INFO)
#: Redis decides how often a read fails (every 5 s of quiet with redis-py 8): a line
#: a minute at most; every failure is counted in channels_tuning_layer_errors_total.
_reader_log = RateLimitedLog(logger, interval=60.0, level=logging.WARNING)

Message = dict[str, Any]

#: Group adds/discards in flight per process. A shutdown or a reconnect storm
#: ends or starts thousands of connections at once; unbounded, their Redis
#: commands exhaust redis-py's connection pool ("Too many connections").
MAX_CONCURRENT_GROUP_OPS = 32


def group_ops_limiter() -> asyncio.Semaphore:
    return loop_semaphore("group_ops", MAX_CONCURRENT_GROUP_OPS)


def _count_out(message: Message) -> None:
    payload = message.get("text")
    if payload is None:
        payload = message.get("bytes")
        if payload is None:
            return  # accept, close: not data
    TRAFFIC.messages_out += 1
    TRAFFIC.bytes_out += len(payload)


_chains: dict[type, PolicyChain] = {}


def _clear_chains(*, setting: str, **kwargs: Any) -> None:
    if setting == "CHANNELS_TUNING":
        _chains.clear()


setting_changed.connect(_clear_chains)


class ManagedConnectionMixin(AsyncWebsocketConsumer):
    """Lifecycle, bounded sends, layer events, registry and group hygiene."""

    # Per-class overrides of CHANNELS_TUNING (see channels_tuning.conf).
    scheduler_tick: Any = FROM_SETTINGS
    send_queue_max_messages: Any = FROM_SETTINGS
    send_queue_max_bytes: Any = FROM_SETTINGS
    overflow_policy: Any = FROM_SETTINGS
    layer_inbox_max: Any = FROM_SETTINGS

    #: Frame types this consumer accepts; the other type is closed with 1003.
    accept_text_frames: ClassVar[bool] = True
    accept_binary_frames: ClassVar[bool] = True

    #: The policies of this consumer, in the order they see a frame. None: the
    #: built-ins that the class's mixins add (``policy_classes``), in the order of
    #: :data:`channels_tuning.core.policies.BUILTIN_ORDER`.
    policies: ClassVar[Sequence[type[Policy]] | None] = None
    #: What a mixin adds to the derived policy list (each mixin: one policy).
    policy_classes: ClassVar[tuple[type[Policy], ...]] = ()

    # Per-connection state. Class-level defaults keep instances small: an
    # attribute becomes per-instance only when it is first set.
    channel_name: str = ""  # "" until a channel layer gives one
    #: The channel layer (None without CHANNEL_LAYERS); Channels types it as present.
    channel_layer: Any
    tuning: ConnectionSettings
    core: ConnectionCore
    registry_key: str = ""
    #: Whom the connection counts against for per-user limits (connection_owner()).
    owner_key: str = ""
    connected_at: float = 0.0
    _send_mode: int = detect.GENERIC
    #: The server's own send on tuned and plain daphne (written synchronously: a
    #: FlowControlledSend, or daphne's), else what the middlewares handed over.
    base_send: Any
    #: The server's own send under Channels' session wrapper (GENERIC servers only).
    _server_send: Any = None
    #: The client offered the channels-tuning subprotocol (or CLIENT_PROTOCOL is
    #: "always"): it gets heartbeat frames, history envelopes, subscribed and presence
    #: frames. Any other client gets exactly what the consumer sends.
    tuned_client: bool = False
    _writer: asyncio.Task[None] | None = None
    _inbox: deque[Message] | None = None
    _inbox_task: asyncio.Task[None] | None = None
    _layer_task: asyncio.Task[None] | None = None
    _joined: set[str] | None = None
    #: Groups join_group() is adding now (the layers' group_add leaves hooks to it).
    _joining: set[str] | None = None
    #: Groups with history this connection joined (None: none yet).
    _group_streams: GroupStreams | None = None
    #: The client's recovery requests (``ct_recover``), by group.
    _recover_requests: dict[str, StreamPosition] | None = None
    #: How many entries of self.groups have been joined (appends beyond are new).
    _groups_synced: int = 0
    _registered: bool = False
    _disconnect_code: int | None = None
    _cancelled: bool = False
    #: When the writer task began waiting in a server's ``send`` (0: not waiting).
    _send_waiting_since: float = 0.0

    #: Seconds the cleanup waits for queued frames (a close among them) to be written
    #: when the application ends while the connection is still open.
    close_flush_timeout: ClassVar[float] = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # ``groups`` as in Channels, but always the instance's own list (Channels
        # shares a class-level list between instances). Groups appended to it are
        # joined after the handler that appended them (see _join_new_groups).
        self.groups = list(getattr(type(self), "groups", None) or ())
        registry.instance_created()

    def __del__(self) -> None:
        registry.instance_freed()

    # ---------------------------------------------------------------- policies

    @classmethod
    def policy_chain(cls) -> PolicyChain:
        """The configured policies of this class, in order (built once per class)."""
        chain = _chains.get(cls)
        if chain is None:
            if cls.policies is not None:
                classes = list(cls.policies)
            else:
                declared = [
                    p
                    for klass in reversed(cls.__mro__)
                    for p in klass.__dict__.get("policy_classes", ())
                ]
                classes = ordered_policy_classes(declared)
            chain = _chains[cls] = PolicyChain.build(classes, settings_for(cls), cls)
        return chain

    # -------------------------------------------------------------------- ASGI

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = scope
        self.tuning = settings_for(type(self))
        self.core = ConnectionCore(self.tuning, self.policy_chain(), time.monotonic())
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
        self.base_send = send
        server_send = detect.server_send(scope, send)
        self._send_mode = mode = detect.detect_send_mode(server_send)
        if mode != detect.GENERIC:
            self.base_send = server_send  # written synchronously, past any middleware
        elif server_send is not send:
            self._server_send = server_send  # for abort_connection only
        detect.announce_server(mode)
        detect.announce_path(type(self), mode, server_send, self.tuning.idle_timeout)
        if speaks_tuned_protocol(scope, self.tuning.client_protocol):
            self.tuned_client = True  # set only when true: instances stay small
            self.core.liveness = Liveness.APPLICATION
        elif mode == detect.FLOW:
            self.core.liveness = Liveness.TRANSPORT
        else:
            self.core.liveness = Liveness.SERVER
        self.connected_at = self.core.last_seen
        self.registry_key = self.channel_name or f"local.{id(self):x}"
        self._attach_layer()
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        except asyncio.CancelledError:
            # The server cancels its applications on shutdown or when one is slow to
            # exit; whoever wraps the application (asyncio.wait_for, a TaskGroup) may
            # too. Re-raised after the cleanup below, as asyncio requires. Servers
            # that stop at the first cancelled application (daphne's shutdown gathers
            # them) are made to wait for all: channels_tuning.compat.daphne.
            self._cancelled = True
            raise
        finally:
            # Shielded: the cleanup runs to the end in its own task even if this
            # task is cancelled again.
            cleanup = asyncio.get_running_loop().create_task(self._teardown())
            track_cleanup(cleanup)
            await asyncio.shield(cleanup)

    async def dispatch(self, message: Message) -> None:
        # Unlike AsyncConsumer.dispatch, no close_old_connections() thread hop per
        # message: database_sync_to_async already does it around each DB call.
        name = message["type"].replace(".", "_")
        handler = None if name.startswith("_") else getattr(self, name, None)
        if handler is None:
            # Plain Channels raises ValueError here, which ends the consumer with
            # 1011; raised in a layer event's task it would only reach asyncio's
            # "exception was never retrieved". Said once, and closed the same way.
            logger.error(
                "channels_tuning: %s has no handler for message type %r (a typo, or a "
                "type starting with '_' or '.', which Channels refuses); closing with 1011",
                self.consumer_label(),
                message["type"],
            )
            self.close_nowait(CloseCode.INTERNAL_ERROR, "no handler for event")
            return
        try:
            await handler(message)
            if len(self.groups) != self._groups_synced:
                await self._join_new_groups()
        except StopConsumer:
            raise
        except Exception:
            logger.exception("channels_tuning: handler for %s raised", message["type"])
            # Keep running until the close handshake ends in websocket.disconnect:
            # an application that returns while daphne still tracks its socket
            # breaks daphne's shutdown (KeyError in kill_all_applications).
            self.close_nowait(CloseCode.INTERNAL_ERROR, "internal error")

    # ------------------------------------------------------------- lifecycle

    @property
    def state(self) -> ConnectionState:
        """The connection's state (see :class:`~channels_tuning.core.ConnectionState`)."""
        return self.core.state

    @property
    def accepted(self) -> bool:
        return self.core.accepted

    @property
    def closing(self) -> bool:
        """True once the server has closed (or the client has gone)."""
        state = self.core.state
        return state is ConnectionState.CLOSING or state is ConnectionState.CLOSED

    @property
    def last_seen(self) -> float:
        return self.core.last_seen

    def admission_refusal(self) -> tuple[int, str] | None:
        """``(close code, reason)`` to refuse this connection, or None.

        The admission policies decide (connection limits); override to add a check
        of your own (call ``super()`` first). It runs before anything is allocated
        for the connection."""
        if self.tuning.max_connections_per_user is not None:
            # Only then: resolving scope["user"] may cost a session lookup.
            self.owner_key = self.connection_owner()
        return self.core.admit(
            AdmissionContext(
                registry.count(), registry.count(type(self)), registry.count_owner(self.owner_key)
            )
        )

    def _read_recover_requests(self) -> tuple[int, str] | None:
        """Parse the client's ``ct_recover`` requests; a refusal if unreadable."""
        try:
            requests = parse_recover_requests(self.scope.get("query_string", b""))
        except RecoveryRequestError as error:
            # A client decides how often: a line a second at most (every one counted).
            _refused_log.log("channels_tuning: refused %s: %s", self.consumer_label(), error)
            return int(CloseCode.POLICY_VIOLATION), "bad_recovery_request"
        if requests:
            self._recover_requests = requests
        return None

    def connection_owner(self) -> str:
        """Who this connection counts against for ``MAX_CONNECTIONS_PER_USER``: the
        authenticated user (``scope["user"]``, from Channels' AuthMiddlewareStack), else
        the client's address (behind a proxy, run daphne with --proxy-headers).
        Override to count by something else (an API key, a tenant)."""
        user = self.scope.get("user")
        if user is not None and getattr(user, "is_authenticated", False):
            return f"user:{user.pk}"
        client = self.scope.get("client") or ("?",)
        return f"addr:{client[0]}"

    async def websocket_connect(self, message: Any) -> None:
        refusal = self.admission_refusal() or self._read_recover_requests()
        if refusal is not None:
            code, reason = refusal
            REJECTED.inc((self.consumer_label(), reason))
            # Accept, then close: browsers cannot read an HTTP status, but they
            # do see a close code, and 1013 tells them to come back later.
            self._send_control({"type": "websocket.accept"}, urgent=True)
            self.close_nowait(code, reason)
            return  # websocket.disconnect follows the close handshake
        registry.add(self)
        self._registered = True
        install_process_jobs()  # idempotent: the app's ready() did it if it is installed
        scheduler.ensure_running(self.tuning.scheduler_tick)
        await self._join_new_groups()
        try:
            await self.connect()
        except AcceptConnection:
            await self.accept()
        except DenyConnection:
            await self.close()

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        if subprotocol is None and self.tuned_client and offers_subprotocol(self.scope):
            # The client offered channels-tuning.v1 and waits to see it selected
            # (a browser fails a handshake that answers none of what it offered).
            subprotocol = SUBPROTOCOL
        message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers:
            message["headers"] = list(headers)
        self._send_control(message, urgent=True)
        ACCEPTED.inc((self.consumer_label(),))
        now = time.monotonic()
        self.core.accept(now)
        if self._group_streams is not None:
            self._group_streams.accepted()
        self.on_accepted(now)

    def on_accepted(self, now: float) -> None:
        """Called once the connection is accepted (the core's timers have started)."""

    def on_tick(self, now: float) -> None:
        """Called by the process scheduler every tick: ticks the core (heartbeat,
        idle timeout, lifetime). Override to add timers; call ``super()``."""
        core = self.core
        if core.liveness is Liveness.TRANSPORT:
            # The tuned server's send notes the client's protocol pongs and pings.
            core.note_activity(self.base_send.last_activity)
        core.tick(now)
        if core.has_actions:
            self._perform(core.take_actions())
        waiting_since = self._send_waiting_since
        if (
            waiting_since
            and core.state is ConnectionState.CLOSING
            and now - waiting_since > self.close_flush_timeout
        ):
            self._abort_stalled(now - waiting_since)

    def _abort_stalled(self, waited: float) -> None:
        """The connection is closing but the server's ``send`` has not returned for
        ``waited`` seconds: the client stopped reading, and the close frame queued
        behind its backlog will never be written. Drop the TCP connection (servers
        whose ``send`` waits: uvicorn, hypercorn), so the socket and the server's
        buffers are freed now rather than when the client goes."""
        self._send_waiting_since = 0.0  # once
        aborted = detect.abort_connection(self._server_send or self.base_send)
        _stalled_log.log(
            "channels_tuning: %s %s stopped reading; %s after %.1f s",
            self.consumer_label(),
            self.registry_key,
            "connection aborted" if aborted else "the server offers no abort, left to it",
            waited,
        )

    async def websocket_receive(self, message: Any) -> None:
        core = self.core
        if core.state is ConnectionState.CLOSING or core.state is ConnectionState.CLOSED:
            return
        payload = message.get("text")
        if payload is None:
            payload = message.get("bytes") or b""
        TRAFFIC.messages_in += 1
        TRAFFIC.bytes_in += len(payload)
        deliver = core.receive_frame(message, time.monotonic())
        if core.has_actions:
            self._perform(core.take_actions())
        if deliver and self.filter_inbound(message):
            await super().websocket_receive(message)

    def filter_inbound(self, message: Message) -> bool:
        """Return False to stop a client frame before ``receive()``; runs after the
        policies. A subclass that closes the connection returns False."""
        return True

    async def websocket_disconnect(self, message: Any) -> None:
        self._disconnect_code = message.get("code", ABNORMAL_CLOSURE)
        raise StopConsumer()

    async def _teardown(self) -> None:
        self._detach_layer()
        was_registered = self._registered
        if was_registered:
            registry.discard(self)
            self._registered = False
        if self._inbox_task is not None and self._inbox_task is not asyncio.current_task():
            self._inbox_task.cancel()
        still_open = self._disconnect_code is None
        if still_open and self.core.state is ConnectionState.OPEN:
            # The application ended (cancelled, or a handler raised StopConsumer)
            # with the socket open: close it rather than leave it without an app.
            code = CloseCode.SERVICE_RESTART if self._cancelled else CloseCode.NORMAL
            self.close_nowait(code, "server closing", urgent=True)
        await self.release()
        if was_registered:
            try:
                await self.disconnect(self._disconnect_code_for_handler())
            except Exception:
                logger.exception("channels_tuning: disconnect() raised")
        await self._flush_before_exit(still_open)
        self.core.connection_lost()

    def _disconnect_code_for_handler(self) -> int:
        if self._disconnect_code is not None:
            return self._disconnect_code  # the client's (or the server's) code
        if self.core.close_code is not None and not self._cancelled:
            return self.core.close_code  # the application ended after closing
        return ABNORMAL_CLOSURE

    async def _flush_before_exit(self, still_open: bool) -> None:
        writer = self._writer
        if writer is not None and still_open:
            await asyncio.wait({writer}, timeout=self.close_flush_timeout)
        if self._writer is not None:
            self._writer.cancel()
        self._drop_backlog(REASON_CLOSED)

    async def release(self) -> None:
        """Give back what the connection holds: leaves every joined group (those in
        ``self.groups``, joined with :meth:`join_group` or the layer's ``group_add``)."""
        joined = set(self._joined or ()) | set(self.groups or ())
        self._joined = None
        # GroupStreams refers back to this consumer: a cycle, which the first
        # connection of a process would keep forever once gc.freeze() (GC_FREEZE) has
        # moved it to the permanent generation. Broken here instead.
        self._group_streams = None
        if not joined or self.channel_layer is None:
            return
        await refresh_finished()
        for group in joined:
            try:
                async with group_ops_limiter():
                    await self.channel_layer.group_discard(group, self.channel_name)
                    await self._leave_presence(group)
            except Exception:
                # Redis down: the membership expires with group_expiry instead.
                logger.warning(
                    "channels_tuning: could not leave group %s for %s",
                    group,
                    self.channel_name,
                    exc_info=True,
                )

    # ---------------------------------------------------------------- groups

    async def join_group(self, group: str) -> None:
        """Join ``group``; it is left automatically when the connection ends."""
        if self.channel_layer is None:
            raise RuntimeError("join_group() needs a channel layer (CHANNEL_LAYERS)")
        joining = self._joining
        if joining is None:
            joining = self._joining = set()
        joining.add(group)  # the tuned layers' group_add then leaves the hooks to us
        try:
            await self.membership_starting(group)
            try:
                async with group_ops_limiter():
                    await self.channel_layer.group_add(group, self.channel_name)
            except BaseException:
                self.membership_failed(group)
                raise
            self.track_group(group)
            await self.membership_added(group)
        finally:
            joining.discard(group)

    # The tuned layers call these around a ``group_add`` of this consumer's channel
    # made elsewhere (``self.channel_layer.group_add`` in ``connect()``, as Channels'
    # tutorial does), so that it gets what ``join_group`` gives: recovery and
    # ``subscribed`` for groups with history, presence.

    def wants_membership_hooks(self, group: str) -> bool:
        """Whether a layer's ``group_add`` of ``group`` should call the hooks below
        (not while :meth:`join_group` calls them itself, nor for a group joined)."""
        return group not in (self._joining or ()) and group not in (self._joined or ())

    async def membership_starting(self, group: str) -> None:
        """Before the membership is added: a group with history starts holding live
        messages, and reads where it stands (consumers.recovery)."""
        policy = history_policy(group)
        if (
            policy is not None
            and self.tuned_client
            and getattr(self.channel_layer, "history", None) is not None
        ):
            # A group with history: hold live messages until the client has been
            # told where the group stands (and got what it missed).
            streams = self._group_streams
            if streams is None:
                streams = self._group_streams = GroupStreams(self, self._recover_requests or {})
            # Bounded like the membership itself: a reconnect storm's history reads
            # exhausted redis-py's pool ("Too many connections") and failed joins.
            async with group_ops_limiter():
                await streams.start(group, policy)

    def membership_failed(self, group: str) -> None:
        if self._group_streams is not None:
            self._group_streams.forget(group)

    async def membership_added(self, group: str) -> None:
        """After the membership is added: presence, then ``subscribed`` (now, or at
        the accept) and what the client missed."""
        presence = presence_policy(group)
        if presence is not None and getattr(self.channel_layer, "presence", None) is not None:
            await self.channel_layer.presence.add(
                group, self.channel_name, self.presence_identity(), presence
            )
        streams = self._group_streams
        if streams is not None and group in streams.streams:
            streams.joined(group)

    def presence_identity(self) -> str:
        """Who this connection is in the presence of its groups (``PRESENCE``): the
        authenticated user's id, else the channel name. Override to show a name."""
        user = self.scope.get("user")
        if user is not None and getattr(user, "is_authenticated", False):
            return str(user.pk)
        return str(self.channel_name)

    async def _leave_presence(self, group: str) -> None:
        presence = presence_policy(group)
        store = getattr(self.channel_layer, "presence", None)
        if presence is not None and store is not None:
            await store.remove(group, self.channel_name, presence)

    async def leave_group(self, group: str) -> None:
        if self._joined is not None:
            self._joined.discard(group)
        if self._group_streams is not None:
            self._group_streams.forget(group)
        if self.channel_layer is not None:
            await refresh_finished()
            async with group_ops_limiter():
                await self.channel_layer.group_discard(group, self.channel_name)
                await self._leave_presence(group)

    def tracked_groups(self) -> frozenset[str]:
        return frozenset(self._joined or ())

    def track_group(self, group: str) -> None:
        """Record a membership made elsewhere (the tuned layers call this for
        ``channel_layer.group_add`` of this consumer's channel): refreshed while the
        connection lives, left when it ends."""
        if self._joined is None:
            self._joined = set()
        self._joined.add(group)

    def untrack_group(self, group: str) -> None:
        if self._joined is not None:
            self._joined.discard(group)

    async def _join_new_groups(self) -> None:
        """Join what was appended to ``self.groups`` since the last look (at connect,
        then after each handler): Channels would leave such groups unjoined, yet
        discard them at disconnect; here they are joined, tracked and left."""
        groups = self.groups
        start = self._groups_synced if self._groups_synced <= len(groups) else 0
        for group in groups[start:]:
            if self.channel_layer is not None and group not in (self._joined or ()):
                await self.join_group(group)
        self._groups_synced = len(groups)

    async def send_json(
        self, content: Any, close: bool = False, *, coalesce_key: Any = None
    ) -> None:
        """Channels' ``send_json`` through the bounded send queue (for a mixin in
        front of ``AsyncJsonWebsocketConsumer``, whose own ``send_json`` would go
        around it, and before ``websocket.accept`` on servers whose send waits)."""
        encode = getattr(self, "encode_json", None)
        if encode is None:
            raise TypeError(f"{type(self).__name__} has no encode_json: not a JSON consumer")
        await self.send(text_data=await encode(content), close=close, coalesce_key=coalesce_key)

    # ------------------------------------------------------------- outbound

    async def send(  # type: ignore[override]  # as AsyncWebsocketConsumer.send does
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
        *,
        coalesce_key: Any = None,
    ) -> None:
        """Queue a frame for the client; never waits for a slow client.

        If the client is not keeping up, the outbound queue's overflow policy
        applies. ``coalesce_key`` (policy ``coalesce``) replaces a queued frame
        with the same key."""
        if text_data is not None:
            message: Message = {"type": "websocket.send", "text": text_data}
        elif bytes_data is not None:
            message = {"type": "websocket.send", "bytes": bytes_data}
        else:
            raise ValueError("You must pass one of bytes_data or text_data")
        self.send_nowait(message, coalesce_key)
        if close:
            await self.close(close)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self.close_nowait(CloseCode.NORMAL if code in (None, True) else int(code), reason)

    async def drain(self) -> None:
        """Wait until everything queued for the client has been handed to the server."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    @property
    def send_queue_length(self) -> int:
        queue = self.core.queue
        return len(queue) if queue is not None else 0

    def send_nowait(self, message: Message, coalesce_key: Any = None) -> None:
        """Send an ASGI ``websocket.send`` message, applying the overflow policy."""
        core = self.core
        outcome = core.send(message, coalesce_key, core.queue is None and self._can_write_now())
        if outcome is Outcome.WRITE:
            self._write_now(message)
            return
        self._count_drop()
        if core.has_actions:
            self._perform(core.take_actions())
        if outcome is Outcome.QUEUED:
            self._ensure_writer()

    def close_nowait(self, code: int, reason: str | None = None, *, urgent: bool = False) -> None:
        """Close the connection with ``code``; logged once and counted."""
        core = self.core
        if core.close(code, reason, urgent=urgent):
            self._perform(core.take_actions())

    def _perform(self, actions: list[tuple[Any, ...]]) -> None:
        """Carry out what the core decided."""
        for action in actions:
            if action[0] is Action.SEND:
                self.send_nowait(action[1])
            else:
                _, code, reason, urgent = action
                self._write_close(code, reason, urgent)

    def _write_close(self, code: int, reason: str | None, urgent: bool) -> None:
        CLOSES.inc((self.consumer_label(), str(code)))
        logger.log(
            log_level(code),
            "channels_tuning: closing %s %s with %s (%s)",
            self.consumer_label(),
            self.registry_key,
            code,
            reason or "-",
        )
        message: Message = {"type": "websocket.close", "code": code}
        if reason:
            message["reason"] = reason
        self._send_control(message, urgent=urgent)

    def _count_drop(self) -> None:
        drop = self.core.last_drop
        if drop is not None:
            self.core.last_drop = None
            DROPPED.inc((self.consumer_label(), drop[1]), drop[0])

    def _can_write_now(self) -> bool:
        mode = self._send_mode
        if mode == detect.FLOW:
            return not self.base_send.paused
        return mode == detect.DAPHNE

    def _write_now(self, message: Message) -> None:
        _count_out(message)
        if self._send_mode == detect.FLOW:
            self.base_send.write_nowait(message)
        else:
            detect.write_to_daphne(self.base_send, message)

    def _send_control(self, message: Message, *, urgent: bool = False) -> None:
        """Accept and close: never dropped, kept in order with data.

        ``urgent`` writes at once even past the high-water mark (a close after
        the backlog was dropped: a few bytes, and the socket goes away)."""
        writable = self._can_write_now() or bool(urgent and self._send_mode)
        if self.core.send_control(message, writable) is Outcome.WRITE:
            self._write_now(message)
        else:
            self._ensure_writer()

    def _ensure_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_backlog())

    async def _write_backlog(self) -> None:
        core = self.core
        queue = core.queue
        try:
            while queue:
                if self._send_mode == detect.FLOW:
                    if not await self.base_send.wait_writable():
                        break  # connection lost
                    while queue and not self.base_send.paused:
                        message = queue.get()
                        _count_out(message)
                        self.base_send.write_nowait(message)
                else:
                    message = queue.get()
                    _count_out(message)
                    self._send_waiting_since = time.monotonic()
                    await self.base_send(cast(Any, message))
                    self._send_waiting_since = 0.0
        except Exception:
            logger.debug("channels_tuning: write to %s failed", self.registry_key, exc_info=True)
        finally:
            self._writer = None
            if core.queue is queue:
                self._drop_backlog(REASON_CLOSED)
                core.queue = None

    def _drop_backlog(self, reason: str) -> None:
        if self.core.drop_backlog(reason):
            self._count_drop()

    # ---------------------------------------------------------- layer events

    @property
    def layer_backlog(self) -> int:
        """Channel-layer events waiting for this consumer's handlers."""
        inbox = self._inbox
        return len(inbox) if inbox is not None else 0

    @property
    def inbox_high_water(self) -> int:
        """Backlog at which the process reader stops taking messages from the layer
        (so producers see a full receiver and wait) rather than let it overflow: a
        tenth of ``LAYER_INBOX_MAX``, so the pause ends soon after handlers catch up."""
        return max(1, self.tuning.layer_inbox_max // 10)

    def deliver_layer_message(self, message: Message) -> None:
        """Hand a channel-layer event to this consumer (called by the layer reader).

        Frames pre-encoded by :func:`channels_tuning.broadcast.broadcast` go straight
        to the send queue: no handler, no task, no copy (the message is shared by
        every local member and never mutated)."""
        kind = message["type"]
        if kind == FRAME_TYPE:
            if "offset" in message:
                if self._group_streams is not None:
                    self._group_streams.deliver(message)  # in order, exactly once
                    return
                if not self.tuned_client:
                    # A plain page gets what broadcast() was given, not the envelope.
                    self.send_nowait(payload_frame(message), message.get("key"))
                    return
            elif not self.tuned_client and message.get("control"):
                return  # presence events: only for clients that asked for them
            self.send_nowait(message["frame"], message.get("key"))
            return
        if kind == FRAMES_TYPE:
            for frame in message["frames"]:
                self.send_nowait(frame)
            return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        if len(inbox) >= self.tuning.layer_inbox_max:
            DROPPED.inc((self.consumer_label(), REASON_INBOX_FULL))
            if self.tuning.overflow_policy == "disconnect":
                self.close_nowait(CloseCode.INBOX_OVERFLOW, "too many pending events")
            return
        inbox.append(message)
        if self._inbox_task is None:
            self._inbox_task = asyncio.get_running_loop().create_task(self._run_inbox(inbox))

    async def _run_inbox(self, inbox: deque[Message]) -> None:
        try:
            while inbox:
                await self.dispatch(inbox.popleft())
        except StopConsumer:
            pass
        finally:
            self._inbox_task = None
            if self._inbox is inbox and not inbox:
                self._inbox = None

    def _attach_layer(self) -> None:
        if self.channel_layer is None:
            return
        reader = process_reader_for(self.channel_layer)
        if reader is not None:
            reader.attach(self)
        else:
            self._layer_task = asyncio.get_running_loop().create_task(self._read_own_channel())

    def _detach_layer(self) -> None:
        if self.channel_layer is None:
            return
        reader = process_reader_for(self.channel_layer)
        if reader is not None:
            reader.detach(self)
        elif self._layer_task is not None:
            self._layer_task.cancel()
            self._layer_task = None

    async def _read_own_channel(self) -> None:
        # Layers without a process-wide channel (channels-redis' own, third-party)
        # need one reader per connection. A failed read is counted and retried: with
        # redis-py 8, channels-redis' blocking read times out after 5 s of quiet
        # (channels_redis#422), and a reader task that ended there would leave its
        # consumer connected and deaf (plain Channels ends the consumer instead).
        layer, channel = self.channel_layer, self.channel_name
        backoff = 0.0
        while True:
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                LAYER_ERRORS.inc((f"receive:{type(error).__name__}",))
                _reader_log.log(
                    "channels_tuning: %s could not read its channel (%r); retrying",
                    self.consumer_label(),
                    error,
                )
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2 or 0.05)
                continue
            backoff = 0.0
            self.deliver_layer_message(message)

    # ------------------------------------------------------------- helpers

    @classmethod
    def consumer_label(cls) -> str:
        """The consumer's class name as used in counters and logs."""
        return cls.__qualname__
