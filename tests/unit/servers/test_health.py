"""``--health-port``'s endpoint (servers/daphne/health.py); the port under a closed
accept gate and behind HAProxy is tests/e2e/test_proxies.py -k "storm or health_port"."""

from __future__ import annotations

from daphne.endpoints import build_endpoint_description_strings

from channels_tuning.servers.daphne.health import health_port_endpoint


def test_the_health_port_listens_on_the_address_the_server_is_bound_to():
    served = build_endpoint_description_strings(host="10.1.2.3", port=8001)
    assert health_port_endpoint(served, 9001) == "tcp:port=9001:interface=10.1.2.3"


def test_without_an_ipv4_address_the_health_port_is_on_loopback():
    served = build_endpoint_description_strings(unix_socket="/run/chat.sock")
    assert health_port_endpoint(served, 9001) == "tcp:port=9001:interface=127.0.0.1"


def test_with_daphne_endpoint_strings_changed_the_health_port_is_on_loopback(monkeypatch):
    from channels_tuning.compat import daphne as daphne_hooks

    monkeypatch.setitem(daphne_hooks.features, "endpoint_strings", False)
    served = build_endpoint_description_strings(host="10.1.2.3", port=8001)
    assert health_port_endpoint(served, 9001) == "tcp:port=9001:interface=127.0.0.1"
