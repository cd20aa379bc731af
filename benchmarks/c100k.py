"""C100K on one machine (issue #25): idle connections over several server processes,
heartbeats on, for minutes; then one ``broadcast()`` that reaches all of them.

Per server process: ``channels-tuning-daphne`` with Redis and the package defaults
(a heartbeat every 25 s, the collector settings as shipped), holding
``--per-process`` idle connections that all join one group. The clients are lean
processes of at most 5 000 connections each (``tests/support/fanout_client.py``),
answering pings as every client library does. For ``--window`` seconds this process
probes every server's loop as ``benchmarks/stall.py`` does (``GET /_ping`` on a new
connection every 0.2 s from 127.0.0.2, timed to the last byte). Then one 100-byte
``broadcast()`` to the group, the loops probed every 20 ms meanwhile.

Reported, for all processes together: connections held at the start and at the end
of the window (the servers' count), connections the clients saw closed, server CPU in
% of one core, total server RSS and PSS; per process: the worst stall (the longest
probe or collection), probe p50 / p99, collections per generation; for the broadcast:
delivered, the time to the last delivery, the longest probe meanwhile; for Redis:
its CPU and its calls per second over the window, the busiest commands named (what
the servers' heartbeats, membership refreshes and stats cost it).

    python benchmarks/c100k.py [--processes 5] [--per-process 19800] [--window 600]
                               [--probe-source 127.0.0.2] [--workers]
                               [--slow-callbacks]  # what held each loop
                               [--client-nice 10]  # the servers get the cores first

The fd limit of these machines is 20 000 per process, and a process may not raise it:
a server holds its own files, its Redis connections and the probes next to the
clients', so 19 800 per process is the most that fits (5 processes: 99 000).
``--processes 6 --per-process 16667`` reaches 100 002.

``--workers``: the processes are one ``channels-tuning-daphne --workers N`` (forked
once the application is loaded, sharing its memory) on one port, the clients spread
by the kernel (from several loopback source addresses), the probes as many as the
workers but on the one port: the group's stall, with each worker's collections. The
kernel's choice is a hash, not a count: five workers of 99 000 get about 19 800 ± 130
each, and one that reaches its fd limit refuses connections, so at the limit six
workers of 16 667 are the safe shape::

    python benchmarks/c100k.py --workers --processes 6 --per-process 16667
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import slow_callbacks as slow_callback_logs  # noqa: E402
from benchmarks.connections import ROUTES, idle_clients  # noqa: E402
from benchmarks.fanout import cpu_seconds  # noqa: E402
from benchmarks.stall import (  # noqa: E402
    BROADCAST_PROBE_EVERY,
    PROBE_EVERY,
    PROBE_SOURCE,
    client_reports,
    collections_between,
    percentile,
    probe_for,
    publish_once,
)
from tests.support.processes import (  # noqa: E402
    memory_mb,
    start_daphne,
    start_redis,
    stop_process,
)


def commandstats(url: str) -> dict[str, dict[str, Any]]:
    """Redis's figures so far by command (``INFO commandstats``: calls, usec, ...)."""
    import redis as redis_py

    client = redis_py.Redis.from_url(url)
    try:
        return {
            name.removeprefix("cmdstat_"): figures
            for name, figures in client.info("commandstats").items()
        }
    finally:
        client.close()


def redis_load(redis) -> tuple[float, dict[str, int]]:
    """Redis's CPU seconds so far and its calls so far by command: read at both ends
    of the window, the load the servers' heartbeats, membership refreshes and stats
    put on it (the sizing guidance's "Redis load")."""
    calls = {name: int(figures["calls"]) for name, figures in commandstats(redis.url).items()}
    return cpu_seconds(redis.proc.pid), calls


def load_between(
    before: tuple[float, dict[str, int]], after: tuple[float, dict[str, int]], window: float
) -> dict:
    """Redis's CPU (% of a core) and calls per second, in all and by command."""
    per_command = {
        name: (calls - before[1].get(name, 0)) / window for name, calls in after[1].items()
    }
    busiest = dict(sorted(per_command.items(), key=lambda item: -item[1])[:5])
    return {
        "cpu_percent": (after[0] - before[0]) / window * 100,
        "calls_per_s": sum(per_command.values()),
        "busiest_per_s": {name: rate for name, rate in busiest.items() if rate > 0},
    }


def closes(stats: dict) -> dict[str, float]:
    """A server's close counter by reason (``channels_tuning_closes_total``), from its
    ``/_stats``."""
    counters = stats["counters"]["channels_tuning_closes_total"]
    return {str(labels): value for labels, value in counters.items()}


class Separate:
    """Server processes started one by one, each on a port of its own: each gets
    ``per_process`` clients and probes of its own."""

    forked = False

    def __init__(self, servers: list) -> None:
        self.servers = servers
        self.pids = [server.app_pid for server in servers]
        self.ports = [server.port for server in servers]

    def stats_each(self, reset_gc_max: bool = False) -> list[dict]:
        return [server.stats(reset_gc_max=reset_gc_max) for server in self.servers]


class Forked:
    """One ``channels-tuning-daphne --workers N``: one port, the kernel choosing a
    worker per connection. Its clients all go to the one port, from several source
    addresses; a worker's ``/_stats`` is asked until that worker answered (each request
    is a new connection, so a new choice); the probes are as many as the workers, on
    the one port, so they see the group, not one worker. The supervisor serves nothing
    but is counted in memory and CPU: the machine holds it."""

    forked = True

    def __init__(self, supervisor, pids: list[int]) -> None:
        self.supervisor = supervisor
        self.pids = pids
        self.ports = [supervisor.port]

    def stats_each(self, reset_gc_max: bool = False) -> list[dict]:
        answers = self.supervisor.stats_by_worker(self.pids, reset_gc_max=reset_gc_max)
        return [answers[pid] for pid in self.pids]


def memory_of(pids: list[int], field: str) -> list[float]:
    """``field`` of each process' ``smaps_rollup`` (Rss, Pss...) in MB."""
    return [memory_mb(pid)[field] for pid in pids]


async def hold(
    fleet: Separate | Forked,
    extra_pids: list[int],
    redis,
    group: str,
    per_process: int,
    window: float,
    probe_source: str,
    client_nice: int = 0,
) -> dict:
    """Every server process holds ``per_process`` clients (a forked group: about as
    many, as the kernel spreads them): the window, then the broadcast. ``extra_pids``:
    processes counted in memory and CPU that serve nothing (a supervisor)."""
    path = ROUTES["tuned"].format(group)
    count = len(fleet.pids)
    opening = time.monotonic()
    with ExitStack() as stack:
        clients, served_by = [], []  # each client process and its server's index
        if fleet.forked:
            clients = stack.enter_context(
                idle_clients(
                    fleet.ports[0],
                    path,
                    per_process * count,
                    spread_sources=True,
                    nice=client_nice,
                )
            )
        else:
            for index, port in enumerate(fleet.ports):
                opened = idle_clients(port, path, per_process, nice=client_nice)
                for client in stack.enter_context(opened):
                    clients.append(client)
                    served_by.append(index)
        opened_in = time.monotonic() - opening
        await asyncio.sleep(5)  # the last upgrades settle
        held_at_start = [stats["connections"] for stats in fleet.stats_each()]
        fleet.stats_each(reset_gc_max=True)
        gc_before = [stats["gc"]["generations"] for stats in fleet.stats_each()]
        cpu_pids = fleet.pids + extra_pids
        cpu_before = [cpu_seconds(pid) for pid in cpu_pids]
        redis_before = redis_load(redis)
        probe_ports = fleet.ports * (count if fleet.forked else 1)
        window_began = time.time()
        probes = await asyncio.gather(
            *(probe_for(port, window, PROBE_EVERY, probe_source) for port in probe_ports)
        )
        window_ended = time.time()
        cpu = [
            (cpu_seconds(pid) - before) / window
            for pid, before in zip(cpu_pids, cpu_before, strict=True)
        ]
        redis_in_window = load_between(redis_before, redis_load(redis), window)
        after = fleet.stats_each()
        gc_after = [stats["gc"]["generations"] for stats in after]
        held_at_end = [stats["connections"] for stats in after]
        closed_by_server = [closes(stats) for stats in after]
        rss_mb = memory_of(fleet.pids + extra_pids, "Rss")
        pss_mb = memory_of(fleet.pids + extra_pids, "Pss")

        probers = asyncio.gather(
            *(probe_for(port, 3.0, BROADCAST_PROBE_EVERY, probe_source) for port in probe_ports)
        )
        await publish_once("tuned", None, redis, group)
        during = await probers
        reports = await client_reports(clients)
    latencies = [x for report in reports for x in report["latencies"]]
    per_process = []
    for index in range(count):
        collections, longest = collections_between(gc_before[index], gc_after[index])
        row = {
            "held_at_start": held_at_start[index],
            "held_at_end": held_at_end[index],
            "cpu_percent": cpu[index] * 100,
            "rss_mb": rss_mb[index],
            "pss_mb": pss_mb[index],
            "worst_stall_ms": max(longest),
            "collections": collections,
            "longest_ms": longest,
            "closes": closed_by_server[index],
        }
        if not fleet.forked:  # its own probes, and the clients it served
            samples = probes[index]
            row["worst_stall_ms"] = max(max(samples) * 1000, max(longest))
            row["probe_p50_ms"] = statistics.median(samples) * 1000
            row["probe_p99_ms"] = percentile(samples, 0.99) * 1000
            row["broadcast_probe_max_ms"] = max(during[index]) * 1000
            row["delivered"] = sum(
                report["got"]
                for report, server in zip(reports, served_by, strict=True)
                if server == index
            )
        per_process.append(row)
    samples = [sample for prober in probes for sample in prober]
    return {
        "forked": fleet.forked,
        "opened_in_s": opened_in,
        "client_nice": client_nice,
        "window": (window_began, window_ended),
        "processes": per_process,
        "probe_all": {
            "worst_ms": max(samples) * 1000,
            "p50_ms": statistics.median(samples) * 1000,
            "p99_ms": percentile(samples, 0.99) * 1000,
            "broadcast_max_ms": max(max(prober) for prober in during) * 1000,
        },
        "not_serving": [
            {"pid": pid, "cpu_percent": share * 100, "rss_mb": rss, "pss_mb": pss}
            for pid, share, rss, pss in zip(
                extra_pids, cpu[count:], rss_mb[count:], pss_mb[count:], strict=True
            )
        ],
        "clients_saw_closed": sum(report["closed"] for report in reports),
        "delivered": sum(report["got"] for report in reports),
        "clients_without_report": sum(not report["reported"] for report in reports),
        "last_delivery_ms": max(latencies, default=0.0) * 1000,
        "redis": redis_in_window,
    }


async def run(
    processes: int,
    per_process: int,
    window: float,
    probe_source: str = PROBE_SOURCE,
    workers: bool = False,
    slow_callbacks: bool = False,
    client_nice: int = 0,
) -> dict:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = start_redis(tmp)
        servers: list = []
        callback_log = tmp / "callbacks"
        logging = slow_callback_logs.environment(callback_log) if slow_callbacks else {}
        try:
            if workers:
                supervisor = start_daphne(
                    tmp,
                    tuned=True,
                    redis=redis,
                    extra_args=("--workers", str(processes)),
                    **logging,
                )
                servers.append(supervisor)
                fleet: Separate | Forked = Forked(supervisor, supervisor.forked_workers(processes))
                extra_pids = [supervisor.pid]
                fleet.stats_each()  # every worker serves
            else:
                for _ in range(processes):
                    servers.append(start_daphne(tmp, tuned=True, redis=redis, **logging))
                fleet, extra_pids = Separate(servers), []
            rss_empty_mb = sum(memory_of(fleet.pids + extra_pids, "Rss"))
            pss_empty_mb = sum(memory_of(fleet.pids + extra_pids, "Pss"))
            group = f"c100k-{time.monotonic_ns()}"
            result = await hold(
                fleet, extra_pids, redis, group, per_process, window, probe_source, client_nice
            )
            if slow_callbacks:
                held = slow_callback_logs.read_each(callback_log, *result["window"])
                result["held"] = {
                    pid: slow_callback_logs.summary(held.get(pid, [])) for pid in fleet.pids
                }
        finally:
            for server in servers:
                stop_process(server.proc)
            kept = keep_logs(servers)
            stop_process(redis.proc)
    result["server_logs"] = kept
    result["rss_empty_mb"] = rss_empty_mb
    result["pss_empty_mb"] = pss_empty_mb
    return result


def keep_logs(servers: list) -> str:
    """The server processes' logs, copied out of the run's temporary directory (which
    goes with the run): where a lost broadcast or connection is explained."""
    directory = Path(tempfile.mkdtemp(prefix="c100k-logs-"))
    for index, server in enumerate(servers, 1):
        log = getattr(server, "log", None)
        if log is not None and log.exists():
            shutil.copy(log, directory / f"server-{index}.log")
    return str(directory)


def report(result: dict, processes: int, per_process: int, window: float) -> str:
    rows = result["processes"]
    extra = result["not_serving"]
    total = processes * per_process
    rss = sum(row["rss_mb"] for row in rows + extra)
    pss = sum(row["pss_mb"] for row in rows + extra)
    probes = result["probe_all"]
    kind = "workers of one --workers group" if result["forked"] else "processes"
    niced = f", clients at nice {result['client_nice']}" if result.get("client_nice") else ""
    lines = [
        f"{total} idle connections over {processes} {kind}, {window:.0f} s window "
        f"(opened in {result['opened_in_s']:.0f} s{niced})",
        "",
        "| process | held at start / end | worst stall ms | probe p50 / p99 ms | "
        "CPU % of a core | collections gen0/1/2 (longest ms) | RSS MB | PSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, row in enumerate(rows, 1):
        gen = "/".join(str(n) for n in row["collections"])
        longest = "/".join(f"{ms:.0f}" for ms in row["longest_ms"])
        probe = (
            f"{row['probe_p50_ms']:.1f} / {row['probe_p99_ms']:.1f}"
            if "probe_p50_ms" in row
            else "(the group's)"
        )
        lines.append(
            f"| {index} | {row['held_at_start']} / {row['held_at_end']} | "
            f"{row['worst_stall_ms']:.0f} | {probe} | {row['cpu_percent']:.1f} | "
            f"{gen} ({longest}) | {row['rss_mb']:.0f} | {row['pss_mb']:.0f} |"
        )
    for row in extra:
        lines.append(
            f"| supervisor | | | | {row['cpu_percent']:.1f} | | {row['rss_mb']:.0f} | "
            f"{row['pss_mb']:.0f} |"
        )
    lines += [
        f"| all | {sum(r['held_at_start'] for r in rows)} / "
        f"{sum(r['held_at_end'] for r in rows)} | "
        f"{max(max(r['worst_stall_ms'] for r in rows), probes['worst_ms']):.0f} | "
        f"{probes['p50_ms']:.1f} / {probes['p99_ms']:.1f} | "
        f"{sum(r['cpu_percent'] for r in rows + extra):.1f} | | {rss:.0f} | {pss:.0f} |",
        "",
        f"connections the clients saw closed: {result['clients_saw_closed']}; "
        f"server closes by reason: {[row['closes'] for row in rows]}",
        f"server memory: {rss:.0f} MB in all, {result['rss_empty_mb']:.0f} MB before any "
        f"connection; {(rss - result['rss_empty_mb']) * 1024 / total:.1f} KB per connection",
        f"the same as PSS (pages shared between processes counted once): {pss:.0f} MB in "
        f"all, {result['pss_empty_mb']:.0f} MB before any connection; "
        f"{(pss - result['pss_empty_mb']) * 1024 / total:.1f} KB per connection",
        f"one broadcast() to all: {result['delivered']} of {total} delivered, the last "
        f"after {result['last_delivery_ms']:.0f} ms; longest probe meanwhile "
        f"{probes['broadcast_max_ms']:.0f} ms; delivered per process "
        f"{[row.get('delivered', '?') for row in rows]}; client processes that never "
        f"reported (got nothing): {result['clients_without_report']}",
        f"Redis over the window: {result['redis']['cpu_percent']:.1f} % of a core, "
        f"{result['redis']['calls_per_s']:.0f} calls/s; the busiest, calls/s: "
        + ", ".join(
            f"{name} {rate:.1f}" for name, rate in result["redis"]["busiest_per_s"].items()
        ),
        f"server logs: {result['server_logs']}",
    ]
    for pid, held in result.get("held", {}).items():
        lines += ["", f"what held the loop of {pid} over the window:", held]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--per-process", type=int, default=19_800)
    parser.add_argument("--window", type=float, default=600.0)
    parser.add_argument(
        "--probe-source", default=PROBE_SOURCE, help="the probes' source address (loopback)"
    )
    parser.add_argument(
        "--workers",
        action="store_true",
        help="the processes are one channels-tuning-daphne --workers group on one port",
    )
    parser.add_argument(
        "--slow-callbacks",
        action="store_true",
        help="log what holds each server's loop (benchmarks/slow_callbacks/), printed per process",
    )
    parser.add_argument(
        "--client-nice",
        type=int,
        default=0,
        help="the client processes' niceness (0-19): the servers get the cores first",
    )
    args = parser.parse_args()
    result = asyncio.run(
        run(
            args.processes,
            args.per_process,
            args.window,
            args.probe_source,
            args.workers,
            args.slow_callbacks,
            args.client_nice,
        )
    )
    print(json.dumps(result), file=sys.stderr)
    print(report(result, args.processes, args.per_process, args.window))


if __name__ == "__main__":
    main()
