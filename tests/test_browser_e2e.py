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

pytestmark = pytest.mark.e2e

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
