"""GC pauses with thousands of idle connections during a broadcast burst.

One daphne process holds N idle subscribers (clients in 2 separate processes) of
one group on a real redis-server; this process then broadcasts M 100-byte messages
to the group, unthrottled. Each case is a fresh daphne:

- plain: daphne, plain ``AsyncWebsocketConsumer`` + channels-redis ``group_send``
  (``--plain``; the slow reference, about 50 s at 5000 x 20);
- tuned, CPython's GC defaults: ``channels-tuning-daphne``, ``TunedWebsocketConsumer``,
  ``broadcast()``; ``GC_THRESHOLD`` None, no freezing;
- tuned, ``GC_THRESHOLD`` (20000, 2, 100), no freezing (``GC_FREEZE`` False,
  ``GC_FREEZE_INTERVAL`` None): what freezing adds;
- tuned, the package's defaults: that ``GC_THRESHOLD``, ``GC_FREEZE`` at the start and
  the freeze rounds that take settled connections out of the scans.

Prints per case: GC-tracked objects while idle, collections per generation during
the burst, time in the collector and its share of the burst window, the longest and
total gen2 pause, and deliveries per second. The pauses come from the package's
``gc.callbacks`` monitor (also installed for the plain case).

    python benchmarks/gc_pause.py [--subscribers 5000] [--messages 20] [--plain]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


from benchmarks.fanout import run_case  # noqa: E402
from tests.support.processes import start_redis, stop_process  # noqa: E402

TUNED_GC = {"GC_FREEZE": True, "GC_THRESHOLD": [20_000, 2, 100]}
#: No freezing at all: neither at the start (GC_FREEZE) nor the freeze rounds that
#: take settled connections out of the scans (GC_FREEZE_INTERVAL, on by default).
NO_FREEZING = {"GC_FREEZE": False, "GC_FREEZE_INTERVAL": None}
WITHOUT_FREEZING = "tuned, GC_THRESHOLD, no freezing"
DEFAULTS = "tuned, package defaults (GC_THRESHOLD, GC_FREEZE, freeze rounds)"
CASES = {
    "plain": ("plain", {}),
    "tuned, CPython's GC defaults": ("tuned", {**NO_FREEZING, "GC_THRESHOLD": None}),
    WITHOUT_FREEZING: ("tuned", {**TUNED_GC, **NO_FREEZING}),
    DEFAULTS: ("tuned", TUNED_GC),
}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--plain", action="store_true", help="include plain Channels (slow)")
    options = parser.parse_args()
    names = [name for name in CASES if options.plain or name != "plain"]
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        redis = start_redis(tmp)
        try:
            for name in names:
                kind, tuning = CASES[name]
                row = await run_case(
                    kind, redis, options.subscribers, options.messages, None, tmp, tuning
                )
                row["kind"] = name
                rows.append(row)
        finally:
            stop_process(redis.proc)
    print(f"\n{options.subscribers} idle subscribers, {options.messages} x 100 B broadcast")
    print(
        "| case | objects idle | collections gen0/1/2 | GC ms | GC share of window "
        "| gen2 max ms | gen2 total ms | delivered | deliveries/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        share = r["gc_ms"] / 1000 / r["window_s"] if r["window_s"] else float("nan")
        print(
            f"| {r['kind']} | {r['idle_objects']} | {'/'.join(map(str, r['gc_collections']))} "
            f"| {r['gc_ms']:.0f} | {100 * share:.0f} % | {r['gen2_max_ms']:.1f} "
            f"| {r['gen2_ms']:.0f} | {r['got']}/{r['expected']} | {r['deliveries_per_s']:.0f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
