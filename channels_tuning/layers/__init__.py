"""Channel layers: group sends that report and wait for room (the producer API on
top of them, ``broadcast()``, is :mod:`channels_tuning.broadcast`).

- :mod:`.redis`, :mod:`.pubsub` and :mod:`.memory`: the tuned layers (``BACKEND``
  paths ``channels_tuning.layers.RedisChannelLayer`` / ``RedisClusterChannelLayer`` /
  ``RedisPubSubChannelLayer`` / ``InMemoryChannelLayer``);
- :mod:`.report`: :class:`DeliveryReport`, what a group send reached;
- :mod:`.sending`: the ``on_full`` policy of ``group_send`` and ``broadcast()``;
- :mod:`.frames`: the ready-frame layer events tuned consumers take as they are;
- :mod:`.reader`: one task per process reads its channels-redis inbox;
- :mod:`.membership`: membership refresh, so dead processes' members expire;
- :mod:`.keys`: the Redis key layout;
- :mod:`.serializers`: the channels-redis serializer that carries frames as bytes.

A new layer belongs here, with its private hooks in :mod:`channels_tuning.compat`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "DeliveryReport",
    "InMemoryChannelLayer",
    "RedisChannelLayer",
    "RedisClusterChannelLayer",
    "RedisPubSubChannelLayer",
    "ReportingGroupSendMixin",
]

# Lazy, so that importing a small part (frames, keys) loads neither channels-redis
# nor redis-py: CHANNEL_LAYERS' BACKEND paths still resolve as before.
_LOCATIONS = {
    "DeliveryReport": ".report",
    "InMemoryChannelLayer": ".memory",
    "RedisChannelLayer": ".redis",
    "RedisClusterChannelLayer": ".redis",
    "RedisPubSubChannelLayer": ".pubsub",
    "ReportingGroupSendMixin": ".sending",
}

if TYPE_CHECKING:
    from .memory import InMemoryChannelLayer
    from .pubsub import RedisPubSubChannelLayer
    from .redis import RedisChannelLayer, RedisClusterChannelLayer
    from .report import DeliveryReport
    from .sending import ReportingGroupSendMixin


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
