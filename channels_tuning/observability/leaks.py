"""What a server process must not hold once its connections are gone.

Shared by ``manage.py wsstats --check`` (reading published snapshots) and
:func:`channels_tuning.testing.find_leaks` (inside a test's event loop).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..layers.redis import keys

#: Coroutines of the tasks an idle process keeps: daphne's and the package's own services.
SERVICE_TASK_PREFIXES = (
    "Scheduler._run",
    "ProcessLayerReader._run",
    "ProcessLayerReader._say_alive",
    "MembershipBatches._flush",
    "PresenceStore._run",  # ends about a second after the last presence entry
    "Publisher._publish",
    "StatsRound._collect",
    "Server.",
    "AsyncioSelectorReactor",
    "_",
)


def lasting_task_groups(
    earlier: list[dict[str, Any]], later: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The task groups of ``later`` that ``earlier`` had too, each at the smaller of
    its two counts. A task only passing through, whoever made it, is in one of two
    snapshots taken seconds apart; a leaked one is in both. (Seen: a Redis command
    being written, which redis-py 8 wraps in ``asyncio.wait_for``, a task of its own
    before Python 3.12, in the snapshot taken while the stats round wrote.)"""
    before: Counter[str] = Counter()
    for group in earlier:
        before[group["coroutine"]] += group["count"]
    now: Counter[str] = Counter()
    for group in later:
        now[group["coroutine"]] += group["count"]
    return [
        {"coroutine": name, "count": min(count, before[name])}
        for name, count in now.items()
        if before[name]
    ]


def extra_tasks(task_groups: list[dict[str, Any]]) -> int:
    """Tasks (from :func:`.snapshot.task_summary`) beyond what an idle process keeps."""
    return sum(
        group["count"]
        for group in task_groups
        if not group["coroutine"].startswith(SERVICE_TASK_PREFIXES)
    )


def snapshot_problems(snap: dict[str, Any], earlier: dict[str, Any] | None = None) -> list[str]:
    """Leftovers in one process's snapshot, if it has no open connection; with the
    same process' ``earlier`` snapshot, only the tasks that are in both count."""
    if snap["connections"]:
        return []
    where = f"pid {snap['pid']} on {snap['host']}"
    problems = []
    if snap["send_queue"]["queued"]:
        problems.append(f"{where}: {snap['send_queue']['queued']} frames still queued")
    if snap["memberships"]:
        problems.append(f"{where}: {snap['memberships']} tracked group memberships")
    if snap.get("consumer_instances"):
        problems.append(
            f"{where}: {snap['consumer_instances']} consumer instances still alive "
            "(something holds them: a task, a global, a cache)"
        )
    groups = snap["task_groups"]
    if earlier is not None:
        groups = lasting_task_groups(earlier["task_groups"], groups)
    extra = extra_tasks(groups)
    if extra:
        problems.append(f"{where}: {extra} tasks besides the server's own (see --tasks)")
    return problems


async def redis_memberships(layer: Any, channel_prefix: str) -> int:
    """Members of any group in Redis whose channel name starts with ``channel_prefix``
    (one process's channels: ``specific.<client_prefix>!``)."""
    connection = layer.connection(0)
    found = 0
    async for key in connection.scan_iter(match=keys.group_pattern(layer)):
        members = await connection.zrange(key, 0, -1)
        found += sum(1 for member in members if member.decode().startswith(channel_prefix))
    return found
