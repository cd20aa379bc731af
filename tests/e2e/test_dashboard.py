"""The shipped Grafana dashboard and alert rules: generated as committed, valid, and
using only metrics and labels that a real tuned server exports under traffic."""

from __future__ import annotations

import json
import re
import time

import websockets

from channels_tuning.observability.dashboard import (
    ALERTS_PATH,
    DASHBOARD_PATH,
    dashboard,
    expressions,
    render,
)
from channels_tuning.wire.subprotocol import SUBPROTOCOL
from tests.support.rawws import handshake, read_burst, send_text
from tests.support.waiting import recv_data, wait_until

#: Labels Prometheus adds at scrape time (not in /metrics).
TARGET_LABELS = {"job", "instance"}


def test_committed_dashboard_is_what_the_module_writes():
    assert DASHBOARD_PATH.read_text() == render(), (
        "run: python -m channels_tuning.observability.dashboard --write"
    )


def test_dashboard_is_importable_grafana_json():
    board = json.loads(DASHBOARD_PATH.read_text())
    assert board == dashboard()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "job", "instance"}
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"]
        for target in panel["targets"]:
            # Every query is narrowed by the dashboard's variables.
            assert 'job=~"$job", instance=~"$instance"' in target["expr"], target["expr"]
    rules = ALERTS_PATH.read_text()
    for alert in ("SlowConsumers", "MessagesDropped", "GCPauseP99", "StaleStatsPublisher"):
        assert f"alert: ChannelsTuning{alert}" in rules


def used(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names an expression uses."""
    metrics = set(re.findall(r"\b((?:channels_tuning|process)_[a-z_]+)\b", expr))
    labels = {
        name.strip()
        for clause in re.findall(r"\bby \(([^)]*)\)", expr)
        for name in clause.split(",")
    }
    for selector in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([a-z_]+)\s*[=!~]+", selector))
    return metrics, labels - TARGET_LABELS


async def test_every_metric_and_label_they_use_is_in_a_real_scrape(daphne_factory, redis_server):
    server = daphne_factory(
        tuned=True, redis=redis_server, tuning={"STATS_INTERVAL": 0.5, "STATS_BACKEND": "redis"}
    )
    room, group = "dash", "chat.dash"
    # Chat clients (the example room has history and presence): joins, a recovery
    # request that cannot be met, presence events, broadcasts.
    alice = await websockets.connect(server.ws(f"/ws/chat/{room}/"), subprotocols=[SUBPROTOCOL])
    bob = await websockets.connect(
        server.ws(f"/ws/chat/{room}/?ct_recover={group}:beef:1"), subprotocols=[SUBPROTOCOL]
    )
    members = redis_server.cli("ZRANGE", f"asgi:group:{group}", "0", "-1").split()
    process = members[0].split("!", 1)[0] + "!"
    # A member of a process that died (it once said it was alive, no longer does): the
    # next group send counts it as gone.
    redis_server.cli("ZADD", f"asgi:group:{group}", str(int(time.time())), "specific.dead!x")
    redis_server.cli("SET", "asgi:ct:seen:specific.dead!", "1")
    # Messages producers could not put in this process' inbox, as they record them.
    redis_server.cli("HINCRBY", f"asgi:ct:missed:{process}", "over_capacity", "1")
    await alice.send(json.dumps({"message": "hello"}))
    while "hello" not in await recv_data(bob):  # subscribed, online list, presence
        pass
    # A malformed message: closed with 1007.
    await alice.send("{not json")
    # A client that reads nothing during a burst: drop_oldest drops.
    sock, _ = handshake(server.port, "/ws/burst/drop_oldest/", rcvbuf=65536)
    send_text(sock, "3000")
    server.stats(gc_collect=True)  # a timed full collection

    # Per expression: its metrics must all be scraped, and each label it uses must be
    # on one of them (``le`` on a histogram's buckets, ``reason`` on a counter...).
    wanted: dict[str, set[str]] = {}
    for expr in expressions():
        metrics, labels = used(expr)
        wanted.setdefault(" ".join(sorted(metrics)), set()).update(labels)

    def scrape() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for name, labels in server.metrics():
            found.setdefault(name, set()).update(key for key, _ in labels)
        return found

    def missing() -> list[str]:
        found = scrape()
        problems = []
        for key, labels in wanted.items():
            metrics = key.split()
            absent = [m for m in metrics if m not in found]
            if absent:
                problems.append(f"metric {absent}")
                continue
            carried = set().union(*(found[m] for m in metrics))
            if labels - carried:
                problems.append(f"{metrics}: labels {sorted(labels - carried)}")
        return problems

    try:
        await wait_until(lambda: not missing(), timeout=15)
    except AssertionError:
        raise AssertionError(missing()) from None
    finally:
        read_burst(sock)
        sock.close()
        await alice.close()
        await bob.close()
