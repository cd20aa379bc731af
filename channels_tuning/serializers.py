"""Deprecated import path kept from 0.1: use :mod:`channels_tuning.layers.redis.serializers`
(the ``channels_tuning`` app registers the serializer format itself; nothing needs to
import this). Importing it warns; it is removed in 0.3.0."""

import warnings

warnings.warn(
    "channels_tuning.serializers is deprecated and removed in 0.3.0: "
    "import channels_tuning.layers.redis.serializers",
    DeprecationWarning,
    stacklevel=2,
)

from .layers.redis.serializers import *  # noqa: E402, F403
from .layers.redis.serializers import __all__  # noqa: E402, F401
