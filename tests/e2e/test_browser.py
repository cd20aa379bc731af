"""The example page in headless Chromium (Debian's package, driven by Playwright),
served by a real daphne process that the test kills and restarts (issue #7)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal

import pytest

from channels_tuning.client import ReconnectingClient
from tests.support.processes import REPO, start_daphne, stop_process

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"


@pytest.mark.slow
async def test_page_reconnects_with_growing_delays_after_daphne_dies(tmp_path):
    from playwright.async_api import async_playwright, expect

    daphne = start_daphne(tmp_path, tuned=True)
    url = f"http://127.0.0.1:{daphne.port}/?room=browser"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = await browser.new_page()
            await page.goto(url)
            state = page.locator("#state")
            await expect(state).to_have_text("connected", timeout=10_000)

            # Messages flow both ways: from the page, and from a Python client in the room.
            await page.fill("#text", "hello from the page")
            await page.press("#text", "Enter")
            await expect(page.locator("#log p").last).to_have_text("hello from the page")
            async with ReconnectingClient(daphne.ws("/ws/chat/browser/"), codec="json") as other:
                await other.wait_open(5)
                await other.send({"message": "hello from Python"})
                await expect(page.locator("#log p").last).to_have_text("hello from Python")

            os.kill(daphne.pid, signal.SIGKILL)
            daphne.proc.wait(5)
            await expect(state).to_contain_text("reconnecting in", timeout=5_000)
            await page.wait_for_function("window.chat.reconnects.length >= 4", timeout=20_000)
            reconnects = await page.evaluate("window.chat.reconnects")
            attempts = [r["attempt"] for r in reconnects[:4]]
            assert attempts == [1, 2, 3, 4]
            # Full jitter under caps that double: 0.5, 1, 2, 4 s.
            for r in reconnects[:4]:
                assert 0 <= r["delay"] <= 500 * 2 ** (r["attempt"] - 1)
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "browser-reconnecting.png"))

            daphne = start_daphne(tmp_path, tuned=True, port=daphne.port)
            await expect(state).to_have_text("connected", timeout=30_000)
            await page.fill("#text", "after the restart")
            await page.press("#text", "Enter")
            await expect(page.locator("#log p").last).to_have_text("after the restart")
            await page.screenshot(path=str(ARTIFACTS / "browser-reconnected.png"))
            assert await page.evaluate("window.chat.client.connections") == 2
        finally:
            await browser.close()
            stop_process(daphne.proc)
    await asyncio.sleep(0)


@pytest.mark.slow
async def test_page_lists_who_is_online_and_recovers_a_gap_free_log(tmp_path, redis_server):
    """The example room has history and presence (its settings). The page shows who is
    online (updated by the room's join/leave events); a producer broadcasts 20 messages/s
    while the server is SIGKILLed and restarted: after the page reconnects, its message
    list holds every message once, in order, and the client was told ``recovered``; the
    killed process' entries leave the online list within PRESENCE_TTL."""
    from django.conf import settings
    from django.test import override_settings
    from playwright.async_api import async_playwright, expect

    from channels_tuning.broadcast import broadcast
    from channels_tuning.layers import RedisChannelLayer
    from example_project import settings as example

    room, group = "gapfree", "chat.gapfree"
    # Entries of the killed process expire after 3 s, and their leaves are announced.
    presence_ttl = {"PRESENCE_TTL": 3}
    daphne = start_daphne(tmp_path, tuned=True, redis=redis_server, tuning=presence_ttl)
    layer = RedisChannelLayer(hosts=[redis_server.url])
    sent: list[str] = []

    async def produce(stop: asyncio.Event) -> None:
        while not stop.is_set():
            text = f"m{len(sent)}"
            await broadcast(group, {"type": "message", "message": text}, layer=layer, timeout=10)
            sent.append(text)
            await asyncio.sleep(0.05)

    tuning = {**settings.CHANNELS_TUNING, "HISTORY": example.CHANNELS_TUNING["HISTORY"]}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{daphne.port}/?room={room}")
            await expect(page.locator("#state")).to_have_text("connected", timeout=10_000)
            online = page.locator("#online")
            await expect(online).to_contain_text("Online (1): guest-")
            async with ReconnectingClient(daphne.ws(f"/ws/chat/{room}/"), codec="json") as other:
                await other.wait_open(5)
                await expect(online).to_contain_text("Online (2): guest-")  # a join event

                with override_settings(CHANNELS_TUNING=tuning):
                    stop = asyncio.Event()
                    producer = asyncio.ensure_future(produce(stop))
                    await asyncio.sleep(1)
                    os.kill(daphne.pid, signal.SIGKILL)
                    daphne.proc.wait(5)
                    await asyncio.sleep(1)
                    daphne = start_daphne(
                        tmp_path,
                        tuned=True,
                        redis=redis_server,
                        tuning=presence_ttl,
                        port=daphne.port,
                    )
                    await expect(page.locator("#state")).to_have_text("connected", timeout=30_000)
                    await asyncio.sleep(1)
                    stop.set()
                    await producer
                lines = page.locator("#log p")
                await expect(lines).to_have_count(len(sent), timeout=10_000)
                assert await lines.all_text_contents() == sent  # every message, once, in order
                recoveries = await page.evaluate("window.chat.recoveries")
                assert [r["recovered"] for r in recoveries] == [False, True]
                # The killed process' two entries expire and are announced as left.
                await expect(online).to_contain_text("Online (2): guest-", timeout=6_000)
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "browser-recovered.png"))
            await expect(online).to_contain_text("Online (1): guest-", timeout=5_000)  # a leave
        finally:
            await browser.close()
            await layer.close_pools()
            stop_process(daphne.proc)
