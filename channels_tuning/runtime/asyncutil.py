"""Small asyncio helpers shared by the package."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

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


class KeyedLimiter:
    """At most ``size`` holders per key at once (one small semaphore per key in use,
    dropped when its last holder leaves: keys may come from clients, the dict holds
    only the keys being waited on)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._semaphores: dict[str, tuple[asyncio.Semaphore, int]] = {}

    async def acquire(self, key: str, timeout: float | None = None) -> bool:
        """Take a place for ``key``; False if none was free within ``timeout``."""
        semaphore, users = self._semaphores.get(key) or (asyncio.Semaphore(self.size), 0)
        self._semaphores[key] = (semaphore, users + 1)
        try:
            await asyncio.wait_for(semaphore.acquire(), timeout)
        except asyncio.TimeoutError:
            self._leave(key)
            return False
        except BaseException:
            self._leave(key)
            raise
        return True

    def release(self, key: str) -> None:
        self._semaphores[key][0].release()
        self._leave(key)

    def _leave(self, key: str) -> None:
        semaphore, users = self._semaphores[key]
        if users <= 1:
            del self._semaphores[key]
        else:
            self._semaphores[key] = (semaphore, users - 1)

    def __len__(self) -> int:
        """Keys held or waited on now."""
        return len(self._semaphores)


_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, KeyedLimiter]] = (
    weakref.WeakKeyDictionary()
)


def loop_keyed_limiter(name: str, size: int) -> KeyedLimiter:
    """The keyed limiter ``name`` of the running loop (see :func:`loop_semaphore`)."""
    per_loop = _limiters.setdefault(asyncio.get_running_loop(), {})
    limiter = per_loop.get(name)
    if limiter is None:
        limiter = per_loop[name] = KeyedLimiter(size)
    return limiter


async def in_slices(
    items: Sequence[T],
    size: int,
    run: Callable[[Sequence[T]], object],
    *,
    on_cancel: Callable[[Sequence[T]], object] | None = None,
) -> None:
    """``run(part)`` for each ``size`` items of ``items`` in order, the loop serving
    other work between two parts: a step that grows with the connections held the
    loop for as long (docs/gc.md). Cancelled between two parts, it hands the items
    not run yet to ``on_cancel``, then raises."""
    for start in range(0, len(items), size):
        if start:
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                if on_cancel is not None:
                    on_cancel(items[start:])
                raise
        run(items[start : start + size])
