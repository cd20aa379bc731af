"""What a test's consumers left behind: :func:`assert_no_leaks`.

:func:`assert_no_leaks` is the in-process twin of ``manage.py wsstats --check``:
call it at the end of a test, after the clients are gone, to fail the test when a
consumer left something behind::

    async def test_chat_room_cleans_up():
        communicator = WebsocketCommunicator(application, "/ws/chat/lobby/")
        await communicator.connect()
        await communicator.disconnect()
        await assert_no_leaks()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from channels.layers import get_channel_layer

from ..layers.capabilities import local_groups, redis_prefix
from ..layers.redis import keys
from ..observability import snapshot
from ..observability.leaks import redis_memberships, snapshot_problems
from ..runtime.registry import registry


async def find_leaks(
    *, layer: Any = None, ignore_tasks: Iterable[asyncio.Task[Any]] = (), timeout: float = 5.0
) -> list[str]:
    """What tuned consumers left in this process, waiting up to ``timeout`` seconds
    for cleanups still in progress. An empty list means nothing leaked.

    Checked: open connections in the registry, consumer instances still alive, frames
    still queued, tracked group memberships, tasks other than the caller's, the
    package's services and ``ignore_tasks``, and the channel layer's group members
    (in-memory layer; Redis layer: members whose channel is one of this process's)."""
    layer = layer if layer is not None else get_channel_layer()
    ignored = {asyncio.current_task(), *ignore_tasks}
    deadline = time.monotonic() + timeout
    while True:
        problems = await _problems(layer, ignored)
        if not problems or time.monotonic() >= deadline:
            return problems
        await asyncio.sleep(0.05)


async def assert_no_leaks(**kwargs: Any) -> None:
    """Raise AssertionError listing what :func:`find_leaks` found."""
    problems = await find_leaks(**kwargs)
    assert not problems, "channels-tuning leaks:\n" + "\n".join(problems)


async def _problems(layer: Any, ignored: set[Any]) -> list[str]:
    if registry:
        return [f"{len(registry)} connections still registered"]
    snap = snapshot.snapshot()
    others = [task for task in asyncio.all_tasks() if task not in ignored]
    snap["task_groups"] = _summary(others)
    problems = snapshot_problems(snap)
    problems.extend(await _layer_members(layer))
    return problems


def _summary(tasks: list[asyncio.Task[Any]]) -> list[dict[str, Any]]:
    return [
        {"coroutine": getattr(task.get_coro(), "__qualname__", repr(task)), "count": 1}
        for task in tasks
    ]


async def _layer_members(layer: Any) -> list[str]:
    if layer is None:
        return []
    if redis_prefix(layer) is not None:
        found = await redis_memberships(layer, keys.process_channel(layer))
        return [f"{found} group memberships of this process left in Redis"] if found else []
    groups = local_groups(layer)  # the in-memory layer
    members = sum(len(list(channels)) for channels in (groups or {}).values())
    return [f"{members} group memberships left in the channel layer"] if members else []
