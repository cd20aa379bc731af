"""pytest fixtures for projects that test tuned consumers (opt-in: in the project's
top-level ``conftest.py``, ``pytest_plugins = ["channels_tuning.testing.plugin"]``).

- ``ct_layer``: the default channel layer, emptied before and after the test (with a
  fresh in-memory history store on the package's in-memory layer), so that groups,
  history and messages of one test never reach another;
- ``ct_no_leaks``: after the test, :func:`~channels_tuning.testing.assert_no_leaks`
  (every connection ended, no consumer, task or membership left).

Async fixtures: they need pytest-asyncio (``asyncio_mode = "auto"``, or
``@pytest.mark.asyncio`` on the tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import get_channel_layer

from ..layers.capabilities import history_store
from ..layers.history import MemoryHistory
from .leaks import assert_no_leaks


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


@pytest.fixture
async def ct_no_leaks() -> AsyncIterator[None]:
    """Fail the test if its consumers left something behind."""
    yield
    await assert_no_leaks()
