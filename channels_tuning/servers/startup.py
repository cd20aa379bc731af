"""What a serving process does as it starts, before its first client.

- The package's system checks, run by ``channels-tuning-daphne``: daphne runs no
  system checks, and most of the package's only matter in the serving process: errors
  stop the server, warnings are logged once.
- The collector's tuning (``GC_THRESHOLD``, ``GC_FREEZE``), by
  ``channels-tuning-daphne`` and by :class:`~channels_tuning.servers.lifespan.Lifespan`
  at ``lifespan.startup``: its full collection of the start-up objects (about 100 000
  once Django and the application are loaded: 75 ms on the test machine) would
  otherwise stop the loop during the first handshakes (issue #26's replay probe
  caught it as its one slow answer). Without either, it is done at the first
  connection, as before.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ..checks import check_deployment, check_settings
from ..conf import project_settings
from ..observability import gctuning


def run_at_server_start(log: Any) -> None:
    """Errors stop the server, warnings are logged once. Silenced ids
    (``SILENCED_SYSTEM_CHECKS``) are left out. Nothing to check outside a configured
    Django project."""
    if not settings.configured:
        return
    client_url = f"{getattr(settings, 'STATIC_URL', None) or '/static/'}channels_tuning/client.js"
    if not _served_by_django(client_url):
        # The browser client is one of this app's static files; a page that imports
        # it from here gets 404 from this server.
        log.info(
            "channels_tuning: %s is not served here (channels-tuning-daphne serves no "
            "static files): collectstatic and a static server, WhiteNoise, or "
            "ASGIStaticFilesHandler in development",
            client_url,
        )
    found = [*check_settings(), *check_deployment()]
    found = [message for message in found if not message.is_silenced()]
    errors = [message for message in found if message.is_serious()]
    for message in found:
        if message not in errors:
            log.warning("%s", message)
    if errors:
        for message in errors:
            log.error("%s", message)
        raise ImproperlyConfigured(
            "channels-tuning-daphne refuses to start: " + "; ".join(m.msg for m in errors)
        )


def _served_by_django(url: str) -> bool:
    """Whether the project's URLconf answers ``url`` (a static-files view, as the
    example's demo route)."""
    from django.urls import Resolver404, resolve

    try:
        resolve(url)
    except Resolver404:
        return False
    except Exception:  # an URLconf that does not import: said by Django elsewhere
        return True
    return True


def tune_collector_at_start() -> None:
    """Apply ``GC_THRESHOLD`` and ``GC_FREEZE`` now, once per process (the application
    is loaded: what is frozen is what start-up made). Outside a configured Django
    project, nothing."""
    if settings.configured:
        gctuning.apply_tuning(project_settings())
