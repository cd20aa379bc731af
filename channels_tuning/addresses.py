"""The client's address as the package counts it, from ``TRUSTED_PROXIES``.

Behind a balancer the ASGI scope's ``client`` is the balancer (or, with daphne's
``--proxy-headers``, the left-most ``X-Forwarded-For`` entry: one the client may have
written). With ``CHANNELS_TUNING["TRUSTED_PROXIES"]`` naming the balancers, the
per-user limits, the ``/metrics`` view and :func:`client_address` take the right-most
entry no trusted proxy wrote (:mod:`channels_tuning.core.addresses` says why that one).
Run the servers *without* ``--proxy-headers`` then: the scope's ``client`` must be
the TCP peer for the chain to be checked from its end.

Limits count :func:`client_group`: an IPv6 client as its ``/IPV6_CLIENT_PREFIX``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.signals import setting_changed

from .conf import SETTING_NAME, project_settings
from .core.addresses import TrustedProxies, address_group, forwarded_for

__all__ = ["client_address", "client_group", "request_client_address", "trusted_proxies"]

_trusted: list[TrustedProxies] = []  # parsed once; cleared when the settings change


def trusted_proxies() -> TrustedProxies:
    """``TRUSTED_PROXIES``, parsed (once)."""
    if not _trusted:
        _trusted.append(TrustedProxies(project_settings()["TRUSTED_PROXIES"] or ()))
    return _trusted[0]


def client_address(scope: Mapping[str, Any]) -> str:
    """The client's address for an ASGI scope ("" when the server gives none)."""
    client = scope.get("client") or ("",)
    peer = str(client[0])
    proxies = trusted_proxies()
    if not proxies:
        return peer
    return proxies.client_address(peer, forwarded_for(scope.get("headers") or ()))


def client_group(scope: Mapping[str, Any]) -> str:
    """What per-address limits count: :func:`client_address`, an IPv6 one as its prefix."""
    return address_group(client_address(scope), int(project_settings()["IPV6_CLIENT_PREFIX"]))


def request_client_address(request: Any) -> str:
    """:func:`client_address` for a Django request (its ``REMOTE_ADDR`` and
    ``HTTP_X_FORWARDED_FOR``)."""
    meta = request.META
    peer = str(meta.get("REMOTE_ADDR") or "")
    proxies = trusted_proxies()
    header = meta.get("HTTP_X_FORWARDED_FOR")
    if not proxies:
        return peer
    return proxies.client_address(peer, [header] if header else [])


def _clear(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        _trusted.clear()


setting_changed.connect(_clear)
