"""The tuned Redis layer on Redis Cluster (AWS ElastiCache and Azure Cache in cluster
mode, a self-run ``cluster-enabled`` Redis).

``CHANNEL_LAYERS = {"default": {"BACKEND": "channels_tuning.layers.RedisClusterChannelLayer",
"CONFIG": {"hosts": ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]}}}``

``hosts`` are startup nodes, in any form channels-redis takes (URLs, ``(host, port)``,
dicts); redis-py's :class:`~redis.asyncio.cluster.RedisCluster` learns the rest of the
cluster from them and follows ``MOVED`` / ``ASK`` redirections, failovers and
resharding. A ``rediss://`` URL turns TLS on, its user and password are the
cluster's; ``cluster_options`` are more keywords for ``RedisCluster`` (``ssl_ca_certs``,
``read_from_replicas``...). Every other CONFIG key is the tuned layer's.

What changes against one Redis, and why:

- **Each script touches one slot.** A cluster refuses a script whose keys hash to
  several slots, so the package's keys that a script reads together share a hash tag
  (:mod:`.keys`), and a group send runs one script per slot of the receiving
  processes' inboxes, all at once, with their reports summed (one per shard on a
  single Redis or ``hosts`` shards).
- **One client per event loop** for the whole cluster: the layer's "shards" are one
  (``ring_size`` 1); the cluster routes each command by its key.
- **Receiving** pops with channels-redis' backup queue as upstream does, the queue
  in the inbox's slot (:func:`channels_tuning.compat.channels_redis.pop_with_backup_in_one_slot`).
- ``flush()`` deletes the layer's keys on every primary (``SCAN``, not ``KEYS``: it is
  for tests and maintenance, not a hot path).
- The servers' "memberships are in Redis" marker (``keys.alive_key``) is one per hash
  slot that holds groups, read with the group's members: an empty group on a primary
  that lost its data reports ``state_lost`` while the other primaries' groups do not.
"""

from __future__ import annotations

import asyncio
import collections
import types
import urllib.parse
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from ...compat import channels_redis as upstream
from . import keys
from .layer import POOL_MAX_CONNECTIONS, READ_TIMEOUT_MARGIN, RedisChannelLayer

__all__ = ["RedisClusterChannelLayer", "slot_tag", "startup_nodes"]


class _InitializedFirst(RedisCluster):
    """redis-py's RedisCluster, initialized (cluster discovered) before its first
    command runs, with concurrent first commands waiting for it.

    redis-py (8.1 measured) resolves a command's slot before it initializes the client,
    so commands issued together on a new client race the discovery's connections: 49
    of 60 new clients, each given 40 concurrent ``EVAL``s, raised ``AttributeError:
    'NoneType' object has no attribute 'writelines'``; none did with this. A server's
    first handshakes are such commands."""

    _ready = False
    _readying: asyncio.Lock | None = None

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if not self._ready:
            if self._readying is None:
                self._readying = asyncio.Lock()
            async with self._readying:
                if not self._ready:
                    await self.initialize()
                    self._ready = True
        return await super().execute_command(*args, **kwargs)


class RedisClusterChannelLayer(RedisChannelLayer):
    """The tuned Redis layer with Redis Cluster as its one shard (see the module doc)."""

    hash_tags = True

    def __init__(
        self,
        hosts: Any = None,
        prefix: str = "asgi",
        expiry: int = 60,
        group_expiry: int | None = None,
        cluster_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ImproperlyConfigured(
                f"prefix {prefix!r}: braces would change which hash slot the layer's keys "
                "are in on Redis Cluster; use a prefix without them"
            )
        super().__init__(hosts, prefix, expiry, group_expiry, **kwargs)
        nodes, options = startup_nodes(self.hosts)
        self.startup_nodes = nodes
        #: Keywords for each loop's RedisCluster. The socket timeout outlives the
        #: blocking pop (``brpop_timeout``), which would otherwise race it. No bound on
        #: connections per node, as channels-redis' pools have none: RedisCluster's
        #: default (100) raises MaxConnectionsError, not waits, when a reconnect storm's
        #: handshakes read history all at once (measured: 212 of 600 commands). The
        #: base layer's ``hosts`` usually carry the bound already (``pool_hosts``); the
        #: key here keeps it when that hook into channels-redis is off, since RedisCluster
        #: does not build its pools through channels-redis.
        self.cluster_options = {
            "socket_timeout": self.brpop_timeout + READ_TIMEOUT_MARGIN,
            "max_connections": POOL_MAX_CONNECTIONS,
            **options,
            **(cluster_options or {}),
        }
        self.ring_size = 1
        self._clients: dict[asyncio.AbstractEventLoop, RedisCluster] = {}

    def __str__(self) -> str:
        nodes = ", ".join(f"{node.host}:{node.port}" for node in self.startup_nodes)
        return f"{self.__class__.__name__}(startup nodes {nodes})"

    # ---------------------------------------------------------------- connections

    def consistent_hash(self, value: Any) -> int:
        """Every name is on the one "shard", the cluster (which routes by slot)."""
        return 0

    def connection(self, index: int) -> Any:
        """This event loop's client of the cluster (``index``: always 0, the cluster)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = _InitializedFirst(
                startup_nodes=list(self.startup_nodes), **self.cluster_options
            )
            self._clients[loop] = client
            _close_with_loop(self, loop)
        return client

    async def close_pools(self) -> None:
        """Stop this process' reader, then close this loop's client of the cluster."""
        await super().close_pools()
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await _close(client)

    def marker_home(self, group: str) -> int:
        """The hash slot of ``group``'s members: its marker is in that slot, so a
        primary that lost its data is told from one that kept it."""
        slot: int = key_slot(keys.group_key(self, group).encode())
        return slot

    def alive_marker(self, home: int) -> str:
        return keys.alive_key(self, slot_tag(home))

    # ---------------------------------------------------------------- sends

    def inbox_batches(self, by_connection: dict[int, list[str]]) -> list[tuple[int, list[str]]]:
        """One script per hash slot of the receiving processes' inboxes."""
        by_slot: dict[int, list[str]] = collections.defaultdict(list)
        for inboxes in by_connection.values():
            for inbox in inboxes:
                by_slot[key_slot(inbox.encode())].append(inbox)
        return [(0, inboxes) for inboxes in by_slot.values()]

    # ---------------------------------------------------------------- receives

    def _backup_channel_name(self, channel: str) -> str:
        return upstream.backup_key_in_slot_of(channel)

    async def _brpop_with_clean(self, index: int, channel: str, timeout: float) -> bytes | None:
        return await upstream.pop_with_backup_in_one_slot(self, index, channel, timeout)

    async def flush(self) -> None:
        """Delete every key of this layer on every primary, then close the client."""
        await self.wait_received()
        client = self.connection(0)
        for pattern in (f"{self.prefix}*", f"{{{self.prefix}*"):
            found = [key async for key in client.scan_iter(match=pattern, count=1000)]
            for start in range(0, len(found), 500):
                pipe = client.pipeline(transaction=False)
                for key in found[start : start + 500]:
                    pipe.delete(key)
                await pipe.execute()
        await self.close_pools()


_slot_tags: dict[int, str] = {}
_next_candidate = 0


def slot_tag(slot: int) -> str:
    """A short string whose hash slot is ``slot`` (hex numbers, counted up until one
    lands there; every slot's first is kept). Each slot costs 16 384 tries while few
    are known; all 16 384 are known after about 315 000 tries, 0.4 s of CPU in all,
    spread over the first lookups."""
    global _next_candidate
    while slot not in _slot_tags:
        candidate = format(_next_candidate, "x")
        _next_candidate += 1
        _slot_tags.setdefault(key_slot(candidate.encode()), candidate)
    return _slot_tags[slot]


def startup_nodes(hosts: list[dict[str, Any]]) -> tuple[list[ClusterNode], dict[str, Any]]:
    """``(nodes, RedisCluster keywords)`` from channels-redis' decoded ``hosts``: URLs
    (``rediss://`` is TLS; user and password are the cluster's), ``host``/``port``
    dicts; other keys of a dict are keywords for the client."""
    nodes: list[ClusterNode] = []
    options: dict[str, Any] = {}
    for host in hosts:
        entry = dict(host)
        if "sentinels" in entry or "master_name" in entry:
            raise ImproperlyConfigured("a Redis Cluster has no sentinels: list its nodes in hosts")
        address = entry.pop("address", None)
        if isinstance(address, (tuple, list)):
            entry.setdefault("host", address[0])
            entry.setdefault("port", address[1])
        elif address is not None:
            url = urllib.parse.urlsplit(str(address))
            if url.scheme not in ("redis", "rediss"):
                raise ImproperlyConfigured(
                    f"{address!r}: a Redis Cluster node is redis:// or rediss://"
                )
            entry.setdefault("host", url.hostname or "localhost")
            entry.setdefault("port", url.port or 6379)
            if url.scheme == "rediss":
                options["ssl"] = True
            if url.username:
                options["username"] = urllib.parse.unquote(url.username)
            if url.password:
                options["password"] = urllib.parse.unquote(url.password)
        nodes.append(ClusterNode(entry.pop("host"), int(entry.pop("port", 6379))))
        options.update(entry)
    return nodes, options


def _close_with_loop(layer: RedisClusterChannelLayer, loop: asyncio.AbstractEventLoop) -> None:
    """Close ``loop``'s client when the loop closes (``async_to_sync`` outside a server
    runs each call in a loop of its own), as channels-redis does for its pools."""
    original = loop.close

    def close(self: asyncio.AbstractEventLoop) -> None:
        client = layer._clients.pop(loop, None)
        if client is not None and not loop.is_running():
            loop.run_until_complete(_close(client))
        self.close = original  # type: ignore[method-assign]
        original()

    loop.close = types.MethodType(close, loop)  # type: ignore[method-assign]


async def _close(client: RedisCluster) -> None:
    # redis-py 5.0.0 names it close(); aclose() from 5.0.1 on.
    close = getattr(client, "aclose", None) or client.close
    await close()
