"""What counting costs per message (issue #6): the traffic counters that run for
every frame in and out, timed and checked for allocations.

Compares one call of the per-frame counting code with the measured daphne CPU per
broadcast delivery of the tuned server (13.9 µs, benchmarks/fanout.py) and checks
that a million calls leave the allocator's block count and the GC's counts as they
were (no allocation that outlives the call, no GC-tracked object).

    python benchmarks/stats_cost.py
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from channels_tuning.consumers.outbound import _count_out
from channels_tuning.runtime.counters import TRAFFIC

DELIVERY_US = 13.9  # daphne CPU per delivery, tuned server (README, fan-out benchmark)
N = 1_000_000


def main() -> None:
    message = {"type": "websocket.send", "text": "x" * 100}
    for _ in range(10_000):
        _count_out(message)
    gc.collect()
    blocks, tracked = sys.getallocatedblocks(), gc.get_count()[0]
    started = time.perf_counter()
    for _ in range(N):
        _count_out(message)
    per_call = (time.perf_counter() - started) / N * 1e6
    started = time.perf_counter()
    for _ in range(N):
        pass
    per_call -= (time.perf_counter() - started) / N * 1e6  # minus the loop itself
    print(f"counting one frame: {per_call * 1000:.0f} ns")
    print(f"share of the CPU per delivery ({DELIVERY_US} µs): {100 * per_call / DELIVERY_US:.2f} %")
    print(
        f"after {N} frames: allocated blocks {sys.getallocatedblocks() - blocks:+d}, "
        f"GC-tracked allocations {gc.get_count()[0] - tracked:+d}, "
        f"messages_out {TRAFFIC.messages_out}"
    )


if __name__ == "__main__":
    main()
