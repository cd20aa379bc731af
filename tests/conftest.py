"""Test rig: Django for unit tests, and real redis-server and daphne processes
(free loopback ports, stopped by PID) for end-to-end tests. The helpers behind the
fixtures live in ``tests/support`` (benchmarks use them too)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

# The fixtures the package ships for projects' tests (ct_layer, ct_no_leaks): used
# here too, so that they stay true.
pytest_plugins = ["channels_tuning.testing.plugin"]

from tests.support.processes import (  # noqa: E402  (Django first)
    DaphneProcess,
    RedisServer,
    start_daphne,
    start_redis,
    stop_process,
)
from tests.support.redis_cluster import RedisCluster, start_redis_cluster  # noqa: E402


@pytest.fixture(autouse=True)
async def _end_background_tasks() -> Any:
    """End the process scheduler's and the layers' presence tasks before the test's
    loop closes, as the plugin's ``ct_layer`` does (no "Task was destroyed but it is
    pending" on older pytest-asyncio)."""
    yield
    from channels.layers import channel_layers

    from channels_tuning.layers.capabilities import presence_store
    from channels_tuning.runtime.scheduler import scheduler

    await scheduler.stop()
    for layer in list(channel_layers.backends.values()):
        presence = presence_store(layer)
        if presence is not None:
            await presence.stop()


@pytest.fixture(autouse=True)
def _reset_stats() -> None:
    from channels_tuning.runtime import counters as stats

    stats.reset()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (for tests that kill, restart or pause it)."""
    server = start_redis(tmp_path)
    yield server
    stop_process(server.proc)


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A Redis Cluster of the test's own: three primaries, a replica each."""
    cluster = start_redis_cluster(tmp_path)
    yield cluster
    cluster.stop()


@pytest.fixture(params=["redis", "cluster"])
def redis_or_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """One redis-server, then a Redis Cluster: the same test on each (both have
    ``env``, ``cli``, ``keys`` and ``layer()``)."""
    if request.param == "redis":
        server = start_redis(tmp_path)
        yield server
        stop_process(server.proc)
    else:
        cluster = start_redis_cluster(tmp_path)
        yield cluster
        cluster.stop()


@pytest.fixture(scope="session")
def _session_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    stop_process(server.proc)


@pytest.fixture
def shared_redis(_session_redis: RedisServer) -> RedisServer:
    """One redis-server for the session, emptied before each test that uses it."""
    if _session_redis.proc.poll() is not None:
        pytest.fail("the session's redis-server died; a test must not stop it")
    _session_redis.cli("FLUSHALL")
    return _session_redis


@pytest.fixture(scope="session")
def _session_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def shared_redis_cluster(_session_redis_cluster: RedisCluster) -> RedisCluster:
    """One Redis Cluster for the session, emptied before each test that uses it."""
    if not all(node.proc.poll() is None for node in _session_redis_cluster.nodes):
        pytest.fail("a node of the session's Redis Cluster died; a test must not stop it")
    for port in _session_redis_cluster.primary_ports():
        _session_redis_cluster.node(port).cli("FLUSHALL")
    return _session_redis_cluster


@pytest.fixture
def daphne_factory(tmp_path: Path) -> Iterator[Any]:
    """Start real daphne processes: ``daphne_factory(tuned=True, redis=..., tuning={...})``."""
    started: list[DaphneProcess] = []

    def start(**kwargs: Any) -> DaphneProcess:
        daphne = start_daphne(tmp_path, **kwargs)
        started.append(daphne)
        return daphne

    yield start
    for daphne in started:
        stop_process(daphne.proc)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers from the folder: every test under tests/e2e starts real processes
    (servers, redis-server, a browser) and is marked ``e2e``; ``slow`` stays by hand
    (it says how long, not where)."""
    e2e = Path(__file__).resolve().parent / "e2e"
    for item in items:
        if e2e in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


#: The quick loop's budget per test (pyproject's ``slow`` marker: "more than about 5 s").
QUICK_TEST_SECONDS = 8.0
_quick_but_long: list[tuple[float, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remembers tests not marked ``slow`` that took well over the marker's 5 s: CI runs
    the quick loop twice more (the version edges), so each one costs CI's 90 minutes
    three times. Named in the summary, not failed (a loaded machine is no bug)."""
    quick = "slow" not in report.keywords
    if report.when == "call" and quick and report.duration > QUICK_TEST_SECONDS:
        _quick_but_long.append((report.duration, report.nodeid))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _quick_but_long:
        title = f"quick tests over {QUICK_TEST_SECONDS:g} s: mark them @pytest.mark.slow"
        terminalreporter.write_sep("=", title)
        for seconds, nodeid in sorted(_quick_but_long, reverse=True):
            terminalreporter.write_line(f"{seconds:6.1f} s  {nodeid}")
