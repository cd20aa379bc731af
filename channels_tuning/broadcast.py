"""Stable import path of :mod:`channels_tuning.layers.broadcast` (``broadcast()``,
``broadcast_many()``, ``send_to_group()`` and their exceptions)."""

from .layers.broadcast import *  # noqa: F403
from .layers.broadcast import __all__  # noqa: F401
