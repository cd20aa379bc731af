"""The package's metrics in prometheus_client's multiprocess mode.

With ``PROMETHEUS_MULTIPROC_DIR`` set (several worker processes behind one port, as
``uvicorn --workers`` or gunicorn run them), django-prometheus' ``/metrics`` reads only
the files each process writes into that directory; a collector in the default
registry, as this package's is, is not read there. So in that mode each process copies
the package's metrics into prometheus_client metrics, which write those files:

- counters and gauges once per scheduler tick (1 s; nothing per message), counters as
  the increase since the last copy, gauges with ``multiprocess_mode="livesum"`` (the
  sum over the live processes: a dead process' connections stop counting);
- GC pauses as they happen (one histogram observation per collection).

Not in that mode: ``channels_tuning_info`` (one value per process has no sum) and the
gauge histogram ``channels_tuning_send_queue_depth`` (prometheus_client's multiprocess
mode has no gauge histograms; ``channels_tuning_send_queue_messages`` is there).
"""

from __future__ import annotations

import os
from typing import Any

from .gctuning import PAUSE_BUCKETS, monitor

__all__ = ["enabled", "install", "mirror"]


def enabled() -> bool:
    """Whether prometheus_client runs in multiprocess mode in this process."""
    return bool(
        os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        # The lower-case name: prometheus_client's older one, still read by django-prometheus.
        or os.environ.get("prometheus_multiproc_dir")  # noqa: SIM112
    )


class Mirror:
    """Copies the collector's counters and gauges into multiprocess metrics."""

    def __init__(self, collector: Any) -> None:
        from prometheus_client import Histogram

        self.collector = collector
        self._metrics: dict[str, Any] = {}
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._gauge_labels: dict[str, set[tuple[tuple[str, str], ...]]] = {}
        pauses = Histogram(
            "channels_tuning_gc_pause_seconds",
            "Garbage-collection pauses, by generation.",
            ["generation"],
            buckets=PAUSE_BUCKETS,
            registry=None,
        )
        by_generation = [pauses.labels(str(g)) for g in range(3)]
        monitor.observer = lambda generation, seconds: by_generation[generation].observe(seconds)

    def _metric(self, kind: Any, name: str, documentation: str, labelnames: list[str]) -> Any:
        metric = self._metrics.get(name)
        if metric is None:
            options = {"multiprocess_mode": "livesum"} if kind.__name__ == "Gauge" else {}
            metric = kind(name, documentation, labelnames, registry=None, **options)
            self._metrics[name] = metric
        return metric

    def sync(self) -> None:
        from prometheus_client import Counter, Gauge

        for family in self.collector.mirrored_families():
            if family.type == "counter":
                for sample in family.samples:
                    if not sample.name.endswith("_total"):
                        continue
                    labels = tuple(sorted(sample.labels.items()))
                    metric = self._metric(
                        Counter, family.name, family.documentation, [k for k, _ in labels]
                    )
                    key = (sample.name, labels)
                    delta = sample.value - self._last.get(key, 0.0)
                    if delta > 0:
                        (metric.labels(**dict(labels)) if labels else metric).inc(delta)
                    self._last[key] = sample.value
            elif family.type == "gauge":
                seen = set()
                for sample in family.samples:
                    labels = tuple(sorted(sample.labels.items()))
                    metric = self._metric(
                        Gauge, family.name, family.documentation, [k for k, _ in labels]
                    )
                    (metric.labels(**dict(labels)) if labels else metric).set(sample.value)
                    seen.add(labels)
                # A label value that no longer has a sample (a consumer class with no
                # connection left) is 0, not its last value.
                for labels in self._gauge_labels.get(family.name, set()) - seen:
                    self._metrics[family.name].labels(**dict(labels)).set(0)
                self._gauge_labels[family.name] = seen | {
                    labels for labels in self._gauge_labels.get(family.name, set()) if labels
                }


mirror: Mirror | None = None


def install(collector: Any) -> Mirror:
    """Start copying ``collector``'s metrics (the scheduler calls ``mirror.sync()``)."""
    global mirror
    if mirror is None:
        mirror = Mirror(collector)
    return mirror
