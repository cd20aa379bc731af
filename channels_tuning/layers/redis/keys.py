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
    """The list a message for ``channel`` is written to (a process channel's inbox)."""
    name = channel[: channel.index("!") + 1] if "!" in channel else channel
    return f"{layer.prefix}{name}"


def stats_prefix(layer: Any) -> str:
    """Prefix of the per-process stats keys (``<prefix>:ct:stats:<host>:<pid>``)."""
    return f"{layer.prefix}:ct:stats:"


def missed_key(layer: Any, process: str) -> str:
    """Counts of messages producers could not write to ``process``' inbox
    (``process``: its channel, ``specific.<client_prefix>!``)."""
    return f"{layer.prefix}:ct:missed:{process}"


def live_key(layer: Any, process: str) -> str:
    """Set by a server process at each tick with a short TTL: it reads its inbox."""
    return f"{layer.prefix}:ct:live:{process}"


def seen_key(layer: Any, process: str) -> str:
    """Set with ``live_key`` but kept for ``group_expiry``: the process once said it
    was alive, so a missing ``live_key`` means it is gone (not that it never says)."""
    return f"{layer.prefix}:ct:seen:{process}"


def alive_key(layer: Any) -> str:
    """Marker that a shard holds the servers' memberships (see the table above)."""
    return f"{layer.prefix}:ct:alive"
