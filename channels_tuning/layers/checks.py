"""The system checks of the settings that layers read (``HISTORY``, ``PRESENCE``) and of
the clients they run on; registered and documented with the others in
:mod:`channels_tuning.checks`."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from django.core.checks import Error, Warning

from .history import HistoryPolicy


def is_number(value: Any) -> bool:
    """A setting's number: an int or a float, not a bool (also used by ``checks.py``)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_history(merged: dict[str, Any]) -> list[Any]:
    """E008 (the patterns) and W011 (a size over ``SEND_QUEUE_MAX_MESSAGES``)."""
    return _check_history_patterns(merged["HISTORY"]) + _check_history_fits_send_queue(merged)


def _check_history_patterns(history: Any) -> list[Any]:
    if not isinstance(history, dict):
        return [Error(f"HISTORY must be a dict, not {history!r}.", id="channels_tuning.E008")]
    problems = []
    for pattern, value in history.items():
        try:
            if not isinstance(pattern, str) or not isinstance(value, dict):
                raise ValueError("a pattern (str) to a dict")
            HistoryPolicy(value.get("size", 0), value.get("ttl", 0))
            if set(value) - {"size", "ttl"}:
                raise ValueError(f"unknown keys {sorted(set(value) - {'size', 'ttl'})}")
        except ValueError as error:
            problems.append(
                Error(
                    f"HISTORY[{pattern!r}] is invalid: {error}.",
                    hint='e.g. {"chat.*": {"size": 1000, "ttl": 300}}',
                    id="channels_tuning.E008",
                )
            )
    return problems


def _check_history_fits_send_queue(merged: dict[str, Any]) -> list[Any]:
    """A recovering client is given what it missed through its send queue: a history
    longer than the queue can never be replayed whole."""
    history, queue = merged["HISTORY"], merged["SEND_QUEUE_MAX_MESSAGES"]
    if not isinstance(history, dict) or not (is_number(queue) and queue > 0):
        return []
    problems = []
    for pattern, value in history.items():
        size = value.get("size") if isinstance(value, dict) else None
        if is_number(size) and size > queue:
            problems.append(
                Warning(
                    f"HISTORY[{pattern!r}] keeps {size} messages, more than a connection's "
                    f"send queue holds (SEND_QUEUE_MAX_MESSAGES {queue}): a client that "
                    "missed them all cannot be given them in one replay.",
                    hint="Keep HISTORY sizes within SEND_QUEUE_MAX_MESSAGES, and size x "
                    "your largest message within SEND_QUEUE_MAX_BYTES.",
                    id="channels_tuning.W011",
                )
            )
    return problems


def check_presence(presence: Any) -> list[Any]:
    """E009: ``PRESENCE`` is a dict of patterns to ``{"events": bool}``."""
    valid = isinstance(presence, dict) and all(
        isinstance(pattern, str)
        and isinstance(value, dict)
        and set(value) <= {"events"}
        and isinstance(value.get("events", False), bool)
        for pattern, value in presence.items()
    )
    if valid:
        return []
    return [
        Error(
            f"PRESENCE must map group patterns to {{'events': bool}}, not {presence!r}.",
            hint='e.g. {"chat.*": {"events": True}}',
            id="channels_tuning.E009",
        )
    ]


#: The first redis-py whose asyncio ``RedisCluster`` answers a connection error or
#: timeout of one command by dropping that node's idle connections only. Before it
#: (5.0-7.1, read in their ``_execute_command``) the client closed every connection
#: it had, those of commands still running included, and took the node out of its
#: startup nodes: one slow connect in a burst failed the process' other commands too.
CLUSTER_CLIENT_KEEPS_CONNECTIONS = (7, 2)


def check_cluster_client(layers: dict[str, Any]) -> list[Any]:
    """W012: a Redis Cluster layer on a redis-py older than 7.2."""
    cluster_aliases = [
        alias
        for alias, layer in layers.items()
        if str((layer or {}).get("BACKEND", "")).endswith("RedisClusterChannelLayer")
    ]
    if not cluster_aliases:  # redis-py's version matters only where a Cluster layer runs
        return []
    installed = _redis_py_version()
    if installed is None or installed[:2] >= CLUSTER_CLIENT_KEEPS_CONNECTIONS:
        return []
    return [
        Warning(
            f"CHANNEL_LAYERS[{alias!r}] is a Redis Cluster layer on redis-py "
            f"{'.'.join(map(str, installed))}: before 7.2, a connection error or timeout "
            "of one command closes every connection of the process' cluster client, "
            "failing its other consumers' commands with it.",
            hint="Install redis>=7.2 where the Redis Cluster layer runs.",
            id="channels_tuning.W012",
        )
        for alias in cluster_aliases
    ]


def _redis_py_version() -> tuple[int, ...] | None:
    try:
        found = re.match(r"(\d+)\.(\d+)", version("redis"))
    except PackageNotFoundError:
        return None
    return tuple(int(part) for part in found.groups()) if found else None
