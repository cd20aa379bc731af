"""The documentation site builds with warnings as errors, and its reference lists every
setting, close code, system check, metric and command option that exists in the code
(the metrics: those of a real scrape of a tuned server under traffic)."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from channels_tuning.checks import check_ids_in_code
from channels_tuning.conf import DEFAULTS
from channels_tuning.wire.closecodes import CloseCode
from tests.support.processes import REPO
from tests.support.waiting import recv_data

# Once, in the main run (tox's edges run without the docs extra).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "docs",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def page_text(site: Path, page: str) -> str:
    source = (site / page).read_text()
    article = source[source.index("<article") : source.index("</article>")]
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", article)))


def test_every_setting_close_code_and_check_is_in_the_reference(site):
    settings = page_text(site, "reference/settings.html")
    assert [key for key in DEFAULTS if f" {key} " not in settings] == []
    # An anchor per setting (reference/settings.html#setting-heartbeat-interval).
    html_source = (site / "reference/settings.html").read_text()
    anchors = {key: "setting-" + key.lower().replace("_", "-") for key in DEFAULTS}
    assert [key for key, anchor in anchors.items() if f'id="{anchor}"' not in html_source] == []
    codes = page_text(site, "reference/close-codes.html")
    assert [c.name for c in CloseCode if f" {int(c)} {c.name} " not in codes] == []
    checks = page_text(site, "reference/checks.html")
    assert [i for i in sorted(check_ids_in_code()) if i not in checks] == []
    commands = page_text(site, "reference/commands.html")
    for option in ("--json", "--watch", "--tasks", "--memory", "--check"):
        assert option in commands


async def test_every_metric_of_a_real_scrape_is_in_the_reference(site, daphne_factory):
    server = daphne_factory(tuned=True)
    async with websockets.connect(server.ws("/ws/echo/")) as ws:
        await ws.send("hello")
        assert await recv_data(ws) == "hello"
        scraped = {name for name, _ in server.metrics() if name.startswith("channels_tuning")}
    reference = page_text(site, "reference/metrics.html")
    # A scrape shows histograms as _bucket/_sum/_count (gauge histograms _gcount,
    # _gsum) series and counters with _total; counters never incremented are absent.
    families = {re.sub(r"_(bucket|sum|count|gsum|gcount|created)$", "", name) for name in scraped}
    missing = sorted(name for name in families if f" {name} " not in reference)
    assert len(families) >= 15 and missing == []


def test_topic_guides_and_the_api_are_documented(site):
    assert "full jitter" in page_text(site, "topics/clients.html")
    assert "haproxy" in page_text(site, "topics/deployment.html").lower()
    api = page_text(site, "reference/api.html")
    for name in ("TunedWebsocketConsumer", "broadcast", "presence_count", "ReconnectingClient"):
        assert name in api
