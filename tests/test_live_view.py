"""The staff-only live view: access control (unit level), and the page in headless
Chromium against real server processes publishing their snapshots through Redis."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
from django.test import RequestFactory, override_settings

from channels_tuning import views
from tests.support.processes import REPO, start_daphne, stop_process

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"


def user(authenticated: bool = True, staff: bool = False, active: bool = True) -> object:
    """What the view reads of ``request.user`` (real users from a real session: the
    Chromium test below)."""
    return SimpleNamespace(is_authenticated=authenticated, is_staff=staff, is_active=active)


SNAPSHOT = {
    "host": "web1",
    "pid": 42,
    "server": "tuned daphne",
    "published_at": 1.0,
    "connections": 7,
    "send_queue": {"queued": 3, "max": 2, "connections_with_backlog": 2},
    "counters": {"channels_tuning_dropped_messages_total": {"consumer=A,reason=x": 5}},
    "gc": {"generations": [{"pause_max_ms": 1.5}, {"pause_max_ms": 4.0}, {"pause_max_ms": 2}]},
    "rss_kb": 1000,
    "memory_top": [{"where": "secret.py:1"}],
    "task_groups": [{"coroutine": "Secret._run"}],
}


def request(user) -> object:
    req = RequestFactory().get("/ws-stats/")
    if user is not None:
        req.user = user
    return req


@pytest.mark.parametrize(
    "user, page, json_status",
    [
        (None, 302, 403),  # no AuthenticationMiddleware: anonymous
        (user(authenticated=False), 302, 403),
        (user(staff=False), 403, 403),
        (user(staff=True, active=False), 403, 403),
        (user(staff=True), 200, 200),
    ],
)
@override_settings(
    ROOT_URLCONF="channels_tuning.urls",
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
)
async def test_only_staff_see_the_page_and_its_data(user, page, json_status):
    response = await views.live(request(user))
    assert response.status_code == page
    if page == 302:
        assert response["Location"].startswith("/accounts/login/?next=")
    data = await views.live_snapshots(request(user))
    assert data.status_code == json_status
    if json_status == 403:
        assert b"processes" not in data.content


def test_the_data_is_a_chosen_subset_of_each_snapshot():
    summary = views.summary(SNAPSHOT)
    assert summary == {
        "process": "web1:42",
        "server": "tuned daphne",
        "published_at": 1.0,
        "connections": 7,
        "queued": 3,
        "dropped": 5,
        "gc_pause_max_ms": 4.0,
        "rss_kb": 1000,
    }
    assert "secret" not in json.dumps(summary).lower()


async def test_planted_snapshots_are_skipped_and_counted_not_served(tmp_path):
    """Values under the stats keys are not trusted: a non-JSON file, a JSON list, a
    snapshot with markup for a number are skipped (counted); a host with markup stays
    text (the page escapes it); the view answers 200."""
    import time

    from channels_tuning.runtime.counters import LAYER_ERRORS

    tmp_path.chmod(0o700)
    good = {**SNAPSHOT, "published_at": time.time(), "host": "<img src=x onerror=alert(1)>"}
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "junk.json").write_text("<script>")
    (tmp_path / "list.json").write_text("[1, 2]")
    bad_number = {**SNAPSHOT, "pid": 43, "published_at": time.time(), "connections": "<b>"}
    (tmp_path / "number.json").write_text(json.dumps(bad_number))
    staff = request(user(staff=True))
    with override_settings(CHANNELS_TUNING={"STATS_BACKEND": "files", "STATS_DIR": str(tmp_path)}):
        response = await views.live_snapshots(staff)
    assert response.status_code == 200
    processes = json.loads(response.content)["processes"]
    assert [p["process"] for p in processes] == ["<img src=x onerror=alert(1)>:42"]
    assert LAYER_ERRORS.get(("stats_unreadable",)) == 3


def test_the_page_escapes_what_snapshots_say():
    page = (REPO / "channels_tuning/templates/channels_tuning/live.html").read_text()
    assert "${escape(process)}" in page and "${escape(points.at(-1).server)}" in page
    assert "${process}" not in page


def django_admin(env: dict[str, str], code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.slow
@pytest.mark.e2e
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
    subprocess.run(
        [sys.executable, "example_project/manage.py", "migrate", "-v", "0"],
        cwd=REPO,
        env=env,
        check=True,
        timeout=120,
    )

    def session_of(name: str, staff: bool) -> str:
        return django_admin(
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
