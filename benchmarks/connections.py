"""Connection benchmark: handshakes per second and the cost of an idle connection,
plain Channels, channels-tuning and the ``websockets`` ceiling side by side in one run.

Per server: one process (plain: ``daphne`` with a plain ``AsyncWebsocketConsumer``
that joins a group on the Redis layer; tuned: ``channels-tuning-daphne`` with a
``TunedWebsocketConsumer`` joining a group, package defaults (heartbeats on);
ceiling: ``benchmarks/ceiling.py``). After 5 warm-up connections and a collection, a
client process opens N connections with K handshakes in flight (the rate is N over the
time the client took), and they stay open, idle: RSS growth, asyncio tasks and
GC-tracked objects per connection are read after a collection.

``--breakdown`` runs the package once more with tracemalloc on (it costs memory of its
own, so never in the run above) and prints the bytes per connection by source file:
where an idle connection's memory is.

    python benchmarks/connections.py [--connections 2000] [--in-flight 50] [--breakdown]
                                     [--profile]   # py-spy during the handshakes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.ceiling import start_ceiling  # noqa: E402
from benchmarks.fanout import cpu_seconds  # noqa: E402
from benchmarks.profiling import sampled  # noqa: E402
from tests.support.processes import (  # noqa: E402
    start_daphne,
    start_redis,
    start_subscribers,
    stop_process,
)

KINDS = ("plain", "tuned", "websockets")
#: Also measurable (--kinds): the tuned consumers on uvicorn and hypercorn.
OTHER_SERVERS = ("uvicorn", "hypercorn")
#: And an existing Channels app with only the server swapped: the plain consumers on
#: channels-tuning-daphne (what the drop-in path saves with no code changed).
PLAIN_ON_TUNED = "plain-on-tuned"
MORE_KINDS = (*OTHER_SERVERS, PLAIN_ON_TUNED)
ROUTES = {
    "plain": "/ws/plain-group/{}/",
    "tuned": "/ws/group/{}/",
    "websockets": "/{}",
    "uvicorn": "/ws/group/{}/",
    "hypercorn": "/ws/group/{}/",
    PLAIN_ON_TUNED: "/ws/plain-group/{}/",
}


def open_connections(
    port: int,
    path: str,
    count: int,
    in_flight: int,
    messages: int = 1,
    source: str | None = None,
) -> tuple:
    """A client process holding ``count`` connections (from the loopback address
    ``source``, if given), listening until ``messages`` were broadcast; (process,
    handshakes per second)."""
    client = start_subscribers(
        port, path, count, max_wait=3600, in_flight=in_flight, messages=messages, source=source
    )
    assert client.stdout is not None
    line = client.stdout.readline().split()
    assert line[0] == "HANDSHAKES", line
    assert client.stdout.readline().strip() == "READY"
    return client, int(line[1]) / float(line[2])


#: Connections one client process holds (each process has its own fd limit).
PER_CLIENT_PROCESS = 5_000


@contextmanager
def idle_clients(
    port: int,
    path: str,
    count: int,
    messages: int = 1,
    spread_sources: bool = False,
    nice: int = 0,
) -> Iterator[list]:
    """``count`` idle connections (answering pings) held by client processes of at
    most :data:`PER_CLIENT_PROCESS` each, killed at the end; yields the processes.
    They report once ``messages`` were broadcast to them and 3 s passed quiet.
    ``spread_sources``: each process connects from a loopback address of its own
    (127.0.1.1, 127.0.1.2...), for more connections to one port than one address has
    ports (about 28 000). ``nice``: the client processes' niceness once started (on
    a machine the servers share with their clients, the kernel then serves the
    servers first: a server's probe measures its own loop, not the clients' CPU)."""
    clients: list = []
    try:
        remaining = count
        while remaining:
            batch = min(remaining, PER_CLIENT_PROCESS)
            source = f"127.0.1.{len(clients) + 1}" if spread_sources else None
            client = open_connections(port, path, batch, 50, messages, source)[0]
            clients.append(client)
            if nice:
                os.setpriority(os.PRIO_PROCESS, client.pid, nice)
            remaining -= batch
        yield clients
    finally:
        for client in clients:
            client.kill()
            client.wait()


#: The tests' consumers behind AllowedHostsOriginValidator(AuthMiddlewareStack(...)).
BEHIND_AUTH = "tests.e2e_asgi:application_behind_auth"


def start(kind: str, redis, tmp: Path, tuning: dict | None = None, application: str = ""):
    if kind == "websockets":
        return start_ceiling(tmp)
    extra = {"application": application} if application else {}
    if kind in OTHER_SERVERS:
        return start_daphne(tmp, server=kind, redis=redis, tuning=tuning, **extra)
    tuned_server = kind in ("tuned", PLAIN_ON_TUNED)
    return start_daphne(tmp, tuned=tuned_server, redis=redis, tuning=tuning, **extra)


async def measure(
    kind: str,
    redis,
    tmp: Path,
    count: int,
    in_flight: int,
    profile: bool = False,
    application: str = "",
    types: bool = False,
) -> dict:
    """``application``: another ASGI application of the tests (:data:`BEHIND_AUTH`).
    ``types``: GC-tracked objects by type, frozen ones included (the package's freeze
    rounds take an idle connection's objects out of ``gc.get_objects()``)."""
    group = f"idle-{kind}-{time.monotonic_ns()}"
    path = ROUTES[kind].format(group)  # before the start: a kind without a route leaks none
    server = start(kind, redis, tmp, application=application)
    clients = []
    try:
        warm, _ = open_connections(server.port, path, 5, 2)
        clients.append(warm)
        await asyncio.sleep(1.0)
        before, rss_before = server.stats(gc_collect=True, with_frozen=types), server.rss_kb()
        cpu_before = cpu_seconds(server.app_pid)
        with sampled(server.app_pid) if profile else nullcontext() as samples:
            client, rate = open_connections(server.port, path, count, in_flight)
        handshake_cpu = cpu_seconds(server.app_pid) - cpu_before
        clients.append(client)
        await asyncio.sleep(2.0)  # the last upgrades settle (group joins, first ticks)
        after, rss_after = server.stats(gc_collect=True, with_frozen=types), server.rss_kb()
        if kind == "websockets":
            held = after["connections"]
        else:  # every consumer joined the group (the plain ones are not in the registry)
            held = int(redis.cli("ZCARD", f"asgi:group:{group}"))
        assert held == count + 5, f"{kind}: {held} connections held, not {count + 5}"
    finally:
        for client in clients:
            client.kill()
            client.wait()
        stop_process(server.proc)
    return {
        "kind": kind,
        "handshakes_per_s": rate,
        "handshake_cpu_us": handshake_cpu / count * 1e6,
        "kb": (rss_after - rss_before) / count,
        "tasks": (after["tasks"] - before["tasks"]) / count,
        # Frozen ones included: the package's freeze rounds take an idle connection's
        # objects out of gc.get_objects() (the count was negative without them).
        "objects": (after["gc_tracked"] - before["gc_tracked"]) / count,
        "types": Counter(after.get("gc_types", {})) - Counter(before.get("gc_types", {})),
        "profile": samples.summary() if samples is not None else "",
    }


def package_of(filename: str) -> str:
    """A short owner for a source file: the top-level package (or the stdlib module)."""
    parts = Path(filename).parts
    for marker in ("site-packages", "lib-dynload"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            return rest[0].removesuffix(".py") if rest else filename
    if "channels_tuning" in parts:
        return "channels_tuning"
    if "tests" in parts or "example_project" in parts:
        return "example/tests"
    return f"stdlib:{Path(filename).stem}"


async def breakdown(redis, tmp: Path, count: int) -> tuple[list, list]:
    # No stats rounds: each would list the top allocations (memory_top), which under
    # tracemalloc at thousands of connections holds the loop for minutes.
    server = start("tuned", redis, tmp, tuning={"TRACEMALLOC": 1, "STATS_INTERVAL": None})
    path = ROUTES["tuned"].format(f"idle-traced-{time.monotonic_ns()}")
    clients = []
    try:
        warm, _ = open_connections(server.port, path, 5, 2)
        clients.append(warm)
        await asyncio.sleep(1.0)
        before = server.stats(gc_collect=True)["traced"]
        client, _ = open_connections(server.port, path, count, 50)
        clients.append(client)
        await asyncio.sleep(2.0)
        after = server.stats(gc_collect=True)["traced"]
    finally:
        for client in clients:
            client.kill()
            client.wait()
        stop_process(server.proc)
    by_owner: Counter[str] = Counter()
    by_site: Counter[str] = Counter()
    for site in set(before) | set(after):
        grown = after.get(site, 0) - before.get(site, 0)
        filename, _, line = site.rpartition(":")
        by_owner[package_of(filename)] += grown
        by_site[f"{package_of(filename)} {Path(filename).name}:{line}"] += grown
    return (
        [(owner, size / count) for owner, size in by_owner.most_common()],
        [(site, size / count) for site, size in by_site.most_common(25)],
    )


def table(rows: list[dict], count: int, in_flight: int) -> str:
    by_kind = {row["kind"]: row for row in rows}
    lines = [
        f"| {count} connections, {in_flight} handshakes in flight | "
        + " | ".join(by_kind)
        + " | tuned/plain | tuned/websockets |",
        "|---" * (len(by_kind) + 3) + "|",
    ]
    metrics = (
        ("handshakes per second", "handshakes_per_s", "{:.0f}"),
        ("server CPU per handshake, µs", "handshake_cpu_us", "{:.0f}"),
        ("idle RSS per connection, KB", "kb", "{:.1f}"),
        ("asyncio tasks per connection", "tasks", "{:.2f}"),
        ("GC-tracked objects per connection", "objects", "{:.0f}"),
    )
    for title, key, fmt in metrics:
        cells = [fmt.format(by_kind[kind][key]) for kind in by_kind]
        ratios = []
        for other in ("plain", "websockets"):
            if "tuned" in by_kind and other in by_kind and by_kind[other][key]:
                ratios.append(f"{by_kind['tuned'][key] / by_kind[other][key]:.2f}")
            else:
                ratios.append("")
        lines.append(f"| {title} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="of " + ",".join(KINDS + MORE_KINDS)
    )
    parser.add_argument("--breakdown", action="store_true", help="tracemalloc by source file")
    parser.add_argument("--types", action="store_true", help="GC-tracked objects by type")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy on each server during the handshakes"
    )
    args = parser.parse_args()
    unknown = set(args.kinds.split(",")) - set(KINDS + MORE_KINDS)
    if unknown:
        parser.error(f"unknown --kinds {','.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        redis = start_redis(tmp)
        try:
            rows = []
            for kind in args.kinds.split(","):
                started = time.monotonic()
                rows.append(
                    await measure(
                        kind,
                        redis,
                        tmp,
                        args.connections,
                        args.in_flight,
                        args.profile,
                        types=args.types,
                    )
                )
                print(f"{kind}: done in {time.monotonic() - started:.0f} s", file=sys.stderr)
            print(table(rows, args.connections, args.in_flight))
            if args.profile:
                for row in rows:
                    print(f"\n{row['kind']}: where the server's CPU went during the handshakes")
                    print(row["profile"])
            if args.types:
                for row in rows:
                    print(f"\n{row['kind']}: GC-tracked objects per connection by type")
                    for name, n in row["types"].most_common(15):
                        print(f"  {n / args.connections:6.2f}  {name}")
            if args.breakdown:
                owners, sites = await breakdown(redis, tmp, args.connections)
                print("\ntuned: traced bytes per idle connection by package")
                for owner, size in owners:
                    if abs(size) >= 10:
                        print(f"  {size:8.0f}  {owner}")
                print("\ntuned: the 25 largest allocation sites, bytes per idle connection")
                for site, size in sites:
                    print(f"  {size:8.0f}  {site}")
        finally:
            stop_process(redis.proc)


if __name__ == "__main__":
    asyncio.run(main())
