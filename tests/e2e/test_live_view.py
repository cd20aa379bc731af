"""The staff-only live view in headless Chromium against real server processes
publishing their snapshots through Redis."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support.processes import REPO, migrate, run_django, start_daphne, stop_process

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"


@pytest.mark.slow
async def test_page_draws_every_process_in_chromium(tmp_path, redis_server):
    """Two tuned servers publishing through Redis; a staff user's session (created in
    the example project's SQLite database) opens the page, which charts both."""
    from playwright.async_api import async_playwright, expect

    # One database, and one secret key (sessions carry a hash made with it) for the
    # servers and the process that creates the users' sessions.
    db = {"DJANGO_DB_PATH": str(tmp_path / "db.sqlite3"), "DJANGO_SECRET_KEY": "live-view-test"}
    tuning = {"STATS_INTERVAL": 0.5}
    servers = [
        start_daphne(tmp_path, tuned=True, redis=redis_server, tuning=tuning, **db)
        for _ in range(2)
    ]
    env = {**servers[0].env}
    migrate(env)

    def session_of(name: str, staff: bool) -> str:
        return run_django(
            env,
            "from django.contrib.auth.models import User; "
            "from django.contrib.sessions.backends.db import SessionStore; "
            f"u = User.objects.create_user({name!r}, is_staff={staff}); "
            "s = SessionStore(); s['_auth_user_id'] = str(u.pk); "
            "s['_auth_user_backend'] = 'django.contrib.auth.backends.ModelBackend'; "
            "s['_auth_user_hash'] = u.get_session_auth_hash(); s.create(); print(s.session_key)",
        )

    session, member_session = session_of("admin", True), session_of("member", False)
    import websockets

    clients = [await websockets.connect(servers[0].ws("/ws/echo/")) for _ in range(3)]
    clients += [await websockets.connect(servers[1].ws("/ws/echo/"))]
    url = f"http://127.0.0.1:{servers[0].port}/ws-stats/"
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                anonymous = await browser.new_page()
                await anonymous.goto(url)
                assert "/accounts/login/" in anonymous.url  # redirected, nothing drawn
                member = await browser.new_context()
                await member.add_cookies(
                    [{"name": "sessionid", "value": member_session, "url": url}]
                )
                member_page = await member.new_page()
                assert (await member_page.goto(url)).status == 403
                assert (await member_page.goto(url + "snapshots.json")).status == 403
                context = await browser.new_context()
                await context.add_cookies([{"name": "sessionid", "value": session, "url": url}])
                page = await context.new_page()
                await page.goto(url)
                rows = page.locator("#processes tr")
                await expect(rows).to_have_count(2, timeout=10_000)
                await expect(page.locator("#status")).to_contain_text("2 process(es)")
                counts = await page.locator('[data-metric="connections"]').all_text_contents()
                assert sorted(int(text.split()[0]) for text in counts) == [1, 3]
                # More connections to the second server: its chart steps up.
                clients += [await websockets.connect(servers[1].ws("/ws/echo/")) for _ in range(4)]
                await page.wait_for_timeout(1500)
                await expect(page.locator('[data-metric="connections"]').last).to_contain_text(
                    "5 (max 5)", timeout=5000
                )
                await page.wait_for_timeout(1500)  # a few points more on each chart
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "live-view.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        for ws in clients:
            await ws.close()
        for server in servers:
            stop_process(server.proc)
    assert os.path.exists(ARTIFACTS / "live-view.png")
