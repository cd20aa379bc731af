"""The health endpoint a load balancer checks: may this process take new WebSockets?

A load balancer that only checks that a port accepts TCP keeps sending clients to a
server that is draining (it still listens while its 1012 closes go out). The tuned
server answers ``GET /_ct/health`` itself, on its event loop, before Django
(``--health-path``; empty: off):

- ``200 {"status": "ok"}``: serving;
- ``200 {"status": "full"}``: at ``CHANNELS_TUNING["MAX_CONNECTIONS"]``. Still 200: a
  balancer that took a full server out (HAProxy marks it DOWN) lets *one client* that
  fills a server eject it, and with one such client per server the whole fleet
  (measured: a legitimate client then got HAProxy's 503 "no server available"). New
  WebSockets on a full server get 1013 and reconnect; a least-connections balancer
  sends them to the others first;
- ``503 {"status": "draining"}``: SIGTERM received. With ``--drain-health-delay N`` the
  server keeps serving for N seconds after that before it stops listening and closes
  its WebSockets with 1012, so the balancer's health check (its interval times its
  fall count) takes the server out of rotation before any client is refused: the
  readiness-before-drain order Kubernetes asks for too.

``GET /_ct/health?ready`` is the readiness question instead: 503 when full as well as
when draining (a Kubernetes ``readinessProbe`` then stops sending new connections to a
full pod and keeps its open ones; per-user limits keep one client from filling it).

The answer carries the connection count and the pid only for a request from one of
``METRICS_ALLOWED_ADDRESSES`` that no proxy relayed (no ``X-Forwarded-For``): a
balancer's own check, an operator on the host; a client through the balancer learns
the status, nothing more. Answered from the event loop that serves the WebSockets,
so a loop too busy to answer fails the check too. Counted in no metric: a balancer
checks every second or so.

``--health-port PORT`` answers it on a port of its own as well, which serves nothing
else (404, counted as ``rejected_connections_total{reason="health_port_only"}``),
which the accept gate (servers.daphne.admission) never pauses, and whose connections
are outside ``--max-half-open`` and the gate's count (with the handshake deadline
still): otherwise one client holding the cap with idle sockets failed the balancer's
checks too (``tests/e2e/test_hostile.py``). On the
main port a check waits in the listen backlog with a reconnect storm's connections,
or finds it full (the kernel drops its SYN and the client sends it again after 1 s):
behind the deployment guide's HAProxy (checks 500 ms apart, timing out after 500 ms,
down after 2), the server left when the other of two stopped under 8 000 clients was
marked down in 3 of 7 storms (2 of 6 without the gate), and HAProxy answered 503 "no
server available" meanwhile. On ``--health-port`` it failed no check in 6
(``python benchmarks/storm_balancer.py``; docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ...compat import daphne as upstream
from ...conf import project_settings
from ...core.addresses import address_in
from ...runtime.registry import registry

#: Default ``--health-path``.
DEFAULT_HEALTH_PATH = "/_ct/health"


def health_port_endpoint(descriptions: list[str], port: int) -> str:
    """daphne's endpoint string for ``--health-port``: ``port`` on the interface of the
    first IPv4 ``-b``/``-p`` endpoint in ``descriptions``, else on 127.0.0.1."""
    interface = "127.0.0.1"
    # daphne's endpoint strings as compat.daphne knows them (else logged at start).
    if upstream.features["endpoint_strings"]:
        for description in descriptions:
            address = upstream.ipv4_tcp_address(description)
            if address is not None:
                interface = address[0]
                break
    return f"tcp:port={port}:interface={interface}"


@dataclass
class Health:
    """One process' answer to its load balancer."""

    draining: bool = False

    def verdict(self, *, ready: bool = False, detail: bool = False) -> tuple[int, bytes]:
        """``(HTTP status, JSON body)``: the health question, or with ``ready`` the
        readiness one; with ``detail``, the connection count and the pid too."""
        connections = registry.count()
        status = "ok"
        if self.draining:
            status = "draining"
        else:
            limit = project_settings()["MAX_CONNECTIONS"]
            if limit is not None and connections >= limit:
                status = "full"
        refused = status == "draining" or (ready and status == "full")
        body: dict[str, object] = {"status": status}
        if detail:
            body.update(connections=connections, pid=os.getpid())
        return (503 if refused else 200), json.dumps(body).encode()


def may_see_detail(peer: str, relayed: bool) -> bool:
    """Whether a health request may see counts and the pid: from an allowed address
    (``METRICS_ALLOWED_ADDRESSES``) and not relayed by a proxy."""
    if relayed:
        return False
    return address_in(peer, project_settings()["METRICS_ALLOWED_ADDRESSES"] or ())
