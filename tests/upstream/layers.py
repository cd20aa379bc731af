"""What channels-redis' test suite imports instead of its layers: the tuned ones.

The one addition: channels-redis' tests build some layers without ``hosts``, which
means ``redis://localhost:6379``; here that default is the test's own redis-server
(``UPSTREAM_REDIS_URL``, a free loopback port)."""

import os
from typing import Any

from channels_tuning.layers import RedisChannelLayer as TunedRedisChannelLayer
from channels_tuning.layers import RedisPubSubChannelLayer as TunedRedisPubSubChannelLayer

URL = os.environ.get("UPSTREAM_REDIS_URL", "redis://127.0.0.1:6379")


class RedisChannelLayer(TunedRedisChannelLayer):
    def __init__(self, hosts: Any = None, **kwargs: Any) -> None:
        super().__init__(hosts=hosts or [URL], **kwargs)


class RedisPubSubChannelLayer(TunedRedisPubSubChannelLayer):
    def __init__(self, hosts: Any = None, **kwargs: Any) -> None:
        super().__init__(hosts=hosts or [URL], **kwargs)
