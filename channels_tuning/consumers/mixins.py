"""The behaviour mixins: each a documented shortcut that adds one policy.

Put them in front of a tuned base or of Channels' ``AsyncWebsocketConsumer``::

    class Room(HeartbeatMixin, MessageLimitMixin, AsyncWebsocketConsumer): ...

Whatever the order they are listed in, their policies run in the one order of
:data:`channels_tuning.core.policies.BUILTIN_ORDER` (frame type, size, rate,
heartbeat, lifetime); a class that sets ``policies = [...]`` chooses its own list.
Each limit is a setting of ``CHANNELS_TUNING`` with a per-class attribute of the
same lower-case name. What a client sees when it crosses one:

======================  ================================================
limit                   answer
======================  ================================================
heartbeat/idle_timeout  closed with 4000 after ``idle_timeout`` without a frame
max_connections         accepted, then closed with 1013 (try again later)
max_message_size        closed with 1009
rate_limit/rate_burst   closed with 1008 at the first message over the bucket
max_lifetime            closed with 1001 (reconnect) after the lifetime, minus jitter
======================  ================================================

Every refusal and close is logged once and counted (``channels_tuning.observability``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..conf import FROM_SETTINGS
from ..core.policies import (
    ConnectionLimitPolicy,
    HeartbeatPolicy,
    LifetimePolicy,
    MessageSizePolicy,
    Policy,
    RateLimitPolicy,
)
from .base import ManagedConnectionMixin


class HeartbeatMixin(ManagedConnectionMixin):
    """Server pings every ``heartbeat_interval``; close 4000 after ``idle_timeout`` of
    silence (:class:`~channels_tuning.core.policies.HeartbeatPolicy`)."""

    policy_classes: ClassVar[tuple[type[Policy], ...]] = (HeartbeatPolicy,)
    heartbeat_interval: Any = FROM_SETTINGS
    idle_timeout: Any = FROM_SETTINGS
    #: Send pings as binary frames (for consumers that speak only binary).
    heartbeat_binary: ClassVar[bool] = False


class ConnectionLimitMixin(ManagedConnectionMixin):
    """Refuse connections beyond ``max_connections`` (process),
    ``max_connections_per_consumer`` (this class) or ``max_connections_per_user``
    (one user or client address: :meth:`connection_owner`) with close code 1013."""

    policy_classes: ClassVar[tuple[type[Policy], ...]] = (ConnectionLimitPolicy,)
    max_connections: Any = FROM_SETTINGS
    max_connections_per_consumer: Any = FROM_SETTINGS
    max_connections_per_user: Any = FROM_SETTINGS


class MessageLimitMixin(ManagedConnectionMixin):
    """Close with 1009 for messages over ``max_message_size`` bytes and with 1008
    when a client exceeds ``rate_limit`` messages per second (burst ``rate_burst``)."""

    policy_classes: ClassVar[tuple[type[Policy], ...]] = (MessageSizePolicy, RateLimitPolicy)
    max_message_size: Any = FROM_SETTINGS
    rate_limit: Any = FROM_SETTINGS
    rate_burst: Any = FROM_SETTINGS


class MaxLifetimeMixin(ManagedConnectionMixin):
    """Close with 1001 after ``max_lifetime`` seconds, shortened at random by up to
    ``lifetime_jitter`` of it, so clients reconnect spread out."""

    policy_classes: ClassVar[tuple[type[Policy], ...]] = (LifetimePolicy,)
    max_lifetime: Any = FROM_SETTINGS
    lifetime_jitter: Any = FROM_SETTINGS
