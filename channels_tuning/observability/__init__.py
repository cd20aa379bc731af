"""What an operator sees: snapshots and their backends (``wsstats``), the Prometheus
exporter, GC tuning and pause monitoring, leak checks, the Grafana dashboard. It reads
the counters of :mod:`channels_tuning.runtime.counters`; nothing below it imports it.
"""
