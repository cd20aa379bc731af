"""The Redis key layout, in one place (channels-redis' keys and the package's own).

=================================  ==========================================
key                                holds
=================================  ==========================================
``<prefix>:group:<group>``         a group's members: sorted set of channel
                                   names scored by the time they were (re)added
``<prefix>specific.<client>!``     one server process' inbox (channels-redis'
                                   ``client_prefix``): every message for any of
                                   its channels
``<prefix>:ct:stats:<host>:<pid>`` the process' ``wsstats`` snapshot (with a TTL)
``<prefix>:ct:alive``              set on each shard by the servers whenever
                                   they (re)add memberships: missing means
                                   the shard lost its state (a restart) and
                                   memberships are not back yet
``<prefix>:ct:missed:<process>``   messages producers could not put in that
                                   process' inbox, by reason (collected and
                                   deleted by the process every stats
                                   interval; TTL); on the inbox's shard
``<prefix>:ct:owner:<owner>``      connections per process of one owner (a
                                   user, an address group): hash, on the
                                   owner's shard (:mod:`.owners`)
``<prefix>:ct:owners:alive``       when each process' word expires: hash,
                                   on every shard (:mod:`.owners`)
``<prefix>:ct:hmeta:<group>``      a history group's epoch and last offset
                                   (:mod:`.history`)
``<prefix>:ct:hist:<group>``       a history group's kept broadcasts: stream
``<prefix>:ct:pres:<group>``       a presence group's members: sorted set
                                   scored by expiry (:mod:`.presence`)
=================================  ==========================================

``<prefix>`` is the layer's ``prefix`` setting (``asgi`` by default). The first two
are channels-redis' layout, reached through :mod:`channels_tuning.compat.channels_redis`.

Group names come from clients (a room in a URL), so every key named after a group or
an owner expires on its own, whatever the client does next:

==================  =========================================================
key                 lives
==================  =========================================================
``group:<group>``   ``group_expiry`` after the last join (channels-redis); members
                    older than that are dropped at each send
``ct:hmeta:``       the group's ``ttl`` after a join that made it; ten times
                    ``ttl`` (a day at least) after each broadcast
``ct:hist:``        ``ttl`` after the last broadcast
``ct:pres:``        twice ``PRESENCE_TTL`` after the last refresh
``ct:owner:``       four hours after the last admission; emptied as the
                    owner's connections close
==================  =========================================================

A client that joins rooms it names and leaves costs, per room, one ``ct:hmeta:``
hash (about 640 bytes) for the room's ``ttl``, and nothing once it has left the
group (``tests/e2e/test_hostile.py``: 3 000 rooms, no key left after the ``ttl``).

**On Redis Cluster** (:mod:`.cluster`, ``hash_tags`` set on the layer) a script may
only touch keys of one hash slot, so the package's own keys that a script reads
together carry a hash tag (the part in braces, which alone decides the slot):

=======================================  ===============================================
key on a cluster                         slot
=======================================  ===============================================
``{<prefix>specific.<client>!}:ct:live`` the process' inbox (channels-redis' key, whose
``{...}:ct:seen``, ``{...}:ct:missed``   whole name is its tag): a group send checks
                                         the inbox, its ``live`` and ``seen`` keys in one
                                         script per process
``{<prefix>:group:<group>}:ct:hmeta``,   the group's members: history's script reads
``{<prefix>:group:<group>}:ct:hist``     meta and stream together
``{<prefix>:ct:owners}:<owner>``,        one slot for all owner counts: admission sums
``{<prefix>:ct:owners}:alive``           an owner's counts of live processes in one
                                         script (one command per handshake, as on a
                                         single Redis)
``{<prefix>:ct:stats}:<host>:<pid>``     one slot: ``wsstats`` reads them with one
                                         ``MGET``
``{<tag>}:<prefix>:ct:alive``            the servers' marker, one per hash slot that
                                         holds groups (``<tag>``: a short string in
                                         that slot), read with the group's members
=======================================  ===============================================

channels-redis' own keys keep their names. The other keys are read alone. The layout
differs from the single-Redis one, so a deployment moving to a cluster starts with
empty history and owner counts (memberships come back with the next refresh).
"""

from __future__ import annotations

from typing import Any


def group_key(layer: Any, group: str) -> str:
    """The sorted set of ``group``'s members."""
    return f"{layer.prefix}:group:{group}"


def group_pattern(layer: Any) -> str:
    """``SCAN`` pattern matching every group key of ``layer``."""
    return f"{layer.prefix}:group:*"


def process_channel(layer: Any) -> str:
    """The channel name of this process' inbox (its channels all start with it)."""
    return f"specific.{layer.client_prefix}!"


def channel_key(layer: Any, channel: str) -> str:
    """The list a message for ``channel`` is written to (a process channel's inbox).

    ``inboxes._group_by_inbox`` has the same rule inline, for speed: change both."""
    name = channel[: channel.index("!") + 1] if "!" in channel else channel
    return f"{layer.prefix}{name}"


def stats_prefix(layer: Any) -> str:
    """Prefix of the per-process stats keys (``<prefix>:ct:stats:<host>:<pid>``)."""
    if layer.hash_tags:  # one slot, so that wsstats reads them with one MGET
        return f"{{{layer.prefix}:ct:stats}}:"
    return f"{layer.prefix}:ct:stats:"


def _process_key(layer: Any, process: str, kind: str) -> str:
    if layer.hash_tags:  # in the slot of the process' inbox (prefix + process channel)
        return f"{{{layer.prefix}{process}}}:ct:{kind}"
    return f"{layer.prefix}:ct:{kind}:{process}"


def missed_key(layer: Any, process: str) -> str:
    """Counts of messages producers could not write to ``process``' inbox
    (``process``: its channel, ``specific.<client_prefix>!``)."""
    return _process_key(layer, process, "missed")


def live_key(layer: Any, process: str) -> str:
    """Set by a server process at each tick with a short TTL: it reads its inbox."""
    return _process_key(layer, process, "live")


def seen_key(layer: Any, process: str) -> str:
    """Set with ``live_key`` but kept for ``group_expiry``: the process once said it
    was alive, so a missing ``live_key`` means it is gone (not that it never says)."""
    return _process_key(layer, process, "seen")


def history_keys(layer: Any, group: str) -> tuple[str, str]:
    """``(meta hash, stream)`` of a history group (:mod:`.history`)."""
    if layer.hash_tags:
        return (
            f"{{{group_key(layer, group)}}}:ct:hmeta",
            f"{{{group_key(layer, group)}}}:ct:hist",
        )
    return f"{layer.prefix}:ct:hmeta:{group}", f"{layer.prefix}:ct:hist:{group}"


def owner_key(layer: Any, owner: str) -> str:
    """Connections per process of ``owner`` (:mod:`.owners`)."""
    if layer.hash_tags:
        return f"{{{layer.prefix}:ct:owners}}:{owner}"
    return f"{layer.prefix}:ct:owner:{owner}"


def owners_alive_key(layer: Any) -> str:
    """When each process' word on owner counts expires (:mod:`.owners`)."""
    if layer.hash_tags:
        return f"{{{layer.prefix}:ct:owners}}:alive"
    return f"{layer.prefix}:ct:owners:alive"


def alive_key(layer: Any, tag: str | None = None) -> str:
    """Marker that a shard holds the servers' memberships (see the table above); on
    a cluster one per hash slot, ``tag`` being a string in that slot."""
    if tag is not None:
        return f"{{{tag}}}:{layer.prefix}:ct:alive"
    return f"{layer.prefix}:ct:alive"
