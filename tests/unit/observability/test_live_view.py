"""The staff-only live view: access control and what the page is given (in-process;
the page in headless Chromium against real servers: tests/e2e/test_live_view.py)."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
from django.test import RequestFactory, override_settings

from channels_tuning import views
from tests.support.processes import REPO

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


async def test_polls_within_half_an_interval_share_one_answer(tmp_path):
    """Open pages poll as often as they like: the snapshots are read and summarised
    once per half STATS_INTERVAL, the polls meanwhile get that answer."""
    import time

    tmp_path.chmod(0o700)
    staff = request(user(staff=True))
    first = {**SNAPSHOT, "published_at": time.time()}
    (tmp_path / "first.json").write_text(json.dumps(first))
    tuning = {"STATS_BACKEND": "files", "STATS_DIR": str(tmp_path), "STATS_INTERVAL": 0.4}
    with override_settings(CHANNELS_TUNING=tuning):
        one = json.loads((await views.live_snapshots(staff)).content)["processes"]
        second = {**SNAPSHOT, "pid": 43, "published_at": time.time()}
        (tmp_path / "second.json").write_text(json.dumps(second))
        same = json.loads((await views.live_snapshots(staff)).content)["processes"]
        time.sleep(0.25)
        later = json.loads((await views.live_snapshots(staff)).content)["processes"]
    assert [p["process"] for p in one] == [p["process"] for p in same] == ["web1:42"]
    assert sorted(p["process"] for p in later) == ["web1:42", "web1:43"]
