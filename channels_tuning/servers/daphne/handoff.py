"""A restart in place without refused connections: ``--reuse-port``.

Restarting the one process that serves a port (``systemctl restart``) leaves the port
closed from the old process' drain until the new one listens: 10-14 s at 19 000
connections on the test machine (``benchmarks/storm.py``), during which every
reconnect is refused and each client's backoff doubles, so that the last of them came
back 35-40 s after the new process listened.

With ``--reuse-port`` the server listens on a socket of its own with ``SO_REUSEPORT``
(Linux, the BSDs), handed to daphne as an adopted file descriptor: a second process
started with the same option listens on the same address while the first still
serves, the kernel spreads new connections over both, and once the first is sent
SIGTERM it stops listening before its drain, so that its clients' reconnects all
reach the new one (the handoff of Go servers such as ``tableflip``, and of nginx's
binary upgrade). Without the option nothing changes: daphne binds the port itself.

What it does not do: a connection the kernel had already queued on the old socket
when the old process stopped listening is reset (the client retries it at once, as
any refused attempt); the two processes must run as the same user, or the kernel
refuses the second bind; and it takes an IPv4 address (``-b``/``-p``): daphne's
``fd:`` endpoint, through which the socket is handed over, adopts IPv4 sockets only.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from ...compat import daphne as upstream

#: Twisted's own ``listen()`` backlog is 50: a restart's burst of reconnects would
#: overflow it (the kernel caps this at ``net.core.somaxconn``).
LISTEN_BACKLOG = 1024


def reuse_port_endpoints(descriptions: Sequence[str]) -> list[str]:
    """``descriptions`` (daphne's endpoint strings) with each IPv4 ``tcp:`` endpoint
    replaced by a socket bound with ``SO_REUSEPORT``, listening, whose descriptor
    daphne adopts (Twisted closes it once it holds its own copy). Raises
    ``ValueError`` when there is no such endpoint, ``OSError`` when a bind fails,
    ``UpstreamChanged`` when daphne's endpoints changed (``compat/daphne.py``)."""
    replaced = []
    for description in descriptions:
        address = upstream.ipv4_tcp_address(description)
        if address is None:
            if description.startswith("tcp"):
                raise ValueError(f"--reuse-port takes an IPv4 address, not {description!r}")
            replaced.append(description)
            continue
        listener = listening_socket(*address)
        replaced.append(upstream.adopted_socket_endpoint(listener.detach()))
    if replaced == list(descriptions):
        raise ValueError("--reuse-port needs an IPv4 address to listen on (-b/-p)")
    return replaced


def listening_socket(interface: str, port: int) -> socket.socket:
    """A non-blocking IPv4 socket listening on ``interface:port`` with SO_REUSEPORT."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((interface, port))
        listener.listen(LISTEN_BACKLOG)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener
