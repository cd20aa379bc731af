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
        global _out
        _out = _open_log()

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

    def _time_collections(phase: str, info: dict) -> None:
        if phase == "start":
            _collection_started[:] = _perf(), _cpu()
            return
        took = _perf() - _collection_started[0]
        if took > _threshold / 2:
            cpu = (_cpu() - _collection_started[1]) * 1000
            what = f"GC gen{info['generation']}"
            _out.write(f"{time.time():.3f} {took * 1000:.1f} {cpu:.1f} {what}\n")

    gc.callbacks.append(_time_collections)
