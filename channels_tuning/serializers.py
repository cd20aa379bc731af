"""Stable import path of :mod:`channels_tuning.layers.serializers`: importing it
registers the ``"channels_tuning"`` serializer format with channels-redis."""

from .layers.serializers import *  # noqa: F403
from .layers.serializers import __all__  # noqa: F401
