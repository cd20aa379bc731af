"""Stalls of the event loop with N idle connections in one process (issue #25).

Per count N and per server, one server process holds N idle connections (clients in
processes of at most 5 000 connections each, every one answering the server's
keepalive pings, as every client library does): plain Channels on daphne, the
package on ``channels-tuning-daphne`` (package defaults: heartbeats and the collector
settings as shipped; with ``--former`` also the settings before issue #25: a full
collection every 60 s, no freeze rounds) and the ``websockets`` ceiling with daphne's
keepalive (a ping every 20 s). Then, for ``--window`` seconds, this process probes
the server's loop: ``GET /_ping`` on a new connection every 0.2 s from 127.0.0.2
(:data:`PROBE_SOURCE`), timed from connect to the last byte. Per row:

- worst stall: the longest probe or the longest collection in the window, whichever
  is longer (a collection stops the loop; a probe sees whatever else does);
- probe p50 / p99 / max;
- server CPU over the window, % of one core (heartbeats, timers, the collector);
- collections in the window per generation and the longest full one;
- memory per connection (RSS growth over N, after the clients connected).

N = 0 is the probe alone against each server with nothing open: its own round trip,
the floor under the p50 of the other rows.

With ``--broadcast``, after the window one 100-byte message goes to every held
connection (``broadcast()`` on the package, ``group_send`` to a relaying handler on
plain Channels, ``websockets.broadcast`` on the ceiling) while the loop is probed every
20 ms: delivered, time to the last delivery, server CPU per delivery (the idle rate of
the window taken out) and the longest probe meanwhile.

With ``--rounds K`` (and ``--broadcast``), K such messages go out one after another,
each :data:`ROUND_GAP` seconds after the server's CPU fell back to its idle rate (so a
slow server's rounds do not overlap), and each round gets its own CPU per delivery:
from the server's CPU between the round's send and the last of its frames to arrive
(the clients say when, per message), less the idle rate over that span. The first
round comes after the idle window and pays for what the window let go cold; the
median of the later rounds is the steadier figure, the one to compare changes of the
delivery path with (a single round at 19 000 varied by 1.5x between runs of the same
code).

With ``--slow-callbacks``, each daphne server (plain or the package's; not the
ceiling) logs every callback that held its loop over 4 ms and every collection over
2 ms (``benchmarks/slow_callbacks/``), and each row prints what held the loop during
its window, grouped and longest first: the way to find *what* a worst stall or a p99
is, not only how long.

    python benchmarks/stall.py [--connections 1000,5000,19000] [--window 60]
                               [--kinds plain,tuned,websockets] [--former]
                               [--broadcast] # then one message to all N
                               [--rounds K]  # K messages, each measured on its own
                               [--profile]   # py-spy: where the idle CPU goes
                               [--slow-callbacks]  # what held the loop, by callback
                               [--probe-source 127.0.0.2]  # 127.0.0.1: as before 2026-12-06
                               [--plot DIR]  # stalls.png

The fd limit of these machines is 20 000 per process: 19 000 is the most one server
can hold next to its own files.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import slow_callbacks  # noqa: E402
from benchmarks.ceiling import start_ceiling  # noqa: E402
from benchmarks.connections import ROUTES, idle_clients  # noqa: E402
from benchmarks.fanout import (  # noqa: E402
    PlainRedisLayer,
    cpu_seconds,
    cpu_seconds_between,
    payload,
    publish_plain,
    publish_tuned,
    thread_cpu_ns,
)
from benchmarks.profiling import sampled  # noqa: E402
from channels_tuning.layers import RedisChannelLayer  # noqa: E402
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
#: Probes while the broadcast is delivered (it takes a fraction of a second).
BROADCAST_PROBE_EVERY = 0.02
#: Seconds between the end of one round of ``--rounds`` and the next (the clients
#: wait for the last round before their 3 s of quiet count).
ROUND_GAP = 1.0
#: A round has ended once the server's CPU over this many seconds is within
#: :data:`QUIET_MARGIN` of a core of its idle rate (at most :data:`ROUND_LIMIT` s).
QUIET_SPAN = 0.1
QUIET_MARGIN = 0.1
ROUND_LIMIT = 120.0
DAPHNE_PING_INTERVAL = 20.0
#: The probes' source address, not the idle clients' 127.0.0.1: a connect() to the
#: server's port from an address whose ephemeral ports the clients hold makes the
#: kernel search past the ports in use for that server (19 000 of ~28 000), which at
#: 19 000 was 1.0 ms of the probe's 2.6 ms p50: a cost of the clients' machine, not of
#: the server's loop. From 127.0.0.2 the probe's connect takes what it takes with
#: nothing open (docs/benchmarks.md). ``--probe-source 127.0.0.1``: as before 2026-12-06.
PROBE_SOURCE = "127.0.0.2"


async def probe(port: int, source: str = PROBE_SOURCE) -> float:
    """Seconds from connect to the end of the answer of GET /_ping, from ``source``."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(b"GET /_ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    await reader.read()
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed


async def probe_and_wait(port: int, every: float, samples: list[float], source: str) -> None:
    """One probe appended to ``samples``, then the pause before the next."""
    samples.append(await asyncio.wait_for(probe(port, source), 30))
    await asyncio.sleep(every)


async def probe_for(
    port: int, window: float, every: float = PROBE_EVERY, source: str = PROBE_SOURCE
) -> list[float]:
    """Probe every ``every`` s for ``window`` s."""
    samples: list[float] = []
    ends = time.monotonic() + window
    while time.monotonic() < ends:
        await probe_and_wait(port, every, samples, source)
    return samples


async def probe_until(
    port: int, stop: asyncio.Event, every: float, samples: list[float], source: str
) -> None:
    """Probe every ``every`` s until ``stop`` is set, into the caller's ``samples``."""
    while not stop.is_set():
        await probe_and_wait(port, every, samples, source)


@dataclass(frozen=True)
class Options:
    """What a row measures besides its server and its count (the command's flags)."""

    #: Seconds of the idle window the loop is probed over.
    window: float
    #: The probes' source address (:data:`PROBE_SOURCE`).
    probe_source: str = PROBE_SOURCE
    #: py-spy on the server during the window (and the broadcast).
    profile: bool = False
    #: After the window, ``rounds`` messages to every held connection.
    broadcast: bool = False
    rounds: int = 1
    #: Log what holds a daphne server's loop (``benchmarks/slow_callbacks/``).
    slow_callbacks: bool = False


async def publish_once(kind: str, server, redis, group: str, seq: int = 0) -> None:
    if kind == "websockets":
        import websockets

        async with websockets.connect(server.ws("/pub")) as producer:
            await producer.send(payload(seq))
            await asyncio.sleep(0.5)  # the server reads it before the producer leaves
    else:  # as the fan-out benchmark publishes
        plain = kind == "plain"
        layer = (PlainRedisLayer if plain else RedisChannelLayer)(hosts=[redis.url])
        await (publish_plain if plain else publish_tuned)(layer, group, seq)
        await layer.close_pools()


async def broadcast_to_all(
    kind: str,
    server,
    redis,
    group: str,
    clients: list,
    idle_cpu: float,
    options: Options,
) -> dict:
    """One message to every held connection (``options.rounds`` of them, one after another),
    the loop probed meanwhile (see the module docstring). The clients report 3 s after
    the last frame they got, once the last round's frames came."""
    samples: list[tuple[float, dict[int, int]]] = []
    probes: list[float] = []
    stop_probing = asyncio.Event()

    async def sample_cpu() -> None:
        while True:
            samples.append((time.time(), thread_cpu_ns(server.app_pid)))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample_cpu())
    await asyncio.sleep(0.05)
    rounds = options.rounds
    with sampled(server.app_pid) if options.profile else nullcontext() as spied:
        prober = asyncio.create_task(
            probe_until(
                server.port, stop_probing, BROADCAST_PROBE_EVERY, probes, options.probe_source
            )
        )
        for seq in range(rounds):
            if seq:
                await until_idle(samples, idle_cpu)
                await asyncio.sleep(ROUND_GAP)
            await publish_once(kind, server, redis, group, seq)
        await asyncio.sleep(2.0)
        stop_probing.set()
        await prober
    if spied is not None:
        print(f"{kind}: the server during the broadcast\n{spied.summary()}", file=sys.stderr)
    reports = await client_reports(clients)
    sampler.cancel()
    per_round = [round_figures(seq, reports, samples, idle_cpu) for seq in range(rounds)]
    first = per_round[0]
    later = [figures["us_per_delivery"] for figures in per_round[1:]]
    return {
        **first,
        "clients_without_report": sum(not report["reported"] for report in reports),
        "probe_max_ms": max(probes) * 1000,
        "rounds": per_round,
        "later_us_per_delivery": statistics.median(later) if later else None,
    }


async def until_idle(samples: list[tuple[float, dict[int, int]]], idle_cpu: float) -> None:
    """Until the server's CPU over the last :data:`QUIET_SPAN` seconds of ``samples``
    (read every 10 ms) is back near its idle rate, at most :data:`ROUND_LIMIT` s."""
    deadline = time.time() + ROUND_LIMIT
    await asyncio.sleep(QUIET_SPAN)
    while time.time() < deadline:
        newest = samples[-1]
        oldest = next(sample for sample in samples if sample[0] >= newest[0] - QUIET_SPAN)
        span = newest[0] - oldest[0]
        if span > QUIET_SPAN / 2:
            rate = cpu_seconds_between(oldest[1], newest[1]) / span
            if rate < idle_cpu + QUIET_MARGIN:
                return
        await asyncio.sleep(0.02)


def round_figures(
    seq: int, reports: list[dict], samples: list[tuple[float, dict[int, int]]], idle_cpu: float
) -> dict:
    """Delivered, ms to the last delivery and server µs per delivery of message ``seq``:
    the server's CPU from the sample before it was sent to the first sample after its
    last frame arrived, less the idle rate over that span."""
    seen = [report["by_seq"][str(seq)] for report in reports if str(seq) in report["by_seq"]]
    if not seen:
        return {"delivered": 0, "last_delivery_ms": 0.0, "us_per_delivery": 0.0}
    delivered = sum(count for count, _, _ in seen)
    sent_at = seen[0][2]
    last = max(arrived for _, arrived, _ in seen)
    before = next((sample for sample in reversed(samples) if sample[0] <= sent_at), samples[0])
    after = next((sample for sample in samples if sample[0] >= last), samples[-1])
    busy = cpu_seconds_between(before[1], after[1]) - idle_cpu * (after[0] - before[0])
    return {
        "delivered": delivered,
        "last_delivery_ms": (last - sent_at) * 1000,
        "us_per_delivery": max(busy, 0.0) / max(delivered, 1) * 1e6,
    }


#: How long the clients may take to report after a broadcast (they report 3 s after
#: their last frame).
REPORT_TIMEOUT = 120.0


async def client_reports(clients: list) -> list[dict]:
    """Each client process' JSON report (``tests/support/fanout_client.py``). A client
    that has not reported within :data:`REPORT_TIMEOUT` (none of its connections got a
    frame: it waits for a first one) counts as having received nothing
    (``"reported": False``), so the run still says how many were delivered. One thread
    per client: the default executor (6 threads on 2 cores) would queue the readers of
    the clients that did report behind those that never will."""

    def read(client: Any) -> dict:
        line = client.stdout.readline()
        return {**json.loads(line), "reported": True} if line else NO_REPORT

    loop = asyncio.get_running_loop()
    readers = concurrent.futures.ThreadPoolExecutor(max(len(clients), 1))
    try:
        pending = [loop.run_in_executor(readers, read, client) for client in clients]
        done, late = await asyncio.wait(pending, timeout=REPORT_TIMEOUT)
        reports = [future.result() if future in done else NO_REPORT for future in pending]
        for client, future in zip(clients, pending, strict=True):
            if future in late:
                client.kill()  # its reader thread sees the end of its output and ends
    finally:
        # Not waited for on the loop: a reader still in readline() ends when its
        # client's output does (killed, or at the caller's cleanup).
        readers.shutdown(wait=False)
    return reports


#: What a client that never reported counts as.
NO_REPORT: dict = {
    "got": 0,
    "latencies": [],
    "max_gap": 0.0,
    "closed": 0,
    "by_seq": {},
    "reported": False,
}


def collections_between(before: list[dict], after: list[dict]) -> tuple[list[int], list[float]]:
    """Per generation, from two ``gc`` snapshots of the stats endpoint: the collections
    in between and the longest pause (0 where none ran)."""
    collections = [a["collections"] - b["collections"] for a, b in zip(after, before, strict=True)]
    longest = [g["pause_max_ms"] if n else 0.0 for g, n in zip(after, collections, strict=True)]
    return collections, longest


def start_server(
    kind: str,
    redis,
    tmp: Path,
    port: int | None = None,
    extra_args: tuple[str, ...] = (),
    callback_log: Path | None = None,
):
    """On a free port, or on ``port`` (a restart on the same address); ``extra_args``
    for ``channels-tuning-daphne``; ``callback_log``: a daphne server logs what holds
    its loop there (:mod:`benchmarks.slow_callbacks`)."""
    if kind == "websockets":
        return start_ceiling(tmp, ping_interval=DAPHNE_PING_INTERVAL, port=port)
    tuned = kind.startswith("tuned")
    tuning = FORMER_GC if kind == "tuned-former" else None
    logging = slow_callbacks.environment(callback_log) if callback_log is not None else {}
    return start_daphne(
        tmp,
        tuned=tuned,
        redis=redis,
        tuning=tuning,
        port=port,
        extra_args=extra_args if tuned else (),
        **logging,
    )


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(kind: str, count: int, redis, tmp: Path, options: Options) -> dict:
    # The ceiling is not a daphne process: its loop is not logged.
    window = options.window
    logged = options.slow_callbacks and kind != "websockets"
    callback_log = tmp / f"callbacks-{kind}-{count}" if logged else None
    server = start_server(kind, redis, tmp, callback_log=callback_log)
    group = f"stall-{kind}-{time.monotonic_ns()}"
    path = ROUTES[kind.split("-")[0]].format(group)
    sent: dict = {}
    try:
        rss_before = server.rss_kb()
        with idle_clients(server.port, path, count, options.rounds) as clients:
            await asyncio.sleep(5)  # the last upgrades settle
            rss_after = server.rss_kb()
            server.stats(reset_gc_max=True)
            gc_before = server.stats()["gc"]["generations"]
            cpu_before = cpu_seconds(server.app_pid)
            window_began = time.time()
            with sampled(server.app_pid) if options.profile else nullcontext() as spied:
                samples = await probe_for(server.port, window, source=options.probe_source)
            cpu = (cpu_seconds(server.app_pid) - cpu_before) / window
            window_ended = time.time()
            gc_after = server.stats()["gc"]["generations"]
            alive = all(client.poll() is None for client in clients)
            if options.broadcast and count:
                sent = await broadcast_to_all(kind, server, redis, group, clients, cpu, options)
    finally:
        stop_process(server.proc)
    collections, longest = collections_between(gc_before, gc_after)
    held = ""
    if callback_log is not None:
        held = slow_callbacks.summary(slow_callbacks.read(callback_log, window_began, window_ended))
    return {
        "kind": kind,
        "connections": count,
        "clients_alive": alive,
        "worst_stall_ms": max(max(samples) * 1000, max(longest)),
        "probe_p50_ms": statistics.median(samples) * 1000,
        "probe_p99_ms": percentile(samples, 0.99) * 1000,
        "probe_max_ms": max(samples) * 1000,
        "cpu_percent": cpu * 100,
        "collections": collections,
        "longest_ms": longest,
        "kb_per_connection": (rss_after - rss_before) / count if count else 0.0,
        "profile": spied.summary() if spied is not None else "",
        "held_the_loop": held,
        "broadcast": sent,
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
        memory = f"{row['kb_per_connection']:.1f}" if row["connections"] else "—"
        lines.append(
            f"| {row['connections']}, {row['kind']} | {row['worst_stall_ms']:.0f} | "
            f"{row['probe_p50_ms']:.1f} / {row['probe_p99_ms']:.1f} | "
            f"{row['cpu_percent']:.1f} | {gen} ({row['longest_ms'][2]:.0f}) | {memory} |"
        )
    if any(row["broadcast"] for row in rows):
        lines += [
            "",
            "| one message to all N | delivered | last delivery ms | server µs per "
            "delivery | longest probe meanwhile ms | later rounds: µs per delivery, "
            "median (each) |",
            "|---|---|---|---|---|---|",
        ]
        for row in rows:
            sent = row["broadcast"]
            if not sent:
                continue
            lines.append(
                f"| {row['connections']}, {row['kind']} | {sent['delivered']} | "
                f"{sent['last_delivery_ms']:.0f} | {sent['us_per_delivery']:.1f} | "
                f"{sent['probe_max_ms']:.0f} | {later_rounds(sent)} |"
            )
    return "\n".join(lines)


def later_rounds(sent: dict) -> str:
    """The rounds after the first: their median µs per delivery, then each one's, with
    any round that did not reach every connection named ("—" for a single round)."""
    later = sent.get("rounds", [])[1:]
    if not later:
        return "—"
    each = ", ".join(
        f"{figures['us_per_delivery']:.1f}"
        + ("" if figures["delivered"] == sent["delivered"] else f" ({figures['delivered']})")
        for figures in later
    )
    return f"{sent['later_us_per_delivery']:.1f} ({each})"


async def run(counts: list[int], kinds: list[str], options: Options) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = start_redis(tmp)
        try:
            for count in counts:
                for kind in kinds:
                    row = await measure(kind, count, redis, tmp, options)
                    print(row.pop("profile"), file=sys.stderr)
                    held = row.pop("held_the_loop")
                    if held:
                        print(f"{count}, {kind}: what held the loop in the window", file=sys.stderr)
                        print(held, file=sys.stderr)
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
    parser.add_argument("--broadcast", action="store_true", help="then one message to all N")
    parser.add_argument(
        "--rounds", type=int, default=1, help="with --broadcast: this many messages, each measured"
    )
    parser.add_argument(
        "--slow-callbacks",
        action="store_true",
        help="log what holds the loop of a daphne server (callbacks over 4 ms, collections)",
    )
    parser.add_argument(
        "--probe-source", default=PROBE_SOURCE, help="the probes' source address (loopback)"
    )
    parser.add_argument("--plot", type=Path, help="write stalls.png (stall and CPU against N)")
    args = parser.parse_args()
    if args.rounds < 1 or (args.rounds > 1 and not args.broadcast):
        parser.error("--rounds takes a count of 1 or more, with --broadcast")
    kinds = args.kinds.split(",") + (["tuned-former"] if args.former else [])
    counts = [int(n) for n in args.connections.split(",")]
    options = Options(
        window=args.window,
        probe_source=args.probe_source,
        profile=args.profile,
        broadcast=args.broadcast,
        rounds=args.rounds,
        slow_callbacks=args.slow_callbacks,
    )
    rows = asyncio.run(run(counts, kinds, options))
    print(table(rows, args.window))
    if args.plot is not None:
        from benchmarks import plots

        by_count: dict[int, dict[str, dict]] = {}
        for row in rows:
            if row["connections"]:  # the probe alone is a floor, not a point on the curve
                by_count.setdefault(row["connections"], {})[row["kind"]] = row
        args.plot.mkdir(parents=True, exist_ok=True)
        print(f"plot: {plots.stalls(by_count, args.plot)}", file=sys.stderr)


if __name__ == "__main__":
    main()
