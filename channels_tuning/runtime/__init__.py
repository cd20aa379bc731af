"""Per-process services every package may import: the connection registry, the
counters (:mod:`.counters`), the rate-limited log, the scheduler (connections'
timers and the jobs registered with it), asyncio helpers, shutdown (cleanups to wait
for) and write batches. Nothing here imports the layers, the servers or observability.
"""
