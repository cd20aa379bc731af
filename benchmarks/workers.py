"""Memory of N serving processes on one machine: started one by one, or forked by
``channels-tuning-daphne --workers N`` once the application is loaded.

Both groups serve the tests' application (tuned consumers, a group each on the Redis
layer) on one port with ``SO_REUSEPORT``: N ``channels-tuning-daphne --reuse-port``
processes, or one ``--workers N``. The figure is PSS (each shared page counted once
across the processes that share it: what the machine holds), summed over the serving
processes, before any client and with M idle connections spread over them by the
kernel, after ``--hold`` seconds of heartbeats; RSS counts shared pages once per
process and overstates both. The supervisor of ``--workers`` serves nothing but is
counted with its workers: the machine holds it.

A worker writes to a shared page (a reference count of an object it uses) and the
kernel copies that page for it: the pages copied grow with the code a worker runs,
not with its connections, so "PSS added per connection" of the forked group is the
copying spread over this run's connections, and falls as they grow.

    python benchmarks/workers.py [--workers 4] [--connections 4000] [--hold 5]
                                 [--kinds separate forked]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.connections import idle_clients  # noqa: E402
from tests.support.processes import (  # noqa: E402
    free_port,
    memory_mb,
    start_daphne,
    start_redis,
    stop_process,
)

PATH = "/ws/group/{}/"
KINDS = ["separate", "forked"]


def summed(pids: list[int]) -> dict[str, float]:
    rows = [memory_mb(pid) for pid in pids]
    return {key: sum(row[key] for row in rows) for key in ("Rss", "Pss", "Private_Dirty")}


def run(kind: str, count: int, connections: int, hold: float, redis, tmp: Path) -> dict:
    port = free_port()
    if kind == "forked":
        supervisor = start_daphne(
            tmp, tuned=True, redis=redis, port=port, extra_args=("--workers", str(count))
        )
        processes = [supervisor]
        pids = [*supervisor.forked_workers(count), supervisor.pid]
    else:
        processes = [
            start_daphne(tmp, tuned=True, redis=redis, port=port, extra_args=("--reuse-port",))
            for _ in range(count)
        ]
        pids = [process.pid for process in processes]
    try:
        # start_daphne returned once the port listened: for the second process on,
        # at once (the first listens). A process loads in about 2 s.
        time.sleep(3 + count)
        row = {"kind": kind, "before": summed(pids)}
        with idle_clients(port, PATH.format(kind), connections, spread_sources=True):
            time.sleep(hold)
            row["after"] = summed(pids)
            row["per_process_pss"] = [round(memory_mb(pid)["Pss"]) for pid in pids]
        return row
    finally:
        for process in processes:
            stop_process(process.proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--connections", type=int, default=4000)
    parser.add_argument("--hold", type=float, default=5.0, help="seconds idle before reading")
    parser.add_argument(
        "--kinds", nargs="+", choices=KINDS, default=KINDS, help="the groups to measure"
    )
    args = parser.parse_args()
    kinds = [kind for kind in KINDS if kind in args.kinds]  # separate first: the ratio
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        redis = start_redis(tmp)
        try:
            rows = [
                run(kind, args.workers, args.connections, args.hold, redis, tmp) for kind in kinds
            ]
        finally:
            stop_process(redis.proc)
    print(
        f"\n{args.workers} processes, {args.connections} idle connections among them "
        f"for {args.hold:.0f} s, MB (forked: the supervisor included)"
    )
    by_kind = dict(zip(kinds, rows, strict=True))
    names = {"separate": "separate processes", "forked": "--workers (forked)"}
    both = len(by_kind) == 2
    print(
        "| | "
        + " | ".join(names[k] for k in by_kind)
        + (" | forked / separate |" if both else " |")
    )
    print("|---" * (len(by_kind) + 1 + both) + "|")
    for moment in ("before", "after"):
        for key in ("Pss", "Rss", "Private_Dirty"):
            values = [row[moment][key] for row in by_kind.values()]
            label = f"{key}, {'before any client' if moment == 'before' else 'with the clients'}"
            ratio = f" {values[1] / values[0]:.2f} |" if both else ""
            print(f"| {label} | " + " | ".join(f"{v:.0f}" for v in values) + " |" + ratio)
    added = [
        (row["after"]["Pss"] - row["before"]["Pss"]) * 1024 / args.connections
        for row in by_kind.values()
    ]
    print("| PSS added per connection, KB | " + " | ".join(f"{a:.1f}" for a in added) + " |")
    for kind, row in by_kind.items():
        supervisor = " (the last: the supervisor)" if kind == "forked" else ""
        print(f"PSS per process with the clients, {kind}: {row['per_process_pss']}{supervisor}")


if __name__ == "__main__":
    main()
