"""Requests both ways over one socket, end to end: the example's dashboard consumer
(``tests.e2e_asgi.QuickDashboardConsumer``) on two channels-tuning-daphne processes
sharing a redis-server, the package's Python client. The JS client in Chromium
answers the same consumer in tests/e2e/test_topics.py (the dashboard page)."""

from __future__ import annotations

import asyncio
import collections
import json
import time

import pytest
import websockets

from channels_tuning.broadcast import send_to_group
from channels_tuning.client import ReconnectingClient
from channels_tuning.exceptions import RequestError
from channels_tuning.layers import RedisChannelLayer
from channels_tuning.observability.leaks import extra_tasks
from channels_tuning.users import user_group
from channels_tuning.wire.subprotocol import SUBPROTOCOL
from tests.support.dashboard import dashboard_client as tab
from tests.support.processes import migrate, start_daphne, user_with_session

APPLICATION = "tests.e2e_asgi:application_behind_auth"
TUNING = {"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None, "RATE_LIMIT": None}


@pytest.mark.slow
async def test_the_server_asks_every_tab_of_a_user_and_each_answer_comes_back(
    tmp_path, redis_server
):
    """An alert to a user's four tabs on two servers: each push is acknowledged once
    handled; then each tab is asked what it shows: two answer, one has no handler
    (``unknown_method``), one never answers (``timeout`` after the consumer's 1 s),
    and no task is left behind on either server."""
    db = {"DJANGO_DB_PATH": str(tmp_path / "db.sqlite3"), "DJANGO_SECRET_KEY": "asks-test"}
    common = {"tuned": True, "redis": redis_server, "tuning": TUNING, "application": APPLICATION}
    servers = [start_daphne(tmp_path, **common, **db) for _ in range(2)]
    migrate(servers[0].env)
    carol, session = user_with_session(servers[0].env, "carol")
    inboxes: list[asyncio.Queue] = [asyncio.Queue() for _ in range(4)]
    tabs = [tab(servers[n % 2], session, on_message=inboxes[n].put_nowait) for n in range(4)]

    async def shows_forever(params):
        await asyncio.Event().wait()

    def read_only(params):
        raise RequestError("read_only", "a viewer")

    tabs[0].on_request("page.state", lambda params: {"topics": 2, "tab": 0})
    tabs[1].on_request("page.state", lambda params: {"topics": 5, "tab": 1})
    tabs[2].on_request("page.state", shows_forever)
    # tabs[3] has no handler for it.
    layer = RedisChannelLayer(hosts=[redis_server.url])
    try:
        for client in tabs:
            client.start()
        for client in tabs:
            await client.wait_open(10)
        report = await send_to_group(
            user_group(carol), {"type": "dashboard.alert", "text": "fire drill"}, layer=layer
        )
        assert report.delivered == 4
        alerts = [await asyncio.wait_for(inbox.get(), 5) for inbox in inboxes]
        assert alerts == [{"alert": "fire drill"}] * 4
        outcomes = [await asyncio.wait_for(inbox.get(), 5) for inbox in inboxes]
        assert outcomes == [
            {"alert_outcome": {"shown": True, "page": {"topics": 2, "tab": 0}}},
            {"alert_outcome": {"shown": True, "page": {"topics": 5, "tab": 1}}},
            {"alert_outcome": {"shown": True, "page": {"failed": "timeout"}}},
            {"alert_outcome": {"shown": True, "page": {"failed": "unknown_method"}}},
        ]
        # A handler's own error code reaches the consumer too.
        tabs[0].on_request("page.state", read_only)
        await send_to_group(
            user_group(carol), {"type": "dashboard.alert", "text": "2"}, layer=layer
        )
        assert await asyncio.wait_for(inboxes[0].get(), 5) == {"alert": "2"}
        outcome = await asyncio.wait_for(inboxes[0].get(), 5)
        assert outcome["alert_outcome"]["page"] == {"failed": "read_only"}
        for inbox in inboxes[1:]:
            await asyncio.wait_for(inbox.get(), 5)  # their alert
            await asyncio.wait_for(inbox.get(), 5)  # and its outcome
        for server in servers:
            counters = server.stats()["counters"]["channels_tuning_client_requests_total"]
            print(f"server {server.port}: {counters}")
            assert "consumer=QuickDashboardConsumer,outcome=late" not in counters
        total = {}
        for server in servers:
            for labels, count in server.stats()["counters"][
                "channels_tuning_client_requests_total"
            ].items():
                outcome_name = labels.rsplit("=", 1)[1]
                total[outcome_name] = total.get(outcome_name, 0) + count
        # 8 pushes acknowledged, 8 requests: 3 results, 1 read_only + 2 unknown_method
        # errors, 2 timeouts.
        assert total == {"ok": 8 + 3, "error": 3, "timeout": 2}
    finally:
        for client in tabs:
            await client.close()
        await layer.close_pools()
    await asyncio.sleep(0.1)
    assert [len(client._handling) for client in tabs] == [0] * 4  # the endless handler too
    for server in servers:
        # A leak stays; an application (or an earlier stats request) ending does not.
        def settled(stats: dict) -> bool:
            return stats["connections"] == 0 and extra_tasks(stats["task_groups"]) == 0

        deadline = time.monotonic() + 5
        while not settled(stats := server.stats()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert settled(stats), stats["task_groups"]
        server.proc.kill()
        server.proc.wait(10)


@pytest.mark.slow
async def test_ten_thousand_requests_from_a_hundred_clients_each_answered_once(
    tmp_path, redis_server
):
    """100 clients over two servers, 100 requests each, 10 at a time per client:
    every request gets its own answer once (the params come back); p50/p99 printed."""
    db = {"DJANGO_DB_PATH": str(tmp_path / "db.sqlite3"), "DJANGO_SECRET_KEY": "load-test"}
    common = {"tuned": True, "redis": redis_server, "tuning": TUNING, "application": APPLICATION}
    servers = [start_daphne(tmp_path, **common, **db) for _ in range(2)]
    migrate(servers[0].env)
    _, session = user_with_session(servers[0].env, "dave")
    clients = [tab(servers[n % 2], session) for n in range(100)]
    latencies: list[float] = []
    try:
        for client in clients:
            client.start()
        for client in clients:
            await client.wait_open(20)

        async def ask(client: ReconnectingClient, number: int) -> None:
            for round_ in range(10):
                asks = []
                for k in range(10):
                    params = {"client": number, "n": round_ * 10 + k}
                    asks.append(timed(client, params))
                assert await asyncio.gather(*asks) == [
                    {"client": number, "n": round_ * 10 + k} for k in range(10)
                ]

        async def timed(client: ReconnectingClient, params: dict) -> dict:
            began = time.perf_counter()
            result = await client.request("echo", params, timeout=30)
            latencies.append(time.perf_counter() - began)
            return result

        began = time.perf_counter()
        await asyncio.gather(*(ask(client, n) for n, client in enumerate(clients)))
        took = time.perf_counter() - began
        latencies.sort()
        p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
        print(
            f"10 000 requests in {took:.1f} s ({len(latencies) / took:.0f}/s): "
            f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
        )
        assert len(latencies) == 10_000
        answered = sum(
            server.stats()["counters"]["channels_tuning_requests_total"].get(
                "consumer=QuickDashboardConsumer,outcome=ok", 0
            )
            for server in servers
        )
        assert answered == 10_000  # each once: no request answered twice or lost
    finally:
        for client in clients:
            await client.close()
        for server in servers:
            server.proc.kill()
            server.proc.wait(10)


async def test_hostile_requests_are_bounded_answered_or_closed(daphne_factory):
    """Against one channels-tuning-daphne (the defaults: no rate limit, 1 MiB
    messages): 10 000 requests sent without waiting are each answered once while the
    server's memory stays flat (its bounded input queue pushes back on the socket);
    duplicate ids are answered each; an unknown method gets an error frame; oversized
    params 1009; an unreadable request 1008; no traceback in the log."""
    tuning = {"HEARTBEAT_INTERVAL": None, "RATE_LIMIT": None, "RATE_BURST": None}
    server = daphne_factory(tuned=True, tuning=tuning)
    url = server.ws("/ws/dashboard-quick/")
    origin = f"http://127.0.0.1:{server.port}"

    def request(id_, method="echo", params=None) -> str:
        return json.dumps({"type": "ct.request", "id": id_, "method": method, "params": params})

    rss_before = server.rss_kb()
    peak = rss_before
    async with websockets.connect(
        url, subprotocols=[SUBPROTOCOL], origin=origin, max_size=None
    ) as ws:

        async def flood() -> None:
            for n in range(1, 10_001):
                await ws.send(request(n, params={"n": n, "pad": "x" * 200}))

        sender = asyncio.ensure_future(flood())
        seen: collections.Counter = collections.Counter()
        while sum(seen.values()) < 10_000:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert reply["result"]["n"] == reply["id"]
            seen[reply["id"]] += 1
            if reply["id"] % 1000 == 0:
                peak = max(peak, server.rss_kb())
        await sender
        assert len(seen) == 10_000 and set(seen.values()) == {1}
        # The same id twice: the server keeps nothing per id, each is answered.
        await ws.send(request(5, params={"n": 5}))
        await ws.send(request(5, params={"n": 5}))
        assert [json.loads(await ws.recv())["id"] for _ in range(2)] == [5, 5]
        await ws.send(request(6, method="admin.drop_tables"))
        assert json.loads(await ws.recv()) == {
            "kind": "reply",
            "id": 6,
            "error": "unknown_method",
            "message": "admin.drop_tables",
        }
        await ws.send(request(7, params={"n": 7}))
        assert json.loads(await ws.recv())["result"] == {"n": 7}  # still open
    growth_mb = (peak - rss_before) / 1024
    print(f"10 000 requests in flight: server RSS +{growth_mb:.1f} MB at the peak")
    assert growth_mb < 30
    for frame, code in (
        (request(1, params="x" * (1024 * 1024 + 1)), 1009),
        ('{"type":"ct.request","id":"one","method":"echo"}', 1008),
        ('{"type":"ct.request","id":1}', 1008),
    ):
        async with websockets.connect(
            url, subprotocols=[SUBPROTOCOL], origin=origin, max_size=None
        ) as ws:
            await ws.send(frame)
            await ws.wait_closed()
            assert ws.close_code == code
    counters = server.stats()["counters"]["channels_tuning_requests_total"]
    print("requests counted:", counters)
    assert counters["consumer=QuickDashboardConsumer,outcome=ok"] == 10_000 + 3
    assert counters["consumer=QuickDashboardConsumer,outcome=unknown_method"] == 1
    assert counters["consumer=QuickDashboardConsumer,outcome=malformed"] == 2
    log = server.log.read_text()
    assert "Traceback" not in log
    assert log.count("request refused") == 2 or log.count("request refused") == 1
