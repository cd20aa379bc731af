"""Log every event-loop callback and collection that holds the loop (a diagnostic).

Put this directory first on ``PYTHONPATH`` of a server process with
``CT_SLOW_CALLBACK_LOG=<prefix>`` in its environment (``benchmarks/stall.py
--slow-callbacks`` does both) and the process appends to ``<prefix>.<pid>`` (each
forked worker to its own) one line per callback that ran over ``CT_SLOW_CALLBACK_MS``
(4 by default) and per collection over half that: ``<unix time> <ms> <CPU ms>
<what>`` (the process's CPU time over the same span), where
a task's step is named by its coroutine (``task Scheduler._run``), a collection by its
generation (``GC gen1``) and a Twisted timed call, which clears its callback once run,
shows as ``None``.

With ``CT_GC_CENSUS=<prefix>`` as well, each collection of generation 1 or 2 first
writes to ``<prefix>.<pid>`` what it is about to scan: ``gc.get_count()``, the
generations' sizes, the frozen count, the references the scanned objects hold and
their eight commonest types. Taking it costs milliseconds inside the callback that
triggered the collection (it is not in the collection's own figure): a run with it
shows what the collections scan, not how long the loop is held. Session 48 found with
it that the idle window's longest collection is the first interval round after the
connections opened, scanning what the opening left in generation 1 (docs/gc.md).

It wraps ``asyncio.events.Handle._run`` (a private method), so every callback of
the process pays one more Python call: a diagnostic for benchmarks, never for
production, and it shadows any other ``sitecustomize`` on the path. Session 37 found
with it the three loops that held an idle server at 19 000 connections (docs/gc.md).
"""

import os

if os.environ.get("CT_SLOW_CALLBACK_LOG"):
    import asyncio
    import asyncio.events
    import gc
    import time

    _threshold = float(os.environ.get("CT_SLOW_CALLBACK_MS", "4")) / 1000

    def _open_log():  # type: ignore[no-untyped-def]
        log = f"{os.environ['CT_SLOW_CALLBACK_LOG']}.{os.getpid()}"
        return open(log, "a", buffering=1)

    _out = _open_log()

    def _reopen_in_child() -> None:
        # A --workers group forks after loading: each worker logs to its own file.
        global _out, _census
        _out = _open_log()
        _census = _open_census()

    os.register_at_fork(after_in_child=_reopen_in_child)
    _original_run = asyncio.events.Handle._run
    _perf = time.perf_counter
    # The process's CPU over the same span: on a busy machine a callback that took 30 ms
    # of the clock with 3 ms of CPU waited for a core (the kernel's, not the loop's).
    _cpu = time.thread_time

    def _describe(callback: object) -> str:
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, asyncio.Task):
            coro = owner.get_coro()
            return "task " + getattr(coro, "__qualname__", repr(coro))
        return " ".join(repr(callback).split())[:200]

    def _timed_run(self: asyncio.events.Handle) -> None:
        callback = self._callback  # read first: a Twisted timed call clears its own
        started, cpu_started = _perf(), _cpu()
        _original_run(self)
        took = _perf() - started
        if took > _threshold:
            cpu = (_cpu() - cpu_started) * 1000
            _out.write(f"{time.time():.3f} {took * 1000:.1f} {cpu:.1f} {_describe(callback)}\n")

    asyncio.events.Handle._run = _timed_run  # type: ignore[method-assign]

    _collection_started = [0.0, 0.0]

    # CT_GC_CENSUS=<prefix>: before each collection of generation 1 or 2, what it is
    # about to scan, to ``<prefix>.<pid>`` (counts, generation sizes, the commonest types
    # and the references they hold), taken before the collection's clock starts.
    def _open_census():  # type: ignore[no-untyped-def]
        if not os.environ.get("CT_GC_CENSUS"):
            return None
        return open(f"{os.environ['CT_GC_CENSUS']}.{os.getpid()}", "a", buffering=1)

    _census = _open_census()

    def _take_census(generation: int) -> None:
        import collections

        generations = [gc.get_objects(generation=g) for g in range(3)]
        scanned = [o for objects in generations[: generation + 1] for o in objects]
        types = collections.Counter(type(o).__qualname__ for o in scanned)
        references = sum(len(gc.get_referents(o)) for o in scanned)
        sizes = [len(objects) for objects in generations]
        top = ", ".join(f"{name} {n}" for name, n in types.most_common(8))
        _census.write(
            f"{time.time():.3f} gen{generation} count={gc.get_count()} sizes={sizes} "
            f"frozen={gc.get_freeze_count()} refs={references} | {top}\n"
        )

    def _time_collections(phase: str, info: dict) -> None:
        if phase == "start":
            if _census is not None and info["generation"]:
                _take_census(info["generation"])
            _collection_started[:] = _perf(), _cpu()
            return
        took = _perf() - _collection_started[0]
        if took > _threshold / 2:
            cpu = (_cpu() - _collection_started[1]) * 1000
            what = f"GC gen{info['generation']}"
            _out.write(f"{time.time():.3f} {took * 1000:.1f} {cpu:.1f} {what}\n")

    gc.callbacks.append(_time_collections)
