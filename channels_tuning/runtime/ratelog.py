"""A log line at most once a second, for what clients can trigger at will.

A client that probes paths or opens sockets it never uses must not be able to fill
the log: the first event of a second is logged, the others are only counted, and the
next line says how many were not logged."""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimitedLog:
    """``log()`` at ``level`` at most once per ``interval`` seconds on ``logger``."""

    def __init__(
        self, logger: logging.Logger, interval: float = 1.0, level: int = logging.WARNING
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.level = level
        self.last = float("-inf")
        self.suppressed = 0

    def log(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        suffix = f" ({self.suppressed} more not logged)" if self.suppressed else ""
        self.last, self.suppressed = now, 0
        self.logger.log(self.level, message + suffix, *args)
