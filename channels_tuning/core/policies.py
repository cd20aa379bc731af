"""Connection policies: each limit or timer of a connection as one small object.

A consumer class has one ordered list of policies (:class:`PolicyChain`), built once
from its settings and shared by all its connections. Per-connection state lives in
the :class:`~channels_tuning.core.connection.ConnectionCore` (one slot per built-in
policy, and ``extra`` for others), so a connection costs no object per policy.

The order in which policies see a client frame is fixed and written here, not
left to the method resolution order of mixins:

====  =======================  ===================================================
 #    policy                   on a client frame
====  =======================  ===================================================
 1    :class:`FrameTypePolicy`  text to a binary-only consumer (or the reverse): 1003
 2    :class:`MessageSizePolicy` over ``max_message_size``: 1009
 3    :class:`RateLimitPolicy`  over the token bucket: 1008. Heartbeat *pongs are
                               free* (the server asked for them); a client's pings
                               spend a token like any frame (they ask for work)
 4    :class:`HeartbeatPolicy`  pongs end here; pings are answered with a pong
                               (through the bounded send queue) and end here
 5    :class:`LifetimePolicy`   (timer only)
====  =======================  ===================================================

:class:`ConnectionLimitPolicy` acts before the connection exists (admission).
Policies a project adds come after the built-ins, in the order listed.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..wire.closecodes import CloseCode
from ..wire.heartbeat import (
    PING_BYTES,
    PING_BYTES_MESSAGE,
    PING_TEXT,
    PING_TEXT_MESSAGE,
    PONG_BYTES,
    PONG_BYTES_MESSAGE,
    PONG_TEXT,
    PONG_TEXT_MESSAGE,
)
from .settings import ConnectionSettings
from .state import Liveness
from .tokens import TokenBucket

if TYPE_CHECKING:
    from .connection import ConnectionCore

Message = dict[str, Any]


class FrameKind(enum.IntEnum):
    """What a client frame is, decided once per frame before any policy runs."""

    DATA = 0
    #: An application-level ping from the client (it wants a pong).
    PING = 1
    #: An application-level pong: the client's answer to the server's ping.
    PONG = 2


def classify(message: Message) -> FrameKind:
    """Heartbeat frame or data (a length test first: almost every frame stops there)."""
    text = message.get("text")
    if text is not None:
        if len(text) == len(PONG_TEXT):
            if text == PONG_TEXT:
                return FrameKind.PONG
            if text == PING_TEXT:
                return FrameKind.PING
        return FrameKind.DATA
    payload = message.get("bytes")
    if payload is not None and len(payload) == 2:
        if payload == PONG_BYTES:
            return FrameKind.PONG
        if payload == PING_BYTES:
            return FrameKind.PING
    return FrameKind.DATA


@dataclass(frozen=True)
class AdmissionContext:
    """What admission policies see of the process when a connection arrives."""

    #: Connections registered in the process, all consumer classes.
    process_connections: int
    #: Connections registered for this consumer class.
    class_connections: int
    #: Connections registered for the new connection's owner (its user, or address).
    owner_connections: int = 0


class Policy:
    """One behaviour of a connection. Subclasses override what they need.

    Instances are shared by every connection of a consumer class: keep
    per-connection state on the core (``core.extra`` for policies outside the
    package), never on ``self``."""

    #: Short name, used by :meth:`PolicyChain.names` and the docs.
    name: ClassVar[str] = "policy"

    @classmethod
    def configure(cls, settings: ConnectionSettings, consumer_class: type) -> Policy | None:
        """The policy for a consumer class, or None when its settings switch it off."""
        return cls()

    def admit(self, context: AdmissionContext) -> tuple[int, str] | None:
        """``(close code, reason)`` to refuse a new connection, or None to admit it."""
        return None

    def on_open(self, core: ConnectionCore, now: float) -> None:
        """The connection was accepted at ``now``."""

    def on_frame(self, core: ConnectionCore, message: Message, kind: FrameKind, now: float) -> bool:
        """A client frame; return False to stop it (after closing or answering)."""
        return True

    def on_tick(self, core: ConnectionCore, now: float) -> None:
        """The scheduler's tick, while the connection is open."""

    def next_due(self, core: ConnectionCore) -> float | None:
        """When this policy next needs :meth:`on_tick` for this connection (monotonic
        seconds); None: not until an event changes it. The scheduler ticks a
        connection only when one of its policies is due, so its cost follows what is
        due, not what is open. The default, 0.0, is "at every tick": a policy
        written before this hook keeps its meaning."""
        return 0.0


class FrameTypePolicy(Policy):
    """Close with 1003 on a frame type the consumer does not accept."""

    name = "frame_type"

    def __init__(self, accept_text: bool, accept_binary: bool) -> None:
        self.accept_text = accept_text
        self.accept_binary = accept_binary

    @classmethod
    def configure(cls, settings: ConnectionSettings, consumer_class: type) -> Policy | None:
        text = getattr(consumer_class, "accept_text_frames", True)
        binary = getattr(consumer_class, "accept_binary_frames", True)
        return None if text and binary else cls(text, binary)

    def on_frame(self, core: ConnectionCore, message: Message, kind: FrameKind, now: float) -> bool:
        if message.get("text") is not None:
            if not self.accept_text:
                core.close(CloseCode.UNSUPPORTED_DATA, "text frames not accepted")
                return False
        elif not self.accept_binary:
            core.close(CloseCode.UNSUPPORTED_DATA, "binary frames not accepted")
            return False
        return True


class MessageSizePolicy(Policy):
    """Close with 1009 for a message over ``max_message_size`` bytes."""

    name = "message_size"

    def __init__(self, limit: int) -> None:
        self.limit = limit

    @classmethod
    def configure(cls, settings: ConnectionSettings, consumer_class: type) -> Policy | None:
        return None if settings.max_message_size is None else cls(settings.max_message_size)

    def on_frame(self, core: ConnectionCore, message: Message, kind: FrameKind, now: float) -> bool:
        if too_big(message, self.limit):
            core.close(CloseCode.MESSAGE_TOO_BIG, f"message over {self.limit} bytes")
            return False
        return True


def too_big(message: Message, limit: int) -> bool:
    payload = message.get("bytes")
    if payload is not None:
        return len(payload) > limit
    text = message.get("text") or ""
    # UTF-8 takes 1 to 4 bytes per character: encode only when it could matter.
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode()) > limit


class RateLimitPolicy(Policy):
    """Token bucket: ``rate`` frames per second, ``burst`` at once; 1008 beyond.
    Heartbeat pongs are free."""

    name = "rate_limit"

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.bucket = TokenBucket(rate, burst)

    @classmethod
    def configure(cls, settings: ConnectionSettings, consumer_class: type) -> Policy | None:
        if settings.rate_limit is None:
            return None
        burst = settings.rate_burst if settings.rate_burst is not None else settings.rate_limit
        return cls(settings.rate_limit, burst)

    def on_open(self, core: ConnectionCore, now: float) -> None:
        core.tokens = float(self.burst)
        core.tokens_at = now

    def on_frame(self, core: ConnectionCore, message: Message, kind: FrameKind, now: float) -> bool:
        if kind is FrameKind.PONG:
            return True
        allowed, core.tokens = self.bucket.take(core.tokens, core.tokens_at, now)
        core.tokens_at = now
        if not allowed:
            core.close(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
        return allowed


class HeartbeatPolicy(Policy):
    """Close with 4000 after ``idle_timeout`` seconds without a sign of life; to a
    client that speaks channels-tuning's protocol, a ping every ``interval`` seconds
    (its pongs swallowed, its pings answered). What a sign of life is, per client:
    :class:`~channels_tuning.core.state.Liveness`."""

    name = "heartbeat"

    def __init__(self, interval: float | None, idle_timeout: float | None, binary: bool) -> None:
        self.interval = interval
        self.idle_timeout = idle_timeout
        self.ping = PING_BYTES_MESSAGE if binary else PING_TEXT_MESSAGE

    @classmethod
    def configure(cls, settings: ConnectionSettings, consumer_class: type) -> Policy | None:
        binary = bool(getattr(consumer_class, "heartbeat_binary", False))
        return cls(settings.heartbeat_interval, settings.idle_timeout, binary)

    def on_open(self, core: ConnectionCore, now: float) -> None:
        if self.interval is not None:
            core.next_ping = now + self.interval

    def on_frame(self, core: ConnectionCore, message: Message, kind: FrameKind, now: float) -> bool:
        if kind is FrameKind.DATA:
            return True
        if kind is FrameKind.PING:
            core.emit_send(
                PONG_TEXT_MESSAGE if message.get("text") is not None else PONG_BYTES_MESSAGE
            )
        return False

    def on_tick(self, core: ConnectionCore, now: float) -> None:
        liveness = core.liveness
        if liveness is Liveness.SERVER:
            return  # the server's keepalive watches this client; it is silent here
        if self.idle_timeout is not None and now - core.last_seen >= self.idle_timeout:
            core.close(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
            return
        if liveness is not Liveness.APPLICATION:
            return  # the server's protocol pings, answered by the client's stack
        if self.interval is not None and now >= core.next_ping:
            core.next_ping = now + self.interval
            core.emit_send(self.ping)

    def next_due(self, core: ConnectionCore) -> float | None:
        # The idle deadline is read lazily: frames since move core.last_seen, and the
        # tick at the old deadline finds the connection alive and asks again.
        liveness = core.liveness
        if liveness is Liveness.SERVER:
            return None
        due = None if self.idle_timeout is None else core.last_seen + self.idle_timeout
        pings = liveness is Liveness.APPLICATION and self.interval is not None
        if pings and (due is None or core.next_ping < due):
            due = core.next_ping
        return due


class LifetimePolicy(Policy):
    """Close with 1001 after ``lifetime`` seconds, shortened at random by up to
    ``jitter`` of it, so clients reconnect spread out (and rebalance after a deploy)."""

    name = "lifetime"

    def __init__(self, lifetime: float, jitter: float, rng: random.Random | None = None) -> None:
        self.lifetime = lifetime
        self.jitter = jitter
        self.random = (rng or random.Random()).random

    @classmethod
    def configure(cls, settings: ConnectionSettings, consumer_class: type) -> Policy | None:
        if settings.max_lifetime is None:
            return None
        return cls(settings.max_lifetime, settings.lifetime_jitter)

    def on_open(self, core: ConnectionCore, now: float) -> None:
        core.expires_at = now + self.lifetime * (1.0 - self.jitter * self.random())

    def on_tick(self, core: ConnectionCore, now: float) -> None:
        if now >= core.expires_at:
            core.close(CloseCode.GOING_AWAY, "maximum connection lifetime reached")

    def next_due(self, core: ConnectionCore) -> float | None:
        return core.expires_at


class ConnectionLimitPolicy(Policy):
    """Refuse connections beyond ``max_connections`` (process),
    ``max_connections_per_consumer`` (this class) or ``max_connections_per_user`` (one
    user, or one client address for anonymous users) with 1013."""

    name = "connection_limit"

    def __init__(
        self, per_process: int | None, per_class: int | None, per_owner: int | None = None
    ) -> None:
        self.per_process = per_process
        self.per_class = per_class
        self.per_owner = per_owner

    @classmethod
    def configure(cls, settings: ConnectionSettings, consumer_class: type) -> Policy | None:
        limits = (
            settings.max_connections,
            settings.max_connections_per_consumer,
            settings.max_connections_per_user,
        )
        return None if limits == (None, None, None) else cls(*limits)

    def admit(self, context: AdmissionContext) -> tuple[int, str] | None:
        if self.per_process is not None and context.process_connections >= self.per_process:
            return CloseCode.TRY_AGAIN_LATER, "process connection limit"
        if self.per_class is not None and context.class_connections >= self.per_class:
            return CloseCode.TRY_AGAIN_LATER, "consumer connection limit"
        if self.per_owner is not None and context.owner_connections >= self.per_owner:
            return CloseCode.TRY_AGAIN_LATER, "user connection limit"
        return None


#: The order of the built-in policies (see the table at the top of this module).
BUILTIN_ORDER: tuple[type[Policy], ...] = (
    FrameTypePolicy,
    MessageSizePolicy,
    RateLimitPolicy,
    HeartbeatPolicy,
    LifetimePolicy,
    ConnectionLimitPolicy,
)


def _overrides(policy: Policy, method: str) -> bool:
    return getattr(type(policy), method) is not getattr(Policy, method)


class PolicyChain:
    """The configured policies of one consumer class, split by the event each handles
    (so a frame or a tick calls only the policies that act on it)."""

    __slots__ = ("admission", "all", "frame", "open", "tick")

    def __init__(self, policies: Iterable[Policy]) -> None:
        self.all: tuple[Policy, ...] = tuple(policies)
        self.admission = tuple(p for p in self.all if _overrides(p, "admit"))
        self.open = tuple(p for p in self.all if _overrides(p, "on_open"))
        self.frame = tuple(p for p in self.all if _overrides(p, "on_frame"))
        self.tick = tuple(p for p in self.all if _overrides(p, "on_tick"))

    @classmethod
    def build(
        cls,
        policy_classes: Sequence[type[Policy]],
        settings: ConnectionSettings,
        consumer_class: type,
    ) -> PolicyChain:
        configured = (p.configure(settings, consumer_class) for p in policy_classes)
        return cls(p for p in configured if p is not None)

    def names(self) -> list[str]:
        return [policy.name for policy in self.all]

    def admit(self, context: AdmissionContext) -> tuple[int, str] | None:
        for policy in self.admission:
            refusal = policy.admit(context)
            if refusal is not None:
                return refusal
        return None


def ordered_policy_classes(declared: Iterable[type[Policy]]) -> list[type[Policy]]:
    """Built-ins in :data:`BUILTIN_ORDER`, then the others in declaration order
    (each once). :class:`FrameTypePolicy` is always first: it is what
    ``accept_text_frames``/``accept_binary_frames`` mean."""
    declared = list(dict.fromkeys([FrameTypePolicy, *declared]))
    builtins = [p for p in BUILTIN_ORDER if p in declared]
    return builtins + [p for p in declared if p not in BUILTIN_ORDER]
