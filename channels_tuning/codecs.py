"""Stable import path of :mod:`channels_tuning.wire.codecs` (JSON and protobuf codecs)."""

from .wire.codecs import *  # noqa: F403
from .wire.codecs import __all__  # noqa: F401
