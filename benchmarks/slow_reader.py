"""Slow-reader benchmark: plain Channels on plain daphne vs the tuned consumer on
the tuned server, in one run, same machine, same load.

One client completes the handshake and never reads (4 KiB SO_RCVBUF); a normal
client reads everything; a producer broadcasts RATE x 1 KiB messages per second
through a real redis-server for SECONDS. Prints RSS start/peak/end of each daphne
process and the ratio of growths.

    python benchmarks/slow_reader.py [--seconds 20] [--rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import websockets  # noqa: E402
from channels_redis.core import RedisChannelLayer  # noqa: E402

from tests.support.processes import (  # noqa: E402
    RedisServer,
    open_non_reading_client,
    start_daphne,
    start_redis,
    stop_process,
)


async def run_case(
    name: str, tuned: bool, path: str, redis: RedisServer, seconds: float, rate: int, tmp: Path
) -> dict:
    daphne = start_daphne(
        tmp,
        tuned=tuned,
        redis=redis,
        tuning={"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None},
    )
    port = daphne.port

    def rss_mb() -> float:
        return daphne.rss_kb() / 1024

    try:
        group = f"bench-{name}"
        normal = await websockets.connect(f"ws://127.0.0.1:{port}{path}{group}/", max_size=None)
        slow = open_non_reading_client(port, f"{path}{group}/")
        await asyncio.sleep(1.0)
        start = peak = rss_mb()
        layer = RedisChannelLayer(hosts=[redis.url], capacity=10_000)
        total = int(seconds * rate)
        got = 0
        curve: list[float] = []

        async def reader() -> None:
            nonlocal got
            try:
                while got < total:
                    frame = await asyncio.wait_for(normal.recv(), 10)
                    if not frame.startswith("{"):
                        got += 1
            except (TimeoutError, websockets.ConnectionClosed):
                pass

        task = asyncio.ensure_future(reader())
        began = time.monotonic()
        for i in range(total):
            await layer.group_send(group, {"type": "relay", "text": f"{i:06d}" + "x" * 1018})
            if i % 50 == 49:
                rss = rss_mb()
                peak = max(peak, rss)
                if (i + 1) % (rate * 2) == 0:  # one point of the curve every 2 s
                    curve.append(rss)
                delay = began + (i + 1) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        await asyncio.wait([task], timeout=15)
        peak = max(peak, rss_mb())
        end = rss_mb()
        slow.close()
        await normal.close()
        await layer.close_pools()
        return {
            "case": name,
            "curve": curve,
            "start": start,
            "peak": peak,
            "end": end,
            "growth": peak - start,
            "normal_got": got,
            "sent": total,
        }
    finally:
        stop_process(daphne.proc)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        redis = start_redis(tmp)
        try:
            plain = await run_case(
                "plain", False, "/ws/plain-group/", redis, args.seconds, args.rate, tmp
            )
            tuned = await run_case("tuned", True, "/ws/group/", redis, args.seconds, args.rate, tmp)
        finally:
            stop_process(redis.proc)
    print(f"slow reader, {args.rate} x 1 KiB/s for {args.seconds:.0f} s, one non-reading client")
    print("| server | RSS start MB | peak MB | end MB | growth MB | normal client got |")
    print("|---|---|---|---|---|---|")
    for row in (plain, tuned):
        print(
            f"| {row['case']} | {row['start']:.1f} | {row['peak']:.1f} | {row['end']:.1f} "
            f"| {row['growth']:.1f} | {row['normal_got']}/{row['sent']} |"
        )
    ratio = plain["growth"] / max(tuned["growth"], 0.1)
    print(f"growth ratio plain/tuned: {ratio:.1f}x")
    print()
    print("RSS curve, MB (one point every 2 s of broadcasting)")
    print("| s | plain | tuned |")
    print("|---|---|---|")
    for n, (a, b) in enumerate(zip(plain["curve"], tuned["curve"], strict=True), start=1):
        print(f"| {2 * n} | {a:.1f} | {b:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
