"""asyncio's registry of tasks, read without copying it (CPython's private names).

``asyncio.all_tasks()`` copies every task of the process into a list and then
filters it: at 19 000 connections (38 000 tasks) 11 ms on a quiet machine and
20-30 ms with clients on the same two cores, a stop of the loop each time a stats
round (every ``STATS_INTERVAL``) or the metrics copy of multiprocess mode (every
second) asked for the count. A count and a sample of a few hundred tasks need less:
the length of the weak set the tasks are registered in, and its first entries.

=============================================  ===================================
upstream symbol                                used for
=============================================  ===================================
``asyncio.tasks._all_tasks`` (a ``WeakSet``,   the number of tasks (its length) and
Python 3.10-3.11)                              a sample (its first entries)
``asyncio.tasks._scheduled_tasks`` (a          the same, on Python 3.12-3.13,
``WeakSet``) and ``_eager_tasks`` (a set)      where eager tasks are kept apart
``asyncio.all_tasks`` reading them             that these are still where tasks are
=============================================  ===================================

The count is an estimate: the registry also holds finished tasks not yet freed and
the tasks of other loops, so it is scaled by the share of the sample that is this
loop's and pending (exact when the sample is everything). Where that share is under
half (a process of many loops, such as a test run), the count is exact, through
``asyncio.all_tasks()``. Without the hook (Python
3.14 keeps tasks in per-thread lists; ``check()`` finds the change) every call is
``asyncio.all_tasks()``, as before.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Collection
from typing import Any

from ..exceptions import UpstreamChanged
from ._checker import Checker, source_of

LIBRARY = "asyncio"

features = {"task_registry": True}

_source = source_of

#: Whether ``apply(check())`` ran in this process (``sampled_tasks`` runs it if not).
_applied = {"done": False}


def _names() -> tuple[str, ...]:
    if hasattr(asyncio.tasks, "_scheduled_tasks"):
        return ("_scheduled_tasks", "_eager_tasks")
    return ("_all_tasks",)


def _registries() -> tuple[Collection[Any], ...]:
    return tuple(getattr(asyncio.tasks, name) for name in _names())


def check() -> list[UpstreamChanged]:
    checker = Checker(LIBRARY, lambda obj: _source(obj))
    names = _names()
    for name in names:
        registry = getattr(asyncio.tasks, name, None)
        if not isinstance(registry, (weakref.WeakSet, set)):
            checker.changed(f"asyncio.tasks.{name}", f"not a set: {type(registry).__name__}")
    # all_tasks() still reads them: they are where tasks are registered.
    checker.contains(asyncio.tasks.all_tasks, "asyncio.all_tasks", [f"list({names[0]})"])
    return checker.problems


def apply(problems: list[UpstreamChanged]) -> None:
    _applied["done"] = True
    if any(problem.library == LIBRARY for problem in problems):
        features["task_registry"] = False


def sampled_tasks(
    loop: asyncio.AbstractEventLoop, limit: int
) -> tuple[int, list[asyncio.Task[Any]]]:
    """How many tasks ``loop`` has pending (an estimate beyond ``limit``), and up to
    ``limit`` of them."""
    if not _applied["done"]:
        # A process where compat.self_check() did not run (under uvicorn, say) checks
        # at its first use: on another Python the registry may hold only some tasks.
        apply(check())
    if features["task_registry"]:
        try:
            sampled = _sampled(loop, limit)
        except RuntimeError:
            sampled = None  # another thread changed the registry while it was read
        if sampled is not None:
            return sampled
    tasks = asyncio.all_tasks(loop)
    return len(tasks), list(itertools.islice(tasks, limit))


def _sampled(
    loop: asyncio.AbstractEventLoop, limit: int
) -> tuple[int, list[asyncio.Task[Any]]] | None:
    """None: the sample is mostly other loops' or finished tasks, so scaling it says
    little (a test process with many loops); the caller counts exactly instead."""
    registries = _registries()
    registered = sum(len(registry) for registry in registries)
    read = 0
    sample: list[asyncio.Task[Any]] = []
    for task in itertools.islice(itertools.chain(*registries), limit):
        read += 1
        if task.get_loop() is loop and not task.done():
            sample.append(task)
    if read >= registered or not read:
        return len(sample), sample
    if 2 * len(sample) < read:
        return None
    return round(registered * len(sample) / read), sample
