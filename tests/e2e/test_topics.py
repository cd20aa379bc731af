"""Topics over one socket, end to end: the example's dashboard consumer on two
channels-tuning-daphne processes sharing a redis-server, users and Django groups in
the example's SQLite database (sessions through Channels' AuthMiddlewareStack), the
package's Python client; broadcasts, revocations and unsubscribe_user() from other
processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time

import pytest
import websockets
from django.conf import settings
from django.test import override_settings

from channels_tuning.broadcast import broadcast
from channels_tuning.client import (
    RequestFailed,
    SubscriptionRefused,
)
from channels_tuning.layers import RedisChannelLayer
from channels_tuning.wire.subprotocol import SUBPROTOCOL
from tests.support.dashboard import dashboard_client as client
from tests.support.processes import REPO, migrate, run_django, start_daphne, user_with_session
from tests.support.waiting import wait_until

APPLICATION = "tests.e2e_asgi:application_behind_auth"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
HISTORY = {
    "HISTORY": {
        "ticker": {"size": 10, "ttl": 600},
        "user.*": {"size": 50, "ttl": 600},
        "desk.*": {"size": 50, "ttl": 600},
    }
}
TUNING = {"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None, "RATE_LIMIT": None, **HISTORY}


def add_to_group(env, username: str, group: str, add: bool = True) -> float:
    """Add (or remove) a user to a Django group in another process; when it was done."""
    return float(
        run_django(
            env,
            "import time\nfrom django.contrib.auth.models import Group, User\n"
            f"g, _ = Group.objects.get_or_create(name={group!r})\n"
            f"u = User.objects.get(username={username!r})\n"
            f"u.groups.{'add' if add else 'remove'}(g)\nprint(time.time())",
        )
    )


async def next_data(queue: asyncio.Queue, timeout: float = 5.0) -> dict:
    return await asyncio.wait_for(queue.get(), timeout)


@pytest.mark.slow
async def test_a_dashboard_subscribes_recovers_and_loses_revoked_topics(tmp_path, redis_server):
    db = {"DJANGO_DB_PATH": str(tmp_path / "db.sqlite3"), "DJANGO_SECRET_KEY": "topics-test"}
    common = {"tuned": True, "redis": redis_server, "tuning": TUNING, "application": APPLICATION}
    servers = [start_daphne(tmp_path, **common, **db) for _ in range(2)]
    env = servers[0].env
    migrate(env)
    alice, alice_session = user_with_session(env, "alice")
    bob, bob_session = user_with_session(env, "bob")
    add_to_group(env, "alice", "desk-ops")
    layer = RedisChannelLayer(hosts=[redis_server.url])
    received: asyncio.Queue = asyncio.Queue()
    ended: list[tuple[str, str, float]] = []
    alice_client = client(
        servers[0],
        alice_session,
        on_message=received.put_nowait,
        on_unsubscribed=lambda topic, reason: ended.append((topic, reason, time.time())),
    )
    bob_client = client(servers[1], bob_session)
    try:
        with override_settings(CHANNELS_TUNING={**settings.CHANNELS_TUNING, **HISTORY}):
            for price in (10, 11, 12):
                await broadcast("ticker", {"px": price}, layer=layer)
            alice_client.start()
            bob_client.start()
            await alice_client.wait_open(10)
            await bob_client.wait_open(10)

            # Three topics over one socket; the ticker in cache mode: its latest price.
            await alice_client.subscribe("ticker")
            assert await next_data(received) == {
                "kind": "data",
                "topic": "ticker",
                "offset": 3,
                "epoch": alice_client.positions["ticker"].epoch,
                "data": {"px": 12},
            }
            await alice_client.subscribe(f"user.{alice}")
            # A request to the consumer's declared method, over the same socket.
            assert await alice_client.request("desk.list") == ["ops"]
            with pytest.raises(RequestFailed) as failed:
                await alice_client.request("desk.delete", {"name": "ops"})
            assert failed.value.code == "unknown_method"
            await alice_client.subscribe("desk.ops")
            refusals = {}
            for topic in (f"user.{bob}", "admin.all"):
                try:
                    await alice_client.subscribe(topic)
                except SubscriptionRefused as refused:
                    refusals[topic] = refused.reason
            assert refusals == {f"user.{bob}": "forbidden", "admin.all": "unknown_topic"}
            try:
                await bob_client.subscribe("desk.ops")
            except SubscriptionRefused as refused:
                assert refused.reason == "forbidden"
            else:
                raise AssertionError("bob is not in desk-ops")
            await bob_client.subscribe("ticker")

            for topic in ("ticker", f"user.{alice}", "desk.ops"):
                await broadcast(topic, {"live": topic}, layer=layer)
            live = [await next_data(received) for _ in range(3)]
            assert {m["topic"]: m["data"] for m in live} == {
                "ticker": {"live": "ticker"},
                f"user.{alice}": {"live": f"user.{alice}"},
                "desk.ops": {"live": "desk.ops"},
            }

            # Alice's server dies; what is broadcast meanwhile reaches her after the
            # restart, once per topic, in order, through her resubscriptions.
            os.kill(servers[0].pid, signal.SIGKILL)
            killed_at = time.time()
            servers[0].proc.wait(10)
            for topic in ("ticker", f"user.{alice}", "desk.ops"):
                for n in (1, 2):
                    await broadcast(topic, {"missed": n}, layer=layer)
            servers[0] = start_daphne(tmp_path, **common, **db, port=servers[0].port)
            recovered = [await next_data(received, 20) for _ in range(6)]
            by_topic: dict = {}
            for message in recovered:
                by_topic.setdefault(message["topic"], []).append(message["data"])
            assert by_topic == {
                topic: [{"missed": 1}, {"missed": 2}]
                for topic in ("ticker", f"user.{alice}", "desk.ops")
            }
            assert alice_client.duplicates == 0 and alice_client.gaps == 0
            await wait_until(lambda: len(alice_client.subscriptions) == 3)
            assert all(s.state == "subscribed" for s in alice_client.subscriptions.values())

            # Removed from the group in the database: unsubscribed within the
            # consumer's authorization_ttl (1 s here), rounded up to the scheduler's tick.
            removed_at = await asyncio.get_running_loop().run_in_executor(
                None, add_to_group, env, "alice", "desk-ops", False
            )
            await wait_until(lambda: ended, timeout=10)
            (topic, reason, at) = ended.pop()
            print(f"revoked in the database: unsubscribed {at - removed_at:.2f} s later")
            assert (topic, reason) == ("desk.ops", "forbidden")
            # ttl + the scheduler's tick + slack: 0.1-1.6 s here, with three CPU burners
            # too; one CI run took 5.34 s (unexplained: the server's log is in the
            # message). The consumer's default ttl, 60 s, would fail it either way.
            assert at - removed_at < 1.0 + 1.0 + 6.0, servers[0].log.read_text()[-4000:]

            # unsubscribe_user() from a third process: every connection of the user.
            # The killed server's memberships count as receivers until its liveness
            # key expires (5 s after the kill); then the send finds them gone.
            await asyncio.sleep(max(0.0, killed_at + 6 - time.time()))
            out = run_django(
                env,
                "import asyncio\nfrom channels_tuning.users import unsubscribe_user\n"
                f"print(asyncio.run(unsubscribe_user({alice}, 'ticker')).delivered)",
            )
            assert out == "1"
            await wait_until(lambda: ended, timeout=5)
            assert ended.pop()[:2] == ("ticker", "revoked")
            assert set(alice_client.subscriptions) == {f"user.{alice}"}
            await broadcast("ticker", {"px": 13}, layer=layer)
            await broadcast(f"user.{alice}", {"still": True}, layer=layer)
            assert (await next_data(received))["data"] == {"still": True}
    finally:
        await alice_client.close()
        await bob_client.close()
        await layer.close_pools()
        for server in servers:
            server.proc.kill()
            server.proc.wait(10)


async def test_hostile_topic_requests_get_an_answer_a_close_and_a_counter(daphne_factory):
    server = daphne_factory(tuned=True, tuning={"RATE_LIMIT": None, **HISTORY})
    url = server.ws("/ws/dashboard-quick/")
    origin = f"http://127.0.0.1:{server.port}"

    def ask(id, topic):
        return json.dumps({"type": "ct.subscribe", "id": id, "topic": topic})

    # 10 000 topic names, sent as fast as the client can: answered while within the
    # request rate (burst 50, 10/s), then closed with 1008.
    # Read while sending, and let the reader run after every send: the server waits
    # its closing handshake timeout (1-2 s) for the client's answer to its close,
    # then resets the connection; a client whose loop is still busy writing then
    # fails its next write and never reads the close frame (1006).
    answers: list = []
    async with websockets.connect(url, subprotocols=[SUBPROTOCOL], origin=origin) as ws:

        async def read() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    answers.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))

        reader = asyncio.ensure_future(read())
        began = time.monotonic()
        for n in range(1, 10_001):
            try:
                await ws.send(ask(n, f"desk.room{n}"))
            except websockets.ConnectionClosed:
                break
            await asyncio.sleep(0)
        await reader
        assert ws.close_code == 1008
        sending = time.monotonic() - began
    assert {a["error"] for a in answers} == {"login required"}
    # The burst, and what the rate refilled while the server read them.
    assert 50 <= len(answers) <= 50 + 10 * sending + 1, (len(answers), sending)
    # Malformed requests: 1008 each.
    for frame in (
        '{"type":"ct.subscribe","id":"x","topic":"ticker"}',
        '{"type":"ct.subscribe","id":1}',
    ):
        async with websockets.connect(url, subprotocols=[SUBPROTOCOL], origin=origin) as ws:
            await ws.send(frame)
            await ws.wait_closed()
            assert ws.close_code == 1008
    # An anonymous client: public topics yes, private ones no.
    async with websockets.connect(url, subprotocols=[SUBPROTOCOL], origin=origin) as ws:
        await ws.send(ask(1, "user.1"))
        assert json.loads(await ws.recv())["error"] == "login required"
        await ws.send(ask(2, "ticker"))
        assert json.loads(await ws.recv())["kind"] == "subscribed"
    counters = server.stats()["counters"]["channels_tuning_topic_requests_total"]
    print("topic requests counted:", counters)
    assert counters["consumer=QuickDashboardConsumer,outcome=flood"] == 1
    closes = server.stats()["counters"]["channels_tuning_closes_total"]
    assert closes["consumer=QuickDashboardConsumer,code=1008"] == 3  # the flood, 2 malformed
    assert counters["consumer=QuickDashboardConsumer,outcome=malformed"] == 2
    assert counters["consumer=QuickDashboardConsumer,outcome=subscribed"] == 1
    # can_subscribe's own reasons ("login required") are counted as forbidden.
    assert counters["consumer=QuickDashboardConsumer,outcome=forbidden"] == len(answers) + 1
    log = server.log.read_text()
    assert "Traceback" not in log
    assert 1 <= log.count("topic request refused") <= 10  # a line a second at most


@pytest.mark.slow
async def test_the_example_dashboard_in_chromium(tmp_path, redis_server):
    """The example's /dashboard/ page in headless Chromium, signed in: the ticker's
    latest price on subscribe (cache mode), the user's own notices, a desk feed the
    user's Django group allows, another refused with the reason, an alert the page
    acknowledges and a request the page answers, a desk taken away
    with unsubscribe_user() shown as ended, and what was broadcast while the server
    was down shown once after its restart; screenshots in test-artifacts/."""
    from playwright.async_api import async_playwright, expect

    db = {"DJANGO_DB_PATH": str(tmp_path / "db.sqlite3"), "DJANGO_SECRET_KEY": "dashboard-test"}
    server = start_daphne(
        tmp_path, tuned=True, redis=redis_server, tuning=TUNING, application=APPLICATION, **db
    )
    env = server.env
    migrate(env)
    erin, session = user_with_session(env, "erin")
    add_to_group(env, "erin", "desk-ops")
    layer = RedisChannelLayer(hosts=[redis_server.url])
    url = f"http://127.0.0.1:{server.port}/dashboard/"
    try:
        with override_settings(CHANNELS_TUNING={**settings.CHANNELS_TUNING, **HISTORY}):
            for price in (101.5, 102.25):
                await broadcast("ticker", {"px": price}, layer=layer)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                try:
                    context = await browser.new_context()
                    root = f"http://127.0.0.1:{server.port}/"  # the socket's path too
                    await context.add_cookies(
                        [{"name": "sessionid", "value": session, "url": root}]
                    )
                    page = await context.new_page()
                    await page.goto(url)
                    await expect(page.locator("#price")).to_have_text("102.25", timeout=10_000)
                    await expect(page.locator("#desks")).to_have_text("Your desks: ops")
                    await expect(page.locator(f"#topic-user\\.{erin}")).to_contain_text(
                        "subscribed"
                    )
                    for desk in ("ops", "finance"):
                        await page.fill("#desk", desk)
                        await page.click("#subscribe button")
                    await expect(page.locator("#topic-desk\\.ops")).to_contain_text("subscribed")
                    await expect(page.locator("#topic-desk\\.finance")).to_contain_text(
                        "refused (forbidden)"
                    )
                    await broadcast("ticker", {"px": 103}, layer=layer)
                    await broadcast(f"user.{erin}", {"notice": "export ready"}, layer=layer)
                    await broadcast("desk.ops", {"text": "deploy at 15:00"}, layer=layer)
                    await expect(page.locator("#price")).to_have_text("103")
                    await expect(page.locator("#notices")).to_contain_text("export ready")
                    await expect(page.locator("#feed")).to_contain_text("ops: deploy at 15:00")
                    # The server pushes an alert the page acknowledges, then asks the
                    # page what it shows (the page's onRequest handler answers).
                    out = run_django(
                        env,
                        "import asyncio\nfrom channels_tuning.broadcast import send_to_group\n"
                        "from channels_tuning.users import user_group\n"
                        f"event = {{'type': 'dashboard.alert', 'text': 'fire drill'}}\n"
                        f"print(asyncio.run(send_to_group(user_group({erin}), event)).delivered)",
                    )
                    assert out == "1"
                    await expect(page.locator("#alert")).to_have_text("Alert: fire drill")
                    await expect(page.locator("#alert-outcome")).to_have_text(
                        "The server saw: alert confirmed, page showing 3 topics"
                    )
                    ARTIFACTS.mkdir(exist_ok=True)
                    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
                    out = run_django(
                        env,
                        "import asyncio\nfrom channels_tuning.users import unsubscribe_user\n"
                        f"print(asyncio.run(unsubscribe_user({erin}, 'desk.ops')).delivered)",
                    )
                    assert out == "1"
                    await expect(page.locator("#topic-desk\\.ops")).to_contain_text(
                        "ended by the server (revoked)"
                    )
                    await page.screenshot(
                        path=str(ARTIFACTS / "dashboard-revoked.png"), full_page=True
                    )
                    ended = await page.evaluate("window.dashboard.ended")
                    assert ended == [{"topic": "desk.ops", "reason": "revoked"}]

                    # The server dies; the page's client reconnects to its successor,
                    # subscribes again with its positions and gets what it missed, once.
                    os.kill(server.pid, signal.SIGKILL)
                    server.proc.wait(10)
                    for n in (1, 2):
                        await broadcast(f"user.{erin}", {"notice": f"missed {n}"}, layer=layer)
                    await broadcast("ticker", {"px": 104}, layer=layer)
                    server = start_daphne(
                        tmp_path,
                        tuned=True,
                        redis=redis_server,
                        tuning=TUNING,
                        application=APPLICATION,
                        port=server.port,
                        **db,
                    )
                    await expect(page.locator("#price")).to_have_text("104", timeout=20_000)
                    notices = page.locator("#notices p")
                    await expect(notices).to_have_count(3, timeout=10_000)
                    assert await notices.all_text_contents() == [
                        "export ready",
                        "missed 1",
                        "missed 2",
                    ]
                    client = await page.evaluate(
                        "({connections: window.dashboard.client.connections,"
                        " duplicates: window.dashboard.client.duplicates,"
                        " gaps: window.dashboard.client.gaps})"
                    )
                    assert client == {"connections": 2, "duplicates": 0, "gaps": 0}, client
                    await page.screenshot(
                        path=str(ARTIFACTS / "dashboard-recovered.png"), full_page=True
                    )
                finally:
                    await browser.close()
    finally:
        await layer.close_pools()
        server.proc.kill()
        server.proc.wait(10)
