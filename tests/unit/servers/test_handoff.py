"""``--reuse-port``'s sockets (servers/daphne/handoff.py); the handoff between two
real servers is tests/e2e/test_daphne.py -k reuse_port."""

from __future__ import annotations

import os
import socket

import pytest

from channels_tuning.servers.daphne.handoff import reuse_port_endpoints


def adopted(endpoint: str) -> socket.socket:
    """What daphne's ``fd:`` endpoint adopts (and its owner closes)."""
    assert endpoint.startswith("fd:fileno=")
    return socket.socket(fileno=int(endpoint.removeprefix("fd:fileno=")))


def test_tcp_endpoints_become_adopted_sockets_that_share_the_port():
    [endpoint] = reuse_port_endpoints(["tcp:port=0:interface=127.0.0.1"])
    first = adopted(endpoint)
    port = first.getsockname()[1]
    # A second one on the same address while the first listens: that is the point.
    [again, unix] = reuse_port_endpoints([f"tcp:port={port}:interface=127.0.0.1", "unix:/x"])
    second = adopted(again)
    assert unix == "unix:/x" and second.getsockname() == ("127.0.0.1", port)
    assert not os.get_blocking(second.fileno())
    first.close()
    second.close()


def test_without_an_ipv4_address_it_is_an_error():
    with pytest.raises(ValueError, match="-b/-p"):
        reuse_port_endpoints(["unix:/tmp/x"])
    with pytest.raises(ValueError, match="IPv4"):
        reuse_port_endpoints([r"tcp:port=0:interface=\:\:1"])


def test_a_port_taken_without_reuse_port_is_an_error():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(OSError):
            reuse_port_endpoints([f"tcp:port={taken.getsockname()[1]}:interface=127.0.0.1"])
    finally:
        taken.close()
