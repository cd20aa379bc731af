"""Every use of channels-redis' internals, in one place.

channels-redis documents its layer's configuration, not its methods; the tuned
layer and the process reader need a few of them. Each hook below names what it
relies on; :func:`check` verifies all of them against the installed version (run
by the server's start-up self-check and by ``tests/unit/compat/test_compat.py``, the canaries).

=======================================  =========================================
upstream symbol                          used for
=======================================  =========================================
``RedisChannelLayer.consistent_hash``    the shard of a group or channel
``RedisChannelLayer.connection(index)``  the redis-py client of a shard
``RedisChannelLayer._map_channel_keys_   what a group send writes to each receiving
to_connection``                          process' inbox: the package builds the same
                                         in one pass (``layers/redis/inboxes.py``;
                                         its canary compares the two)
``RedisChannelLayer.receive_single``     pop this process' inbox (one reader task)
inbox key, members, ``__asgi_channel__``  pop what is waiting in it, many at once
                                         (``receive_waiting``, during bursts)
``RedisChannelLayer.receive_buffer``     hand a message to a plain consumer of the
                                         same process that is waiting in receive()
``RedisChannelLayer.group_send``'s Lua   the capacity rule our reporting copy keeps
                                         (ZCOUNT < capacity, then ZADD and EXPIRE)
``pubsub.RedisPubSubChannelLayer``       the tuned pub/sub layer (layers/pubsub.py):
``._get_layer``, ``_layers``, ``_args``  its per-loop layer is ours;
``RedisPubSubLoopLayer.channels``,       bounded queues for plain consumers, tuned
``groups``, ``_shards``,                 consumers handed messages as they arrive,
``_subscribe_to_channel``,               group channels named and sharded as
``_get_shard``,                          upstream does;
``_get_group_channel_name``
``RedisSingleShardConnection``           the subscriber connection: deliveries,
``._receive_message``, ``_do_receiving``,  publish's receiver count, errors
``_ensure_redis``, ``_lock``, ``_redis``,  counted
``_pubsub``, ``host``
``utils._wrap_close``                    closing the per-loop layer with its loop
``utils.decode_hosts``, ``create_pool``  the layer's pools without redis-py 8's bound
                                         of 100 connections and with a socket timeout
                                         past the blocking pop's (``pool_hosts``)
``RedisChannelLayer.prefix``,            the package's own keys, per shard, and this
``ring_size``, ``client_prefix``         process' inbox (``layers/redis/keys.py``,
                                         owner counts, presence, history)
``RedisChannelLayer._brpop_with_clean``, the cluster layer's pop: upstream's script
``_backup_channel_name``,                names no key (a cluster refuses it); ours
``_clean_receive_backup``                declares the inbox and its backup queue,
                                         which share a hash tag
=======================================  =========================================

Tested range: channels-redis 4.2 to 4.3 (``pyproject.toml`` bounds it below 5).
"""

from __future__ import annotations

import inspect
from typing import Any

from channels_redis.core import RedisChannelLayer

from ..exceptions import UpstreamChanged
from ._checker import Checker

LIBRARY = "channels-redis"

#: Turned off by the self-check when the hook they rely on changed. Without the
#: process reader each tuned consumer reads its own channel (Channels' way: more
#: tasks, same messages). Reporting group sends have no fallback that could keep
#: their promise: they raise UpstreamChanged instead of losing messages unseen.
features = {
    "process_reader": True,
    "reporting_send": True,
    "receive_waiting": True,
    # Off: the tuned pub/sub layer uses channels-redis' own per-loop layer (unbounded
    # queues, one deserialization per consumer), and says so at start.
    "pubsub_delivery": True,
    # Off: MAX_CONNECTIONS_PER_USER is counted per process (owners.py names its keys
    # per shard from the layer's prefix, ring_size and client_prefix).
    "shared_owner_counts": True,
    # Off: the Redis Cluster layer raises UpstreamChanged on receive instead of
    # running upstream's pop, which a cluster refuses.
    "cluster_receive": True,
    # Off: the layer's pools keep redis-py's default bound (100 since redis-py 8,
    # past which a command raises MaxConnectionsError instead of waiting).
    "pool_bound": True,
}

PUBSUB = "pubsub internals"
POOLS = "utils.decode_hosts, create_pool (pool keywords)"
LAYER_ATTRIBUTES = "RedisChannelLayer.prefix, ring_size, client_prefix"

# Our copy of channels-redis' group_send script (channels_redis/core.py), changed
# to drop expired messages in the same call, to return *which* keys were full, and to
# skip (and return) the inboxes of processes that are gone. KEYS: n inbox keys, then
# their processes' live keys, then their seen keys (layers.redis.keys); ARGV: n messages,
# n capacities, now, expiry. Returns {full positions, gone positions}.
GROUP_SEND_LUA = """
local full = {}
local gone = {}
local n = #KEYS / 3
local now = tonumber(ARGV[#ARGV - 1])
local expiry = tonumber(ARGV[#ARGV])
for i = 1, n do
    if redis.call('EXISTS', KEYS[i + n]) == 0 and redis.call('EXISTS', KEYS[i + 2 * n]) == 1 then
        gone[#gone + 1] = i
    else
        redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, now - expiry)
        if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + n]) then
            redis.call('ZADD', KEYS[i], now, ARGV[i])
            redis.call('EXPIRE', KEYS[i], expiry)
        else
            full[#full + 1] = i
        end
    end
end
return {full, gone}
"""

#: Fragments of upstream's group_send that GROUP_SEND_LUA must stay equivalent to.
UPSTREAM_GROUP_SEND_FRAGMENTS = (
    "redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + #KEYS])",
    "redis.call('ZADD', KEYS[i], current_time, ARGV[i])",
    "redis.call('EXPIRE', KEYS[i], expiry)",
    "self._map_channel_keys_to_connection(",
)


def is_redis_layer(layer: Any) -> bool:
    return isinstance(layer, RedisChannelLayer)


def shard_of(layer: Any, name: str) -> int:
    index: int = layer.consistent_hash(name)
    return index


def connection(layer: Any, index: int) -> Any:
    return layer.connection(index)


async def receive_single(layer: Any, channel: str) -> tuple[Any, dict[str, Any]]:
    """``(channel or list of channels, message)`` popped from a process channel."""
    received: tuple[Any, dict[str, Any]] = await layer.receive_single(channel)
    return received


#: The symbol a change of the inbox's key, members or envelope is reported under.
INBOX_LAYOUT = "RedisChannelLayer inbox layout (receive_single)"


async def receive_waiting(layer: Any, channel: str, limit: int) -> list[tuple[Any, dict[str, Any]]]:
    """Up to ``limit`` messages already waiting in a process channel, in one round
    trip and without waiting (``ZPOPMIN key count``), decoded as ``receive_single``
    decodes one: during a burst the reader takes them together, and each subscriber's
    frames are written with one system call. Not through channels-redis' backup queue:
    the reader hands them on synchronously, so only a process killed between the pop
    and the hand-off loses them, as it would lose what it had already read."""
    if not features["receive_waiting"]:
        return []
    popped = await layer.connection(layer.consistent_hash(channel)).zpopmin(
        layer.prefix + channel, limit
    )
    received = []
    for member, _score in popped:
        message = layer.deserialize(member)
        target = message.pop("__asgi_channel__", channel)
        received.append((target, message))
    return received


#: The symbol a change of upstream's pop with a backup queue is reported under.
CLUSTER_RECEIVE = "RedisChannelLayer._brpop_with_clean (cluster receive)"

# channels-redis' cleanup script with its two keys declared (upstream passes them as
# ARGV with no KEYS: a cluster routes that to any node, which refuses them).
_RESTORE_BACKUP_LUA = """
local backed_up = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = #backed_up, 1, -2 do
    redis.call('ZADD', KEYS[1], backed_up[i], backed_up[i - 1])
end
redis.call('DEL', KEYS[2])
"""


def backup_key_in_slot_of(channel_key: str) -> str:
    """The backup queue of an inbox, in the inbox's hash slot (its name as the tag)."""
    return "{" + channel_key + "}$inflight"


async def pop_with_backup_in_one_slot(
    layer: Any, index: int, channel_key: str, timeout: float
) -> bytes | None:
    """What upstream's ``_brpop_with_clean`` does (put back what a cancelled pop left
    in the backup queue, pop one message, keep it in the backup queue until it is
    received), with the keys declared, for ``receive_single`` on a cluster."""
    if not features["cluster_receive"]:
        raise UpstreamChanged(LIBRARY, CLUSTER_RECEIVE, "see the start-up log")
    backup = backup_key_in_slot_of(channel_key)
    connection = layer.connection(index)
    await connection.eval(_RESTORE_BACKUP_LUA, 2, channel_key, backup)
    result = await connection.bzpopmin(channel_key, timeout=timeout)
    if result is None:
        return None
    _, member, timestamp = result
    await connection.zadd(backup, {member: float(timestamp)})
    popped: bytes = member
    return popped


def receive_buffers(layer: Any) -> Any:
    """channels-redis' per-channel buffers of messages for plain consumers."""
    return layer.receive_buffer


def check() -> list[UpstreamChanged]:
    """What no longer matches in the installed channels-redis (empty: all hooks hold)."""
    checker = Checker(LIBRARY)
    layer = RedisChannelLayer
    checker.callables(
        layer,
        "RedisChannelLayer",
        ("consistent_hash", "connection", "receive_single", "_map_channel_keys_to_connection"),
    )
    mapper = getattr(layer, "_map_channel_keys_to_connection", None)
    if mapper is not None:
        params = list(inspect.signature(mapper).parameters)
        if params[1:] != ["channel_names", "message"]:
            checker.changed(
                "RedisChannelLayer._map_channel_keys_to_connection", f"signature {params}"
            )
    checker.contains(
        layer.group_send, "RedisChannelLayer.group_send", UPSTREAM_GROUP_SEND_FRAGMENTS
    )
    checker.contains(layer.__init__, "RedisChannelLayer.receive_buffer", ["self.receive_buffer ="])
    # The package's own keys (layers/redis/keys.py, owners.py, presence.py, history.py)
    # are named from these, one set per shard.
    checker.contains(
        layer.__init__,
        LAYER_ATTRIBUTES,
        ["self.prefix = prefix", "self.ring_size = len(self.hosts)", "self.client_prefix ="],
    )
    # receive_waiting pops what receive_single would: the same key, members, envelope.
    checker.contains(
        getattr(layer, "receive_single", None),
        INBOX_LAYOUT,
        [
            "channel_key = self.prefix + channel",
            "message = self.deserialize(content)",
            'channel = message["__asgi_channel__"]',
        ],
    )
    _check_cluster_receive(checker)
    _check_pubsub(checker)
    _check_pools(checker)
    return checker.problems


def _check_pools(checker: Checker) -> None:
    from channels_redis import utils

    checker.callables(utils, POOLS, ("decode_hosts", "create_pool"))
    checker.contains(
        getattr(RedisChannelLayer, "create_pool", None), POOLS, ["create_pool(self.hosts[index])"]
    )
    checker.contains(
        getattr(utils, "create_pool", None),
        POOLS,
        [
            "ConnectionPool.from_url(address, **host)",
            "SentinelConnectionPool(",
            "ConnectionPool(**host)",
        ],
    )


def _check_cluster_receive(checker: Checker) -> None:
    layer = RedisChannelLayer
    checker.callables(
        layer,
        CLUSTER_RECEIVE,
        ("_brpop_with_clean", "_backup_channel_name", "_clean_receive_backup"),
    )
    checker.contains(
        getattr(layer, "receive_single", None),
        CLUSTER_RECEIVE,
        [
            "content = await self._brpop_with_clean("
            " index, channel_key, timeout=self.brpop_timeout )",
            "self._clean_receive_backup(index, channel_key)",
        ],
    )
    checker.contains(
        getattr(layer, "_clean_receive_backup", None),
        CLUSTER_RECEIVE,
        ["zpopmin(self._backup_channel_name(channel))"],
    )
    checker.contains(
        getattr(layer, "_brpop_with_clean", None),
        CLUSTER_RECEIVE,
        [
            "backup_queue = self._backup_channel_name(channel)",
            "redis.call('ZADD', ARGV[1], backed_up[i], backed_up[i - 1])",
            "await connection.bzpopmin(channel, timeout=timeout)",
            "await connection.zadd(backup_queue, {member: float(timestamp)})",
        ],
    )


def _check_pubsub(checker: Checker) -> None:
    from channels_redis import pubsub, utils

    checker.callables(pubsub.RedisPubSubChannelLayer, PUBSUB, ("_get_layer",))
    checker.contains(
        pubsub.RedisPubSubChannelLayer.__init__,
        PUBSUB,
        ["self._args = args", "self._kwargs = kwargs", "self._layers = {}"],
    )
    loop_layer = pubsub.RedisPubSubLoopLayer
    checker.callables(
        loop_layer, PUBSUB, ("_subscribe_to_channel", "_get_shard", "_get_group_channel_name")
    )
    checker.contains(
        loop_layer.__init__,
        PUBSUB,
        ["self.channels = {}", "self.groups = {}", "self._shards = ["],
    )
    shard = pubsub.RedisSingleShardConnection
    checker.callables(
        shard, PUBSUB, ("_receive_message", "_do_receiving", "_ensure_redis", "subscribe")
    )
    checker.contains(
        shard.__init__,
        PUBSUB,
        ["self.host = host", "self._lock =", "self._redis = None", "self._pubsub = None"],
    )
    checker.contains(shard._ensure_redis, PUBSUB, ["self._pubsub = self._redis.pubsub()"])
    checker.callables(utils, PUBSUB, ("_wrap_close",))


def pool_hosts(hosts: Any, **defaults: Any) -> Any:
    """``hosts`` as channels-redis decodes them (a dict of pool keywords each), with
    each of ``defaults`` in every entry that does not name its own; ``hosts`` unchanged
    when the decoding or the pools changed upstream."""
    if not features["pool_bound"]:
        return hosts
    from channels_redis.utils import decode_hosts

    return [{**defaults, **entry} for entry in decode_hosts(hosts)]


def wrap_close(layer: Any, loop: Any) -> None:
    """Close ``layer``'s per-loop layer when ``loop`` closes, as channels-redis does."""
    from channels_redis.utils import _wrap_close

    _wrap_close(layer, loop)


def apply(problems: list[UpstreamChanged]) -> None:
    for problem in problems:
        if problem.library != LIBRARY:
            continue
        if problem.symbol.startswith(POOLS):
            features["pool_bound"] = False
        elif problem.symbol.startswith(PUBSUB):
            features["pubsub_delivery"] = False
        elif problem.symbol.startswith(CLUSTER_RECEIVE):
            features["cluster_receive"] = False
        elif problem.symbol == INBOX_LAYOUT:
            features["receive_waiting"] = False
        elif problem.symbol == LAYER_ATTRIBUTES:
            features["shared_owner_counts"] = False
            features["process_reader"] = False  # its key is named from client_prefix
        elif "receive" in problem.symbol:
            features["process_reader"] = False
        else:
            features["reporting_send"] = False
