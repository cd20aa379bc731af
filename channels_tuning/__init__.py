"""channels-tuning: Django Channels WebSockets that survive production.

Public API (import from here)::

    from channels_tuning import TunedWebsocketConsumer, TunedJsonWebsocketConsumer
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CloseCode",
    "ConnectionLimitMixin",
    "HeartbeatMixin",
    "ManagedConnectionMixin",
    "MaxLifetimeMixin",
    "MessageLimitMixin",
    "TunedJsonWebsocketConsumer",
    "TunedProtobufWebsocketConsumer",
    "TunedWebsocketConsumer",
]

_LOCATIONS = {
    "CloseCode": "channels_tuning.closecodes",
    "ConnectionLimitMixin": "channels_tuning.limits",
    "HeartbeatMixin": "channels_tuning.heartbeat",
    "ManagedConnectionMixin": "channels_tuning.connection",
    "MaxLifetimeMixin": "channels_tuning.limits",
    "MessageLimitMixin": "channels_tuning.limits",
    "TunedJsonWebsocketConsumer": "channels_tuning.consumers",
    "TunedProtobufWebsocketConsumer": "channels_tuning.consumers",
    "TunedWebsocketConsumer": "channels_tuning.consumers",
}

if TYPE_CHECKING:
    from .closecodes import CloseCode
    from .connection import ManagedConnectionMixin
    from .consumers import (
        TunedJsonWebsocketConsumer,
        TunedProtobufWebsocketConsumer,
        TunedWebsocketConsumer,
    )
    from .heartbeat import HeartbeatMixin
    from .limits import ConnectionLimitMixin, MaxLifetimeMixin, MessageLimitMixin


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (INSTALLED_APPS) must not import Channels'
    # consumer machinery before Django's settings are ready.
    import importlib

    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'channels_tuning' has no attribute {name!r}")
