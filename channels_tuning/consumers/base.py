"""The Channels glue around the sans-I/O core: :class:`ManagedConnectionMixin`.

Every decision about a connection (is this frame delivered, is this message
written, queued or dropped, is it time to ping or to close) is made by its
:class:`~channels_tuning.core.ConnectionCore`. The consumer only does the I/O
around it, replacing the per-consumer machinery of ``AsyncConsumer`` with shared,
bounded parts, one module per job, stacked in this order:

- :mod:`.outbound`: bounded sends through the connection's
  :class:`~channels_tuning.servers.transport.Transport`, closes (logged once and
  counted by code), and a writer task only while a backlog exists;
- :mod:`.memberships`: groups joined through ``groups``, :meth:`join_group` or the
  layer's ``group_add``, left when the connection ends, whatever ends it, with the
  history and presence glue;
- :mod:`.inbox`: channel-layer events from the per-process reader, run in a task
  that exists only while events are pending;
- :mod:`.timers`: the scheduler's tick (heartbeat, idle, lifetime, a stalled close)
  and when the next one is due;
- :mod:`.arrival`: when each client frame arrived, for the rate limit;
- :mod:`.credentials`: a token's expiry and refresh;
- :mod:`.rpc`: requests to the consumer's declared methods, answered once;
- :mod:`.topics`: topics the client subscribes to, with authorization;
- this module: the ASGI loop and dispatch, admission, accept, and the teardown.
  One task per idle connection: the server's own.

Each part is a class of its own (testable with the parts below it) rather than an
object per connection: a collaborator object would cost each connection memory and
GC-tracked objects (``docs/gc.md``), which the package counts per connection.

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
from collections.abc import Sequence
from typing import Any, ClassVar

from channels.exceptions import AcceptConnection, DenyConnection, StopConsumer
from channels.layers import get_channel_layer
from django.core.signals import setting_changed

from ..addresses import client_group
from ..conf import FROM_SETTINGS, settings_for
from ..core import (
    AdmissionContext,
    ConnectionCore,
    ConnectionState,
    Liveness,
    Policy,
)
from ..core.headers import process_headers
from ..core.policies import PolicyChain, ordered_policy_classes
from ..exceptions import RecoveryRequestError
from ..jobs import install as install_process_jobs
from ..runtime import clock
from ..runtime.counters import ACCEPTED, REJECTED, TRAFFIC
from ..runtime.ratelog import RateLimitedLog
from ..runtime.registry import registry
from ..runtime.scheduler import scheduler
from ..runtime.shutdown import track_cleanup
from ..servers import detect
from ..servers.transport import TRANSPORT_EXTENSION, transport_for
from ..wire.closecodes import ABNORMAL_CLOSURE, CloseCode
from ..wire.offsets import parse_recover_requests
from ..wire.subprotocol import SUBPROTOCOL, offers_subprotocol, speaks_tuned_protocol
from .owners import release_owner, shared_owner_refusal
from .topics import TopicsMixin

logger = logging.getLogger("channels_tuning")
#: A client decides how often it sends an unreadable recovery request: a line a
#: second at most (every one counted).
_refused_log = RateLimitedLog(logger, level=logging.INFO)

Message = dict[str, Any]

_chains: dict[type, PolicyChain] = {}


def _clear_chains(*, setting: str, **kwargs: Any) -> None:
    if setting == "CHANNELS_TUNING":
        _chains.clear()


setting_changed.connect(_clear_chains)


class ManagedConnectionMixin(TopicsMixin):
    """Lifecycle, bounded sends, layer events, registry and group hygiene."""

    # Per-class overrides of CHANNELS_TUNING (see channels_tuning.conf).
    scheduler_tick: Any = FROM_SETTINGS
    send_queue_max_messages: Any = FROM_SETTINGS
    send_queue_max_bytes: Any = FROM_SETTINGS
    overflow_policy: Any = FROM_SETTINGS
    layer_inbox_max: Any = FROM_SETTINGS

    #: The policies of this consumer, in the order they see a frame. None: the
    #: built-ins that the class's mixins add (``policy_classes``), in the order of
    #: :data:`channels_tuning.core.policies.BUILTIN_ORDER`.
    policies: ClassVar[Sequence[type[Policy]] | None] = None
    #: What a mixin adds to the derived policy list (each mixin: one policy).
    policy_classes: ClassVar[tuple[type[Policy], ...]] = ()

    # Per-connection state. Class-level defaults keep instances small: an
    # attribute becomes per-instance only when it is first set. The parts each layer
    # of the class owns are declared there (outbound, memberships, inbox).
    #: Whom the connection counts against for per-user limits (connection_owner()).
    owner_key: str = ""
    #: Where the connection is counted for its owner across processes (owners.py).
    owner_store: Any = None
    connected_at: float = 0.0
    #: What the server (or the middlewares in front of the consumer) handed over as
    #: ``send``, as in Channels; the consumer writes through :attr:`transport`.
    base_send: Any
    _disconnect_code: int | None = None
    _cancelled: bool = False

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
        if TRANSPORT_EXTENSION not in (scope.get("extensions") or ()):  # else shared by it
            process_headers.share(scope.get("headers"))  # held for the connection's life
        self.tuning = settings_for(type(self))
        self.core = ConnectionCore(self.tuning, self.policy_chain(), clock.monotonic())
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
        self.base_send = send
        # The task that reads client frames: a request to the client made from it
        # would wait for a reply that only it can read (consumers/server_requests.py).
        self._frames_task = asyncio.current_task()
        self.transport = transport = transport_for(scope, send)
        detect.announce_server(transport.kind)
        detect.announce_path(type(self), transport, self.tuning.idle_timeout)
        if speaks_tuned_protocol(scope, self.tuning.client_protocol):
            self.tuned_client = True  # set only when true: instances stay small
            self.core.liveness = Liveness.APPLICATION
        else:
            self.core.liveness = transport.liveness
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
        the client's address (``channels_tuning.addresses.client_group``: through
        ``TRUSTED_PROXIES``, an IPv6 client as its /64). Override to count by
        something else (an API key, a tenant)."""
        user = self.scope.get("user")
        if user is not None and getattr(user, "is_authenticated", False):
            return f"user:{user.pk}"
        return f"addr:{client_group(self.scope) or '?'}"

    async def websocket_connect(self, message: Any) -> None:
        refusal = (
            self._credentials_refusal() or self.admission_refusal() or self._read_recover_requests()
        )
        if refusal is None:
            refusal = await shared_owner_refusal(self)
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
        self._start_credentials()
        if not scheduler.is_running():
            # Idempotent, and done by the app's ready() when it is installed: only
            # where the scheduler starts, not at every connection.
            install_process_jobs()
        scheduler.ensure_running(self.tuning.scheduler_tick)
        scheduler.schedule(self, 0.0)  # ticked until accepted, then as due
        await self._join_user_group()
        await self._join_new_groups()
        began = clock.monotonic()
        try:
            await self.connect()
        except AcceptConnection:
            await self.accept()
        except DenyConnection:
            await self.close()
        self._handled(began)

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
        now = clock.monotonic()
        self.core.accept(now)
        if self._registered:
            due = self.next_tick_at(now)
            if due is not None:
                scheduler.schedule(self, due)
        if self._group_streams is not None:
            self._group_streams.accepted(self.send_nowait, self.room_for)
        self._announce_credentials()
        self.on_accepted(now)

    def on_accepted(self, now: float) -> None:
        """Called once the connection is accepted (the core's timers have started)."""

    async def websocket_receive(self, message: Any) -> None:
        core = self.core
        if core.state is ConnectionState.CLOSING or core.state is ConnectionState.CLOSED:
            return
        payload = message.get("text")
        if payload is None:
            payload = message.get("bytes") or b""
        TRAFFIC.messages_in += 1
        TRAFFIC.bytes_in += len(payload)
        deliver = core.receive_frame(message, self._received_at(core))
        if core.has_actions:
            self._perform(core.take_actions())
        if deliver and (self.credentials_deadline is not None or self._reads_protocol):
            deliver = not await self._protocol_frame(message)
        if deliver and self.filter_inbound(message):
            began = clock.monotonic()
            await super().websocket_receive(message)
            self._handled(began)

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
        release_owner(self)
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
