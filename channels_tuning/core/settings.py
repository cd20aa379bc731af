"""The effective limits of one consumer class, as plain values (no Django here:
:func:`channels_tuning.conf.settings_for` builds them from ``CHANNELS_TUNING``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConnectionSettings:
    """Shared by every connection of a consumer class; ``None`` switches a limit off."""

    heartbeat_interval: float | None = 25.0
    idle_timeout: float | None = 60.0
    scheduler_tick: float = 1.0
    max_connections: int | None = None
    max_connections_per_consumer: int | None = None
    max_connections_per_user: int | None = None
    max_message_size: int | None = 1024 * 1024
    rate_limit: float | None = None
    rate_burst: float | None = None
    max_lifetime: float | None = None
    lifetime_jitter: float = 0.1
    send_queue_max_messages: int = 1000
    send_queue_max_bytes: int = 1024 * 1024
    overflow_policy: str = "disconnect"
    layer_inbox_max: int = 1000
    client_protocol: str = "negotiate"
    user_groups: bool = True
