"""Slow-reader benchmark: plain Channels on plain daphne vs the tuned consumer on
the tuned server (with the kernel's autotuned send buffers, and with the default
``--ws-send-buffer``), in one run, same machine, same load.

SLOW clients complete the handshake and never read (4 KiB SO_RCVBUF); a normal
client reads everything; a producer broadcasts RATE x 1 KiB messages per second
through a real redis-server for SECONDS. Prints RSS start/peak/end of each server
process, the peak growth of the kernel's TCP memory (``/proc/net/sockstat``, all
sockets of the machine: run it on a quiet one) and the ratio of growths.

    python benchmarks/slow_reader.py [--seconds 20] [--rate 500] [--slow 1]
    python benchmarks/slow_reader.py --seconds 8 --slow 200      # issue #16's case
"""

from __future__ import annotations

import argparse
import asyncio
import re
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
    start_daphne,
    start_redis,
    stop_process,
    tcp_kernel_bytes,
)
from tests.support.rawws import open_non_reading_client  # noqa: E402


def tcp_kernel_mb() -> float:
    return tcp_kernel_bytes() / 2**20


async def run_case(
    name: str,
    tuned: bool,
    path: str,
    redis: RedisServer,
    seconds: float,
    rate: int,
    tmp: Path,
    slow_clients: int = 1,
    extra_args: tuple[str, ...] = (),
) -> dict:
    daphne = start_daphne(
        tmp,
        tuned=tuned,
        redis=redis,
        tuning={"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None},
        extra_args=extra_args,
    )
    port = daphne.port

    def rss_mb() -> float:
        return daphne.rss_kb() / 1024

    try:
        group = "bench-" + re.sub(r"[^\w.-]+", "-", name)
        normal = await websockets.connect(f"ws://127.0.0.1:{port}{path}{group}/", max_size=None)
        slow = [open_non_reading_client(port, f"{path}{group}/") for _ in range(slow_clients)]
        await asyncio.sleep(1.0)
        start = peak = rss_mb()
        kernel_start = kernel_peak = tcp_kernel_mb()
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
            except (asyncio.TimeoutError, websockets.ConnectionClosed):
                pass

        task = asyncio.ensure_future(reader())
        began = time.monotonic()
        for i in range(total):
            await layer.group_send(group, {"type": "relay", "text": f"{i:06d}" + "x" * 1018})
            if i % 50 == 49:
                rss = rss_mb()
                peak = max(peak, rss)
                kernel_peak = max(kernel_peak, tcp_kernel_mb())
                if (i + 1) % (rate * 2) == 0:  # one point of the curve every 2 s
                    curve.append(rss)
                delay = began + (i + 1) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        await asyncio.wait([task], timeout=15)
        peak = max(peak, rss_mb())
        end = rss_mb()
        for sock in slow:
            sock.close()
        await normal.close()
        await layer.close_pools()
        return {
            "case": name,
            "curve": curve,
            "start": start,
            "peak": peak,
            "end": end,
            "growth": peak - start,
            "kernel_growth": kernel_peak - kernel_start,
            "normal_got": got,
            "sent": total,
        }
    finally:
        stop_process(daphne.proc)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--slow", type=int, default=1, help="non-reading clients")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        redis = start_redis(tmp)
        try:
            common = (redis, args.seconds, args.rate, tmp, args.slow)
            plain = await run_case("plain", False, "/ws/plain-group/", *common)
            autotuned = await run_case(
                "tuned, kernel autotuning", True, "/ws/group/", *common, ("--ws-send-buffer", "0")
            )
            tuned = await run_case("tuned", True, "/ws/group/", *common)
        finally:
            stop_process(redis.proc)
    print(
        f"slow readers, {args.rate} x 1 KiB/s for {args.seconds:.0f} s, "
        f"{args.slow} non-reading client(s)"
    )
    print(
        "| server | RSS start MB | peak MB | end MB | RSS growth MB | kernel TCP memory "
        "growth MB | normal client got |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = (plain, autotuned, tuned)
    for row in rows:
        print(
            f"| {row['case']} | {row['start']:.1f} | {row['peak']:.1f} | {row['end']:.1f} "
            f"| {row['growth']:.1f} | {row['kernel_growth']:.1f} "
            f"| {row['normal_got']}/{row['sent']} |"
        )
    for row in rows[1:]:
        total = row["growth"] + row["kernel_growth"]
        ratio = (plain["growth"] + plain["kernel_growth"]) / max(total, 0.1)
        print(f"RSS + kernel growth, plain / {row['case']}: {ratio:.1f}x")
    print()
    print("RSS curve, MB (one point every 2 s of broadcasting)")
    print("| s | " + " | ".join(row["case"] for row in rows) + " |")
    print("|---" * (len(rows) + 1) + "|")
    for n, points in enumerate(zip(*(row["curve"] for row in rows), strict=True), start=1):
        print(f"| {2 * n} | " + " | ".join(f"{p:.1f}" for p in points) + " |")


if __name__ == "__main__":
    asyncio.run(main())
