"""The health endpoint a load balancer checks: may this process take new WebSockets?

A load balancer that only checks that a port accepts TCP keeps sending clients to a
server that is draining (it still listens while its 1012 closes go out) or that is at
its connection limit (every new client is refused with 1013 and reconnects, to the
same server half the time). The tuned server answers ``GET /_ct/health`` itself, on
its event loop, before Django (``--health-path``; empty: off):

- ``200 {"status": "ok", ...}``: serving;
- ``503 {"status": "draining"}``: SIGTERM received. With ``--drain-health-delay N`` the
  server keeps serving for N seconds after that before it stops listening and closes
  its WebSockets with 1012, so the balancer's health check (its interval times its
  fall count) takes the server out of rotation before any client is refused: the
  readiness-before-drain order Kubernetes asks for too;
- ``503 {"status": "full"}``: at ``CHANNELS_TUNING["MAX_CONNECTIONS"]``.

Answered from the event loop that serves the WebSockets, so a loop too busy to answer
fails the check too. Counted in no metric: a balancer checks every second or so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ...conf import project_settings
from ...runtime.registry import registry

#: Default ``--health-path``.
DEFAULT_HEALTH_PATH = "/_ct/health"


@dataclass
class Health:
    """One process' answer to its load balancer."""

    draining: bool = False

    def verdict(self) -> tuple[int, bytes]:
        """``(HTTP status, JSON body)``."""
        connections = registry.count()
        status = "ok"
        if self.draining:
            status = "draining"
        else:
            limit = project_settings()["MAX_CONNECTIONS"]
            if limit is not None and connections >= limit:
                status = "full"
        body = {"status": status, "connections": connections, "pid": os.getpid()}
        return (200 if status == "ok" else 503), json.dumps(body).encode()
