"""One server process's state, as a JSON-friendly snapshot, and where it is published.

The process scheduler builds a snapshot every ``STATS_INTERVAL`` seconds (5) and
publishes it, with a time-to-live of three intervals, to:

- Redis, when the default channel layer is a channels-redis core layer: key
  ``<prefix>:ct:stats:<host>:<pid>`` with an expiry, so a killed process vanishes;
- otherwise a directory of small JSON files (``STATS_DIR``, by default under the
  system's temporary directory, one per Django settings module); files of dead
  PIDs are ignored and removed by readers.

``manage.py wsstats`` reads them. Nothing listens on a port: the snapshot carries
the asyncio task summary (the goroutine-dump analog) and, when ``TRACEMALLOC`` is
set, the top allocation sites (:mod:`.memorytop`: taken once a minute, grouped off
the loop), so no request ever has to reach the server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import logging
import math
import os
import secrets
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings

from ..compat import asyncio_tasks
from ..layers.capabilities import redis_prefix
from ..layers.redis import keys
from ..runtime import counters as stats
from ..runtime.counters import LAYER_ERRORS
from ..runtime.ratelog import RateLimitedLog
from ..runtime.registry import registry
from .figures import ConnectionFigures, connection_figures, connection_figures_in_steps
from .gctuning import monitor
from .memorytop import recent_memory_top

logger = logging.getLogger("channels_tuning")
HOST = socket.gethostname()
STARTED_AT = time.time()


def rss_kb() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _await_location(coro: Any) -> str:
    """Where a coroutine is suspended: the innermost coroutine of its await chain, as
    ``file:function``.

    Read from code objects, never ``cr_frame``: on CPython 3.11+ asking a suspended
    coroutine for its frame creates a frame object that then lives as long as the
    coroutine (1.6 KB per idle connection, published every STATS_INTERVAL)."""
    owner, location = coro, "?"
    while owner is not None:
        code = getattr(owner, "cr_code", None) or getattr(owner, "gi_code", None)
        if code is not None:
            name = getattr(code, "co_qualname", code.co_name)
            location = f"{code.co_filename.rsplit('/', 2)[-1]}:{name}"
        owner = getattr(owner, "cr_await", None) or getattr(owner, "gi_yieldfrom", None)
    return location


#: Tasks whose await chain a snapshot reads; beyond, the groups' counts are scaled
#: from these (19 000 tasks read one by one stopped the loop for ~100 ms every
#: STATS_INTERVAL, benchmarks/stall.py --profile; 2 000 took 4 ms, 500 take 1 ms).
TASKS_READ = 500

#: How many tasks the loop has pending, and some of them (:func:`loop_tasks`).
TaskSample = tuple[int, list[asyncio.Task[Any]]]


def loop_tasks(limit: int = TASKS_READ) -> TaskSample:
    """The running loop's pending tasks: how many (an estimate beyond ``limit``) and
    up to ``limit`` of them, without copying them all (``compat.asyncio_tasks``)."""
    return asyncio_tasks.sampled_tasks(asyncio.get_running_loop(), limit)


def task_summary(tasks: TaskSample | None = None) -> list[dict[str, Any]]:
    """The running loop's tasks (or ``tasks``, from :func:`loop_tasks`) grouped by
    coroutine and where they wait, largest first. When the sample is not all of
    them, each group's count is scaled to the total (``"sampled": True``)."""
    total, sample = tasks if tasks is not None else loop_tasks()
    groups: collections.Counter[tuple[str, str]] = collections.Counter()
    for task in sample:
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", type(coro).__name__)
        groups[(name, _await_location(coro))] += 1
    read = len(sample)
    if read >= total:
        return [
            {"coroutine": name, "waiting_at": where, "count": count}
            for (name, where), count in groups.most_common()
        ]
    return [
        {
            "coroutine": name,
            "waiting_at": where,
            "count": round(count * total / read),
            "sampled": True,
        }
        for (name, where), count in groups.most_common()
    ]


def consumer_instances() -> int:
    """Tuned consumer instances alive in this process.

    When no connection is open, garbage cycles are collected first, so that what
    remains is held by something (a task, a global) and not merely uncollected."""
    if not registry and registry.instances:
        gc.collect()
    return registry.instances


def snapshot(
    figures: ConnectionFigures | None = None, tasks: TaskSample | None = None
) -> dict[str, Any]:
    """This process, now. Call it on the event loop (it lists the loop's tasks).
    ``figures``, ``tasks``: the per-connection counts and the loop's tasks, if taken
    already (the publisher lists the tasks before its steps let others run)."""
    if figures is None:
        figures = connection_figures()
    if tasks is None:
        tasks = loop_tasks()
    return {
        "pid": os.getpid(),
        "host": HOST,
        "server": registry.server_kind,
        "paths": dict(registry.paths),
        "published_at": time.time(),
        "uptime": time.time() - STARTED_AT,
        "connections": len(registry),
        "by_consumer": registry.counts_by_class(),
        **figures.as_dict(),
        "consumer_instances": consumer_instances(),
        "traffic": stats.TRAFFIC.as_dict(),
        "tasks": tasks[0],
        "task_groups": task_summary(tasks),
        "rss_kb": rss_kb(),
        "allocated_blocks": sys.getallocatedblocks(),
        "gc": monitor.snapshot(),
        "counters": stats.snapshot(),
        "memory_top": recent_memory_top.sites,
        "memory_top_taken_at": recent_memory_top.taken_at,
        "compat": compat_status(),
    }


def compat_status() -> dict[str, Any]:
    """The private hooks' state in this process (channels_tuning.compat): which are on,
    what the self-check found, and how many transports were switched to eager writes.
    Only modules the process has loaded are reported (no server imported for it)."""
    status: dict[str, Any] = {}
    for library in ("daphne", "autobahn", "twisted", "channels_redis", "asyncio_tasks"):
        module = sys.modules.get(f"channels_tuning.compat.{library}")
        if module is not None:
            status[library] = dict(module.features)
    twisted = sys.modules.get("channels_tuning.compat.twisted")
    if twisted is not None:
        status["eager_transports"] = twisted.switched
    compat = sys.modules.get("channels_tuning.compat")
    checked = getattr(compat, "_checked", None)
    status["problems"] = [str(problem) for problem in checked or ()]
    return status


# ------------------------------------------------------------------ backends


class UnsafeStatsDirectory(Exception):
    """The stats directory is a symlink, not ours, or open to other users."""


def private_directory(directory: Path, *, with_parent: bool = False) -> Path:
    """Create ``directory`` private to this user (0700), or check that an existing one
    is safe: a real directory, owned by us, writable by no one else. A planted symlink
    or someone else's directory raises, so that a local user cannot make the server
    write where it should not. ``with_parent``: the parent too (the default
    ``channels_tuning-<uid>`` directory under the shared temporary directory)."""
    uid = os.geteuid()
    for path in (directory.parent, directory) if with_parent else (directory,):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise UnsafeStatsDirectory(f"{path} is a symlink or not a directory")
        if info.st_uid != uid:
            raise UnsafeStatsDirectory(f"{path} belongs to uid {info.st_uid}, not {uid}")
        if info.st_mode & 0o022:
            raise UnsafeStatsDirectory(f"{path} is writable by others (mode {info.st_mode:o})")
    return directory


class FileBackend:
    """One JSON file per process in a private directory (0700, files 0600).

    Files are written to a fresh temporary name (O_CREAT | O_EXCL | O_NOFOLLOW: never
    through a link, never over an existing file), then renamed over the snapshot, so
    readers never see half a file."""

    def __init__(self, directory: Path, ttl: float, *, default: bool = False) -> None:
        self.directory = directory
        self.ttl = ttl
        self.default = default
        self._checked = False

    def publish(self, snap: dict[str, Any]) -> None:
        if not self._checked:
            private_directory(self.directory, with_parent=self.default)
            self._checked = True
        path = self.directory / f"{snap['host']}-{snap['pid']}.json"
        temporary = self.directory / f".{snap['pid']}-{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(temporary, flags, 0o600)
        try:
            with os.fdopen(fd, "w") as file:
                file.write(json.dumps(snap))
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def read(self) -> list[dict[str, Any]]:
        live = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                snap = readable(json.loads(path.read_text()))
            except (OSError, ValueError):
                unreadable(path.name)
                continue
            if snap.get("host") == HOST and not _pid_alive(snap["pid"]):
                path.unlink(missing_ok=True)  # a dead process of this host
                continue
            if time.time() - snap["published_at"] <= self.ttl:
                live.append(snap)
        return live


class RedisBackend:
    """One key per process with a TTL, on the channel layer's first Redis host."""

    def __init__(self, layer: Any, ttl: float) -> None:
        self.layer = layer
        self.ttl = ttl
        self.prefix = keys.stats_prefix(layer)

    async def publish(self, snap: dict[str, Any]) -> None:
        key = f"{self.prefix}{snap['host']}:{snap['pid']}"
        await self.layer.connection(0).set(key, json.dumps(snap), px=math.ceil(self.ttl * 1000))

    async def read(self) -> list[dict[str, Any]]:
        connection = self.layer.connection(0)
        keys = [key async for key in connection.scan_iter(match=f"{self.prefix}*")]
        values = await connection.mget(keys) if keys else []
        snaps = []
        for key, value in zip(keys, values, strict=True):
            if not value:
                continue  # expired between the scan and the read
            try:
                snaps.append(readable(json.loads(value)))
            except ValueError:
                unreadable(key)
        return snaps


_unreadable_log = RateLimitedLog(logging.getLogger("channels_tuning"), interval=60.0)


def readable(snap: Any) -> dict[str, Any]:
    """``snap`` if it has the shape a process publishes; ValueError otherwise (a value
    under the stats keys is not trusted: anyone who can write to Redis or the stats
    directory can put one there)."""
    if not (
        isinstance(snap, dict)
        and isinstance(snap.get("pid"), int)
        and isinstance(snap.get("host"), str)
        and isinstance(snap.get("published_at"), (int, float))
    ):
        raise ValueError("not a snapshot")
    return snap


def unreadable(where: Any) -> None:
    """A value that is no snapshot: skipped, counted, and said (a line a minute)."""
    LAYER_ERRORS.inc(("stats_unreadable",))
    _unreadable_log.log("channels_tuning: skipped an unreadable stats snapshot (%r)", where)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_stats_dir() -> Path:
    """``<tempdir>/channels_tuning-<uid>/<settings module>``: per user, created 0700."""
    module = (getattr(django_settings, "SETTINGS_MODULE", None) or "default").replace(".", "_")
    return Path(tempfile.gettempdir()) / f"channels_tuning-{os.geteuid()}" / module


def backend_for(tuning: dict[str, Any], layer: Any) -> FileBackend | RedisBackend | None:
    """The backend ``STATS_BACKEND`` asks for ("auto": Redis if the layer is
    channels-redis' core layer, else files); None when publishing is off."""
    choice = tuning["STATS_BACKEND"]
    interval = tuning["STATS_INTERVAL"]
    if choice is None or interval is None:
        return None
    # Snapshots are published at the scheduler's tick (1 s at most), so an interval
    # below one second publishes once a tick: the staleness bound follows the slower
    # of the two, and allows two missed publications before a process is "gone".
    ttl = 3 * max(interval, 1.0)
    redis_capable = layer is not None and redis_prefix(layer) is not None
    if choice == "redis" or (choice == "auto" and redis_capable):
        return RedisBackend(layer, ttl)
    if tuning["STATS_DIR"]:
        return FileBackend(Path(tuning["STATS_DIR"]), ttl)
    return FileBackend(default_stats_dir(), ttl, default=True)


class Publisher:
    """Driven by the process scheduler: publishes a snapshot every interval, its
    per-connection figures taken in steps (:mod:`.figures`), one round at a time."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        #: Unix time of the last snapshot that reached its backend (0: none yet):
        #: ``channels_tuning_stats_published_timestamp_seconds``, for the stale-
        #: publisher alert (wsstats would show the process as gone).
        self.last_published = 0.0
        #: Why the stats directory was refused (publishing stops: jobs.StatsRound).
        self.refused: UnsafeStatsDirectory | None = None

    def publish(self, backend: FileBackend | RedisBackend) -> None:
        """Start a round unless the last one is still going."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._publish(backend))

    async def _publish(self, backend: FileBackend | RedisBackend) -> None:
        # The tasks as the round began: what the steps let run meanwhile (a Redis
        # command of another service, in its own task) is not in the summary.
        tasks = loop_tasks()
        figures = await connection_figures_in_steps()
        await recent_memory_top.refresh()
        snap = snapshot(figures, tasks)
        try:
            if isinstance(backend, FileBackend):
                backend.publish(snap)
            else:
                await backend.publish(snap)
            self.last_published = time.time()
        except UnsafeStatsDirectory as exc:
            self.refused = exc
        except Exception as exc:  # Redis down: the next interval tries again
            stats.LAYER_ERRORS.inc((f"stats:{type(exc).__name__}",))
            if isinstance(backend, FileBackend):
                logger.exception("channels_tuning: publishing stats failed")


publisher = Publisher()
