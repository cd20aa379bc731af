"""channels-tuning: Django Channels WebSockets that survive production.

Public API (import from here)::

    from channels_tuning import TunedWebsocketConsumer, TunedJsonWebsocketConsumer, Topic
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CloseCode",
    "ConnectionLimitMixin",
    "HeartbeatMixin",
    "Lifespan",
    "ManagedConnectionMixin",
    "MaxLifetimeMixin",
    "MessageLimitMixin",
    "RequestError",
    "Topic",
    "TopicMatch",
    "TunedJsonWebsocketConsumer",
    "TunedProtobufWebsocketConsumer",
    "TunedURLRouter",
    "TunedWebsocketConsumer",
    "rpc",
]

_LOCATIONS = {
    "CloseCode": "channels_tuning.wire.closecodes",
    "ConnectionLimitMixin": "channels_tuning.consumers",
    "HeartbeatMixin": "channels_tuning.consumers",
    "Lifespan": "channels_tuning.servers.lifespan",
    "ManagedConnectionMixin": "channels_tuning.consumers",
    "MaxLifetimeMixin": "channels_tuning.consumers",
    "MessageLimitMixin": "channels_tuning.consumers",
    "RequestError": "channels_tuning.exceptions",
    "rpc": "channels_tuning.consumers.rpc",
    "Topic": "channels_tuning.core.topics",
    "TopicMatch": "channels_tuning.core.topics",
    "TunedJsonWebsocketConsumer": "channels_tuning.consumers",
    "TunedProtobufWebsocketConsumer": "channels_tuning.consumers",
    "TunedWebsocketConsumer": "channels_tuning.consumers",
    "TunedURLRouter": "channels_tuning.consumers.routing",
}

if TYPE_CHECKING:
    from .consumers import (
        ConnectionLimitMixin,
        HeartbeatMixin,
        ManagedConnectionMixin,
        MaxLifetimeMixin,
        MessageLimitMixin,
        TunedJsonWebsocketConsumer,
        TunedProtobufWebsocketConsumer,
        TunedWebsocketConsumer,
    )
    from .consumers.routing import TunedURLRouter
    from .consumers.rpc import rpc
    from .core.topics import Topic, TopicMatch
    from .exceptions import RequestError
    from .servers.lifespan import Lifespan
    from .wire.closecodes import CloseCode


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (INSTALLED_APPS) must not import Channels'
    # consumer machinery before Django's settings are ready.
    import importlib

    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'channels_tuning' has no attribute {name!r}")
