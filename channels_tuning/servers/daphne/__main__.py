"""``python -m channels_tuning.servers.daphne``: the same as ``channels-tuning-daphne``."""

from .cli import main

main()
