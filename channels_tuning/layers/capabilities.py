"""What a channel layer can do for the package, declared once.

The package runs on any Channels layer and does more on its own: a tuned layer
reports what a group send reached, keeps group history and presence, counts the
messages receivers missed, says which processes are alive, and delivers to this
process' consumers without a reader task each. Each of those is a small interface
here (a :class:`typing.Protocol` or a store base class), and this module is the only
place that looks at a layer object to find which ones it has: the rest of the package
asks these functions and gets a typed object or ``None`` (a test fails on a
``getattr``/``hasattr`` probe of a layer anywhere else).

A layer of your own gets a feature by having the attribute or method named here
(``docs/architecture.md``, "Writing a layer"); channels-redis' and Channels' own layers
have none of them and work as they always did.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .redis import keys

if TYPE_CHECKING:
    from .history import History
    from .presence import PresenceStore
    from .report import DeliveryReport


@runtime_checkable
class ReportingGroupSend(Protocol):
    """One ``group_send`` attempt that says what it reached (the ``on_full`` policy
    of :mod:`.sending` and ``broadcast()`` are built on it)."""

    async def group_send_report(
        self, group: str, message: dict[str, Any], only: dict[str, list[str]] | None = None
    ) -> DeliveryReport: ...


@runtime_checkable
class MissedMessages(Protocol):
    """Losses counted where the receiver's operator looks: producers record them next
    to the receiving process' inbox, which collects them into its own counters."""

    async def record_missed(self, full: dict[str, list[str]], reason: str) -> None: ...

    async def collect_missed(self) -> int: ...


@runtime_checkable
class ProcessLiveness(Protocol):
    """A process says, every second, that it reads its inbox (producers skip the
    inboxes of processes that stopped)."""

    async def mark_alive(self) -> bool: ...


class SharedOwnerCounts(Protocol):
    """Connections per owner (a user, an address group) counted across processes,
    so that ``MAX_CONNECTIONS_PER_USER`` is one limit for the whole deployment."""

    #: Whether this process counted an owner yet; refreshes start then.
    used: bool
    #: Seconds between :meth:`refresh` calls.
    refresh_interval: float

    async def acquire(self, owner: str, limit: int) -> bool: ...

    def release(self, owner: str) -> None: ...

    async def refresh(self, held: Callable[[], dict[str, int]] | None = None) -> None: ...


@runtime_checkable
class DirectDelivery(Protocol):
    """The layer hands this process' messages to its consumers itself (the tuned
    in-memory and pub/sub layers): no reader task per consumer."""

    def attach(self, consumer: Any) -> None: ...

    def detach(self, consumer: Any) -> None: ...


#: (layer class, capability) -> whether the class provides it.
_provided: dict[tuple[type, type], bool] = {}


def provides(layer: Any, capability: type) -> bool:
    """``isinstance(layer, capability)``, remembered per layer class. A runtime-checkable
    Protocol's ``isinstance()`` looks every member up again on each call: 5.6 µs on
    CPython 3.11 for a layer without them (``timeit``), and delivery asks twice per
    connection (attach, detach), on every handshake of a reconnect storm and every close
    of a drain. The capabilities are methods, so the class decides."""
    key = (type(layer), capability)
    found = _provided.get(key)
    if found is None:
        found = _provided[key] = isinstance(layer, capability)
    return found


def reporting(layer: Any) -> ReportingGroupSend | None:
    return layer if callable(getattr(layer, "group_send_report", None)) else None


def history_store(layer: Any) -> History | None:
    """The layer's group history (the ``HISTORY`` setting), if it keeps one."""
    store: History | None = getattr(layer, "history", None)
    return store


def presence_store(layer: Any) -> PresenceStore | None:
    """The layer's presence (the ``PRESENCE`` setting), if it keeps one."""
    store: PresenceStore | None = getattr(layer, "presence", None)
    return store


def owner_counts(layer: Any) -> SharedOwnerCounts | None:
    """The layer's connections per owner across processes, if it keeps them."""
    store: SharedOwnerCounts | None = getattr(layer, "owner_counts", None)
    return store


def missed_messages(layer: Any) -> MissedMessages | None:
    return layer if provides(layer, MissedMessages) else None


def process_liveness(layer: Any) -> ProcessLiveness | None:
    return layer if provides(layer, ProcessLiveness) else None


def direct_delivery(layer: Any) -> DirectDelivery | None:
    """The layer itself, if it delivers to consumers directly and can now (the
    pub/sub layer cannot when channels-redis' internals changed:
    :mod:`channels_tuning.compat.channels_redis`)."""
    if not provides(layer, DirectDelivery):
        return None
    return layer if getattr(layer, "process_delivery", True) else None


def reads_process_inbox(layer: Any) -> bool:
    """Whether one task per process may read the layer's inbox for every consumer
    (the tuned Redis layer, which also routes plain consumers' ``receive()`` to it;
    on channels-redis' own layer such a reader would race their ``receive()``)."""
    return bool(getattr(layer, "process_reader_capable", False))


def alive_markers(layer: Any, groups: Iterable[str]) -> set[str]:
    """The servers' markers to set with memberships of ``groups`` on a channels-redis
    layer: the tuned layers' per shard (per hash slot on a cluster), or the one name."""
    marker = getattr(layer, "alive_marker", None)
    if marker is None:
        return {keys.alive_key(layer)}
    return {marker(layer.marker_home(group)) for group in groups}


def redis_prefix(layer: Any) -> str | None:
    """The process-channel prefix of a Redis layer (channels-redis' ``client_prefix``),
    under which the package keeps its per-process keys; None for other layers."""
    prefix = getattr(layer, "client_prefix", None)
    return prefix if isinstance(prefix, str) else None


def message_expiry(layer: Any) -> float:
    """Seconds the layer keeps an unread message (Channels' ``expiry``, 60 s)."""
    return float(getattr(layer, "expiry", 60))


def local_groups(layer: Any) -> dict[str, Iterable[str]] | None:
    """The groups of an in-memory layer, by name (Channels' ``groups``), or None."""
    groups = getattr(layer, "groups", None)
    return groups if isinstance(groups, dict) else None


def _checks_of(layer: Any) -> Any:
    """What checks names for ``layer``: itself, or for a layer that is no Channels
    ``BaseChannelLayer`` (channels-redis' pub/sub layer), Channels' own rules."""
    if hasattr(layer, "require_valid_group_name") or hasattr(layer, "valid_group_name"):
        return layer
    return _channels_rules()


@functools.cache
def _channels_rules() -> Any:
    """One ``BaseChannelLayer`` whose name checks are Channels' rules (made once)."""
    from channels.layers import BaseChannelLayer

    return BaseChannelLayer()


def require_valid_group_name(layer: Any, group: str) -> None:
    """Channels' group-name check (TypeError for an invalid name), by its 4.2.1+
    name ``require_valid_group_name`` or, on channels 4.0 to 4.2.0, ``valid_group_name``."""
    layer = _checks_of(layer)
    check = getattr(layer, "require_valid_group_name", None) or layer.valid_group_name
    check(group)


def require_valid_channel_name(layer: Any, channel: str) -> None:
    """Channels' channel-name check, by either of its names."""
    layer = _checks_of(layer)
    check = getattr(layer, "require_valid_channel_name", None) or layer.valid_channel_name
    check(channel)
