"""Who a client is, by address: through trusted proxies, and by IPv6 prefix (sans-I/O).

What is guaranteed, and why:

- **A client cannot choose the address it counts as.** Each proxy *appends* the
  address it saw to ``X-Forwarded-For`` (HAProxy's ``option forwardfor``, nginx's
  ``$proxy_add_x_forwarded_for``), after whatever the client wrote there. So the list
  is read from the right: the entries proxies you trust wrote come last, and the first
  one from the right that is not a trusted proxy is the client as the last trusted
  hop saw it. Everything left of it was written by the client. (daphne's
  ``--proxy-headers`` takes the left-most entry instead: behind a balancer that
  appends, that is whatever the client wrote; measured, one client opened 40
  connections as 40 addresses under a limit of 1.)
- **The header counts only from a trusted peer.** A client that connects directly
  (its TCP peer address is not a trusted proxy) cannot name an address at all.
- **A hop that is not an address does not become one.** An entry that does not parse
  (``unknown``, a name, garbage a misconfigured proxy passed on) is never used as the
  client's identity, which a client could vary at will; the last trusted hop stands for
  it, so such clients share one count.
- **One IPv6 client is a prefix, not an address.** A host with IPv6 usually holds a
  whole /64 (SLAAC, privacy addresses) and can rotate through 2^64 addresses: limits
  count :func:`address_group`, the /64 (``IPV6_CLIENT_PREFIX``), and IPv4-mapped IPv6
  addresses as the IPv4 address they are.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Default prefix length that groups IPv6 addresses into one client (a /64 is what one
#: host or home network is usually given).
DEFAULT_IPV6_PREFIX = 64


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies and servers write it (``1.2.3.4``, ``1.2.3.4:5678``,
    ``::1``, ``[::1]:80``, ``fe80::1%eth0``), or None when it is not one."""
    text = text.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4:port (a v6 address has two colons at least)
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_networks(networks: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Addresses and networks (``"10.0.0.0/8"``, ``"::1"``) as networks; ValueError
    for one that is neither."""
    return tuple(ipaddress.ip_network(str(network), strict=False) for network in networks)


def address_in(address: str, networks: Iterable[str]) -> bool:
    """Whether ``address`` (as :func:`parse_address` reads it) is in one of
    ``networks`` (addresses or networks, as settings list them)."""
    parsed = parse_address(address)
    return parsed is not None and any(parsed in network for network in parse_networks(networks))


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` entries are believed.

    >>> proxies = TrustedProxies(["10.0.0.0/8"])
    >>> proxies.client_address("10.0.0.5", ["6.6.6.6, 203.0.113.9"])
    '203.0.113.9'
    """

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks = parse_networks(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: IPAddress | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def client_address(self, peer: str, forwarded_for: Sequence[str]) -> str:
        """The client's address: ``peer`` (the connection's other end) unless it is a
        trusted proxy, then the right-most ``X-Forwarded-For`` entry that is not one.

        ``forwarded_for`` holds the header's values (a request may carry it more than
        once: they are one list, in order)."""
        last_trusted = parse_address(peer)
        if not self.trusts(last_trusted):
            return peer
        hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                break  # not written by a trusted proxy: the last trusted hop stands for it
            if not self.trusts(address):
                return str(address)
            last_trusted = address
        return str(last_trusted)


def address_group(address: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """What limits count for one address: an IPv4 address itself, an IPv6 address as
    its ``/ipv6_prefix`` network (``2001:db8:1:2::/64``), anything else unchanged."""
    parsed = parse_address(address)
    if parsed is None:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and ipv6_prefix < 128:
        return str(ipaddress.IPv6Network((parsed, ipv6_prefix), strict=False))
    return str(parsed)


def forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """The ``X-Forwarded-For`` values of an ASGI scope's headers, in order."""
    return [
        value.decode("latin-1") for name, value in headers if name.lower() == b"x-forwarded-for"
    ]
