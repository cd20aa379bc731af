"""The benchmarks cannot rot: the report runs end to end with small counts (real
servers, real Redis), and the table the documentation shows is the one the report wrote."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"


def block(path: Path) -> str:
    text = path.read_text()
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()


def test_measurements_page_table_is_the_reports():
    docs = block(REPO / "docs" / "benchmarks.md")
    assert "| workload | plain Channels | channels-tuning | websockets (ceiling)" in docs
    assert "python -m benchmarks.report" in docs


@pytest.mark.slow
def test_report_runs_with_small_counts(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.report", "--quick", "--plots", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    titles = [row.split(" | ")[0] for row in rows[1:]]
    for expected in (
        "idle memory",
        "handshakes per second",
        "burst",
        "behind AuthMiddlewareStack",
        "slow reader",
        "codec",
    ):
        assert any(expected in title for title in titles), (expected, titles)
    delivered = next(row for row in rows if "delivered, %" in row)
    # Every message reached every subscriber in the quick burst, on all three servers.
    assert re.findall(r"\| (\d+\.\d) ", delivered)[:3] == ["100.0"] * 3, delivered
    assert re.search(r"\[(\d+)/\1\]", result.stderr)  # the progress display, to its end
    # The plots: four PNG files, each a real picture (PNG signature, not empty).
    pngs = sorted(path.name for path in tmp_path.glob("*.png"))
    assert pngs == [
        "burst-latency.png",
        "burst-throughput.png",
        "gc-pauses.png",
        "slow-reader-rss.png",
    ]
    for path in tmp_path.glob("*.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_plots_shown_are_the_reports_and_exist():
    """The measurements page shows the report's committed plots."""
    docs = (REPO / "docs" / "benchmarks.md").read_text()
    shown = re.findall(r"\((_static/benchmarks/[\w-]+\.png)\)", docs)
    for name in ("slow-reader-rss", "burst-latency", "burst-throughput", "gc-pauses"):
        assert f"_static/benchmarks/{name}.png" in shown
    for path in shown:
        assert (REPO / "docs" / path).read_bytes()[:4] == b"\x89PNG", path
