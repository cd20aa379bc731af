"""Stalls of the event loop with N idle connections in one process (issue #25).

Per count N and per server, one server process holds N idle connections (clients in
processes of at most 5 000 connections each, every one answering the server's
keepalive pings, as every client library does): plain Channels on daphne, the
package on ``channels-tuning-daphne`` (package defaults: heartbeats and the collector
settings as shipped; with ``--former`` also the settings before issue #25: a full
collection every 60 s, no freeze rounds) and the ``websockets`` ceiling with daphne's
keepalive (a ping every 20 s). Then, for ``--window`` seconds, this process probes
the server's loop: ``GET /_ping`` on a new connection every 0.2 s, timed from connect
to the last byte. Per row:

- worst stall: the longest probe or the longest collection in the window, whichever
  is longer (a collection stops the loop; a probe sees whatever else does);
- probe p50 / p99 / max;
- server CPU over the window, % of one core (heartbeats, timers, the collector);
- collections in the window per generation and the longest full one;
- memory per connection (RSS growth over N, after the clients connected).

    python benchmarks/stall.py [--connections 1000,5000,19000] [--window 60]
                               [--kinds plain,tuned,websockets] [--former]
                               [--profile]   # py-spy: where the idle CPU goes
                               [--plot DIR]  # stalls.png

The fd limit of these machines is 20 000 per process: 19 000 is the most one server
can hold next to its own files.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.ceiling import start_ceiling  # noqa: E402
from benchmarks.connections import ROUTES, idle_clients  # noqa: E402
from benchmarks.fanout import cpu_seconds  # noqa: E402
from benchmarks.profiling import sampled  # noqa: E402
from tests.support.processes import start_daphne, start_redis, stop_process  # noqa: E402

KINDS = ("plain", "tuned", "websockets")
#: The package before issue #25: a full collection every minute, no freeze rounds,
#: generation 1 up to 20 young collections' survivors.
FORMER_GC = {
    "GC_COLLECT_INTERVAL": 60.0,
    "GC_FREEZE_INTERVAL": None,
    "GC_THRESHOLD": [50_000, 20, 100],
}
PROBE_EVERY = 0.2
DAPHNE_PING_INTERVAL = 20.0


async def probe(port: int) -> float:
    """Seconds from connect to the end of the answer of GET /_ping."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /_ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    await reader.read()
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed


async def probe_for(port: int, window: float) -> list[float]:
    samples = []
    ends = time.monotonic() + window
    while time.monotonic() < ends:
        samples.append(await asyncio.wait_for(probe(port), 30))
        await asyncio.sleep(PROBE_EVERY)
    return samples


def start_server(kind: str, redis, tmp: Path):
    if kind == "websockets":
        return start_ceiling(tmp, ping_interval=DAPHNE_PING_INTERVAL)
    tuning = FORMER_GC if kind == "tuned-former" else None
    return start_daphne(tmp, tuned=kind.startswith("tuned"), redis=redis, tuning=tuning)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    kind: str, count: int, window: float, redis, tmp: Path, profile: bool = False
) -> dict:
    server = start_server(kind, redis, tmp)
    path = ROUTES[kind.split("-")[0]].format(f"stall-{kind}-{time.monotonic_ns()}")
    try:
        rss_before = server.rss_kb()
        with idle_clients(server.port, path, count) as clients:
            await asyncio.sleep(5)  # the last upgrades settle
            held = server.stats()["connections"] if kind == "websockets" else None
            rss_after = server.rss_kb()
            server.stats(reset_gc_max=True)
            gc_before = server.stats()["gc"]["generations"]
            cpu_before = cpu_seconds(server.app_pid)
            with sampled(server.app_pid) if profile else nullcontext() as spied:
                samples = await probe_for(server.port, window)
            cpu = (cpu_seconds(server.app_pid) - cpu_before) / window
            gc_after = server.stats()["gc"]["generations"]
            alive = all(client.poll() is None for client in clients)
    finally:
        stop_process(server.proc)
    collections = [
        a["collections"] - b["collections"] for a, b in zip(gc_after, gc_before, strict=True)
    ]
    longest = [g["pause_max_ms"] if n else 0.0 for g, n in zip(gc_after, collections, strict=True)]
    return {
        "kind": kind,
        "connections": count,
        "held": held,
        "clients_alive": alive,
        "worst_stall_ms": max(max(samples) * 1000, max(longest)),
        "probe_p50_ms": statistics.median(samples) * 1000,
        "probe_p99_ms": percentile(samples, 0.99) * 1000,
        "probe_max_ms": max(samples) * 1000,
        "cpu_percent": cpu * 100,
        "collections": collections,
        "longest_ms": longest,
        "kb_per_connection": (rss_after - rss_before) / count,
        "profile": spied.summary() if spied is not None else "",
    }


def table(rows: list[dict], window: float) -> str:
    lines = [
        f"idle connections, {window:.0f} s window | worst stall ms | probe p50 / p99 ms | "
        "server CPU % of a core | collections gen0/1/2 (longest gen2 ms) | KB per connection",
        "|---|---|---|---|---|---|",
    ]
    lines[0] = "| " + lines[0] + " |"
    for row in rows:
        gen = "/".join(str(n) for n in row["collections"])
        lines.append(
            f"| {row['connections']}, {row['kind']} | {row['worst_stall_ms']:.0f} | "
            f"{row['probe_p50_ms']:.1f} / {row['probe_p99_ms']:.1f} | "
            f"{row['cpu_percent']:.1f} | {gen} ({row['longest_ms'][2]:.0f}) | "
            f"{row['kb_per_connection']:.1f} |"
        )
    return "\n".join(lines)


async def run(
    counts: list[int], kinds: list[str], window: float, profile: bool = False
) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = start_redis(tmp)
        try:
            for count in counts:
                for kind in kinds:
                    row = await measure(kind, count, window, redis, tmp, profile)
                    print(row.pop("profile"), file=sys.stderr)
                    print(row, file=sys.stderr, flush=True)
                    rows.append(row)
        finally:
            stop_process(redis.proc)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", default="1000,5000,19000")
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--former", action="store_true", help="also the former GC settings")
    parser.add_argument("--profile", action="store_true", help="py-spy during each window")
    parser.add_argument("--plot", type=Path, help="write stalls.png (stall and CPU against N)")
    args = parser.parse_args()
    kinds = args.kinds.split(",") + (["tuned-former"] if args.former else [])
    counts = [int(n) for n in args.connections.split(",")]
    rows = asyncio.run(run(counts, kinds, args.window, args.profile))
    print(table(rows, args.window))
    if args.plot is not None:
        from benchmarks import plots

        by_count: dict[int, dict[str, dict]] = {}
        for row in rows:
            by_count.setdefault(row["connections"], {})[row["kind"]] = row
        args.plot.mkdir(parents=True, exist_ok=True)
        print(f"plot: {plots.stalls(by_count, args.plot)}", file=sys.stderr)


if __name__ == "__main__":
    main()
