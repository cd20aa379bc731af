"""A group's members mapped to their processes' inboxes, in one pass (issue #25).

A group send writes one message per receiving *process*: channels-redis' inbox key
(``<prefix>specific.<client>!``) gets the event with the list of that process'
receiving channels under ``__asgi_channel__`` (the layout its ``receive_single``
reads, :data:`channels_tuning.compat.channels_redis.INBOX_LAYOUT`). channels-redis
builds these messages in ``_map_channel_keys_to_connection``; the tuned send then
needed the same grouping again, by inbox, for its report, and decoded the members
one by one before either. Those three passes over the members ran in one step of the
sender's event loop: with hiredis parsing the members, a send to 19 000 members (of
five processes) held it up to 31 ms, to 99 000 up to 164-238 ms.

:func:`map_to_inboxes` is that mapping in one pass, giving both: the members are
decoded together (:func:`decode_members`), grouped by inbox once, and each inbox's
message is serialized by the layer as upstream serializes it. It must build what
upstream's method builds (the serializer's random prefix aside): the canary
``tests/unit/compat/test_compat.py::test_inbox_mapping_matches_channels_redis``
compares the two on channels of several processes, shards, capacities and
non-process channels. With it, 14 and 36 ms at most; the whole send to 99 000 takes
the sender 108-111 ms instead of 163-233 (``python benchmarks/group_members.py``,
the whole send's columns, two runs each way, 2026-12-06). Without hiredis the read
itself holds the loop longest (redis-py's parser: 60-100 ms), which this does not
change.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...compat import channels_redis as upstream
from ...exceptions import UpstreamChanged
from ...runtime.asyncutil import in_slices


@dataclass(slots=True)
class Inboxes:
    """Where one group send writes: per shard its inbox keys; per key the serialized
    message, the inbox's capacity and the channels the message is for."""

    by_shard: dict[int, list[str]]
    messages: dict[str, bytes]
    capacities: dict[str, int]
    channels: dict[str, list[str]]


def decode_members(members: list[bytes]) -> list[str]:
    """A group's members as read from Redis (bytes) as channel names, decoded in one
    call: joined with a NUL, which no valid channel name holds, they split back
    exactly (one at a time, 99 000 took 29 ms). A member that does hold one (written
    past Channels' name check) is decoded alone, as before."""
    if not members:
        return []
    names = b"\0".join(members).decode("utf8").split("\0")
    if len(names) != len(members):
        return [member.decode("utf8") for member in members]
    return names


#: Members grouped in one step of the loop: a few ms each (the grouping runs about
#: 0.4 µs a member), so a send to a large group lets the loop serve other work between.
MEMBERS_PER_STEP = 5000


async def map_to_inboxes(layer: Any, channels: list[str], message: dict[str, Any]) -> Inboxes:
    """channels-redis' ``_map_channel_keys_to_connection(channels, message)``, and
    the channels of each inbox, in one pass over ``channels`` (in steps of
    :data:`MEMBERS_PER_STEP`)."""
    if not upstream.features["reporting_send"]:
        raise UpstreamChanged(
            upstream.LIBRARY,
            "RedisChannelLayer._map_channel_keys_to_connection",
            "see the start-up log",
        )
    by_name: dict[str, list[str]] = {}
    await in_slices(channels, MEMBERS_PER_STEP, lambda part: _group_by_inbox(part, by_name))
    inboxes = Inboxes(collections.defaultdict(list), {}, {}, {})
    for name, names in by_name.items():
        key = layer.prefix + name
        envelope = dict(message)
        envelope["__asgi_channel__"] = names
        inboxes.messages[key] = layer.serialize(envelope)
        inboxes.capacities[key] = layer.get_capacity(names[0])
        inboxes.by_shard[upstream.shard_of(layer, name)].append(key)
        inboxes.channels[key] = names
    return inboxes


def _group_by_inbox(channels: Sequence[str], by_name: dict[str, list[str]]) -> None:
    # keys.channel_key's rule, inline (a call per member was a fifth of the pass): a
    # process-specific channel's inbox is named by its part up to the "!"
    # (Channels' non_local_name); any other channel is its own inbox.
    for channel in channels:
        name = channel[: channel.find("!") + 1] or channel
        names = by_name.get(name)
        if names is None:
            by_name[name] = [channel]
        else:
            names.append(channel)
