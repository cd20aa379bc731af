"""Django system checks for ``CHANNELS_TUNING`` and the deployment around it.

``channels-tuning-daphne`` runs the settings and deployment checks as it starts
(daphne runs none): an error stops it before it listens, a warning is logged once.

=====================  ===========================================================
id                     problem
=====================  ===========================================================
channels_tuning.E001   ``CHANNELS_TUNING`` is not a dict
channels_tuning.E002   a limit is not a positive number (or None where allowed)
channels_tuning.E003   ``IDLE_TIMEOUT`` is not longer than ``HEARTBEAT_INTERVAL``
channels_tuning.E004   ``OVERFLOW_POLICY`` is not one of the policies
channels_tuning.E005   ``LIFETIME_JITTER`` is not within [0, 1)
channels_tuning.E007   ``GC_THRESHOLD`` is not None or 1-3 non-negative integers
channels_tuning.E008   ``HISTORY`` is not a dict of patterns to ``{"size": n, "ttl": seconds}``
channels_tuning.E009   ``PRESENCE`` is not a dict of patterns to ``{"events": bool}``
channels_tuning.E010   ``CLIENT_PROTOCOL`` is not "negotiate" or "always"
channels_tuning.E011   ``METRICS_ALLOWED_ADDRESSES`` or ``TRUSTED_PROXIES`` is not a list of
                       addresses or networks
channels_tuning.E012   ``IPV6_CLIENT_PREFIX`` is not an integer from 1 to 128
channels_tuning.W001   unknown key in ``CHANNELS_TUNING`` (a typo is silently ignored)
channels_tuning.W002   in-memory channel layer while the project looks multi-process
channels_tuning.W003   ``channels`` (or ``daphne``) missing from ``INSTALLED_APPS``
channels_tuning.W004   ``IDLE_TIMEOUT`` is None: dead clients are noticed only by daphne's ping
channels_tuning.W005   ``channels_tuning`` listed after ``daphne``: runserver will not use
                       the flow-controlled server
channels_tuning.E006   a Redis layer's ``group_expiry`` is not longer than two
                       ``GROUP_REFRESH_INTERVAL``: live memberships would expire
channels_tuning.W007   a Redis layer's ``group_expiry`` is over 20 refresh intervals: members
                       of a killed process linger that long
channels_tuning.W006   the process serves WebSockets with plain daphne (no send flow
                       control); stated in the server's log at the first connection,
                       since the check framework does not run inside daphne
channels_tuning.W008   uvicorn or hypercorn serves WebSockets and no
                       :class:`~channels_tuning.Lifespan` is mapped (in the log, at the
                       first connection)
channels_tuning.W009   channels-redis' own pub/sub layer: unbounded per-channel queues
                       (use ``channels_tuning.layers.RedisPubSubChannelLayer``)
channels_tuning.W010   ``HISTORY`` or ``PRESENCE`` is set and the default layer keeps
                       neither (only the tuned Redis and in-memory layers do)
channels_tuning.W011   a ``HISTORY`` size is over ``SEND_QUEUE_MAX_MESSAGES``: a client that
                       missed the whole history cannot be given it in one replay
channels_tuning.W012   a Redis Cluster layer on redis-py before 7.2: one connection error
                       closes every connection of the process' cluster client
channels_tuning.I001   ``check --deploy``: for each server installed, which guarantees
                       hold there (:mod:`channels_tuning.servers.guarantees`)
=====================  ===========================================================
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .conf import (
    DEFAULTS,
    OVERFLOW_POLICIES,
    POSITIVE_KEYS,
    REQUIRED_KEYS,
    SETTING_NAME,
    project_settings,
)
from .core.addresses import parse_networks
from .layers import checks as layer_checks
from .wire.subprotocol import CLIENT_PROTOCOL_CHOICES


def _is_positive(value: Any) -> bool:
    return layer_checks.is_number(value) and value > 0


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    user = getattr(settings, SETTING_NAME, None)
    if user is None:
        user = {}
    if not isinstance(user, dict):
        return [
            Error(
                f"{SETTING_NAME} must be a dict, not {type(user).__name__}.",
                id="channels_tuning.E001",
            )
        ]
    problems: list[Any] = []
    for key in sorted(set(user) - set(DEFAULTS)):
        problems.append(
            Warning(
                f"{SETTING_NAME}[{key!r}] is not a channels-tuning setting and is ignored.",
                hint="Known keys: " + ", ".join(sorted(DEFAULTS)),
                id="channels_tuning.W001",
            )
        )
    merged = project_settings()
    for key in POSITIVE_KEYS:
        value = merged[key]
        if value is None and key not in REQUIRED_KEYS:
            continue
        if not _is_positive(value):
            problems.append(
                Error(
                    f"{SETTING_NAME}[{key!r}] must be a positive number"
                    + ("" if key in REQUIRED_KEYS else " or None")
                    + f", not {value!r}.",
                    id="channels_tuning.E002",
                )
            )
    interval, idle = merged["HEARTBEAT_INTERVAL"], merged["IDLE_TIMEOUT"]
    if _is_positive(interval) and _is_positive(idle) and idle <= interval:
        problems.append(
            Error(
                f"IDLE_TIMEOUT ({idle}) must be longer than HEARTBEAT_INTERVAL ({interval}).",
                hint="Clients answer each ping; allow at least one missed ping, "
                "e.g. IDLE_TIMEOUT = 2.5 * HEARTBEAT_INTERVAL.",
                id="channels_tuning.E003",
            )
        )
    problems += _one_of(merged, "OVERFLOW_POLICY", OVERFLOW_POLICIES, id="channels_tuning.E004")
    problems += _one_of(
        merged, "CLIENT_PROTOCOL", CLIENT_PROTOCOL_CHOICES, id="channels_tuning.E010"
    )
    for key in ("METRICS_ALLOWED_ADDRESSES", "TRUSTED_PROXIES"):
        problems.extend(_check_networks(key, merged[key]))
    prefix = merged["IPV6_CLIENT_PREFIX"]
    if not (isinstance(prefix, int) and not isinstance(prefix, bool) and 1 <= prefix <= 128):
        problems.append(
            Error(
                f"IPV6_CLIENT_PREFIX must be an integer from 1 to 128, not {prefix!r}.",
                hint="64 (one host or home network), or 128 to count each address.",
                id="channels_tuning.E012",
            )
        )
    jitter = merged["LIFETIME_JITTER"]
    if not (layer_checks.is_number(jitter) and 0 <= jitter < 1):
        problems.append(
            Error(f"LIFETIME_JITTER must be in [0, 1), not {jitter!r}.", id="channels_tuning.E005")
        )
    threshold = merged["GC_THRESHOLD"]
    if threshold is not None and not (
        isinstance(threshold, (list, tuple))
        and 1 <= len(threshold) <= 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in threshold)
    ):
        problems.append(
            Error(
                f"GC_THRESHOLD must be None or 1-3 non-negative integers, not {threshold!r}.",
                id="channels_tuning.E007",
            )
        )
    problems += layer_checks.check_history(merged)
    problems += layer_checks.check_presence(merged["PRESENCE"])
    if idle is None:
        problems.append(
            Warning(
                "IDLE_TIMEOUT is None: a client that vanished without closing is only "
                "noticed by daphne's protocol ping (about 50 s) or never behind some proxies.",
                id="channels_tuning.W004",
            )
        )
    return problems


def _check_group_expiry(layers: dict[str, Any]) -> list[Any]:
    interval = project_settings()["GROUP_REFRESH_INTERVAL"]
    if not _is_positive(interval):
        return []
    problems: list[Any] = []
    for alias, layer in layers.items():
        backend = layer.get("BACKEND", "")
        if not backend.endswith((".RedisChannelLayer", ".RedisClusterChannelLayer")):
            continue  # only channels-redis' core layer keeps expiring memberships
        config = layer.get("CONFIG") or {}
        if "group_expiry" not in config and backend.startswith("channels_tuning."):
            continue  # derived from GROUP_REFRESH_INTERVAL (layers.redis.membership)
        expiry = config.get("group_expiry", 86400)
        if expiry <= 2 * interval:
            problems.append(
                Error(
                    f"CHANNEL_LAYERS[{alias!r}] group_expiry ({expiry} s) must be longer than "
                    f"two GROUP_REFRESH_INTERVALs ({interval} s): live memberships would "
                    "expire between refreshes.",
                    id="channels_tuning.E006",
                )
            )
        elif expiry > 20 * interval:
            problems.append(
                Warning(
                    f"CHANNEL_LAYERS[{alias!r}] group_expiry is {expiry} s: memberships of a "
                    "server process that was killed stay that long, and group sends keep "
                    "writing to their dead channels.",
                    hint=f"Tuned consumers refresh their memberships every {interval} s; "
                    f"a group_expiry of about {int(5 * interval)} s is enough.",
                    id="channels_tuning.W007",
                )
            )
    return problems


def server_without_flow_control(server: str) -> Warning:
    return Warning(
        f"WebSockets are served by {server}, which gives no send flow control: a client "
        "that stops reading makes the process buffer without limit until the protocol "
        "ping drops it (about 50 s), and bounded send queues and overflow policies "
        "cannot apply.",
        hint="Run channels-tuning-daphne (same options as daphne), or list "
        "'channels_tuning' before 'daphne' in INSTALLED_APPS for runserver.",
        id="channels_tuning.W006",
    )


def lifespan_not_mapped(server: str) -> Warning:
    return Warning(
        f"WebSockets are served by {server} and the application maps no "
        "channels_tuning Lifespan: on SIGTERM the server may exit before connections "
        "have left their groups.",
        hint='Add "lifespan": channels_tuning.Lifespan() to the ProtocolTypeRouter.',
        id="channels_tuning.W008",
    )


def _looks_multi_process() -> bool:
    try:
        return int(os.environ.get("WEB_CONCURRENCY", "1")) > 1
    except ValueError:
        return False


@register(Tags.compatibility)
def check_deployment(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    problems: list[Any] = []
    apps = list(getattr(settings, "INSTALLED_APPS", []))
    for required in ("channels", "daphne"):
        if required not in apps:
            problems.append(
                Warning(
                    f"'{required}' is not in INSTALLED_APPS.",
                    hint="channels-tuning is a Channels add-on deployed with daphne; add "
                    "'daphne' first, then 'channels_tuning' before it for runserver.",
                    id="channels_tuning.W003",
                )
            )
    if (
        "daphne" in apps
        and "channels_tuning" in apps
        and apps.index("channels_tuning") > apps.index("daphne")
    ):
        problems.append(
            Warning(
                "'channels_tuning' comes after 'daphne' in INSTALLED_APPS, so "
                "manage.py runserver uses plain daphne (no send flow control).",
                hint="List 'channels_tuning' before 'daphne'.",
                id="channels_tuning.W005",
            )
        )
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    problems.extend(_check_group_expiry(layers))
    problems.extend(layer_checks.check_cluster_client(layers))
    for alias, layer in layers.items():
        if layer.get("BACKEND") == "channels_redis.pubsub.RedisPubSubChannelLayer":
            problems.append(
                Warning(
                    f"CHANNEL_LAYERS[{alias!r}] is channels-redis' pub/sub layer: each "
                    "process queues every message for every consumer without a bound "
                    "(a burst is held in memory; latency grows with it).",
                    hint="Use 'channels_tuning.layers.RedisPubSubChannelLayer' (same "
                    "CONFIG): bounded delivery, drops counted.",
                    id="channels_tuning.W009",
                )
            )
    backend = layers.get("default", {}).get("BACKEND", "")
    merged = project_settings()
    keeping = (
        "channels_tuning.layers.RedisChannelLayer",
        "channels_tuning.layers.RedisClusterChannelLayer",
        "channels_tuning.layers.InMemoryChannelLayer",
    )
    if (merged.get("HISTORY") or merged.get("PRESENCE")) and backend and backend not in keeping:
        problems.append(
            Warning(
                f"HISTORY or PRESENCE is set, but the default layer ({backend}) keeps "
                "neither: broadcast() to those groups and presence() raise TypeError.",
                hint="Use channels_tuning.layers.RedisChannelLayer (or InMemoryChannelLayer "
                "for one process).",
                id="channels_tuning.W010",
            )
        )
    if backend.endswith("InMemoryChannelLayer") and (_looks_multi_process() or not settings.DEBUG):
        problems.append(
            Warning(
                "The default channel layer is in-memory: group messages reach only "
                "consumers of the same process.",
                hint="With more than one server process (WEB_CONCURRENCY > 1, or several "
                "daphne units behind a proxy) use channels_redis.core.RedisChannelLayer.",
                id="channels_tuning.W002",
            )
        )
    return problems


def documented_checks() -> list[tuple[str, str]]:
    """``(id, problem)`` rows of the table in this module's docstring (the
    documentation's checks reference is written from it)."""
    rows: list[tuple[str, str]] = []
    for line in (__doc__ or "").splitlines():
        match = re.match(r"(channels_tuning\.[EWI]\d{3})\s+(.*)", line)
        if match:
            rows.append((match.group(1), match.group(2)))
        elif rows and line.startswith(" " * 10) and not line.strip().startswith("="):
            rows[-1] = (rows[-1][0], rows[-1][1] + " " + line.strip())
    return rows


#: Modules that report checks: this one, the history and presence settings'
#: (layers.checks) and the servers' I001 (servers.guarantees).
CHECK_SOURCES = (
    Path(__file__),
    Path(__file__).parent / "layers" / "checks.py",
    Path(__file__).parent / "servers" / "guarantees.py",
)


def check_ids_in_code() -> set[str]:
    """Every check id the package can report."""
    source = "".join(path.read_text() for path in CHECK_SOURCES)
    return set(re.findall(r'id="(channels_tuning\.[EWI]\d{3})"', source))


def _one_of(merged: dict[str, Any], key: str, choices: Any, *, id: str) -> list[Error]:
    """The check of a setting whose value is one of a few names."""
    if merged[key] in choices:
        return []
    return [Error(f"{key} must be one of {', '.join(choices)}, not {merged[key]!r}.", id=id)]


def _check_networks(key: str, value: Any) -> list[Error]:
    bad = not isinstance(value, (list, tuple))
    if not bad:
        try:
            parse_networks(value)
        except (TypeError, ValueError):
            bad = True
    if not bad:
        return []
    return [
        Error(
            f"{key} must be a list of addresses or networks, not {value!r}.",
            hint='For example ["127.0.0.0/8", "::1", "10.0.0.0/8"].',
            id="channels_tuning.E011",
        )
    ]
