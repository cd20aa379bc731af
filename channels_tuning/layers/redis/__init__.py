"""The tuned Redis layer, on channels-redis, and everything only it has: the key
layout (:mod:`.keys`), one reader per process for its inbox (:mod:`.reader`),
membership batching and refresh (:mod:`.membership`), group history
(:mod:`.history`) and presence (:mod:`.presence`) in Redis, the same on Redis Cluster
(:mod:`.cluster`), and the serializer that
carries broadcast frames as bytes (:mod:`.serializers`). Its private hooks into
channels-redis are in :mod:`channels_tuning.compat.channels_redis`.

Lazy, as :mod:`channels_tuning.layers` is: importing the key layout loads neither
channels-redis nor redis-py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["LIVENESS_TTL", "RedisChannelLayer", "RedisClusterChannelLayer"]

_MODULES = {"RedisClusterChannelLayer": ".cluster"}

if TYPE_CHECKING:
    from .cluster import RedisClusterChannelLayer
    from .layer import LIVENESS_TTL, RedisChannelLayer


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(_MODULES.get(name, ".layer"), __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
