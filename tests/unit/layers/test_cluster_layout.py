"""The Redis Cluster layer's key layout and configuration, without a cluster: every
set of keys one script reads is in one hash slot (a cluster refuses the script
otherwise), and ``hosts`` are read the way redis-py's RedisCluster is configured.
The layer against a real cluster: ``tests/e2e/test_cluster.py``."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from redis.crc import key_slot

from channels_tuning.compat import channels_redis as upstream
from channels_tuning.layers import RedisChannelLayer, RedisClusterChannelLayer
from channels_tuning.layers.redis import keys
from channels_tuning.layers.redis.cluster import startup_nodes


def slot(key: str) -> int:
    return key_slot(key.encode())


@pytest.fixture
def layer() -> RedisClusterChannelLayer:
    return RedisClusterChannelLayer(hosts=["redis://127.0.0.1:1"], prefix="app")


def test_a_process_inbox_and_its_keys_share_a_slot(layer):
    process = keys.process_channel(layer)
    inbox = keys.channel_key(layer, f"{process}abc")
    assert inbox == f"app{process}"  # channels-redis' own name, unchanged
    together = {
        keys.live_key(layer, process),
        keys.seen_key(layer, process),
        keys.missed_key(layer, process),
        upstream.backup_key_in_slot_of(inbox),
    }
    assert {slot(key) for key in together} == {slot(inbox)}
    # Different processes are spread over the slots, not piled on one.
    others = [RedisClusterChannelLayer(hosts=["redis://127.0.0.1:1"]) for _ in range(20)]
    assert len({slot(keys.channel_key(o, keys.process_channel(o))) for o in others}) > 15


def test_history_keys_are_in_their_group_slot(layer):
    for group in ("room.1", "chat.lobby", "x"):
        meta, stream = keys.history_keys(layer, group)
        assert slot(meta) == slot(stream) == slot(keys.group_key(layer, group))
        assert group in meta and meta != stream


def test_owner_counts_and_stats_each_in_one_slot(layer):
    owners = {keys.owner_key(layer, f"user:{n}") for n in range(50)}
    owners.add(keys.owners_alive_key(layer))
    assert len({slot(key) for key in owners}) == 1
    stats = {f"{keys.stats_prefix(layer)}host-{n}:{n}" for n in range(50)}
    assert len({slot(key) for key in stats}) == 1


def test_a_single_redis_keeps_its_layout():
    single = RedisChannelLayer(hosts=["redis://127.0.0.1:1"], prefix="app")
    process = keys.process_channel(single)
    assert keys.live_key(single, process) == f"app:ct:live:{process}"
    assert keys.seen_key(single, process) == f"app:ct:seen:{process}"
    assert keys.missed_key(single, process) == f"app:ct:missed:{process}"
    assert keys.history_keys(single, "g") == ("app:ct:hmeta:g", "app:ct:hist:g")
    assert keys.owner_key(single, "u") == "app:ct:owner:u"
    assert keys.owners_alive_key(single) == "app:ct:owners:alive"
    assert keys.stats_prefix(single) == "app:ct:stats:"


def test_a_group_send_runs_one_script_per_slot(layer):
    inboxes = [f"appspecific.{n:04d}!" for n in range(40)]
    batches = layer.inbox_batches({0: inboxes})
    assert sorted(key for _, batch in batches for key in batch) == sorted(inboxes)
    for _, batch in batches:
        assert len({slot(key) for key in batch}) == 1
    assert len(batches) == len({slot(key) for key in inboxes})
    single = RedisChannelLayer(hosts=["redis://127.0.0.1:1"])
    assert single.inbox_batches({0: inboxes}) == [(0, inboxes)]  # one per shard


def test_every_name_is_on_the_one_shard(layer):
    assert layer.ring_size == 1
    assert {layer.consistent_hash(name) for name in ("a", "b", "specific.x!", "g")} == {0}


def test_hosts_are_startup_nodes_with_their_options():
    hosts = [
        {"address": "rediss://user:p%40ss@10.0.0.1:7000"},
        {"host": "10.0.0.2", "port": 7001, "ssl_ca_certs": "/etc/ca.pem"},
        {"host": "10.0.0.3", "port": 7002},
    ]
    nodes, options = startup_nodes(hosts)
    assert [(node.host, node.port) for node in nodes] == [
        ("10.0.0.1", 7000),
        ("10.0.0.2", 7001),
        ("10.0.0.3", 7002),
    ]
    assert options == {
        "ssl": True,
        "username": "user",
        "password": "p@ss",
        "ssl_ca_certs": "/etc/ca.pem",
    }
    layer = RedisClusterChannelLayer(
        hosts=[("10.0.0.4", 7003)], cluster_options={"read_from_replicas": True}
    )
    assert [(n.host, n.port) for n in layer.startup_nodes] == [("10.0.0.4", 7003)]
    assert layer.cluster_options["read_from_replicas"] is True
    assert layer.cluster_options["socket_timeout"] > layer.brpop_timeout


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"hosts": ["redis://h:1"], "prefix": "{app}"}, "braces"),
        ({"hosts": [{"sentinels": [("h", 1)], "master_name": "m"}]}, "sentinels"),
        ({"hosts": ["unix:///tmp/redis.sock"]}, "redis:// or rediss://"),
    ],
)
def test_a_configuration_a_cluster_cannot_take_is_refused(config, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        RedisClusterChannelLayer(**config)


def test_the_servers_marker_is_in_each_groups_slot(layer):
    from channels_tuning.layers.redis.cluster import slot_tag

    for group in ("room.1", "chat.lobby", "x", "ticker"):
        home = layer.marker_home(group)
        assert home == slot(keys.group_key(layer, group))
        assert slot(layer.alive_marker(home)) == home
    assert {slot(slot_tag(n)) for n in range(0, 16384, 97)} == set(range(0, 16384, 97))
    assert max(len(slot_tag(n)) for n in range(0, 16384, 97)) <= 5
    single = RedisChannelLayer(hosts=["redis://127.0.0.1:1"], prefix="app")
    assert single.alive_marker(single.marker_home("room.1")) == "app:ct:alive"
