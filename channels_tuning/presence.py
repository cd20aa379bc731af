"""Who is connected to a group, from anywhere (a view, a worker, a consumer)::

    from channels_tuning.presence import presence, presence_count

    online = await presence_count("chat.lobby")
    names = {entry.identity for entry in await presence("chat.lobby")}

Groups opt in with the ``PRESENCE`` setting; how entries are kept true, and the
bound on how long one outlives a dead process, are in :mod:`channels_tuning.layers.presence`.
"""

from __future__ import annotations

import re
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import get_channel_layer

from .layers.capabilities import presence_store
from .layers.presence import PresenceEntry, presence_policy

__all__ = ["PresenceEntry", "presence", "presence_count"]


def _suggested_pattern(group: str) -> str:
    """``"chat_lobby"`` -> ``"chat_*"``: the group's first word and separator."""
    found = re.match(r"[A-Za-z0-9]+[._-]?", group)
    return (found.group(0) if found else "") + "*"


def _store(group: str, layer_alias: str, layer: Any) -> Any:
    if presence_policy(group) is None:
        near = presence_policy.near_miss(group)
        hint = f" ({near!r} looks meant for it: patterns match whole names)" if near else ""
        raise ValueError(
            f"group {group!r} matches no pattern of CHANNELS_TUNING['PRESENCE']{hint}; "
            f"add one that matches it, e.g. {_suggested_pattern(group)!r}"
        )
    if layer is None:
        layer = get_channel_layer(layer_alias)
    store = presence_store(layer)
    if store is None:
        raise TypeError(
            f"{type(layer).__name__} keeps no presence (the tuned Redis and in-memory layers do)"
        )
    return store


async def presence(
    group: str, *, layer_alias: str = DEFAULT_CHANNEL_LAYER, layer: Any = None
) -> list[PresenceEntry]:
    """The connections in ``group`` now, across every server process."""
    entries: list[PresenceEntry] = await _store(group, layer_alias, layer).members(group)
    return entries


async def presence_count(
    group: str, *, layer_alias: str = DEFAULT_CHANNEL_LAYER, layer: Any = None
) -> int:
    """How many connections are in ``group`` (cheap: no member list is fetched)."""
    count: int = await _store(group, layer_alias, layer).count(group)
    return count
