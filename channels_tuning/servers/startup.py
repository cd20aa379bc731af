"""The package's system checks, run by ``channels-tuning-daphne`` as it starts.

daphne runs no system checks, and most of the package's only matter in the serving
process: errors stop the server, warnings are logged once.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ..checks import check_deployment, check_settings


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
