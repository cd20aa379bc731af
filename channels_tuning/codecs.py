"""Deprecated import path kept from 0.1: use :mod:`channels_tuning.wire.codecs`.
Importing it warns; it is removed in 0.3.0."""

import warnings

warnings.warn(
    "channels_tuning.codecs is deprecated and removed in 0.3.0: import channels_tuning.wire.codecs",
    DeprecationWarning,
    stacklevel=2,
)

from .wire.codecs import *  # noqa: E402, F403
from .wire.codecs import __all__  # noqa: E402, F401
