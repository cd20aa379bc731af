"""pytest fixtures for projects that test tuned consumers (opt-in: in the project's
top-level ``conftest.py``, ``pytest_plugins = ["channels_tuning.testing.plugin"]``).

- ``ct_layer``: the default channel layer, emptied before and after the test (with a
  fresh in-memory history store on the package's in-memory layer), so that groups,
  history and messages of one test never reach another; at the end the package's
  scheduler and presence tasks are ended before the test's loop closes;
- ``ct_no_leaks``: after the test, :func:`~channels_tuning.testing.assert_no_leaks`
  (every connection ended, no consumer, task or membership left);
- ``ct_fake_clock``: the package's clock for the test, moved only by ``await
  ct_fake_clock.advance(seconds)`` (:func:`~channels_tuning.testing.fake_clock`);
- ``ct_live_server``: the project's ``ASGI_APPLICATION`` (or what a
  ``ct_live_application`` fixture returns) on channels-tuning-daphne, a real process on
  a free port (:class:`~channels_tuning.testing.live.LiveServer`), with the environment
  of ``ct_live_env`` (a fixture to override; empty by default) and ``REDIS_URL`` of
  ``ct_live_redis``: a ``redis-server`` of the test's own when it is installed, else
  None (the project's settings decide what ``REDIS_URL`` means).

Async fixtures: they need pytest-asyncio (``asyncio_mode = "auto"``, or
``@pytest.mark.asyncio`` on the tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.layers import get_channel_layer

from ..layers.capabilities import history_store, presence_store
from ..layers.history import MemoryHistory
from ..runtime.scheduler import scheduler
from .clock import FakeClock, fake_clock
from .leaks import assert_no_leaks
from .live import LiveRedis, LiveServer


@pytest.fixture
async def ct_layer() -> AsyncIterator[Any]:
    """The default channel layer, empty at the start and flushed at the end."""
    layer: Any = get_channel_layer()
    if layer is None:
        raise RuntimeError("ct_layer needs CHANNEL_LAYERS")
    await layer.flush()
    if isinstance(history_store(layer), MemoryHistory):
        layer.history = MemoryHistory()
    yield layer
    await layer.flush()
    # Not left pending on the test's loop as it closes.
    await scheduler.stop()
    presence = presence_store(layer)
    if presence is not None:
        await presence.stop()


@pytest.fixture
async def ct_no_leaks() -> AsyncIterator[None]:
    """Fail the test if its consumers left something behind."""
    yield
    await assert_no_leaks()


@pytest.fixture
def ct_fake_clock() -> Iterator[FakeClock]:
    """The package's clock, standing still but for ``advance()``, for the test."""
    with fake_clock() as clock:
        yield clock


@pytest.fixture
def ct_live_application() -> str:
    """What ``ct_live_server`` serves: Django's ``ASGI_APPLICATION``."""
    from django.conf import settings

    application = getattr(settings, "ASGI_APPLICATION", None)
    if not application:
        raise RuntimeError("ct_live_server needs ASGI_APPLICATION or a ct_live_application")
    return str(application)


@pytest.fixture
def ct_live_env() -> dict[str, str]:
    """More environment for ``ct_live_server``'s process (override to set some)."""
    return {}


@pytest.fixture
def ct_live_redis(tmp_path: Path) -> Iterator[LiveRedis | None]:
    """A ``redis-server`` of this test's own, or None when it is not installed."""
    if not LiveRedis.available():
        yield None
        return
    with LiveRedis(tmp_path) as redis:
        yield redis


@pytest.fixture
def ct_live_server(
    tmp_path: Path,
    ct_live_application: str,
    ct_live_env: dict[str, str],
    ct_live_redis: LiveRedis | None,
) -> Iterator[LiveServer]:
    """The application on channels-tuning-daphne, stopped after the test."""
    env = dict(ct_live_env)
    if ct_live_redis is not None:
        env.setdefault("REDIS_URL", ct_live_redis.url)
    with LiveServer(ct_live_application, tmp_path, env=env) as server:
        yield server
