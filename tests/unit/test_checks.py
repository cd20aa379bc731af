"""System checks report misconfiguration with stable ids."""

from __future__ import annotations

import logging

import pytest
from django.test import override_settings

from channels_tuning.checks import check_deployment, check_settings


def ids(problems) -> list[str]:
    return sorted(p.id for p in problems)


def test_defaults_are_clean():
    assert ids(check_settings()) == []
    assert ids(check_deployment()) == []


@override_settings(CHANNELS_TUNING=["not", "a", "dict"])
def test_not_a_dict_e001():
    assert ids(check_settings()) == ["channels_tuning.E001"]


@pytest.mark.parametrize(
    "bad",
    [
        {"MAX_CONNECTIONS": -1},
        {"RATE_LIMIT": 0},
        {"SEND_QUEUE_MAX_BYTES": None},
        {"SCHEDULER_TICK": "fast"},
        {"MAX_MESSAGE_SIZE": True},
    ],
)
def test_invalid_limits_e002(bad):
    with override_settings(CHANNELS_TUNING=bad):
        assert ids(check_settings()) == ["channels_tuning.E002"]


@override_settings(CHANNELS_TUNING={"HEARTBEAT_INTERVAL": 30, "IDLE_TIMEOUT": 20})
def test_idle_timeout_shorter_than_heartbeat_e003():
    assert ids(check_settings()) == ["channels_tuning.E003"]


@override_settings(CHANNELS_TUNING={"OVERFLOW_POLICY": "block"})
def test_unknown_policy_e004():
    assert ids(check_settings()) == ["channels_tuning.E004"]


@override_settings(CHANNELS_TUNING={"LIFETIME_JITTER": 1.5})
def test_jitter_out_of_range_e005():
    assert ids(check_settings()) == ["channels_tuning.E005"]


@override_settings(CHANNELS_TUNING={"HEARTBEAT_INTERVALL": 10})
def test_typo_warns_w001():
    assert ids(check_settings()) == ["channels_tuning.W001"]


@override_settings(CHANNELS_TUNING={"IDLE_TIMEOUT": None})
def test_no_idle_timeout_warns_w004():
    assert ids(check_settings()) == ["channels_tuning.W004"]


def test_in_memory_layer_multi_process_w002(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    assert ids(check_deployment()) == ["channels_tuning.W002"]


@override_settings(DEBUG=False)
def test_in_memory_layer_in_production_w002():
    assert ids(check_deployment()) == ["channels_tuning.W002"]


@override_settings(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"group_expiry": 300},
        }
    },
    DEBUG=False,
)
def test_redis_layer_in_production_is_fine():
    assert ids(check_deployment()) == []


@override_settings(INSTALLED_APPS=["daphne", "channels_tuning"])
def test_missing_channels_and_app_order_w003_w005():
    assert ids(check_deployment()) == ["channels_tuning.W003", "channels_tuning.W005"]


def test_plain_daphne_warning_w006_can_be_silenced(caplog):
    from channels_tuning.servers import detect
    from channels_tuning.servers.transport import ServerKind

    detect._announced = False
    with caplog.at_level("WARNING", logger="channels_tuning"):
        detect.announce_server(ServerKind.DAPHNE)
        detect.announce_server(ServerKind.DAPHNE)  # once per process
    assert [r.getMessage().count("channels_tuning.W006") for r in caplog.records] == [1]
    caplog.clear()
    detect._announced = False
    with override_settings(SILENCED_SYSTEM_CHECKS=["channels_tuning.W006"]):
        detect.announce_server(ServerKind.DAPHNE)
    detect.announce_server(ServerKind.TUNED_DAPHNE)
    detect.announce_server(ServerKind.OTHER)
    assert caplog.records == []


def redis_layers(**config):
    return {"default": {"BACKEND": "channels_tuning.layers.RedisChannelLayer", "CONFIG": config}}


@override_settings(CHANNEL_LAYERS=redis_layers(group_expiry=100), DEBUG=False)
def test_group_expiry_too_short_for_refresh_e006():
    assert ids(check_deployment()) == ["channels_tuning.E006"]


@override_settings(CHANNEL_LAYERS=redis_layers(group_expiry=86400), DEBUG=False)
def test_day_long_group_expiry_w007():
    assert ids(check_deployment()) == ["channels_tuning.W007"]


@override_settings(
    CHANNEL_LAYERS={"default": {"BACKEND": "channels_redis.core.RedisChannelLayer"}},
    DEBUG=False,
)
def test_channels_redis_own_layer_keeps_its_day_long_default_w007():
    assert ids(check_deployment()) == ["channels_tuning.W007"]


@override_settings(CHANNEL_LAYERS=redis_layers(), DEBUG=False)
def test_tuned_layer_without_group_expiry_derives_it_from_the_refresh_interval():
    from channels_tuning.layers import RedisChannelLayer

    assert ids(check_deployment()) == []
    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1"])
    assert layer.group_expiry == 300 and layer.group_expiry_derived
    with override_settings(CHANNELS_TUNING={"GROUP_REFRESH_INTERVAL": 2}):
        assert RedisChannelLayer(hosts=["redis://127.0.0.1:1"]).group_expiry == 10
    assert RedisChannelLayer(hosts=["redis://127.0.0.1:1"], group_expiry=900).group_expiry == 900


@override_settings(
    CHANNEL_LAYERS=redis_layers(),
    CHANNELS_TUNING={"GROUP_REFRESH_INTERVAL": None},
    DEBUG=False,
)
def test_no_refresh_no_expiry_check():
    assert ids(check_deployment()) == []


@pytest.mark.parametrize("bad", [(700, -1), "700", (1, 2, 3, 4), (1.5,), ()])
def test_gc_threshold_e007(bad):
    with override_settings(CHANNELS_TUNING={"GC_THRESHOLD": bad}):
        assert ids(check_settings()) == ["channels_tuning.E007"]


@pytest.mark.parametrize("good", [None, (700,), [50_000, 20, 100]])
def test_gc_threshold_accepts_none_and_integer_tuples(good):
    with override_settings(CHANNELS_TUNING={"GC_THRESHOLD": good}):
        assert ids(check_settings()) == []


def test_first_connection_names_the_server_its_guarantees_and_a_missing_lifespan(
    caplog, monkeypatch
):
    from channels_tuning.runtime.registry import registry
    from channels_tuning.servers import detect
    from channels_tuning.servers.lifespan import Lifespan
    from channels_tuning.servers.transport import ServerKind

    monkeypatch.setattr(detect, "_announced", False)
    monkeypatch.setattr(registry, "server_kind", "none yet")
    monkeypatch.setattr(Lifespan, "started", False)
    with caplog.at_level("INFO", logger="channels_tuning"):
        detect.announce_server(ServerKind.HYPERCORN)
        detect.announce_server(ServerKind.HYPERCORN)  # once per process
    assert registry.server_kind == "hypercorn"
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == (
        "channels_tuning: WebSockets served by hypercorn: 7 of 9 guarantees hold; "
        "not: A plain client that vanished (answers no protocol ping) is closed; "
        "A client's ping flood is closed with 1008"
    )
    assert "channels_tuning.W008" in messages[1]
    assert len(messages) == 2


def test_check_deploy_lists_each_installed_server():
    from channels_tuning.servers.guarantees import check_servers

    found = {message.msg.split(":")[0] for message in check_servers()}
    assert found == {
        "WebSockets served by daphne",
        "WebSockets served by channels-tuning-daphne",
        "WebSockets served by uvicorn",
        "WebSockets served by hypercorn",
    }
    assert {message.id for message in check_servers()} == {"channels_tuning.I001"}


@override_settings(
    CHANNEL_LAYERS={"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer"}},
    DEBUG=False,
)
def test_channels_redis_pubsub_layer_w009():
    assert ids(check_deployment()) == ["channels_tuning.W009"]


@override_settings(
    CHANNEL_LAYERS={"default": {"BACKEND": "channels_tuning.layers.RedisPubSubChannelLayer"}},
    DEBUG=False,
)
def test_tuned_pubsub_layer_passes():
    assert ids(check_deployment()) == []


def test_each_consumer_class_says_once_how_it_writes_and_warns_where_it_falls_back(
    caplog, monkeypatch
):
    from types import SimpleNamespace

    from channels_tuning.runtime.registry import registry
    from channels_tuning.servers import detect
    from channels_tuning.servers.transport import AwaitingTransport, ServerKind

    monkeypatch.setattr(detect, "_paths", {})
    monkeypatch.setattr(registry, "paths", {})
    monkeypatch.setattr(detect, "tuned_server_running", True)

    class Behind:  # a middleware rebuilt the scope: the tuned server's send is lost
        pass

    class Flowing:
        pass

    async def generic_send(message):
        pass

    generic = AwaitingTransport(ServerKind.OTHER, generic_send, generic_send)
    slow_pinging = SimpleNamespace(
        kind=ServerKind.TUNED_DAPHNE, server=SimpleNamespace(ping_interval=120)
    )
    with caplog.at_level("INFO", logger="channels_tuning"):
        detect.announce_path(Behind, generic, 60.0)
        detect.announce_path(Behind, generic, 60.0)  # once per class
        detect.announce_path(Flowing, slow_pinging, 60.0)
    messages = [record.getMessage() for record in caplog.records]
    behind, flowing = Behind.__qualname__, Flowing.__qualname__
    assert messages[0] == f"channels_tuning: {behind} writes through other ASGI server"
    assert "runs the generic path although this process is channels-tuning" in messages[1]
    assert messages[2] == f"channels_tuning: {flowing} writes through tuned daphne"
    assert "pings every 120 s" in messages[3] and "IDLE_TIMEOUT = 60.0 s" in messages[3]
    assert len(messages) == 4
    assert registry.paths == {behind: "other ASGI server", flowing: "tuned daphne"}


@pytest.mark.parametrize(
    ("urlconf", "said"), [("example_project.urls", False), ("tests.tutorial.urls", True)]
)
def test_the_tuned_server_says_at_start_when_the_browser_client_is_not_served(
    caplog, urlconf, said
):
    from channels_tuning.servers.startup import run_at_server_start

    with override_settings(ROOT_URLCONF=urlconf), caplog.at_level("INFO", "channels_tuning"):
        run_at_server_start(logging.getLogger("channels_tuning"))
    lines = [r.getMessage() for r in caplog.records if "client.js is not served" in r.getMessage()]
    assert len(lines) == int(said)


@pytest.mark.parametrize(
    "bad",
    [
        {"TRUSTED_PROXIES": "10.0.0.0/8"},  # a string, not a list
        {"TRUSTED_PROXIES": ["10.0.0.0/33"]},
        {"METRICS_ALLOWED_ADDRESSES": ["not an address"]},
    ],
)
def test_address_lists_e011(bad):
    with override_settings(CHANNELS_TUNING=bad):
        assert ids(check_settings()) == ["channels_tuning.E011"]


@pytest.mark.parametrize("prefix", [0, 129, 64.0, True, None])
def test_ipv6_client_prefix_e012(prefix):
    with override_settings(CHANNELS_TUNING={"IPV6_CLIENT_PREFIX": prefix}):
        assert ids(check_settings()) == ["channels_tuning.E012"]


def test_a_history_longer_than_the_send_queue_w011():
    history = {"chat.*": {"size": 2000, "ttl": 60}, "news.*": {"size": 1000, "ttl": 60}}
    with override_settings(CHANNELS_TUNING={"HISTORY": history}):
        problems = check_settings()
    assert ids(problems) == ["channels_tuning.W011"]
    assert "'chat.*'" in problems[0].msg


CLUSTER_LAYERS = {
    "default": {"BACKEND": "channels_tuning.layers.RedisClusterChannelLayer"},
    "plain": {"BACKEND": "channels_tuning.layers.RedisChannelLayer"},
}


@pytest.mark.parametrize(
    ("installed", "warned"),
    [("5.0.0", True), ("7.1.1", True), ("7.2.0", False), ("8.2.0", False), ("9.0.0b1", False)],
)
def test_a_cluster_layer_on_a_redis_py_that_closes_every_connection_w012(
    monkeypatch, installed, warned
):
    """Before redis-py 7.2 one command's connection error closed the whole cluster
    client; only the Cluster layer's alias is named."""
    from channels_tuning.layers import checks as layer_checks

    monkeypatch.setattr(layer_checks, "version", lambda name: installed if name == "redis" else "0")
    with override_settings(CHANNEL_LAYERS=CLUSTER_LAYERS, DEBUG=False):
        problems = check_deployment()
    assert ids(problems) == (["channels_tuning.W012"] if warned else [])
    if warned:
        assert "CHANNEL_LAYERS['default']" in problems[0].msg and installed[:3] in problems[0].msg


def test_the_installed_redis_py_is_judged_by_the_same_rule():
    from importlib.metadata import version

    from channels_tuning.layers.checks import CLUSTER_CLIENT_KEEPS_CONNECTIONS

    major, minor = (int(part) for part in version("redis").split(".")[:2])
    with override_settings(CHANNEL_LAYERS=CLUSTER_LAYERS, DEBUG=False):
        warned = "channels_tuning.W012" in ids(check_deployment())
    assert warned == ((major, minor) < CLUSTER_CLIENT_KEEPS_CONNECTIONS)


def test_without_a_cluster_layer_redis_py_is_not_looked_up(monkeypatch):
    """W012 concerns the Cluster layer only: a project without one never pays for (or
    fails on) reading the installed redis-py's metadata."""
    from channels_tuning.layers import checks as layer_checks

    def looked_up(name):
        raise AssertionError(f"version({name!r}) read without a Cluster layer")

    monkeypatch.setattr(layer_checks, "version", looked_up)
    layers = {"default": CLUSTER_LAYERS["plain"], "memory": {"BACKEND": "x.InMemory"}}
    with override_settings(CHANNEL_LAYERS=layers, DEBUG=False):
        assert "channels_tuning.W012" not in ids(check_deployment())
