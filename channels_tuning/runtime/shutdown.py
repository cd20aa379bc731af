"""Ending every connection of this process, and waiting for their cleanups.

A connection's cleanup (its disconnect handler, leaving its groups) runs in a task
of its own, shielded from the cancellation that servers use to stop applications
(:meth:`~channels_tuning.consumers.base.ManagedConnectionMixin._teardown`). Those
tasks are tracked here so that a shutdown can wait for them: a process that exits
with cleanups in flight leaves memberships in Redis.
"""

from __future__ import annotations

import asyncio

from ..wire.closecodes import CloseCode
from .registry import registry

_cleanups: set[asyncio.Task[None]] = set()


def track_cleanup(task: asyncio.Task[None]) -> None:
    """Remember a connection's cleanup task until it is done."""
    _cleanups.add(task)
    task.add_done_callback(_cleanups.discard)


def cleanups_in_flight() -> int:
    return len(_cleanups)


async def close_all_connections(timeout: float, code: int = CloseCode.SERVICE_RESTART) -> int:
    """Close every registered connection with ``code`` (service restart) and
    wait up to ``timeout`` seconds for every cleanup in flight, including those of
    connections that ended before this call. Returns how many were still running."""
    for consumer in registry:
        consumer.close_nowait(code, "server shutting down", urgent=True)
    deadline = asyncio.get_running_loop().time() + timeout
    while _cleanups or len(registry):
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        if _cleanups:
            await asyncio.wait(set(_cleanups), timeout=remaining)
        else:
            # Closed, but the server has not yet told the application (its
            # websocket.disconnect, which starts the cleanup, is on its way).
            await asyncio.sleep(min(0.05, remaining))
    return len(_cleanups) + len(registry)
