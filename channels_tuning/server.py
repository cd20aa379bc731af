"""Stable import path of :mod:`channels_tuning.servers.daphne` (``channels-tuning-daphne``)."""

from .servers.daphne import *  # noqa: F403
from .servers.daphne import __all__, main  # noqa: F401

if __name__ == "__main__":
    main()
