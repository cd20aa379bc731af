"""The consumers users subclass, and the Channels glue around the connection core.

- :mod:`.base`: :class:`ManagedConnectionMixin`, the I/O around
  :class:`~channels_tuning.core.ConnectionCore` (lifecycle, sends, layer events,
  group hygiene);
- :mod:`.mixins`: one mixin per policy (heartbeat, limits, lifetime);
- :mod:`.codec`: typed messages through a codec;
- :mod:`.tuned`: the ready compositions (``TunedWebsocketConsumer`` and friends).
"""

from .base import ManagedConnectionMixin
from .codec import CodecMixin
from .mixins import ConnectionLimitMixin, HeartbeatMixin, MaxLifetimeMixin, MessageLimitMixin
from .tuned import (
    TunedJsonWebsocketConsumer,
    TunedProtobufWebsocketConsumer,
    TunedWebsocketConsumer,
)

__all__ = [
    "CodecMixin",
    "ConnectionLimitMixin",
    "HeartbeatMixin",
    "ManagedConnectionMixin",
    "MaxLifetimeMixin",
    "MessageLimitMixin",
    "TunedJsonWebsocketConsumer",
    "TunedProtobufWebsocketConsumer",
    "TunedWebsocketConsumer",
]
