"""Token authentication against a real tuned server: TokenAuthMiddleware with Django
signed tokens for users in the example project's SQLite database, the token in a
subprotocol or the query string, its expiry enforced on the open connection, refreshes,
and the tokens a hostile client sends."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote

import pytest
import websockets
from websockets.typing import Subprotocol

from channels_tuning.wire.subprotocol import SUBPROTOCOL
from tests.support.processes import migrate, run_django
from tests.support.waiting import recv_data

APPLICATION = "tests.e2e_asgi:application_with_tokens"
QUIET = {"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None, "RATE_LIMIT": None}

ISSUE = """
import json
from django.contrib.auth.models import User
from channels_tuning.auth import SignedTokens
tokens = SignedTokens()
ann = User.objects.create_user("ann")
ben = User.objects.create_user("ben")
gone = User.objects.create_user("gone", is_active=False)
print(json.dumps({
    "ann": ann.pk,
    "ann_hour": tokens.issue(ann),
    "ann_expired": tokens.issue(ann, -1),
    "ben_hour": tokens.issue(ben),
    "inactive": tokens.issue(gone),
}))
"""


@pytest.fixture
def server_and_tokens(daphne_factory, tmp_path):
    db = {"DJANGO_DB_PATH": str(tmp_path / "db.sqlite3"), "DJANGO_SECRET_KEY": "tokens-test"}
    server = daphne_factory(tuned=True, tuning=QUIET, application=APPLICATION, **db)
    migrate(server.env)
    return server, json.loads(run_django(server.env, ISSUE))


def with_token(server, token: str, path: str = "/ws/whoami/"):
    """The package clients' way: the token as a subprotocol beside channels-tuning.v1."""
    return websockets.connect(
        server.ws(path),
        subprotocols=[Subprotocol(SUBPROTOCOL), Subprotocol(f"ct-token.{token}")],
        close_timeout=1,
    )


@pytest.mark.slow
async def test_a_token_in_a_subprotocol_or_the_query_string_authenticates(server_and_tokens):
    server, tokens = server_and_tokens
    async with with_token(server, tokens["ann_hour"]) as ws:
        assert ws.subprotocol == SUBPROTOCOL  # the token's subprotocol is never selected
        announced = json.loads(await recv_data(ws))  # to a client of the package's protocol
        assert announced["type"] == "ct.token" and announced["exp"] > time.time() + 3500
        assert json.loads(await recv_data(ws))[1] == f"user:{tokens['ann']}"
    url = server.ws(f"/ws/whoami/?token={tokens['ann_hour']}")
    async with websockets.connect(url) as ws:
        assert json.loads(await recv_data(ws))[1] == f"user:{tokens['ann']}"
    async with websockets.connect(server.ws("/ws/whoami/")) as ws:  # no token: anonymous
        assert json.loads(await recv_data(ws))[1].startswith("addr:")


@pytest.mark.slow
async def test_bad_tokens_are_refused_with_a_close_code_and_counted(server_and_tokens):
    server, tokens = server_and_tokens
    forged = tokens["ann_hour"][:-4] + "AAAA"
    cases = {
        forged: 4004,
        tokens["inactive"]: 4004,
        "not a token!": 4004,
        "x" * 5000: 4004,
        tokens["ann_expired"]: 4005,
    }
    for token, code in cases.items():
        url = server.ws(f"/ws/whoami/?token={quote(token)}")
        async with websockets.connect(url) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await recv_data(ws, timeout=5)
            assert ws.close_code == code, token
    rejected = server.stats()["counters"]["channels_tuning_rejected_connections_total"]
    assert rejected == {
        "consumer=WhoAmIConsumer,reason=token_invalid": 4,
        "consumer=WhoAmIConsumer,reason=token_expired": 1,
    }
    log = server.log.read_text()
    assert "Traceback" not in log
    assert 1 <= log.count("refused WhoAmIConsumer: token_") <= 5  # rate-limited


def issue(user_id: int, seconds: float) -> str:
    """A token signed as the servers of these tests sign (their DJANGO_SECRET_KEY), made
    here at once: short lifetimes must not include a process start."""
    from django.test import override_settings

    from channels_tuning.auth import SignedTokens

    with override_settings(SECRET_KEY="tokens-test"):
        return SignedTokens().issue(user_id, seconds)


@pytest.mark.slow
async def test_an_expiring_token_closes_the_connection_unless_refreshed(server_and_tokens):
    server, tokens = server_and_tokens
    ann = tokens["ann"]
    async with (
        with_token(server, issue(ann, 2)) as lapsing,
        with_token(server, issue(ann, 2), "/ws/echo/") as refreshed,
    ):
        await recv_data(lapsing), await recv_data(lapsing), await recv_data(refreshed)
        started = time.monotonic()
        await refreshed.send(json.dumps({"type": "ct.refresh", "token": issue(ann, 4)}))
        answer = json.loads(await recv_data(refreshed))
        assert answer["type"] == "ct.refreshed" and answer["exp"] > time.time() + 3
        with pytest.raises(websockets.ConnectionClosed):
            await recv_data(lapsing, timeout=5)
        assert lapsing.close_code == 4005
        lapsed_after = time.monotonic() - started
        assert lapsed_after < 3.5  # the token's 2 s (and a scheduler tick)
        await refreshed.send("still here")  # past the first token's expiry
        assert await recv_data(refreshed) == "still here"
        with pytest.raises(websockets.ConnectionClosed):
            await recv_data(refreshed, timeout=5)  # the refreshed token's 4 s
        assert refreshed.close_code == 4005
    print(f"a 2 s token closed the connection {lapsed_after:.2f} s after the handshake")


@pytest.mark.slow
async def test_a_refresh_with_another_users_or_a_forged_token_closes_4004(server_and_tokens):
    server, tokens = server_and_tokens
    for bad in (tokens["ben_hour"], tokens["ann_hour"][:-3] + "xyz", 42):
        async with with_token(server, tokens["ann_hour"]) as ws:
            await recv_data(ws), await recv_data(ws)  # ct.token, then who am I
            await ws.send(json.dumps({"type": "ct.refresh", "token": bad}))
            with pytest.raises(websockets.ConnectionClosed):
                await recv_data(ws, timeout=5)
            assert ws.close_code == 4004
    assert "Traceback" not in server.log.read_text()


@pytest.mark.slow
async def test_a_connection_without_a_token_has_no_refresh_frames(server_and_tokens):
    """A plain page's {"type":"ct.refresh"} is its application's data, as before."""
    server, _ = server_and_tokens
    async with websockets.connect(server.ws("/ws/echo/")) as ws:
        frame = json.dumps({"type": "ct.refresh", "token": "t"}, separators=(",", ":"))
        await ws.send(frame)
        assert await recv_data(ws) == frame
    await asyncio.sleep(0)


@pytest.mark.slow
async def test_the_python_client_refreshes_its_token_and_stays_connected(server_and_tokens):
    """A token source giving 3 s tokens, refreshed 1 s before each expiry: the client
    stays on one connection for 7 s (two expiries); with a fixed token it stops at
    4005 instead of coming back with a token that is refused."""

    from channels_tuning.client import ReconnectingClient

    server, tokens = server_and_tokens

    def fresh_token() -> str:
        return issue(tokens["ann"], 3)

    url = server.ws("/ws/echo/")
    async with ReconnectingClient(url, token=fresh_token, refresh_margin=1.0) as client:
        await client.wait_open(5)
        await asyncio.sleep(7)
        await client.send("after two expiries")
        assert await asyncio.wait_for(client.recv(), 5) == "after two expiries"
        assert client.connections == 1
        assert client.refreshes >= 2
    fixed = ReconnectingClient(url, token=fresh_token())
    async with fixed:
        await fixed.wait_open(5)
        await asyncio.wait_for(fixed.wait_closed(), 10)
    assert (fixed.close_code, fixed.connections) == (4005, 1)


@pytest.mark.slow
async def test_the_browser_client_refreshes_its_token_in_chromium(daphne_factory, tmp_path):
    """The browser client in headless Chromium, on a page of the server: tokens from a
    function (issued for 5, 9 and 13 s), one connection across two expiries."""
    import shutil

    from playwright.async_api import async_playwright

    db = {"DJANGO_DB_PATH": str(tmp_path / "db.sqlite3"), "DJANGO_SECRET_KEY": "tokens-test"}
    server = daphne_factory(tuned=True, tuning=QUIET, application=APPLICATION, **db)
    env = server.env
    migrate(env)
    ann = json.loads(run_django(env, ISSUE))["ann"]
    series = [issue(ann, seconds) for seconds in (5, 9, 13)]
    started = time.monotonic()
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{server.port}/")
            result = await page.evaluate(
                """async ([url, tokens, waitMs]) => {
                  const module = "/static/channels_tuning/client.js";
                  const { ChannelsTuningClient } = await import(module);
                  let next = 0;
                  const client = new ChannelsTuningClient(url, {
                    token: async () => tokens[Math.min(next++, tokens.length - 1)],
                    refreshMargin: 1000,
                  });
                  const messages = [];
                  const closes = [];
                  client.addEventListener("message", (e) => messages.push(e.detail));
                  client.addEventListener("close", (e) => closes.push(e.detail.code));
                  client.start();
                  await new Promise((resolve) => setTimeout(resolve, waitMs));
                  client.send("after two expiries");
                  await new Promise((resolve) => setTimeout(resolve, 500));
                  const out = {
                    messages, closes: [...closes], connections: client.connections,
                    refreshes: client.refreshes, state: client.state,
                  };
                  client.close();
                  return out;
                }""",
                [server.ws("/ws/echo/"), series, int((10.5 - (time.monotonic() - started)) * 1000)],
            )
        finally:
            await browser.close()
    assert result["messages"] == ["after two expiries"], result
    assert (result["connections"], result["closes"], result["state"]) == (1, [], "open")
    assert result["refreshes"] >= 2
