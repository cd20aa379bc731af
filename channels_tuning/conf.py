"""Settings: one dict, ``settings.CHANNELS_TUNING``, with per-consumer overrides.

Every key has a documented default below. A consumer class overrides a key by
setting the lower-case attribute of the same name (``heartbeat_interval = 10``).
The merged values are resolved once per consumer class and cached, so reading
them costs nothing per connection; the cache is cleared when Django's
``setting_changed`` signal fires (``override_settings`` in tests).
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable
from dataclasses import fields
from typing import Any, Final, Generic, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from .core.queue import OVERFLOW_POLICIES
from .core.settings import ConnectionSettings

SETTING_NAME: Final = "CHANNELS_TUNING"

T = TypeVar("T")

#: Defaults for every key of ``settings.CHANNELS_TUNING``.
DEFAULTS: Final[dict[str, Any]] = {
    # Seconds between application-level pings ({"type":"ct.ping"}) sent to clients
    # that speak channels-tuning's protocol (CLIENT_PROTOCOL). None: no pings.
    "HEARTBEAT_INTERVAL": 25.0,
    # Close a connection whose client showed no sign of life for this long (close code
    # 4000): any frame, and on channels-tuning-daphne the pongs that answer the
    # server's protocol pings (its --ping-interval, 20 s by default). None: never.
    # Must be longer than HEARTBEAT_INTERVAL.
    "IDLE_TIMEOUT": 60.0,
    # Which clients get heartbeat frames, history envelopes, subscribed and presence
    # frames: "negotiate" (those that offer the channels-tuning.v1 subprotocol, as the
    # package's clients do; every other page gets only what its consumer sends) or
    # "always" (every client: the behaviour of 0.1, for older package clients).
    "CLIENT_PROTOCOL": "negotiate",
    # A connection whose scope["user"] is authenticated joins its user's group, which
    # send_to_user() and disconnect_user() reach from any process (channels_tuning.users).
    "USER_GROUPS": True,
    # disconnect_user() of the user that logs out (Django's user_logged_out), on every
    # server: their open WebSockets do not outlive the session.
    "DISCONNECT_ON_LOGOUT": False,
    # disconnect_user() of a user whose password hash changed when the user is saved
    # (set_password() then save(), the admin, PasswordChangeView): one query per save
    # of an existing user to read the stored hash. Sessions of other browsers end with
    # Django's own session-hash check; this ends their open WebSockets too.
    "DISCONNECT_ON_PASSWORD_CHANGE": False,
    # Resolution in seconds of the one per-process scheduler that drives
    # heartbeats, idle timeouts and lifetimes for every connection.
    "SCHEDULER_TICK": 1.0,
    # Accepted connections per process, all tuned consumers (close 1013 beyond). None: no limit.
    "MAX_CONNECTIONS": None,
    # Accepted connections per process for one consumer class. None: no limit.
    "MAX_CONNECTIONS_PER_CONSUMER": None,
    # Accepted connections for one user (authenticated: scope["user"]; anonymous: the
    # client's address, TRUSTED_PROXIES), all tuned consumers: across processes on the
    # tuned Redis layer, per process on others. None: no limit.
    "MAX_CONNECTIONS_PER_USER": None,
    # Largest inbound message in bytes (close 1009). None: only daphne's own limit (1 MiB).
    "MAX_MESSAGE_SIZE": 1024 * 1024,
    # Inbound messages per second per connection, token bucket (close 1008), each charged
    # when it arrived, not when a busy handler got to it (consumers/arrival.py). None: no limit.
    "RATE_LIMIT": None,
    # Bucket size: messages a client may send in a burst. None: equal to RATE_LIMIT.
    "RATE_BURST": None,
    # Seconds after which a connection is closed with 1001 (clients reconnect). None: never.
    "MAX_LIFETIME": None,
    # Fraction of MAX_LIFETIME taken off at random per connection, so reconnects spread out.
    "LIFETIME_JITTER": 0.1,
    # Bound of each connection's outbound queue, in messages...
    "SEND_QUEUE_MAX_MESSAGES": 1000,
    # ...and in bytes of payload (the worst case of a process: connections x this).
    "SEND_QUEUE_MAX_BYTES": 1024 * 1024,
    # What happens when the outbound queue is full: one of OVERFLOW_POLICIES.
    "OVERFLOW_POLICY": "disconnect",
    # Channel-layer events waiting for a consumer's handlers (beyond: dropped and counted).
    "LAYER_INBOX_MAX": 1000,
    # Seconds between refreshes of every tracked group membership in Redis (the
    # scheduler re-adds them and drops members older than group_expiry), so
    # channels-redis' group_expiry can be minutes. None: never refresh.
    "GROUP_REFRESH_INTERVAL": 60.0,
    # Where each server process publishes its stats for manage.py wsstats: "auto"
    # (Redis when the default layer is channels-redis, else files), "redis", "files",
    # or None (off).
    "STATS_BACKEND": "auto",
    # Seconds between snapshots; a process missing for three intervals is gone.
    "STATS_INTERVAL": 5.0,
    # Directory of the "files" backend. None: <tempdir>/channels_tuning/<settings module>.
    "STATS_DIR": None,
    # gc.set_threshold(*GC_THRESHOLD) at the server's start (docs/gc.md). None: CPython's default
    # (700, 10, 10), which at thousands of connections runs full collections of
    # hundreds of thousands of objects every few seconds of traffic (docs/gc.md).
    "GC_THRESHOLD": (20_000, 2, 100),
    # gc.freeze() at the server's start: start-up objects are never scanned again.
    "GC_FREEZE": True,
    # At the first tick after each of CPython's generation-1 collections, and at least
    # every this many seconds: gc.collect(1), then gc.freeze(), so that no collection
    # scans what the open connections hold (docs/gc.md). None: off.
    "GC_FREEZE_INTERVAL": 60.0,
    # A full collection (frozen objects included) once the cyclic garbage the
    # freezes kept is estimated past this many objects (closed connections x the
    # garbage per closed connection the last full collection found). None: never.
    "GC_FROZEN_GARBAGE_LIMIT": 500_000,
    # A full collection (gc.collect()) every this many seconds as well, at a tick and
    # postponed while outbound backlogs exist. None: off (its pause grows with the
    # connections: 1.5 s at 19 000).
    "GC_COLLECT_INTERVAL": None,
    # Export the package's metrics to prometheus_client's default registry (what
    # django-prometheus' /metrics view serves).
    "PROMETHEUS": True,
    # Add a "group" label to the group-send metrics. Off by default: one series per
    # group is unbounded cardinality.
    "PROMETHEUS_GROUP_LABELS": False,
    # With group labels on: distinct groups labelled per process; beyond, "other"
    # (group names come from clients: the label set must stay bounded).
    "GROUP_LABEL_LIMIT": 1000,
    # Addresses and networks that channels_tuning.views.metrics (the /metrics view)
    # answers, besides staff users: loopback by default. Empty: staff only.
    "METRICS_ALLOWED_ADDRESSES": ["127.0.0.1", "::1"],
    # Addresses and networks of the proxies (balancers) in front of the servers, whose
    # X-Forwarded-For entries are believed: the client is the right-most entry no
    # trusted proxy wrote (channels_tuning.addresses). Empty: the scope's client as the
    # server gives it. Run the servers without --proxy-headers when this is set.
    "TRUSTED_PROXIES": [],
    # Per-address limits count an IPv6 client as its /this-long prefix (one host
    # usually holds a whole /64). 128: each address on its own.
    "IPV6_CLIENT_PREFIX": 64,
    # Frames kept by tracemalloc (wsstats --memory: sites taken once a minute). None:
    # tracemalloc off (it is costly: every allocation is traced).
    "TRACEMALLOC": None,
    # Groups whose broadcasts are numbered and kept, so that reconnecting clients get
    # what they missed: {"<fnmatch pattern>": {"size": messages, "ttl": seconds}}
    # (channels_tuning.layers.history). Empty: no group has history.
    "HISTORY": {},
    # Groups whose members are listed (presence(), presence_count()):
    # {"<fnmatch pattern>": {"events": bool}} (channels_tuning.layers.presence).
    "PRESENCE": {},
    # Seconds a presence entry outlives a process that died or lost Redis (live
    # processes push it forward every PRESENCE_TTL / 3 seconds).
    "PRESENCE_TTL": 10.0,
}

# Keys that are numbers which must be positive when set (None allowed).
POSITIVE_KEYS: Final = (
    "HEARTBEAT_INTERVAL",
    "IDLE_TIMEOUT",
    "SCHEDULER_TICK",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_CONSUMER",
    "MAX_CONNECTIONS_PER_USER",
    "MAX_MESSAGE_SIZE",
    "RATE_LIMIT",
    "RATE_BURST",
    "MAX_LIFETIME",
    "SEND_QUEUE_MAX_MESSAGES",
    "SEND_QUEUE_MAX_BYTES",
    "LAYER_INBOX_MAX",
    "GROUP_REFRESH_INTERVAL",
    "STATS_INTERVAL",
    "TRACEMALLOC",
    "GC_COLLECT_INTERVAL",
    "GC_FREEZE_INTERVAL",
    "GC_FROZEN_GARBAGE_LIMIT",
    "GROUP_LABEL_LIMIT",
    "PRESENCE_TTL",
)
# Keys whose value must always be set.
REQUIRED_KEYS: Final = (
    "SCHEDULER_TICK",
    "SEND_QUEUE_MAX_MESSAGES",
    "SEND_QUEUE_MAX_BYTES",
    "LAYER_INBOX_MAX",
    "GROUP_LABEL_LIMIT",
    "PRESENCE_TTL",
)


class _FromSettings:
    """Marker for a consumer attribute that takes its value from ``CHANNELS_TUNING``."""

    _instance: _FromSettings | None = None

    def __new__(cls) -> _FromSettings:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "FROM_SETTINGS"


FROM_SETTINGS: Final = _FromSettings()


def project_settings() -> dict[str, Any]:
    """The project's ``CHANNELS_TUNING`` merged over :data:`DEFAULTS`."""
    user = getattr(settings, SETTING_NAME, None) or {}
    merged = dict(DEFAULTS)
    if isinstance(user, dict):
        merged.update(user)
    return merged


#: The settings of one consumer class (the core's name for them: ConnectionSettings).
ConsumerSettings = ConnectionSettings

__all__ = [
    "DEFAULTS",
    "FROM_SETTINGS",
    "OVERFLOW_POLICIES",
    "ConsumerSettings",
    "GroupPatterns",
    "project_settings",
    "settings_for",
]


_cache: dict[type, ConsumerSettings] = {}


def settings_for(consumer_class: type) -> ConsumerSettings:
    """Resolve (once, then cached) the settings of ``consumer_class``."""
    try:
        return _cache[consumer_class]
    except KeyError:
        pass
    merged = project_settings()
    values: dict[str, Any] = {}
    for field in fields(ConsumerSettings):
        attr = getattr(consumer_class, field.name, FROM_SETTINGS)
        values[field.name] = merged[field.name.upper()] if attr is FROM_SETTINGS else attr
    if values["rate_limit"] is not None and values["rate_burst"] is None:
        values["rate_burst"] = values["rate_limit"]
    resolved = ConsumerSettings(**values)
    _cache[consumer_class] = resolved
    return resolved


class GroupPatterns(Generic[T]):
    """A ``CHANNELS_TUNING`` key that maps ``fnmatch`` patterns of group names to a
    policy (``HISTORY``, ``PRESENCE``): ``patterns(group)`` is the first matching
    pattern's policy, or None. Parsed once, cached per group (a bounded cache: group
    names come from clients), cleared when the setting changes. Outside Django (a
    producer without settings) no group matches."""

    cache_limit = 10_000

    def __init__(self, key: str, parse: Callable[[Any], T]) -> None:
        self.key, self.parse = key, parse
        self._patterns: list[tuple[str, T]] | None = None
        self._by_group: dict[str, T | None] = {}
        self._near_misses_said: set[str] = set()
        setting_changed.connect(self._clear, weak=False)

    def __call__(self, group: str) -> T | None:
        try:
            return self._by_group[group]
        except KeyError:
            pass
        patterns = self._patterns
        if patterns is None:
            patterns = self._patterns = self._load()
        found = next((p for pattern, p in patterns if fnmatch.fnmatchcase(group, pattern)), None)
        if found is None and patterns:
            self._say_near_miss(group, [pattern for pattern, _ in patterns])
        if len(self._by_group) < self.cache_limit:
            self._by_group[group] = found
        return found

    def near_miss(self, group: str) -> str | None:
        """A pattern ``group`` was probably meant to match: same words, another
        separator (``chat.*`` for ``chat_lobby``, as Channels' tutorial names groups)."""
        patterns = self._patterns or []
        words = _words(group)
        for pattern, _ in patterns:
            stem = _words(pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0])
            if stem and words[: len(stem)] == stem:
                return pattern
        return None

    def _say_near_miss(self, group: str, patterns: list[str]) -> None:
        pattern = self.near_miss(group)
        if pattern is None or pattern in self._near_misses_said:
            return
        self._near_misses_said.add(pattern)  # once per pattern: names come from clients
        logging.getLogger("channels_tuning").warning(
            "channels_tuning: group %r matches no %s pattern (%s); %r looks meant for it: "
            "patterns match whole names with fnmatch (Channels' tutorial names groups "
            "chat_<room>: the pattern is chat_*)",
            group,
            self.key,
            ", ".join(patterns),
            pattern,
        )

    def _load(self) -> list[tuple[str, T]]:
        try:
            configured = project_settings().get(self.key) or {}
        except ImproperlyConfigured:
            return []
        return [(pattern, self.parse(value)) for pattern, value in configured.items()]

    def _clear(self, *, setting: str, **kwargs: Any) -> None:
        if setting == SETTING_NAME:
            self._patterns = None
            self._by_group.clear()
            self._near_misses_said.clear()


def _words(name: str) -> list[str]:
    """``"chat_lobby"``, ``"chat.lobby"`` and ``"chat-lobby"`` -> ``["chat", "lobby"]``."""
    return [word for word in re.split(r"[._\-]+", name) if word]


def _clear_cache(*, setting: str, **kwargs: Any) -> None:
    if setting in (SETTING_NAME, "CHANNEL_LAYERS"):
        _cache.clear()


setting_changed.connect(_clear_cache)
