"""Client addresses through trusted proxies, and IPv6 clients by prefix."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels_tuning.core.addresses import (
    TrustedProxies,
    address_group,
    forwarded_for,
    parse_address,
)

BALANCER = "10.0.0.5"
PROXIES = TrustedProxies(["10.0.0.0/8", "::1"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.9", "203.0.113.9"),
        (" 203.0.113.9:5678 ", "203.0.113.9"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),  # an IPv4 client on a dual-stack socket
        ("unknown", None),
        ("", None),
        ("1.2.3.4.5", None),
    ],
)
def test_addresses_are_read_as_proxies_and_servers_write_them(text, expected):
    parsed = parse_address(text)
    assert (None if parsed is None else str(parsed)) == expected


def test_the_client_is_the_right_most_entry_no_trusted_proxy_wrote():
    # The client wrote 6.6.6.6; the balancer appended the address it saw.
    assert PROXIES.client_address(BALANCER, ["6.6.6.6, 203.0.113.9"]) == "203.0.113.9"
    # Two trusted hops (a CDN's edge in 10/8, then the balancer).
    assert PROXIES.client_address(BALANCER, ["6.6.6.6, 203.0.113.9, 10.1.2.3"]) == "203.0.113.9"
    # The header repeated: one list, in order.
    assert PROXIES.client_address(BALANCER, ["6.6.6.6", "203.0.113.9"]) == "203.0.113.9"


def test_a_client_that_connects_directly_cannot_name_an_address():
    assert PROXIES.client_address("203.0.113.9", ["10.0.0.1"]) == "203.0.113.9"
    assert PROXIES.client_address("203.0.113.9", ["127.0.0.1"]) == "203.0.113.9"


def test_an_entry_that_is_no_address_is_not_an_identity():
    # A client could vary garbage at will: the last trusted hop stands for it.
    assert PROXIES.client_address(BALANCER, ["unknown"]) == BALANCER
    assert PROXIES.client_address(BALANCER, ["203.0.113.9, x-1, 10.1.2.3"]) == "10.1.2.3"
    # No header at all (a proxy's own request, a health check): the proxy.
    assert PROXIES.client_address(BALANCER, []) == BALANCER
    # Every hop trusted: the left-most trusted one.
    assert PROXIES.client_address(BALANCER, ["10.9.9.9, 10.1.1.1"]) == "10.9.9.9"


def test_without_trusted_proxies_the_peer_is_the_client():
    assert not TrustedProxies()
    assert TrustedProxies().client_address(BALANCER, ["6.6.6.6"]) == BALANCER


def test_ipv6_clients_are_counted_by_prefix():
    assert address_group("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_group("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_group("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert address_group("2001:db8:1:2::1", 128) == "2001:db8:1:2::1"
    assert address_group("2001:db8:1:2::1", 48) == "2001:db8:1::/48"
    assert address_group("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_group("192.0.2.1") == "192.0.2.1"
    assert address_group("not an address") == "not an address"


def test_forwarded_for_reads_every_header_of_that_name():
    headers = [(b"host", b"x"), (b"X-Forwarded-For", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2")]
    assert forwarded_for(headers) == ["1.1.1.1", "2.2.2.2"]


_ipv4 = st.ip_addresses(v=4).map(str)
_trusted = ipaddress.ip_network("10.0.0.0/8")
_anything = st.one_of(_ipv4, st.ip_addresses(v=6).map(str), st.text(max_size=20))


@given(
    written=st.lists(_anything, max_size=5),
    client=_ipv4.filter(lambda address: ipaddress.ip_address(address) not in _trusted),
    hops=st.lists(st.ip_addresses(network="10.0.0.0/8").map(str), max_size=3),
)
def test_whatever_the_client_writes_it_is_counted_as_what_the_first_proxy_saw(
    written, client, hops
):
    """A client's own entries (anything at all, commas included) are left of the
    address the first trusted proxy appended; the answer is always that address."""
    header = ", ".join([*written, client, *hops])
    assert PROXIES.client_address(BALANCER, [header]) == str(ipaddress.ip_address(client))
