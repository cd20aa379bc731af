"""Garbage-collector pauses per generation, and the GC tuning settings (the GOGC analog).

A ``gc.callbacks`` hook times every collection: count, total and longest pause, and a
histogram per generation. It costs two ``perf_counter`` calls per collection and
allocates nothing per message.

Tuning (``CHANNELS_TUNING``, applied once start-up is over: as the tuned server starts,
at ``lifespan.startup``, else at the first connection; :mod:`channels_tuning.servers.startup`):

``GC_THRESHOLD``
    ``(gen0, gen1, gen2)`` for ``gc.set_threshold``. At thousands of connections
    CPython's default (700, 10, 10) runs full collections over hundreds of thousands of
    long-lived objects every few seconds of traffic.
``GC_FREEZE``
    ``gc.freeze()`` once, so objects created during start-up (Django, the URL conf, the
    application) are never scanned again.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any, Final

#: Upper bounds (seconds) of the pause histogram buckets; the last bucket is +Inf.
PAUSE_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class GCMonitor:
    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.pause_total = [0.0, 0.0, 0.0]
        self.pause_max = [0.0, 0.0, 0.0]
        self.histogram = [[0] * (len(PAUSE_BUCKETS) + 1) for _ in range(3)]
        self._started = 0.0
        self.installed = False
        #: Called with (generation, seconds) after each collection (multiprocess export).
        self.observer: Callable[[int, float], None] | None = None
        #: The process' settling collector, when GC_FREEZE_INTERVAL is on.
        self.settling: Any = None

    def install(self) -> None:
        if not self.installed:
            gc.callbacks.append(self._callback)
            self.installed = True

    def uninstall(self) -> None:
        if self.installed:
            gc.callbacks.remove(self._callback)
            self.installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = info["generation"]
        self.collections[generation] += 1
        self.pause_total[generation] += pause
        if pause > self.pause_max[generation]:
            self.pause_max[generation] = pause
        bucket = 0
        while bucket < len(PAUSE_BUCKETS) and pause > PAUSE_BUCKETS[bucket]:
            bucket += 1
        self.histogram[generation][bucket] += 1
        if self.observer is not None:
            self.observer(generation, pause)

    def snapshot(self, *, frozen: bool = False) -> dict[str, Any]:
        """The monitor's figures. ``frozen`` adds ``gc.get_freeze_count()``, which walks
        the whole permanent generation (130 ms at 19 000 connections): for a test or a
        one-off look, not for what is published every few seconds."""
        extra = {"frozen": gc.get_freeze_count()} if frozen else {}
        return {
            **extra,
            "threshold": list(gc.get_threshold()),
            "tracked_objects": sum(gc.get_count()),
            "freeze_rounds": getattr(self.settling, "rounds", 0),
            "full_collections_for_frozen_garbage": getattr(self.settling, "full_collections", 0),
            "frozen_garbage_estimate": round(
                self.settling.frozen_garbage_estimate() if self.settling else 0
            ),
            "generations": [
                {
                    "collections": self.collections[g],
                    "pause_total_ms": round(self.pause_total[g] * 1000, 3),
                    "pause_max_ms": round(self.pause_max[g] * 1000, 3),
                    "histogram": list(self.histogram[g]),
                }
                for g in range(3)
            ],
        }


monitor = GCMonitor()
_tuned = False


def apply_tuning(settings: dict[str, Any]) -> None:
    """Install the pause monitor and apply GC_THRESHOLD / GC_FREEZE, once per process."""
    global _tuned
    monitor.install()
    if _tuned:
        return
    _tuned = True
    threshold = settings.get("GC_THRESHOLD")
    if threshold:
        gc.set_threshold(*threshold)
    if settings.get("GC_FREEZE"):
        gc.collect()
        gc.freeze()
