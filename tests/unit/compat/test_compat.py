"""Canaries: every private hook into daphne, autobahn, Twisted, channels-redis,
uvicorn and hypercorn.

Each hook's ``check()`` must pass on the installed versions, and must fail, naming
the upstream symbol, when that symbol changes (simulated here by patching the real
upstream class for the duration of one test). The end-to-end tests at the bottom
show the start-up self-check on a real server: the eager-write swap really happens,
and a changed upstream is logged with its fallback taking over."""

from __future__ import annotations

import asyncio
import collections
import inspect
import pprint
import socket
import sys
import threading
import time
from typing import Any

import autobahn.twisted.websocket as autobahn_twisted_module
import pytest
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress_deflate import PerMessageDeflate
from autobahn.websocket.protocol import WebSocketProtocol
from channels_redis.core import RedisChannelLayer
from daphne.server import Server
from twisted.internet import tcp
from twisted.internet.testing import StringTransport

from channels_tuning.compat import (
    asyncio_tasks,
    autobahn,
    channels_redis,
    daphne,
    hypercorn,
    twisted,
    uvicorn,
)
from channels_tuning.compat import channels as channels_hooks
from channels_tuning.exceptions import UpstreamChanged
from channels_tuning.layers.redis import inboxes as inboxes_module
from channels_tuning.layers.redis import keys
from channels_tuning.layers.redis.inboxes import decode_members, map_to_inboxes
from channels_tuning.runtime import lazytext
from channels_tuning.runtime.lazytext import LazyCall, LazyPformat
from channels_tuning.servers.daphne.protocol import ProtocolLimits, tuned_protocol
from tests.support.fakes import eager_transport
from tests.support.rawws import upgrade_request

LIBRARIES = {
    "asyncio": asyncio_tasks,
    "channels": channels_hooks,
    "daphne": daphne,
    "autobahn": autobahn,
    "twisted": twisted,
    "channels_redis": channels_redis,
    "uvicorn": uvicorn,
    "hypercorn": hypercorn,
}


def symbols(problems: list[UpstreamChanged]) -> set[str]:
    return {problem.symbol for problem in problems}


def change_source(monkeypatch: pytest.MonkeyPatch, module: Any, old: str, new: str) -> None:
    """Make ``module.check()`` read upstream source with ``old`` replaced by ``new``,
    as if a release had changed it."""
    real = module._source
    monkeypatch.setattr(module, "_source", lambda obj: real(obj).replace(old, new))


@pytest.fixture(autouse=True)
def _restore_features():
    saved = {name: dict(module.features) for name, module in LIBRARIES.items()}
    yield
    for name, module in LIBRARIES.items():
        module.features.clear()
        module.features.update(saved[name])


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_installed_version_passes_every_check(library):
    assert LIBRARIES[library].check() == []


# ---------------------------------------------------------------------- asyncio


async def test_asyncio_task_registry_counts_and_samples_the_loops_pending_tasks():
    loop = asyncio.get_running_loop()
    blocker = asyncio.Event()
    pending = [loop.create_task(blocker.wait()) for _ in range(60)]
    finished = [loop.create_task(asyncio.sleep(0)) for _ in range(20)]
    await asyncio.gather(*finished)  # done, and still referenced: not counted
    try:
        expected = asyncio.all_tasks(loop)
        count, sample = asyncio_tasks.sampled_tasks(loop, 10_000)
        assert count == len(expected) and set(sample) == expected
        count, sample = asyncio_tasks.sampled_tasks(loop, 10)
        assert len(sample) <= 10 and set(sample) <= expected
        # Scaled from the sample, or exact where the sample was mostly other loops'
        # tasks (this test process has had many loops): never more than is registered.
        registered = sum(len(r) for r in asyncio_tasks._registries())
        assert len(expected) // 2 <= count <= registered, (count, len(expected), registered)
    finally:
        blocker.set()
        await asyncio.gather(*pending)


async def test_asyncio_task_registry_of_mostly_other_loops_counts_exactly():
    """Tasks of another loop (in another thread), still pending, fill the registry: a
    sample of them says nothing about this loop, so the count is exact."""
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever)
    thread.start()

    async def start_sleepers() -> list[asyncio.Task]:
        return [asyncio.get_running_loop().create_task(asyncio.sleep(3600)) for _ in range(3000)]

    async def cancel(tasks: list[asyncio.Task]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    blocker = asyncio.Event()
    loop = asyncio.get_running_loop()
    foreign = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(start_sleepers(), other))
    mine = [loop.create_task(blocker.wait()) for _ in range(10)]
    try:
        await asyncio.sleep(0)
        count, sample = asyncio_tasks.sampled_tasks(loop, 50)
        assert count == len(asyncio.all_tasks(loop))
        assert set(sample) <= asyncio.all_tasks(loop)
    finally:
        blocker.set()
        await asyncio.gather(*mine)
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(cancel(foreign), other))
        other.call_soon_threadsafe(other.stop)
        thread.join(5)
        other.close()


async def test_asyncio_task_registry_gone_falls_back_to_all_tasks(monkeypatch):
    name = "_scheduled_tasks" if hasattr(asyncio.tasks, "_scheduled_tasks") else "_all_tasks"
    monkeypatch.delattr(asyncio.tasks, name)
    problems = asyncio_tasks.check()
    assert "asyncio.tasks._all_tasks" in symbols(problems)
    monkeypatch.undo()  # asyncio.all_tasks itself reads it
    asyncio_tasks.apply(problems)
    assert asyncio_tasks.features == {"task_registry": False}
    loop = asyncio.get_running_loop()
    count, sample = asyncio_tasks.sampled_tasks(loop, 10)
    assert count == len(asyncio.all_tasks(loop)) and sample


def test_asyncio_all_tasks_that_no_longer_reads_the_registry_turns_the_hook_off(monkeypatch):
    monkeypatch.setattr(asyncio_tasks, "_source", lambda obj: "def all_tasks(loop): pass")
    problems = asyncio_tasks.check()
    assert symbols(problems) == {"asyncio.all_tasks"}


# --------------------------------------------------------------- channels-redis


async def test_channels_redis_private_method_removed(monkeypatch):
    monkeypatch.delattr(RedisChannelLayer, "_map_channel_keys_to_connection")
    problems = channels_redis.check()
    assert "RedisChannelLayer._map_channel_keys_to_connection" in symbols(problems)
    assert "channels-redis: RedisChannelLayer._map_channel_keys_to_connection: missing" in map(
        str, problems
    )
    channels_redis.apply(problems)
    with pytest.raises(UpstreamChanged, match="_map_channel_keys_to_connection"):
        await map_to_inboxes(None, ["a"], {})


def test_channels_redis_group_send_script_changed(monkeypatch):
    async def group_send(self, group, message):  # a rewrite without the capacity rule
        await self.connection(0).publish(group, message)

    monkeypatch.setattr(RedisChannelLayer, "group_send", group_send)
    problems = channels_redis.check()
    assert symbols(problems) == {"RedisChannelLayer.group_send"}
    assert any("ZCOUNT" in problem.detail for problem in problems)


def test_channels_redis_receive_single_removed_turns_the_process_reader_off(monkeypatch):
    monkeypatch.delattr(RedisChannelLayer, "receive_single")
    problems = channels_redis.check()
    assert "RedisChannelLayer.receive_single" in symbols(problems)
    channels_redis.apply(problems)
    assert channels_redis.features == {
        "process_reader": False,
        "reporting_send": True,
        "receive_waiting": False,
        "pubsub_delivery": True,
        "shared_owner_counts": True,
        "cluster_receive": False,
        "pool_bound": True,
    }
    from channels_tuning.layers.delivery import process_reader_for

    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1"])
    assert process_reader_for(layer) is None  # each consumer reads its own channel


def test_channels_redis_inbox_layout_changed_turns_batched_reads_off(monkeypatch):
    # An upstream receive_single that no longer unpacks __asgi_channel__ the same way.
    real = inspect.getsource

    def source(obj):
        text = real(obj)
        return text.replace("__asgi_channel__", "__channel__") if "receive_single" in text else text

    monkeypatch.setattr(inspect, "getsource", source)
    problems = channels_redis.check()
    assert symbols(problems) == {channels_redis.INBOX_LAYOUT}
    channels_redis.apply(problems)
    assert channels_redis.features["receive_waiting"] is False
    assert channels_redis.features["process_reader"] is True  # one message at a time


async def test_channels_redis_pop_changed_stops_the_cluster_receive(monkeypatch):
    """The cluster layer's pop copies what upstream's ``_brpop_with_clean`` does with
    the keys declared: changed upstream, a cluster receive raises instead of popping
    another way; the single-Redis layer keeps its process reader."""
    from channels_tuning.layers import RedisClusterChannelLayer

    real = inspect.getsource

    def source(obj):
        text = real(obj)
        return text.replace("await connection.bzpopmin(channel", "await connection.bzmpop(channel")

    monkeypatch.setattr(inspect, "getsource", source)
    problems = channels_redis.check()
    assert symbols(problems) == {channels_redis.CLUSTER_RECEIVE}
    channels_redis.apply(problems)
    assert channels_redis.features["cluster_receive"] is False
    assert channels_redis.features["process_reader"] is True
    layer = RedisClusterChannelLayer(hosts=["redis://127.0.0.1:1"])
    with pytest.raises(UpstreamChanged, match="cluster receive"):
        await layer.receive_single(f"{keys.process_channel(layer)}")


def test_channels_redis_layer_attributes_changed_count_owners_per_process(monkeypatch):
    """owners.py and the process reader name their keys from the layer's prefix,
    ring_size and client_prefix: renamed upstream, the per-user limit is counted per
    process and each consumer reads its own channel."""
    from channels_tuning.layers import RedisChannelLayer as TunedLayer
    from channels_tuning.layers.capabilities import owner_counts
    from channels_tuning.layers.delivery import process_reader_for

    real = inspect.getsource

    def source(obj):
        text = real(obj)
        return text.replace("self.client_prefix =", "self.inbox_prefix =")

    monkeypatch.setattr(inspect, "getsource", source)
    problems = channels_redis.check()
    assert symbols(problems) == {channels_redis.LAYER_ATTRIBUTES}
    channels_redis.apply(problems)
    assert channels_redis.features["shared_owner_counts"] is False
    layer = TunedLayer(hosts=["redis://127.0.0.1:1"])
    assert owner_counts(layer) is None
    assert process_reader_for(layer) is None


def test_channels_redis_pubsub_internals_changed(monkeypatch):
    """The tuned pub/sub layer then uses channels-redis' own per-loop layer and its
    consumers read their channels through receive(); nothing else is switched off."""
    from channels_redis.pubsub import RedisSingleShardConnection

    from channels_tuning.layers import RedisPubSubChannelLayer
    from channels_tuning.layers.delivery import process_reader_for

    monkeypatch.delattr(RedisSingleShardConnection, "_receive_message")
    problems = channels_redis.check()
    assert symbols(problems) == {f"{channels_redis.PUBSUB}._receive_message"}
    channels_redis.apply(problems)
    assert channels_redis.features == {
        "process_reader": True,
        "reporting_send": True,
        "receive_waiting": True,
        "pubsub_delivery": False,
        "shared_owner_counts": True,
        "cluster_receive": True,
        "pool_bound": True,
    }
    layer = RedisPubSubChannelLayer(hosts=["redis://127.0.0.1:1"])
    assert process_reader_for(layer) is None


def test_channels_redis_pools_built_from_each_host_entry():
    """Each documented ``hosts`` form becomes one pool of the tuned layer without
    redis-py 8's bound of 100 and with a socket timeout past the blocking pop's; an
    entry's own ``max_connections`` and ``socket_timeout`` win."""
    from channels_tuning.layers import RedisChannelLayer as TunedLayer
    from channels_tuning.layers.redis.layer import POOL_MAX_CONNECTIONS, READ_TIMEOUT_MARGIN

    layer = TunedLayer(
        hosts=[
            "redis://127.0.0.1:1",
            ("127.0.0.1", 2),
            {"address": "redis://127.0.0.1:3", "max_connections": 7, "socket_timeout": 2},
        ]
    )
    pools = [layer.create_pool(index) for index in range(3)]
    assert [pool.max_connections for pool in pools] == [POOL_MAX_CONNECTIONS] * 2 + [7]
    assert [pool.connection_kwargs["port"] for pool in pools] == [1, 2, 3]
    timeouts = [pool.connection_kwargs["socket_timeout"] for pool in pools]
    assert timeouts == [layer.brpop_timeout + READ_TIMEOUT_MARGIN] * 2 + [2]


def test_channels_redis_pools_changed_keep_redis_pys_bound(monkeypatch):
    from channels_redis import utils

    from channels_tuning.layers import RedisChannelLayer as TunedLayer

    monkeypatch.delattr(utils, "decode_hosts")
    problems = channels_redis.check()
    assert symbols(problems) == {f"{channels_redis.POOLS}.decode_hosts"}
    channels_redis.apply(problems)
    assert [name for name, on in channels_redis.features.items() if not on] == ["pool_bound"]
    layer = TunedLayer(hosts=["redis://127.0.0.1:1"])
    assert layer.hosts == [{"address": "redis://127.0.0.1:1"}]


async def test_pubsub_layer_hands_messages_to_tuned_consumers_directly():
    from channels_tuning.layers import RedisPubSubChannelLayer
    from channels_tuning.layers.delivery import process_reader_for
    from channels_tuning.layers.pubsub import TunedPubSubLoopLayer

    layer = RedisPubSubChannelLayer(hosts=["redis://127.0.0.1:1"])
    assert process_reader_for(layer) is layer
    assert isinstance(layer._get_layer(), TunedPubSubLoopLayer)


def test_key_layout_matches_channels_redis():
    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1"], prefix="app")
    assert keys.group_key(layer, "room.1") == layer._group_key("room.1").decode()
    local = f"{keys.process_channel(layer)}abc"
    assert keys.channel_key(layer, local) == layer.prefix + layer.non_local_name(local)
    assert keys.channel_key(layer, "plain") == "appplain"


async def test_inbox_mapping_matches_channels_redis(monkeypatch):
    """The one-pass mapping of a group send (layers/redis/inboxes.py) builds what
    channels-redis' own builds: the same inbox keys per shard in the same order, the
    same serialized message per key (its channels in the same order) and capacities,
    for members of several processes on two shards, a capacity pattern and channels
    that are not process-specific, grouped over several steps of the loop."""
    monkeypatch.setattr(inboxes_module, "MEMBERS_PER_STEP", 7)
    layer = RedisChannelLayer(
        hosts=["redis://127.0.0.1:1", "redis://127.0.0.1:2"],
        prefix="app",
        channel_capacity={"specific.b*": 7},
    )
    channels = [f"specific.{process}!{n}" for n in range(30) for process in ("a", "bee", "c", "d")]
    channels += ["plain", "other.plain", "specific.a!last"]
    message = {"type": "chat.message", "text": "hi", "n": 1}
    upstream_by_shard, upstream_messages, upstream_capacities = (
        layer._map_channel_keys_to_connection(channels, message)
    )
    inboxes = await map_to_inboxes(layer, channels, message)
    assert dict(inboxes.by_shard) == dict(upstream_by_shard)
    assert len(inboxes.by_shard) == 2
    assert inboxes.capacities == upstream_capacities
    assert inboxes.capacities["appspecific.bee!"] == 7
    assert {key: layer.deserialize(m) for key, m in inboxes.messages.items()} == {
        key: layer.deserialize(m) for key, m in upstream_messages.items()
    }
    assert inboxes.channels["appspecific.a!"][-1] == "specific.a!last"
    assert inboxes.channels["appplain"] == ["plain"]
    assert message == {"type": "chat.message", "text": "hi", "n": 1}  # not changed


def test_group_members_decoded_together_are_the_names_read():
    names = ["specific.a!x1", "plain", "specific.b!", "é.b!c"]
    assert decode_members([name.encode() for name in names]) == names
    assert decode_members([]) == []
    odd = [b"specific.a!x\n", b"a\0b", b"plain"]  # past Channels' name check
    assert decode_members(odd) == ["specific.a!x\n", "a\0b", "plain"]


# ------------------------------------------------------------------- autobahn


def test_autobahn_close_frame_method_removed(monkeypatch):
    monkeypatch.delattr(WebSocketProtocol, "sendCloseFrame")
    assert "WebSocketProtocol.sendCloseFrame" in symbols(autobahn.check())


def test_autobahn_prepared_message_internals_changed(monkeypatch):
    def sendPreparedMessage(self, preparedMsg):
        self.sendMessage(preparedMsg.payload)

    monkeypatch.setattr(WebSocketProtocol, "sendPreparedMessage", sendPreparedMessage)
    problems = autobahn.check()
    assert symbols(problems) == {"WebSocketProtocol.sendPreparedMessage"}
    autobahn.apply(problems)
    assert autobahn.features == {
        "prepared_fast_path": False,
        "release_deflate": True,
        "stop_assembling": True,
        "shared_options": True,
        "lazy_option_log": True,
        "protocol_error_code": True,
        "release_is_closed": True,
        "prepared_pings": True,
        "lazy_highlight": True,
        "release_frame_masker": True,
        "release_handshake": True,
        "small_send_queue": True,
        "release_defaults": True,
        "shared_traffic_stats": True,
    }


def tuned_server_factory(**options):
    """autobahn's server factory of the tuned protocol, with ``options``."""
    factory = WebSocketServerFactory()
    factory.protocol = tuned_protocol(WebSocketServerProtocol, ProtocolLimits())
    factory.setProtocolOptions(**options)
    return factory


def tuned_server_protocol(factory=None, **options):
    """A connection of the tuned protocol on ``factory`` (by default, a new one with
    ``options``), made on an in-memory transport."""
    factory = factory or tuned_server_factory(**options)
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    return protocol


def test_autobahn_protocol_options_shared_by_the_class():
    """The factory's options are read through the protocol class, with their values
    (a function option stays a plain function), and none is copied per connection."""

    def accept(offers):
        return ("accepted", offers)

    protocol = tuned_server_protocol(autoPingInterval=7, perMessageCompressionAccept=accept)
    assert not [name for name in protocol.CONFIG_ATTRS if name in vars(protocol)]
    assert protocol.autoPingInterval == 7
    assert protocol.perMessageCompressionAccept([1]) == ("accepted", [1])
    assert len(vars(protocol)) <= 85 - 29  # 29 options fewer than autobahn's own copy


def test_autobahn_option_log_formatted_only_when_written(monkeypatch, caplog):
    """The lazy pformat gives autobahn's debug line the same text, and nothing is
    formatted when the line is not written."""
    monkeypatch.setattr(autobahn.autobahn_protocol_module, "pformat", pprint.pformat)
    autobahn.defer_option_log()
    lazy = autobahn.autobahn_protocol_module.pformat([("autoPingInterval", 7, "Factory")])
    assert isinstance(lazy, LazyPformat)
    assert f"{lazy}" == pprint.pformat([("autoPingInterval", 7, "Factory")])
    assert autobahn.autobahn_protocol_module.pformat is LazyPformat
    calls = []
    monkeypatch.setattr(lazytext, "pformat", lambda obj: calls.append(obj) or "")
    tuned_server_protocol(autoPingInterval=7)  # autobahn's debug log is off
    assert calls == []


def test_autobahn_option_log_changed(monkeypatch):
    change_source(monkeypatch, autobahn, "attrs=pformat(configAttrLog)", "attrs=configAttrLog")
    problems = autobahn.check()
    assert symbols(problems) == {"WebSocketProtocol._connectionMade pformat"}
    autobahn.apply(problems)
    assert autobahn.features["lazy_option_log"] is False


def test_autobahn_options_copied_per_connection_again(monkeypatch):
    """If autobahn copied its options unconditionally, sharing them would change
    nothing but could hide a changed contract: the check says so and it is off."""
    change_source(monkeypatch, autobahn, "if not hasattr(self, configAttr):", "if True:")
    problems = autobahn.check()
    assert symbols(problems) == {"WebSocketProtocol.CONFIG_ATTRS"}
    autobahn.apply(problems)
    assert autobahn.features["shared_options"] is False
    protocol = tuned_server_protocol(autoPingInterval=7)
    assert "autoPingInterval" in vars(protocol)  # autobahn's own per-connection copy


def test_autobahn_protocol_error_code_read_at_close():
    """A reserved opcode from the client: autobahn fails the connection with 1002 in a
    close frame (failByDrop off), and the hook reads that code."""
    protocol = tuned_server_protocol(failByDrop=False)
    protocol.dataReceived(upgrade_request("/"))
    assert protocol.state == protocol.STATE_OPEN
    assert autobahn.protocol_error_code(protocol) is None
    protocol.dataReceived(bytes([0x83, 0x80]) + b"\x00\x00\x00\x00")  # opcode 3, masked
    assert autobahn.protocol_error_code(protocol) == 1002
    assert protocol.state == protocol.STATE_CLOSING


def masked_text_frame(text: str) -> bytes:
    """A client's masked text frame (a mask of zeros keeps the payload as it is)."""
    payload = text.encode()
    return bytes([0x81, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload


def test_autobahn_handshake_let_go_once_open_and_the_connection_still_works():
    """After the opening handshake, autobahn's copies of it (raw request, headers,
    raw response, key) are gone, daphne's ``request`` keeps no headers, and the
    connection's send queue is a list; frames still flow both ways."""
    protocol = tuned_server_protocol()
    assert type(protocol.send_queue) is autobahn.SendQueue
    received = []
    protocol.onMessage = lambda payload, binary: received.append(payload)
    protocol.request = type("Request", (), {"headers": {"host": "127.0.0.1"}})()
    protocol.dataReceived(upgrade_request("/") + masked_text_frame("hello"))
    assert protocol.state == protocol.STATE_OPEN
    assert received == [b"hello"]
    for name in ("http_request_data", "http_response_data", "http_status_line", "_wskey"):
        assert getattr(protocol, name) is None, name
    assert dict(protocol.http_headers) == {} and dict(protocol.request.headers) == {}
    protocol.sendMessage(b"back")
    assert protocol.transport.value().endswith(b"\x81\x04back")


def test_autobahn_handshake_read_after_open(monkeypatch):
    """A method other than the handshake's reading ``http_headers``: the handshake is
    kept (the connection's dict as autobahn made it)."""
    change_source(monkeypatch, autobahn, '""" End of frame received. """', "self.http_headers")
    problems = autobahn.check()
    assert symbols(problems) == {"WebSocketProtocol.http_headers handshake"}
    autobahn.apply(problems)
    assert autobahn.features["release_handshake"] is False
    assert autobahn.features["small_send_queue"] is True
    protocol = tuned_server_protocol()
    protocol.dataReceived(upgrade_request("/"))
    assert protocol.state == protocol.STATE_OPEN
    assert protocol.http_headers["host"] == "127.0.0.1"


def test_autobahn_send_queue_used_as_a_deque(monkeypatch):
    """``send_queue`` used beyond len/append/popleft (a list would not do): the deque
    stays."""
    autobahn_change_turns_off(
        monkeypatch,
        "e = self.send_queue.popleft()",
        "e = self.send_queue.pop()",
        "WebSocketProtocol.send_queue queue",
        "small_send_queue",
    )
    assert type(tuned_server_protocol().send_queue) is collections.deque


def test_autobahn_defaults_held_by_the_class_once_open_and_written_back_at_close():
    """An open connection's attributes that hold their class's value are not in its
    ``__dict__`` (rebuilt, so smaller); reads see the same values, and a close writes
    its own back onto the instance."""
    autobahn.features["release_defaults"] = False
    kept = tuned_server_protocol()
    kept.dataReceived(upgrade_request("/"))
    autobahn.features["release_defaults"] = True
    protocol = tuned_server_protocol()
    protocol.request = type("Request", (), {"headers": {}})()
    protocol.dataReceived(upgrade_request("/"))
    assert protocol.state == protocol.STATE_OPEN
    released = [name for name in autobahn.contract.RELEASED_DEFAULTS if name not in vars(protocol)]
    if sys.version_info >= (3, 11):
        assert sorted(released) == sorted(autobahn.contract.RELEASED_DEFAULTS)
        assert sys.getsizeof(vars(protocol)) < sys.getsizeof(vars(kept)) - 500
    else:  # an instance's dict shares its keys: a rebuilt one would be larger
        assert {"wasClean", "localCloseCode", "failedByMe"} <= set(vars(protocol))
        assert sys.getsizeof(vars(protocol)) == sys.getsizeof(vars(kept))
    assert protocol.wasClean is False and protocol.localCloseCode is None
    protocol.transport.registerProducer(object(), True)  # as daphne does; the close drops it
    protocol.sendClose(1000)
    protocol.dataReceived(bytes([0x88, 0x82]) + b"\x00\x00\x00\x00" + b"\x03\xe8")
    assert protocol.closedByMe is True and vars(protocol)["localCloseCode"] == 1000
    assert protocol.remoteCloseCode == 1000 and protocol.state == protocol.STATE_CLOSED


def test_autobahn_defaults_release_planned_once_per_class():
    """The first open connection decides whether a rebuilt dict is smaller (on 3.11
    and later it is, on 3.10 it is not); the class's later connections follow that
    decision without measuring again."""
    first = tuned_server_protocol()
    plan = type(first)._ct_defaults_release
    assert plan is not None and plan.rebuild_pays is None
    first.request = type("Request", (), {"headers": {}})()
    first.dataReceived(upgrade_request("/"))
    assert plan.rebuild_pays is (sys.version_info >= (3, 11))
    plan.rebuild_pays = False  # as on Python 3.10: nothing is rebuilt any more
    second = first.factory.buildProtocol(None)
    second.makeConnection(StringTransport())
    second.request = type("Request", (), {"headers": {}})()
    second.dataReceived(upgrade_request("/"))
    assert second.state == second.STATE_OPEN and "wasClean" in vars(second)


def test_autobahn_default_read_by_name_keeps_the_dict(monkeypatch):
    """An attribute read by its name (``hasattr`` could tell a class default from the
    instance's): nothing is released, so no read can change."""
    autobahn_change_turns_off(
        monkeypatch,
        "if not self.triggered:",
        'if not hasattr(self, "triggered"):',
        "WebSocketProtocol.triggered default",
        "release_defaults",
    )
    protocol = tuned_server_protocol()
    protocol.dataReceived(upgrade_request("/"))
    assert "wasClean" in vars(protocol) and "wasClean" not in vars(type(protocol))


def test_autobahn_traffic_counters_one_per_process():
    """Connections add to the process's one set of traffic counters."""
    first, second = tuned_server_protocol(), tuned_server_protocol()
    assert first.trafficStats is second.trafficStats is autobahn.SHARED_TRAFFIC_STATS
    before = autobahn.SHARED_TRAFFIC_STATS.incomingWebSocketFrames
    for protocol in (first, second):
        protocol.request = type("Request", (), {"headers": {}})()
        protocol.onMessage = lambda payload, binary: None
        protocol.dataReceived(upgrade_request("/") + masked_text_frame("hello"))
    assert autobahn.SHARED_TRAFFIC_STATS.incomingWebSocketFrames == before + 2


def test_autobahn_traffic_counters_read_keep_one_per_connection(monkeypatch):
    """A connection's counters read (not only added to): each keeps its own."""
    autobahn_change_turns_off(
        monkeypatch,
        "self.trafficStats.incomingWebSocketFrames += 1",
        "self.log(self.trafficStats)",
        "WebSocketProtocol.trafficStats counters",
        "shared_traffic_stats",
    )
    assert tuned_server_protocol().trafficStats is not autobahn.SHARED_TRAFFIC_STATS


def test_autobahn_method_source_unreadable_turns_off_the_hooks_reading_it(monkeypatch):
    """A connection method whose source cannot be read (a build without .py files):
    the handshake and send-queue hooks, which need it, are off; the fast path is not."""
    real = autobahn._source

    def unreadable_on_message_end(obj):
        if getattr(obj, "__qualname__", "") == "WebSocketProtocol.onMessageEnd":
            raise OSError("could not get source code")
        return real(obj)

    monkeypatch.setattr(autobahn, "_source", unreadable_on_message_end)
    problems = autobahn.check()
    assert symbols(problems) == {
        "WebSocketProtocol.onMessageEnd handshake",
        "WebSocketProtocol.onMessageEnd send_queue queue",
        "WebSocketProtocol.onMessageEnd default",
        "WebSocketProtocol.onMessageEnd counters",
    }
    autobahn.apply(problems)
    assert autobahn.features["release_handshake"] is False
    assert autobahn.features["small_send_queue"] is False
    assert autobahn.features["release_defaults"] is False
    assert autobahn.features["shared_traffic_stats"] is False
    assert autobahn.features["prepared_fast_path"] is True


def autobahn_change_turns_off(monkeypatch, old: str, new: str, symbol: str, feature: str):
    """autobahn's source with ``old`` changed to ``new``: check() names ``symbol``, and
    applying it turns ``feature`` off while the fast path stays on."""
    change_source(monkeypatch, autobahn, old, new)
    problems = autobahn.check()
    assert symbols(problems) == {symbol}
    autobahn.apply(problems)
    assert autobahn.features[feature] is False
    assert autobahn.features["prepared_fast_path"] is True


def test_autobahn_close_code_no_longer_recorded(monkeypatch):
    autobahn_change_turns_off(
        monkeypatch,
        "self.localCloseCode = code",
        "self._sent_code = code",
        "WebSocketProtocol.sendCloseFrame localCloseCode",
        "protocol_error_code",
    )
    failed = type("Failed", (), {"failedByMe": True, "localCloseCode": 1002})()
    assert autobahn.protocol_error_code(failed) is None  # off: not counted, not wrong


def test_autobahn_same_payload_framed_once(monkeypatch):
    """Messages of their own carrying the same ``str`` or ``bytes`` object (a
    group_send event's text, sent by each member's handler) are framed once per
    factory; an equal but distinct object and a mutable payload are framed for
    themselves, and each connection gets the frame of what it was given."""
    factory = tuned_server_factory()
    protocols = [tuned_server_protocol(factory) for _ in range(4)]
    framed = []
    real_prepare = factory.prepareMessage
    monkeypatch.setattr(
        factory, "prepareMessage", lambda *args: framed.append(args) or real_prepare(*args)
    )

    def written(protocol, message):
        protocol.transport.clear()
        autobahn.write_message(protocol, message)
        return protocol.transport.value()

    text = "event text " * 3
    frames = [written(p, {"type": "websocket.send", "text": text}) for p in protocols]
    assert len(framed) == 1 and len(set(frames)) == 1
    assert frames[0] == b"\x81" + bytes([len(text)]) + text.encode()
    equal = "".join(["event text "] * 3)  # equal, not the same object
    assert written(protocols[0], {"type": "websocket.send", "text": equal}) == frames[0]
    assert len(framed) == 2
    data = text.encode()
    binary = [written(p, {"type": "websocket.send", "bytes": data}) for p in protocols[:2]]
    assert binary[0] == binary[1] == b"\x82" + bytes([len(data)]) + data and len(framed) == 3
    mutable = bytearray(b"abc")
    assert written(protocols[0], {"type": "websocket.send", "bytes": mutable}) == b"\x82\x03abc"
    mutable[:] = b"xyz"
    assert written(protocols[1], {"type": "websocket.send", "bytes": mutable}) == b"\x82\x03xyz"
    assert len(framed) == 5
    other = tuned_server_protocol()  # another factory's frame is not this factory's
    assert written(other, {"type": "websocket.send", "text": equal}) == frames[0]
    assert written(protocols[0], {"type": "websocket.send", "text": equal}) == frames[0]
    assert len(framed) == 6
    # A write batch writes each member's frames of several events together: the
    # events' texts alternate, and each is still framed once.
    texts = [f"event {i}" for i in range(3)]
    for protocol in protocols:
        for text in texts:
            assert written(protocol, {"type": "websocket.send", "text": text}).endswith(
                text.encode()
            )
    assert len(framed) == 6 + len(texts)
    # Bounded: a payload longer than the table's longest is framed for itself.
    long_text = "x" * (autobahn._recent_frames.longest + 1)
    for protocol in protocols[:2]:
        written(protocol, {"type": "websocket.send", "text": long_text})
    assert len(framed) == 6 + len(texts) + 2


def test_autobahn_is_closed_released_once_fired():
    """The fired is_closed Deferred held the protocol (a cycle); it is replaced by one
    fired with None, and one that has not fired is left alone."""
    from twisted.internet.defer import Deferred

    protocol = tuned_server_protocol()
    waiting = protocol.is_closed = Deferred()
    autobahn.release_is_closed(protocol)
    assert protocol.is_closed is waiting
    waiting.callback(protocol)
    autobahn.release_is_closed(protocol)
    assert protocol.is_closed is not waiting and protocol.is_closed.result is None
    assert waiting.result is protocol  # its holders still get the protocol


def test_autobahn_is_closed_resolved_otherwise(monkeypatch):
    autobahn_change_turns_off(
        monkeypatch,
        "txaio.resolve(self.is_closed, self)",
        "txaio.resolve(self.is_closed, None)",
        "WebSocketProtocol.is_closed",
        "release_is_closed",
    )


def test_autobahn_frame_masker_let_go_when_the_frame_ends():
    """A received frame's masker is not kept until the next frame (a heartbeat away):
    once autobahn has ended the frame, the attribute points at one shared masker."""
    import gc

    from autobahn.websocket.xormasker import XorMaskerNull

    protocol = tuned_server_protocol()
    masker = protocol.current_frame_masker = XorMaskerNull()
    protocol.current_frame = object()  # a frame in progress: its masker is in use
    autobahn.release_frame_masker(protocol)
    assert protocol.current_frame_masker is masker
    protocol.current_frame = None  # what autobahn's onFrameEnd leaves
    autobahn.release_frame_masker(protocol)
    assert protocol.current_frame_masker is autobahn.SPENT_MASKER
    assert gc.get_referrers(masker) == []  # freed when the caller lets go of it


def test_autobahn_frame_masker_kept_otherwise(monkeypatch):
    autobahn_change_turns_off(
        monkeypatch,
        "self.current_frame = None",
        "self.current_frame = 0",
        "WebSocketProtocol.onFrameEnd current_frame_masker",
        "release_frame_masker",
    )
    protocol = tuned_server_protocol()
    masker = protocol.current_frame_masker = object()
    protocol.current_frame = None
    autobahn.release_frame_masker(protocol)
    assert protocol.current_frame_masker is masker


def test_autobahn_unasked_pong_handled_otherwise(monkeypatch):
    """If autobahn stopped accepting a pong it did not ask for in silence, the tuned
    keepalive goes back to daphne's check_timeouts (autobahn's own pings)."""
    change_source(monkeypatch, autobahn, "if self.autoPingPending:", "if True:")
    problems = autobahn.check()
    assert symbols(problems) == {"WebSocketProtocol.processControlFrame autoPingPending"}
    autobahn.apply(problems)
    assert autobahn.prepared_pings() is False
    assert autobahn.features["prepared_fast_path"] is True


def test_autobahn_highlighting_deferred_until_written(monkeypatch):
    """hltype/hlval of autobahn's two modules return lazy values: the same text when
    a debug line is formatted, and click is not called while none is."""
    for module in autobahn.HIGHLIGHTING_MODULES:
        for name in ("hltype", "hlval"):
            monkeypatch.setattr(module, name, getattr(module, name))
    autobahn.defer_highlighting()
    module = autobahn_twisted_module
    lazy = module.hlval(42)
    assert isinstance(lazy, LazyCall)
    assert f"{lazy}" == module.hlval.original(42)
    assert str(module.hltype(_named_function)) == module.hltype.original(_named_function)
    autobahn.defer_highlighting()  # twice: not wrapped again
    assert not hasattr(module.hlval.original, "original")


def _named_function():
    """A function for hltype to name."""


def test_autobahn_highlighted_text_used_as_text(monkeypatch):
    real = autobahn._source
    monkeypatch.setattr(
        autobahn,
        "_source",
        lambda obj: (
            real(obj) + "\nlabel = hlval(x)\n" if obj is autobahn_twisted_module else real(obj)
        ),
    )
    problems = autobahn.check()
    assert symbols(problems) == {"autobahn.twisted.websocket hltype"}
    autobahn.apply(problems)
    assert autobahn.features["lazy_highlight"] is False
    assert autobahn.features["prepared_fast_path"] is True


def test_autobahn_deflate_attributes_renamed(monkeypatch):
    source = "class PerMessageDeflate:\n    def __init__(self):\n        self._zlib = None\n"
    real = autobahn._source
    monkeypatch.setattr(
        autobahn, "_source", lambda obj: source if obj is PerMessageDeflate else real(obj)
    )
    problems = autobahn.check()
    assert "PerMessageDeflate._compressor" in symbols(problems)
    autobahn.apply(problems)
    assert autobahn.features["release_deflate"] is False


# -------------------------------------------------------------------- Twisted


def test_twisted_write_some_data_removed(monkeypatch):
    monkeypatch.delattr(tcp.Connection, "writeSomeData")
    problems = twisted.check()
    assert "tcp.Connection.writeSomeData" in symbols(problems)
    twisted.apply(problems)
    assert twisted.features["eager_write"] is False


def test_twisted_request_list_changed_keeps_upgraded_requests(monkeypatch):
    change_source(monkeypatch, twisted, "self.requests = []", "self._queue = []")
    problems = twisted.check()
    assert symbols(problems) == {"HTTPChannel.requests"}
    twisted.apply(problems)
    assert twisted.features == {
        "eager_write": True,
        "forget_upgraded": False,
        "bounded_accepts": True,
        "port_factory": True,
        "report_loss": True,
        "renew_after_fork": True,
    }
    channel = type("Channel", (), {})()
    request = type("Request", (), {"channel": channel})()
    channel.requests = [request]
    twisted.forget_upgraded_request(request)
    assert channel.requests == [request]  # off: left to the cycle collector


def test_twisted_accept_round_changed_leaves_rounds_unbounded(monkeypatch):
    change_source(monkeypatch, twisted, "numAccepts = self.numberAccepts", "numAccepts = 100")
    problems = twisted.check()
    assert symbols(problems) == {"tcp.Port.numberAccepts"}
    twisted.apply(problems)
    assert twisted.features["bounded_accepts"] is False
    port = object.__new__(tcp.Port)
    assert twisted.bound_accepts(port, lambda: 3) is False
    assert "doRead" not in vars(port)  # Twisted's own round, as it sizes it


def test_twisted_port_factory_changed_leaves_the_port_its_factory(monkeypatch):
    change_source(monkeypatch, twisted, "self.factory.buildProtocol", "self._factory.buildProtocol")
    problems = twisted.check()
    assert symbols(problems) == {"tcp.Port.factory"}
    twisted.apply(problems)
    assert twisted.features["port_factory"] is False
    port = object.__new__(tcp.Port)
    port.factory = started_with = object()
    assert twisted.build_with(port, object()) is False
    assert port.factory is started_with


def test_twisted_http_channel_with_slots_is_not_switched(monkeypatch):
    from twisted.web.http import HTTPChannel, HTTPFactory

    monkeypatch.setattr(HTTPChannel, "__slots__", ("transport",), raising=False)
    problems = twisted.check()
    assert "HTTPChannel" in symbols(problems)
    twisted.apply(problems)
    assert twisted.features["report_loss"] is False
    assert twisted.features["eager_write"] is True  # another hook's fallback
    protocol = HTTPFactory().buildProtocol(None)
    assert twisted.report_loss(protocol) is False
    assert type(twisted.http_channel(protocol)) is HTTPChannel


def test_twisted_http_channel_reports_its_loss_to_the_factory():
    from twisted.internet.protocol import connectionDone
    from twisted.web.http import HTTPFactory

    lost = []

    class Listening(HTTPFactory):
        def connection_lost(self, channel):
            lost.append(channel)

    protocol = Listening().buildProtocol(None)
    assert twisted.report_loss(protocol) is True
    channel = twisted.http_channel(protocol)
    protocol.connectionLost(connectionDone)
    assert lost == [channel]


def test_twisted_port_builds_with_the_factory_it_was_given():
    """A real listening port: connections after the switch are built by the new
    factory; the factory it started with is stopped with it."""
    from twisted.internet.protocol import Factory

    built: dict[str, int] = {"first": 0, "second": 0}
    stopped: list[str] = []

    class Counting(Factory):
        def __init__(self, name: str) -> None:
            self.name = name

        def buildProtocol(self, addr):
            built[self.name] += 1
            return None  # Twisted closes the socket: no transport to clean up

        def stopFactory(self) -> None:
            stopped.append(self.name)

    first = Counting("first")
    port = tcp.Port(0, first, interface="127.0.0.1")
    port.startListening()
    port.stopReading()  # rounds run by hand here, not by the reactor
    second = Counting("second")
    second.doStop = first.doStop  # as servers.daphne.http.HealthPortFactory does
    try:
        assert twisted.build_with(port, second) is True
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        time.sleep(0.1)
        port.doRead()
        client.close()
        assert built == {"first": 0, "second": 1}
    finally:
        port.connectionLost(None)
    assert stopped == ["first"]


def test_twisted_accept_round_bounded_by_the_allowance():
    """A real listening port: one round takes what the allowance says, at least one."""
    from twisted.internet.protocol import Factory

    accepted: list[object] = []

    class Counting(Factory):
        def buildProtocol(self, addr):
            accepted.append(addr)
            return None  # Twisted closes the socket: no transport to clean up

    port = tcp.Port(0, Counting(), interface="127.0.0.1")
    port.startListening()
    port.stopReading()  # rounds run by hand here, not by the reactor
    clients = []
    try:
        allowance = 2
        assert twisted.bound_accepts(port, lambda: allowance) is True
        clients = [socket.create_connection(("127.0.0.1", port.getHost().port)) for _ in range(5)]
        time.sleep(0.1)  # all five in the kernel's backlog
        port.doRead()
        assert len(accepted) == 2
        allowance = 0
        port.doRead()
        assert len(accepted) == 3  # at least one a round: the gate stops the reading
        allowance = 100
        port.doRead()
        assert len(accepted) == 5
    finally:
        for client in clients:
            client.close()
        port.connectionLost(None)

    channel = type("Channel", (), {})()
    request = type("Request", (), {"channel": channel})()
    channel.requests = [request]
    twisted.forget_upgraded_request(request)
    assert channel.requests == []


def test_twisted_server_with_slots_cannot_be_switched(monkeypatch):
    monkeypatch.setattr(tcp.Server, "__slots__", ("socket",), raising=False)
    assert "tcp.Server" in symbols(twisted.check())


def test_eager_write_switch_only_for_plain_tcp_servers():
    class TLSLike(tcp.Server):
        pass

    transport = object.__new__(TLSLike)
    assert twisted.make_eager(transport) is False
    assert type(transport) is TLSLike
    plain = object.__new__(tcp.Server)
    twisted.features["eager_write"] = False
    assert twisted.make_eager(plain) is False
    twisted.features["eager_write"] = True
    before = twisted.switched
    assert twisted.make_eager(plain) is True
    assert type(plain) is twisted.EagerWriteServer and twisted.switched == before + 1


# --------------------------------------------------------------------- daphne


def test_daphne_create_application_changed(monkeypatch):
    def create_application(self, protocol, scope):
        return self.application_factory(protocol, scope)

    monkeypatch.setattr(Server, "create_application", create_application)
    problems = daphne.check()
    assert symbols(problems) == {"Server.create_application"}
    daphne.apply(problems)
    assert daphne.features["create_application"] is False
    # daphne's own WebSocket path whole: no early disconnect on its queue either.
    from daphne.ws_protocol import WebSocketProtocol

    protocol = WebSocketProtocol.__new__(WebSocketProtocol)
    protocol.application_queue = queue = asyncio.Queue()
    protocol.muted = False
    daphne.disconnect_application_now(protocol, 1009)
    assert queue.empty() and protocol.muted is False


def test_daphne_reads_its_input_queue_otherwise(monkeypatch):
    """The tuned server's one-reader input queue has only ``put_nowait``: if daphne's
    protocol called anything else on it, its own asyncio.Queue is used again."""
    from daphne import ws_protocol

    real = daphne._source
    monkeypatch.setattr(
        daphne,
        "_source",
        lambda obj: (
            real(obj) + "\nself.application_queue.qsize()\n" if obj is ws_protocol else real(obj)
        ),
    )
    problems = daphne.check()
    assert symbols(problems) == {"Server.create_application queue"}
    daphne.apply(problems)
    assert daphne.features["create_application"] is False


def test_daphne_periodic_loops_changed(monkeypatch):
    """The tuned server's loops follow daphne's timeout_checker; if it changed, the
    server runs daphne's own loops over every connection again."""

    def timeout_checker(self):
        for protocol in self.connections:
            protocol.expire_if_idle()

    monkeypatch.setattr(Server, "timeout_checker", timeout_checker)
    problems = daphne.check()
    assert symbols(problems) == {"Server.timeout_checker"}
    daphne.apply(problems)
    assert daphne.features["due_checkers"] is False
    assert daphne.features["create_application"] is True


def test_daphne_keepalive_check_changed(monkeypatch):
    """The due time of a connection is read from daphne's last_ping and ping_interval:
    a check_timeouts that no longer uses them turns the due loops off."""
    from daphne.ws_protocol import WebSocketProtocol

    monkeypatch.setattr(WebSocketProtocol, "check_timeouts", lambda self: None)
    problems = daphne.check()
    assert symbols(problems) == {"WebSocketProtocol.check_timeouts"}
    daphne.apply(problems)
    assert daphne.features["due_checkers"] is False


def test_daphne_application_told_of_a_failed_connection_once():
    """The disconnect goes on the connection's queue once, with the close code, and
    daphne's ``muted`` then keeps its own onClose from sending a second one and its
    onMessage from passing on frames that still arrive."""
    from daphne.ws_protocol import WebSocketProtocol

    protocol = WebSocketProtocol.__new__(WebSocketProtocol)
    protocol.application_queue = queue = asyncio.Queue()
    protocol.server = type("Server", (), {"protocol_disconnected": lambda self, p: None})()
    protocol.server.log_action = lambda *args: None
    protocol.request = type("Request", (), {"path": "/"})()
    protocol.client_addr = None
    daphne.disconnect_application_now(protocol, 1009)
    daphne.disconnect_application_now(protocol, 1002)  # the second close frame: nothing
    protocol.onMessage(b"late", False)
    protocol.onClose(False, 1006, "")
    assert [queue.get_nowait() for _ in range(queue.qsize())] == [
        {"type": "websocket.disconnect", "code": 1009}
    ]


def test_daphne_muted_changed(monkeypatch):
    """daphne's onClose no longer reads ``muted``: the application is told when the
    TCP connection ends, as before, and nothing else is turned off."""
    from daphne.ws_protocol import WebSocketProtocol

    change_source(monkeypatch, daphne, "if not self.muted and ", "if ")
    problems = daphne.check()
    assert symbols(problems) == {"WebSocketProtocol.onClose muted"}
    daphne.apply(problems)
    assert [name for name, on in daphne.features.items() if not on] == ["early_disconnect"]
    protocol = WebSocketProtocol.__new__(WebSocketProtocol)
    protocol.application_queue = queue = asyncio.Queue()
    daphne.disconnect_application_now(protocol, 1009)
    assert queue.empty() and protocol.muted is False


def test_daphne_request_reply_path_changed(monkeypatch):
    """The tuned server's own answers (health check, 503 while draining) go through
    daphne's WebRequest reply path; if it changed, they are left to daphne."""
    from daphne.http_protocol import WebRequest

    monkeypatch.delattr(WebRequest, "handle_reply")
    problems = daphne.check()
    assert "WebRequest.handle_reply" in symbols(problems)
    daphne.apply(problems)
    assert daphne.features["own_answers"] is False
    assert daphne.features["create_application"] is True


def test_daphne_handle_reply_renamed(monkeypatch):
    async def reply(self, protocol, message):  # same behaviour, another name
        return None

    reply.__qualname__ = "Server.reply"
    monkeypatch.setattr(Server, "handle_reply", reply)
    problems = daphne.check()
    assert "Server.handle_reply" in symbols(problems)
    daphne.apply(problems)
    assert daphne.features["sync_send"] is False


@pytest.mark.parametrize(
    "change",
    ["endpoint string", "fd plugin"],
)
def test_daphne_endpoints_changed_refuse_reuse_port(monkeypatch, change):
    """``--reuse-port`` rewrites daphne's ``-b``/``-p`` endpoint into one its ``fd``
    plugin adopts: if either changed, the option is refused at start, not a server
    left listening where a successor cannot bind."""
    from daphne import endpoints as daphne_endpoints
    from twisted.internet import endpoints as twisted_endpoints

    from channels_tuning.exceptions import UpstreamChanged
    from channels_tuning.servers.daphne.handoff import reuse_port_endpoints

    if change == "endpoint string":
        monkeypatch.setattr(
            daphne_endpoints,
            "build_endpoint_description_strings",
            lambda **kw: [f"tcp:{kw['port']}:interface={kw['host']}"],
        )
    else:
        real = twisted_endpoints.serverFromString
        monkeypatch.setattr(
            twisted_endpoints,
            "serverFromString",
            lambda reactor, text: real(reactor, "tcp:0") if text.startswith("fd:") else None,
        )
    problems = daphne.check()
    assert symbols(problems) == {daphne.ENDPOINTS}
    daphne.apply(problems)
    assert [name for name, on in daphne.features.items() if not on] == ["endpoint_strings"]
    with pytest.raises(UpstreamChanged, match="reuse-port"):
        reuse_port_endpoints(["tcp:port=0:interface=127.0.0.1"])
    assert symbols(daphne.check()) == {daphne.ENDPOINTS}  # checked again, the same answer


async def test_daphne_shutdown_waits_for_a_connection_whose_application_it_forgot():
    """Plain daphne's application_checker removes a finished application from its
    connection's details; the shutdown fix still waits for that connection's close
    (a CI run exited 0.1 s after SIGTERM, its clients seeing 1006)."""
    assert daphne.install_shutdown_fix()
    server = object.__new__(Server)
    protocol = object()

    async def application() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # its cleanup: the close frame, group_discard
            raise

    task = asyncio.ensure_future(application())
    await asyncio.sleep(0)
    server.connections = {protocol: {"application_instance": task}}
    # daphne's checker, as soon as the application is done (before the shutdown looks)
    task.add_done_callback(lambda _: server.connections[protocol].pop("application_instance"))
    finished = server.kill_all_applications().asFuture(asyncio.get_running_loop())
    await asyncio.sleep(0.3)
    assert task.done() and not finished.done()  # the close frame is still on its way
    server.connections[protocol]["disconnected"] = True
    await asyncio.wait_for(finished, 1)


def test_plain_daphne_send_is_recognised():
    import functools

    server = object.__new__(Server)
    send = functools.partial(server.handle_reply, object())
    assert daphne.is_daphne_send(send)
    assert not daphne.is_daphne_send(functools.partial(print, 1))
    daphne.features["sync_send"] = False
    assert not daphne.is_daphne_send(send)


# ---------------------------------------------------------- on a real server


class _Protocol:
    """Stands for a server's WebSocket protocol: ``send`` bound to it, a transport."""

    def __init__(self, transport):
        self.transport = transport

    async def send(self, message):
        pass


class _Transport:
    def abort(self):
        pass


def test_uvicorn_protocol_stops_keeping_its_transport(monkeypatch):
    monkeypatch.setattr(uvicorn, "_source", lambda obj: "def connection_made(self, t): pass")
    problems = uvicorn.check()
    assert "WebSocketsSansIOProtocol.connection_made" in symbols(problems)
    assert "WSProtocol.connection_made" in symbols(problems)
    send = _Protocol(_Transport()).send
    assert uvicorn.transport_of(send) is not None
    uvicorn.apply(problems)
    assert uvicorn.features == {"abort": False}
    assert uvicorn.transport_of(send) is None


def test_hypercorn_tcp_server_stops_writing_through_its_writer(monkeypatch):
    from hypercorn.asyncio.tcp_server import TCPServer

    real = hypercorn._source
    monkeypatch.setattr(
        hypercorn,
        "_source",
        lambda obj: (
            "async def protocol_send(self, e): pass"
            if obj is TCPServer.protocol_send
            else real(obj)
        ),
    )
    problems = hypercorn.check()
    assert symbols(problems) == {"TCPServer.protocol_send"}
    hypercorn.apply(problems)
    assert hypercorn.features == {"abort": False}


# ------------------------------------------------------------------- channels


SCOPE = {"type": "websocket", "cookies": {}}


def test_channels_session_wrapper_is_looked_through():
    """Canary of compat.channels: the server's send under Channels' SessionMiddleware
    wrapper (two deep, as nested session middlewares make it)."""
    from channels.sessions import InstanceSessionWrapper

    async def server_send(message):
        pass

    inner = InstanceSessionWrapper(SCOPE, server_send)
    outer = InstanceSessionWrapper(SCOPE, inner.send)
    assert channels_hooks.unwrap_send(outer.send) is server_send
    assert channels_hooks.unwrap_send(server_send) is server_send


def channels_checked_without(monkeypatch, fragment: str) -> set[str]:
    """compat.channels' check and apply, as if upstream source lacked ``fragment``:
    the symbols it named."""
    real = channels_hooks.Checker
    monkeypatch.setattr(
        channels_hooks, "Checker", lambda library: _Changed(real(library), fragment)
    )
    problems = channels_hooks.check()
    channels_hooks.apply(problems)
    return symbols(problems)


def test_channels_session_wrapper_changed_turns_the_unwrapping_off(monkeypatch):
    changed = channels_checked_without(monkeypatch, "return await self.real_send(message)")
    assert changed == {"InstanceSessionWrapper.send"}
    assert channels_hooks.features == {
        "unwrap_session_send": False,
        "clean_expired": True,
        "route_by_type": True,
        "route_by_path": True,
    }

    async def server_send(message):
        pass

    from channels.sessions import InstanceSessionWrapper

    wrapped = InstanceSessionWrapper(SCOPE, server_send).send
    assert channels_hooks.unwrap_send(wrapped) is wrapped  # the fallback: the generic path


async def test_channels_protocol_type_router_entry_is_what_it_awaits():
    """Canary of compat.channels.application_for: the entry it starts for a scope is
    the application Channels' ProtocolTypeRouter awaits for it, with the same
    arguments; anything the router would not simply hand over is left to it."""
    from channels.routing import ProtocolTypeRouter

    calls = []

    async def websocket_app(scope, receive, send):
        calls.append(("websocket", scope, receive, send))

    async def http_app(scope, receive, send):
        calls.append(("http", scope, receive, send))

    router = ProtocolTypeRouter({"websocket": websocket_app, "http": http_app})
    for kind, entry in (("websocket", websocket_app), ("http", http_app)):
        scope = {"type": kind}
        assert channels_hooks.application_for(router, scope) is entry
        await router(scope, "receive", "send")
        await channels_hooks.application_for(router, scope)(scope, "receive", "send")
        assert calls[-2] == calls[-1] == (kind, scope, "receive", "send")
    # No entry: the router itself, which raises as Channels says.
    lifespan = {"type": "lifespan"}
    assert channels_hooks.application_for(router, lifespan) is router
    with pytest.raises(ValueError, match="No application configured for scope type"):
        await router(lifespan, None, None)

    class CountingRouter(ProtocolTypeRouter):  # a subclass may do more: not bypassed
        async def __call__(self, scope, receive, send):
            calls.append("counted")
            return await super().__call__(scope, receive, send)

    counting = CountingRouter({"websocket": websocket_app})
    assert channels_hooks.application_for(counting, {"type": "websocket"}) is counting
    assert channels_hooks.application_for(websocket_app, {"type": "websocket"}) is websocket_app


def test_channels_protocol_type_router_replaced_at_run_time_is_not_bypassed(monkeypatch):
    """Instrumentation that wraps ProtocolTypeRouter.__call__ after the start-up check
    keeps seeing every connection."""
    from channels.routing import ProtocolTypeRouter

    async def websocket_app(scope, receive, send):
        pass

    router = ProtocolTypeRouter({"websocket": websocket_app})
    assert channels_hooks.application_for(router, {"type": "websocket"}) is websocket_app
    original = ProtocolTypeRouter.__call__

    async def instrumented(self, scope, receive, send):
        return await original(self, scope, receive, send)

    monkeypatch.setattr(ProtocolTypeRouter, "__call__", instrumented)
    assert channels_hooks.application_for(router, {"type": "websocket"}) is router


def test_channels_protocol_type_router_changed_turns_the_shortcut_off(monkeypatch):
    from channels.routing import ProtocolTypeRouter

    changed = channels_checked_without(
        monkeypatch, "return await application(scope, receive, send)"
    )
    assert changed == {"ProtocolTypeRouter.__call__"}
    assert channels_hooks.features == {
        "unwrap_session_send": True,
        "clean_expired": True,
        "route_by_type": False,
        "route_by_path": True,
    }

    async def websocket_app(scope, receive, send):
        pass

    router = ProtocolTypeRouter({"websocket": websocket_app})
    # The fallback: the router itself, whatever it now does.
    assert channels_hooks.application_for(router, {"type": "websocket"}) is router


class _Changed:
    """A Checker whose view of upstream source lacks ``fragment``."""

    def __init__(self, checker, fragment: str) -> None:
        self._checker, self._fragment = checker, fragment

    def __getattr__(self, name):
        return getattr(self._checker, name)

    def contains(self, obj, symbol, fragments):
        self._checker.contains(obj, symbol, [f for f in fragments if f != self._fragment])
        if self._fragment in fragments:
            self._checker.changed(symbol, f"no longer contains {self._fragment!r}")


def test_writes_held_in_a_batch_leave_in_one_call_in_order():
    from channels_tuning.runtime.writebatch import WriteBatch

    sent_a: list[bytes] = []
    sent_b: list[bytes] = []
    a, b = eager_transport(sent_a), eager_transport(sent_b)
    batch = WriteBatch()
    assert twisted.use_write_batch(a, batch) and twisted.use_write_batch(b, batch)
    a.write(b"before")
    with batch.collect():
        for frame in (b"1", b"2", b"3"):
            a.write(frame)
            b.write(frame)
        assert sent_a == [b"before"] and sent_b == []  # held until the batch ends
    assert sent_a == [b"before", b"123"]
    assert sent_b == [b"123"]
    a.write(b"after")  # outside a batch: at once
    assert sent_a[-1] == b"after"


async def test_a_batch_for_handlers_holds_their_writes_through_the_next_turn():
    """The reader queued events for handlers: their tasks run at the loop's next turn,
    and what they write without suspending leaves in one call with the batch's frames;
    a write after a handler suspended goes out at once."""
    from channels_tuning.runtime.writebatch import WriteBatch

    sent: list[bytes] = []
    transport = eager_transport(sent)
    batch = WriteBatch()
    assert twisted.use_write_batch(transport, batch)

    async def handlers() -> None:
        transport.write(b"2")
        transport.write(b"3")
        await asyncio.sleep(0)  # suspended: the batch has ended by the time it resumes
        transport.write(b"late")

    with batch.collect():
        transport.write(b"1")  # a ready frame, as broadcast() delivers
        task = asyncio.get_running_loop().create_task(handlers())
        batch.through_next_turn()
    assert sent == [] and batch.collecting
    await asyncio.sleep(0)  # one turn: the handlers' first step, then the batch's end
    assert sent == [b"123"] and not batch.collecting
    await task
    assert sent == [b"123", b"late"]


class _RecordingConsumer:
    """Stands for a consumer class: ``as_asgi()`` of Channels' AsyncConsumer builds
    its application; the instance records the scope it was started with."""

    started: list = []

    async def __call__(self, scope, receive, send):
        self.started.append((scope, receive, send))


def _consumer_application():
    from channels.consumer import AsyncConsumer

    # as_asgi() of the real class, bound to the recording class: the same inner code.
    return AsyncConsumer.as_asgi.__func__(_RecordingConsumer)


def _route_cases():
    from channels.routing import URLRouter
    from django.urls import path, re_path

    room = _consumer_application()
    lobby = _consumer_application()
    nested = URLRouter([path("inner/<int:n>/", room)])
    routes = [
        re_path(r"^ws/room/(?P<name>\w+)/$", room),
        path("ws/lobby/", lobby, {"floor": 1}),
        path("ws/nested/", nested),
        re_path(r"^ws/positional/(\w+)/$", room),
    ]
    scopes = {
        "kwargs": {"type": "websocket", "path": "/ws/room/abc/"},
        "default args": {"type": "websocket", "path": "/ws/lobby/"},
        "positional": {"type": "websocket", "path": "/ws/positional/xyz/"},
        "root path": {"type": "websocket", "path": "/app/ws/lobby/", "root_path": "/app"},
        "outer url_route": {
            "type": "websocket",
            "path": "/ws/room/q/",
            "url_route": {"args": ("o",), "kwargs": {"outer": 1}},
        },
    }
    return URLRouter(routes), scopes, nested


async def test_channels_url_router_match_is_what_it_awaits():
    """Canary of compat.channels.route_match: the consumer application and scope it
    finds are the ones Channels' URLRouter starts, for every kind of route; a route
    to anything but a consumer (a nested router) and no route give None."""
    router, scopes, _ = _route_cases()
    for name, scope in scopes.items():
        _RecordingConsumer.started.clear()
        try:
            await router(dict(scope), "receive", "send")
        except ValueError:  # no route (root_path before Channels 4.2): no match either
            assert channels_hooks.route_match(router, dict(scope)) is None, name
            continue
        (upstream,) = _RecordingConsumer.started
        matched = channels_hooks.route_match(router, dict(scope))
        assert matched is not None, name
        application, routed_scope = matched
        assert application is router.routes[0].callback or application is (
            router.routes[1].callback
        ), name
        await application(routed_scope, "receive", "send")
        assert _RecordingConsumer.started[-1] == upstream, name
    assert channels_hooks.route_match(router, {"type": "websocket", "path": "/nope/"}) is None
    nested_scope = {"type": "websocket", "path": "/ws/nested/inner/3/"}
    assert channels_hooks.route_match(router, nested_scope) is None  # a router: not ours
    assert channels_hooks.route_match(router, {"type": "websocket"}) is None  # no path


def test_channels_url_router_changed_turns_the_match_off(monkeypatch):
    changed = channels_checked_without(monkeypatch, "application = route.callback")
    assert changed == {"URLRouter.__call__"}
    assert channels_hooks.features == {
        "unwrap_session_send": True,
        "clean_expired": True,
        "route_by_type": True,
        "route_by_path": False,
    }
    router, scopes, _ = _route_cases()
    assert channels_hooks.route_match(router, scopes["kwargs"]) is None  # the fallback


def test_twisted_reactor_renewed_after_fork_keeps_what_it_watched():
    """Canary of compat.twisted.renew_after_fork (``--workers``): a reactor on an
    asyncio loop gets a new epoll instance with the same registrations, a new
    self-pipe and a new waker, and still runs: a wake-up from another thread and a
    registered reader are both served."""
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    loop = asyncio.new_event_loop()
    reactor = AsyncioSelectorReactor(loop)
    reading, writing = socket.socketpair()
    try:
        read = []
        loop.add_reader(reading.fileno(), lambda: read.append(reading.recv(10)))
        selector, self_pipe, waker = loop._selector, loop._ssock, reactor.waker
        watched = {key.fd for key in selector.get_map().values()}
        twisted.renew_after_fork(reactor)
        assert loop._selector is not selector and type(loop._selector) is type(selector)
        assert loop._ssock is not self_pipe and reactor.waker is not waker
        renewed = {key.fd for key in loop._selector.get_map().values()}
        assert reading.fileno() in renewed
        assert reactor.waker.fileno() in renewed and loop._ssock.fileno() in renewed
        assert len(renewed) == len(watched)  # one self-pipe and one waker, each new
        writing.send(b"x")
        threading.Timer(0.05, loop.call_soon_threadsafe, (loop.stop,)).start()
        loop.run_forever()  # stopped from the thread: the new self-pipe wakes it
        assert read == [b"x"]
    finally:
        loop.remove_reader(reading.fileno())
        reading.close()
        writing.close()
        reactor.removeReader(reactor.waker)
        reactor.waker.connectionLost(None)
        loop.close()


def test_twisted_waker_changed_refuses_to_fork(monkeypatch):
    upstream = "self._internalReaders.add(self.waker)"
    change_source(monkeypatch, twisted, upstream, "self._readers.add(self.waker)")
    problems = twisted.check()
    assert symbols(problems) == {"AsyncioSelectorReactor.installWaker"}
    twisted.apply(problems)
    assert twisted.features["renew_after_fork"] is False
    with pytest.raises(UpstreamChanged):
        twisted.renew_after_fork(object())
