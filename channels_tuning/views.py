"""A live view of the server processes, for projects without Prometheus.

Off unless its URLs are included, and for staff only::

    # urls.py
    path("ws-stats/", include("channels_tuning.urls")),

``ws-stats/`` is a page that draws, per server process, the last minutes of
connections, queued frames, dropped frames per second and the longest GC pause, from
the snapshots every process publishes for ``manage.py wsstats`` (``STATS_BACKEND``),
polled every ``STATS_INTERVAL``; ``ws-stats/snapshots.json`` is what it polls.
Anonymous users are sent to ``LOGIN_URL``, authenticated users who are not staff get
403, and the JSON answers 403 to both: it carries a chosen subset of each snapshot
(no allocation sites, task names or upstream internals). The JSON is made at most once
per half ``STATS_INTERVAL`` per process and shared by every poll meanwhile (the
snapshots change no faster): each poll read and summarised every snapshot, 8.5 ms of
the WebSocket process' CPU, as often as any number of open pages asked.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.signals import setting_changed
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseForbidden,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import render, resolve_url
from django.utils.http import urlencode

from .addresses import request_client_address
from .conf import SETTING_NAME, project_settings
from .core.addresses import address_in
from .observability import snapshot

__all__ = ["live", "live_snapshots", "metrics"]


def metrics(request: HttpRequest) -> HttpResponse:
    """django-prometheus' exposition, for the addresses in
    ``METRICS_ALLOWED_ADDRESSES`` (loopback by default) and for staff users; 403 to
    anyone else. Counters name consumers and show traffic: not for the public::

        # urls.py
        from channels_tuning.views import metrics

        urlpatterns = [path("metrics", metrics, name="prometheus-django-metrics")]

    The address is :func:`channels_tuning.addresses.request_client_address`: behind
    the balancers named in ``TRUSTED_PROXIES``, the client's, never one it wrote into
    ``X-Forwarded-For`` itself."""
    user = getattr(request, "user", None)
    allowed = address_allowed(request_client_address(request))
    if not allowed and not (user is not None and user.is_active and user.is_staff):
        return HttpResponseForbidden("metrics are not public\n")
    from django_prometheus import exports

    response: HttpResponse = exports.ExportToDjangoView(request)
    return response


def address_allowed(address: str) -> bool:
    """Whether ``address`` is in one of the ``METRICS_ALLOWED_ADDRESSES`` networks."""
    return address_in(address, project_settings()["METRICS_ALLOWED_ADDRESSES"] or ())


async def _access(request: HttpRequest) -> str:
    """ "staff", "anonymous" or "forbidden" (the user resolves from the session)."""

    def check() -> str:
        user = getattr(request, "user", None)  # None: no AuthenticationMiddleware
        if user is None or not user.is_authenticated:
            return "anonymous"
        staff = getattr(user, "is_active", False) and getattr(user, "is_staff", False)
        return "staff" if staff else "forbidden"

    return await sync_to_async(check)()


async def live(request: HttpRequest) -> HttpResponse:
    access = await _access(request)
    if access == "anonymous":
        # As django.contrib.auth's redirect_to_login, without importing its models (a
        # project may not install django.contrib.auth: then everyone is anonymous).
        login = resolve_url(settings.LOGIN_URL)
        return HttpResponseRedirect(f"{login}?{urlencode({'next': request.get_full_path()})}")
    if access != "staff":
        return HttpResponseForbidden("staff only\n")
    interval = float(project_settings()["STATS_INTERVAL"])
    context = {
        "interval_ms": int(interval * 1000),
        # Next to the page, wherever the project mounted it.
        "snapshots_url": request.path.rstrip("/") + "/snapshots.json",
    }
    return render(request, "channels_tuning/live.html", context)


#: The last answer of :func:`live_snapshots`: (time.monotonic(), JSON body).
_answer: list[tuple[float, bytes]] = []


async def live_snapshots(request: HttpRequest) -> HttpResponse:
    if await _access(request) != "staff":
        return HttpResponseForbidden("staff only\n")
    now = time.monotonic()
    interval = float(project_settings()["STATS_INTERVAL"] or 5.0)
    if _answer and now - _answer[0][0] < interval / 2:
        return HttpResponse(_answer[0][1], content_type="application/json")
    response = await _read_snapshots()
    _answer[:] = [(now, response.content)]
    return response


async def _read_snapshots() -> HttpResponse:
    backend = snapshot.backend_for(project_settings(), get_channel_layer())
    if backend is None:
        snaps: list[dict[str, Any]] = []
    elif isinstance(backend, snapshot.RedisBackend):
        snaps = await backend.read()  # on this server's loop: its own Redis pools
    else:
        snaps = await asyncio.to_thread(backend.read)
    processes = []
    for snap in snaps:
        try:
            processes.append(summary(snap))
        except (AttributeError, TypeError, ValueError):
            snapshot.unreadable(snap.get("pid"))  # planted or from another version
    return JsonResponse({"processes": processes})


def summary(snap: dict[str, Any]) -> dict[str, Any]:
    """What the page draws, and nothing more: numbers as numbers, text as text (a
    snapshot is not trusted; the page escapes the text too)."""
    counters = snap.get("counters", {})
    generations = snap.get("gc", {}).get("generations", [])
    dropped = counters.get("channels_tuning_dropped_messages_total", {}).values()
    return {
        "process": f"{snap['host']}:{int(snap['pid'])}",
        "server": str(snap.get("server", "")),
        "published_at": _number(snap.get("published_at", 0)),
        "connections": _number(snap.get("connections", 0)),
        "queued": _number(snap.get("send_queue", {}).get("queued", 0)),
        "dropped": sum(_number(value) for value in dropped),
        "gc_pause_max_ms": max((_number(g.get("pause_max_ms", 0)) for g in generations), default=0),
        "rss_kb": _number(snap.get("rss_kb", 0)),
    }


def _forget_answer(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        _answer.clear()


setting_changed.connect(_forget_answer)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"not a number: {value!r}")
    return value
