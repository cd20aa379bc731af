"""``manage.py wsstats``: every live WebSocket server process of this project.

Reads the snapshots the processes publish (see ``channels_tuning.observability.snapshot``); exits
with status 1 and a clear message when no server process is publishing.

    manage.py wsstats              table of processes and a totals row
    manage.py wsstats --json       the snapshots, for machines
    manage.py wsstats --watch 2    refresh every 2 s until Ctrl-C
    manage.py wsstats --tasks      asyncio tasks per process, by coroutine and await site
    manage.py wsstats --memory     top allocation sites (needs CHANNELS_TUNING["TRACEMALLOC"])
    manage.py wsstats --check      fail if an idle process still holds consumers,
                                   queued frames, extra tasks or group memberships
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand, CommandError

from channels_tuning.conf import project_settings
from channels_tuning.layers.capabilities import redis_prefix
from channels_tuning.observability import snapshot
from channels_tuning.observability.leaks import (
    extra_tasks,
    redis_memberships,
    snapshot_problems,
)


class Command(BaseCommand):
    help = "Show live WebSocket server processes: connections, queues, drops, memory, GC, tasks."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--json", action="store_true", help="print the snapshots as JSON")
        parser.add_argument("--watch", type=float, metavar="SECONDS", help="refresh until Ctrl-C")
        parser.add_argument("--tasks", action="store_true", help="asyncio tasks per process")
        parser.add_argument("--memory", action="store_true", help="top allocation sites")
        parser.add_argument("--check", action="store_true", help="leak check of idle processes")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["watch"]:
            try:
                while True:
                    self.stdout.write("\x1b[2J\x1b[H", ending="")
                    self._show(options, watching=True)
                    time.sleep(options["watch"])
            except KeyboardInterrupt:
                return
        self._show(options, watching=False)

    def _show(self, options: dict[str, Any], watching: bool) -> None:
        snaps = read_snapshots()
        if not snaps:
            message = (
                "No WebSocket server process is publishing stats (none running, or "
                'CHANNELS_TUNING["STATS_BACKEND"] is None, or no connection yet).'
            )
            if watching:
                self.stdout.write(message)
                return
            raise CommandError(message, returncode=1)
        if options["json"]:
            self.stdout.write(json.dumps(snaps, indent=2))
        elif options["tasks"]:
            self._tasks(snaps)
        elif options["memory"]:
            self._memory(snaps)
        else:
            self._table(snaps)
        if options["check"]:
            problems = checked(snaps)
            for problem in problems:
                self.stderr.write(problem)
            if problems:
                raise CommandError(f"{len(problems)} leak(s) found", returncode=1)
            self.stdout.write("check: no leftovers in idle processes")

    def _table(self, snaps: list[dict[str, Any]]) -> None:
        header = (
            "pid",
            "host",
            "server",
            "uptime",
            "conns",
            "queued",
            "max q",
            "drops",
            "missed",
            "closes",
            "tasks",
            "rss MB",
            "gen2 n",
            "gen2 max ms",
            "gc ms",
        )
        rows = []
        for snap in snaps:
            try:
                rows.append(_row(snap))
            except (AttributeError, KeyError, TypeError, ValueError, IndexError):
                # Not the shape a process publishes (planted, or another version).
                self.stderr.write(f"pid {snap.get('pid')}: unreadable snapshot skipped")
        totals = ["total", f"{len(snaps)} procs", "", ""] + [
            _sum(rows, column) for column in range(4, len(header))
        ]
        gen2_max = header.index("gen2 max ms")
        totals[gen2_max] = max((float(r[gen2_max]) for r in rows), default=0.0)
        table = [header, *rows, tuple(str(t) for t in totals)]
        widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
        for line in table:
            self.stdout.write("  ".join(str(v).rjust(w) for v, w in zip(line, widths, strict=True)))
        # A consumer class that writes another way than its process' server (a
        # middleware hid the server's send: the generic path) is named, after the
        # table; --json lists every class ("paths").
        for snap in snaps:
            paths = snap.get("paths")
            if not isinstance(paths, dict):
                continue
            odd = {label: path for label, path in paths.items() if path != snap.get("server")}
            if odd:
                listed = ", ".join(f"{label}: {path}" for label, path in sorted(odd.items()))
                self.stderr.write(f"pid {snap['pid']}: {listed} (not {snap.get('server')})")

    def _tasks(self, snaps: list[dict[str, Any]]) -> None:
        for snap in snaps:
            self.stdout.write(f"pid {snap['pid']} on {snap['host']}: {snap['tasks']} tasks")
            for group in snap["task_groups"]:
                self.stdout.write(
                    f"  {group['count']:6d}  {group['coroutine']}  waiting at {group['waiting_at']}"
                )

    def _memory(self, snaps: list[dict[str, Any]]) -> None:
        for snap in snaps:
            taken_at = snap.get("memory_top_taken_at")
            age = f" (taken {time.time() - taken_at:.0f} s ago)" if taken_at else ""
            self.stdout.write(f"pid {snap['pid']} on {snap['host']}:{age}")
            if not snap["memory_top"] and not taken_at:
                self.stdout.write('  tracemalloc is off (set CHANNELS_TUNING["TRACEMALLOC"])')
            for site in snap["memory_top"]:
                self.stdout.write(f"  {site['kib']:10.1f} KiB {site['blocks']:8d}  {site['where']}")


def _row(snap: dict[str, Any]) -> tuple[Any, ...]:
    counters = snap["counters"]
    gen2 = snap["gc"]["generations"][2]
    gc_ms = sum(g["pause_total_ms"] for g in snap["gc"]["generations"])
    return (
        snap["pid"],
        snap["host"],
        snap["server"],
        _duration(snap["uptime"]),
        snap["connections"],
        snap["send_queue"]["queued"],
        snap["send_queue"]["max"],
        sum(counters["channels_tuning_dropped_messages_total"].values()),
        # Group messages producers could not deliver to this process (inbox full).
        sum(counters.get("channels_tuning_group_messages_missed_total", {}).values()),
        sum(counters["channels_tuning_closes_total"].values()),
        snap["tasks"],
        round(snap["rss_kb"] / 1024, 1),
        gen2["collections"],
        round(gen2["pause_max_ms"], 1),
        round(gc_ms, 1),
    )


def _sum(rows: list[tuple[Any, ...]], column: int) -> Any:
    total = sum(float(row[column]) for row in rows)
    return round(total, 1) if any(isinstance(row[column], float) for row in rows) else int(total)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def read_snapshots() -> list[dict[str, Any]]:
    backend = snapshot.backend_for(project_settings(), get_channel_layer())
    if backend is None:
        return []
    if isinstance(backend, snapshot.RedisBackend):

        async def read() -> list[dict[str, Any]]:
            try:
                return await backend.read()
            finally:
                await backend.layer.close_pools()

        snaps = asyncio.run(read())
    else:
        snaps = backend.read()
    return sorted(snaps, key=lambda snap: (snap["host"], snap["pid"]))


def checked(snaps: list[dict[str, Any]]) -> list[str]:
    """:func:`leak_problems`, where a task counts only if it is in two snapshots of its
    process: when the first reading shows tasks besides the server's own, each such
    process' next publication (``STATS_INTERVAL`` later) is awaited and compared."""
    suspects = {
        (snap["host"], snap["pid"]): snap
        for snap in snaps
        if not snap["connections"] and extra_tasks(snap["task_groups"])
    }
    if not suspects:
        return leak_problems(snaps)
    interval = max(project_settings()["STATS_INTERVAL"], 1.0)
    deadline = time.monotonic() + 2 * interval + 1
    # No reading before the suspects' next publication is due: each reading of the
    # Redis backend opens a pool of its own.
    due = min(snap["published_at"] for snap in suspects.values()) + interval
    time.sleep(min(max(due - time.time(), 0.0), interval))
    while True:
        later = {(snap["host"], snap["pid"]): snap for snap in read_snapshots()}
        waiting = [
            key
            for key, snap in suspects.items()
            if key in later and later[key]["published_at"] <= snap["published_at"]
        ]
        if not waiting:
            return leak_problems(list(later.values()), earlier=snaps)
        if time.monotonic() > deadline:
            return leak_problems(snaps)
        time.sleep(0.2)


def leak_problems(
    snaps: list[dict[str, Any]], earlier: list[dict[str, Any]] | None = None
) -> list[str]:
    """What idle processes (no connections) should not hold any more; with an
    ``earlier`` reading, only tasks found in both snapshots of a process count."""
    before = {(snap["host"], snap["pid"]): snap for snap in earlier or ()}
    problems = []
    for snap in snaps:
        problems.extend(snapshot_problems(snap, before.get((snap["host"], snap["pid"]))))
        if not snap["connections"]:
            problems.extend(_redis_memberships(snap))
    return problems


def _redis_memberships(snap: dict[str, Any]) -> list[str]:
    """Group members in Redis that belong to this (idle) process."""
    prefix = snap.get("layer_prefix")
    layer: Any = get_channel_layer()
    if not prefix or redis_prefix(layer) is None:
        return []

    async def count() -> int:
        try:
            return await redis_memberships(layer, prefix)
        finally:
            await layer.close_pools()

    found = asyncio.run(count())
    where = f"pid {snap['pid']} on {snap['host']}"
    return [f"{where}: {found} group memberships left in Redis"] if found else []
