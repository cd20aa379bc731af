"""What a keepalive ping and its pong cost the server, per ping (issue #25).

One server process holds N idle connections whose clients answer every protocol ping
(as browsers and client libraries do) and pings them every ``--interval`` seconds
(2 s: ten times daphne's default, so that the pings are most of the work). The
server's CPU over the window divided by the pings sent in it is the cost of one ping
and its pong, everything else the idle process does included (the package's stats
rounds, daphne's loops). Plain Channels on daphne, the package on
``channels-tuning-daphne`` and the ``websockets`` ceiling, in one run:

    python benchmarks/keepalive.py [--connections 5000] [--interval 2] [--window 20]
                                   [--kinds plain,tuned,websockets] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
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


def start_server(kind: str, interval: int, redis, tmp: Path):
    if kind == "websockets":
        return start_ceiling(tmp, ping_interval=interval)
    return start_daphne(
        tmp, tuned=kind == "tuned", redis=redis, extra_args=("--ping-interval", str(interval))
    )


async def measure(
    kind: str, count: int, interval: int, window: float, redis, tmp: Path, profile: bool
) -> dict:
    server = start_server(kind, interval, redis, tmp)
    path = ROUTES[kind].format(f"keepalive-{kind}-{time.monotonic_ns()}")
    try:
        with idle_clients(server.port, path, count) as clients:
            await asyncio.sleep(3 + interval)  # the handshakes' work is over
            before = cpu_seconds(server.app_pid)
            with sampled(server.app_pid) if profile else nullcontext() as spied:
                await asyncio.sleep(window)
            cpu = cpu_seconds(server.app_pid) - before
            alive = all(client.poll() is None for client in clients)
    finally:
        stop_process(server.proc)
    pings = count / interval * window
    return {
        "kind": kind,
        "cpu_percent": 100 * cpu / window,
        "us_per_ping": 1e6 * cpu / pings,
        "clients_alive": alive,
        "profile": spied.summary() if spied is not None else "",
    }


async def run(kinds: list[str], count: int, interval: int, window: float, profile: bool):
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        redis = start_redis(tmp)
        try:
            rows = []
            for kind in kinds:
                row = await measure(kind, count, interval, window, redis, tmp, profile)
                print(row.pop("profile"), file=sys.stderr)
                rows.append(row)
            return rows
        finally:
            stop_process(redis.proc)


def table(rows: list[dict], count: int, interval: int) -> str:
    ceiling = next((r["us_per_ping"] for r in rows if r["kind"] == "websockets"), None)
    lines = [
        f"{count} idle connections, a ping every {interval} s ({count / interval:.0f}/s)",
        "",
        "| server | CPU % of a core | us per ping and pong | x ceiling | clients kept |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"{row['us_per_ping'] / ceiling:.2f}" if ceiling else "-"
        lines.append(
            f"| {row['kind']} | {row['cpu_percent']:.1f} | {row['us_per_ping']:.1f} | "
            f"{ratio} | {'yes' if row['clients_alive'] else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--interval", type=int, default=2, help="seconds between pings")
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--profile", action="store_true", help="py-spy during each window")
    args = parser.parse_args()
    rows = asyncio.run(
        run(args.kinds.split(","), args.connections, args.interval, args.window, args.profile)
    )
    print(table(rows, args.connections, args.interval))


if __name__ == "__main__":
    main()
