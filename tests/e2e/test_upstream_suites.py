"""Drop-in, proven with the other projects' own tests: channels-redis' test suite
(core and pub/sub layers) against the tuned layers, and daphne's server, protocol and
CLI tests against ``channels-tuning-daphne``'s classes, each with only its imports
swapped. The suites are those of the installed versions, from their source
distributions on PyPI (Channels publishes no tests in its sdist: its documented
behaviour is run against the tuned consumers in tests/unit/consumers/test_channels_compat.py).

A failure here is a difference from the upstream project: it must be fixed, or listed
in :data:`KNOWN_DIFFERENCES` with the README row that explains it."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from tests.support.processes import REPO, start_sentinel, stop_process

# Whole upstream suites in a subprocess: more than the default per-test timeout.
pytestmark = [pytest.mark.timeout(900)]

#: Upstream test id -> why it may fail against the package (a README difference).
KNOWN_DIFFERENCES: dict[str, str] = {}

PYTEST_INI = """[pytest]
addopts = -p no:django -p no:cacheprovider -p no:randomly
asyncio_mode = auto
timeout = 60
"""


#: daphne's test server process reinstalls Twisted's reactor and imports daphne.server
#: afresh (daphne.testing._reinstall_reactor); the tuned server is imported afresh
#: right after, on the new reactor, and put in its place.
DAPHNE_CONFTEST = """
import os
import sys

import daphne.testing

_reinstall_reactor = daphne.testing._reinstall_reactor


def _reinstall_with_the_tuned_server():
    _reinstall_reactor()
    for name in [m for m in sys.modules if m.startswith("channels_tuning.servers")]:
        del sys.modules[name]
    import daphne.server
    from channels_tuning.servers.daphne import TunedServer

    class MarkedTunedServer(TunedServer):
        def __init__(self, *args, **kwargs):
            open(os.environ["TUNED_MARKER"], "a").close()
            super().__init__(*args, **kwargs)

    daphne.server.Server = MarkedTunedServer


daphne.testing._reinstall_reactor = _reinstall_with_the_tuned_server

# daphne's harness gives a server 2 s to listen, and when it does not, raises without
# stopping it: the suite's process then waits for that child forever. The tuned server
# re-imports its modules in the forked child (above) and runs its start-up checks, and
# on a loaded 2-core machine that took longer (the suite hung until its timeout).
daphne.testing.BaseDaphneTestingInstance.startup_timeout = 30
"""


@pytest.fixture(scope="session")
def sdists(tmp_path_factory: pytest.TempPathFactory):
    """``get(dist)``: the extracted source distribution of the installed ``dist``."""
    root = tmp_path_factory.mktemp("sdists")
    found: dict[str, Path] = {}

    def get(dist: str) -> Path:
        if dist not in found:
            version = importlib.metadata.version(dist)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    f"{dist}=={version}",
                    "-d",
                    str(root),
                ],
                check=True,
                timeout=120,
            )
            archive = next(root.glob(f"{dist.replace('-', '_')}-{version}.tar.gz"), None)
            archive = archive or next(root.glob(f"{dist}-{version}.tar.gz"))
            with tarfile.open(archive) as tar:
                tar.extractall(root, filter="data")
            found[dist] = next(p for p in root.iterdir() if p.is_dir() and version in p.name)
        return found[dist]

    return get


def prepare(source: Path, target: Path, swaps: dict[str, list[tuple[str, str]]]) -> None:
    """Copy the upstream test files into ``target`` with the given text swaps (each
    must match, so a changed upstream file fails loudly instead of testing nothing)."""
    target.mkdir()
    for path in source.glob("*.py"):
        text = path.read_text()
        for old, new in swaps.get(path.name, []):
            assert old in text, f"{path.name} no longer contains {old!r}"
            text = text.replace(old, new)
        (target / path.name).write_text(text)
    (target / "pytest.ini").write_text(PYTEST_INI)


def run(directory: Path, files: list[str], env: dict[str, str]) -> dict[str, str]:
    """Run upstream tests in a subprocess; their outcomes by test id."""
    report = directory / "report.xml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", f"--junitxml={report}", *files],
        cwd=directory,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its servers too are ended, by group, if it hangs
    )
    try:
        output, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise AssertionError(f"the upstream suite hung:\n{output[-4000:]}") from None
    outcomes: dict[str, str] = {}
    for case in ElementTree.parse(report).iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcome = "passed"
        for kind in ("failure", "error", "skipped"):
            if kind in kinds:
                outcome = kind
        outcomes[test_id] = outcome
    assert outcomes, output
    return outcomes


def unexplained_failures(outcomes: dict[str, str]) -> dict[str, str]:
    """Failures not listed in KNOWN_DIFFERENCES, and skips (a suite that skipped its
    tests proved nothing; the upstream suites skip nothing on this machine)."""
    return {
        test: outcome
        for test, outcome in outcomes.items()
        if outcome in ("failure", "error", "skipped") and test not in KNOWN_DIFFERENCES
    }


@pytest.mark.slow
def test_channels_redis_suite_passes_against_the_tuned_layers(sdists, redis_server, tmp_path):
    """channels-redis' tests/unit/core/test_core.py and tests/test_pubsub.py, with
    ``RedisChannelLayer`` and ``RedisPubSubChannelLayer`` imported from the package
    (tests/upstream/layers.py) and their Redis address pointed at the test's own."""
    address = f"127.0.0.1:{redis_server.port}"
    swaps = {
        "test_core.py": [
            (
                "from channels_redis.core import ChannelFull, RedisChannelLayer",
                "from channels_redis.core import ChannelFull\n"
                "from tests.upstream.layers import RedisChannelLayer",
            ),
            ('TEST_HOSTS = ["redis://localhost:6379"]', f'TEST_HOSTS = ["redis://{address}"]'),
            ("redis://localhost:6379/", f"redis://{address}/"),
        ],
        "test_pubsub.py": [
            (
                "from channels_redis.pubsub import RedisPubSubChannelLayer",
                "from tests.upstream.layers import RedisPubSubChannelLayer",
            ),
            ('TEST_HOSTS = ["redis://localhost:6379"]', f'TEST_HOSTS = ["redis://{address}"]'),
        ],
    }
    directory = tmp_path / "channels_redis_tests"
    prepare(sdists("channels-redis") / "tests", directory, swaps)
    outcomes = run(
        directory,
        ["test_core.py", "test_pubsub.py"],
        {"UPSTREAM_REDIS_URL": f"redis://{address}"},
    )
    assert len(outcomes) >= 40, outcomes  # the whole suite ran
    assert unexplained_failures(outcomes) == {}


@pytest.mark.slow
def test_channels_redis_sentinel_suite_passes_against_the_tuned_layers(
    sdists, redis_server, tmp_path
):
    """channels-redis' tests/test_sentinel.py and tests/test_pubsub_sentinel.py, through
    a real Sentinel (master name and password as the suite expects them)."""
    sentinel = start_sentinel(tmp_path, redis_server, name="sentinel", password="channels_redis")
    try:
        address = f'("127.0.0.1", {sentinel.port})'
        swaps = {
            "test_sentinel.py": [
                (
                    "from channels_redis.core import ChannelFull, RedisChannelLayer",
                    "from channels_redis.core import ChannelFull\n"
                    "from tests.upstream.layers import RedisChannelLayer",
                ),
                ('("localhost", 26379)', address),
            ],
            "test_pubsub_sentinel.py": [
                (
                    "from channels_redis.pubsub import RedisPubSubChannelLayer",
                    "from tests.upstream.layers import RedisPubSubChannelLayer",
                ),
                ('("localhost", 26379)', address),
            ],
        }
        directory = tmp_path / "channels_redis_sentinel_tests"
        prepare(sdists("channels-redis") / "tests", directory, swaps)
        outcomes = run(
            directory,
            ["test_sentinel.py", "test_pubsub_sentinel.py"],
            {"UPSTREAM_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}"},
        )
    finally:
        stop_process(sentinel.proc)
    assert len(outcomes) >= 30, outcomes
    assert unexplained_failures(outcomes) == {}


@pytest.mark.slow
def test_daphne_suite_passes_against_the_tuned_server_and_cli(sdists, tmp_path):
    """daphne's tests of its server, WebSocket and HTTP protocols (run by its own
    testing instance, whose ``Server`` is the tuned one) and of its CLI (with
    ``TunedCommandLineInterface`` imported as ``CommandLineInterface``)."""
    marker = tmp_path / "tuned-server-started"
    swaps = {
        "test_cli.py": [
            (
                "from daphne.cli import CommandLineInterface",
                "from channels_tuning.servers.daphne import "
                "TunedCommandLineInterface as CommandLineInterface",
            )
        ]
    }
    directory = tmp_path / "daphne_tests"
    prepare(sdists("daphne") / "tests", directory, swaps)
    (directory / "conftest.py").write_text(DAPHNE_CONFTEST)
    files = [
        "test_cli.py",
        "test_websocket.py",
        "test_http_protocol.py",
        "test_http_request.py",
        "test_http_response.py",
    ]
    # ASGI_THREADS: daphne's test of its executor size runs only with it set.
    outcomes = run(directory, files, {"TUNED_MARKER": str(marker), "ASGI_THREADS": "3"})
    assert marker.exists(), "daphne's tests did not run the tuned server"
    assert len(outcomes) >= 50, outcomes
    assert unexplained_failures(outcomes) == {}
