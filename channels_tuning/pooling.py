"""Stable import path of :mod:`channels_tuning.wire.pooling` (object and buffer pools)."""

from .wire.pooling import *  # noqa: F403
from .wire.pooling import __all__  # noqa: F401
