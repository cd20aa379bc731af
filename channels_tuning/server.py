"""Deprecated import path kept from 0.1: use :mod:`channels_tuning.servers.daphne`
(the command is ``channels-tuning-daphne``). Importing it warns; it is removed in 0.3.0."""

import warnings

warnings.warn(
    "channels_tuning.server is deprecated and removed in 0.3.0: "
    "import channels_tuning.servers.daphne",
    DeprecationWarning,
    stacklevel=2,
)

from .servers.daphne import *  # noqa: E402, F403
from .servers.daphne import __all__, main  # noqa: E402, F401

if __name__ == "__main__":
    main()
