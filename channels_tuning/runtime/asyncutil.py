"""Small asyncio helpers shared by the package."""

from __future__ import annotations

import asyncio
import weakref

_semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def loop_semaphore(name: str, size: int) -> asyncio.Semaphore:
    """The semaphore ``name`` of the running loop (one per loop: a semaphore is
    bound to the loop it first waits on, and tests run many loops)."""
    loop = asyncio.get_running_loop()
    per_loop = _semaphores.get(loop)
    if per_loop is None:
        per_loop = _semaphores[loop] = {}
    semaphore = per_loop.get(name)
    if semaphore is None:
        semaphore = per_loop[name] = asyncio.Semaphore(size)
    return semaphore
