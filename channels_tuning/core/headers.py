"""Request headers shared between connections (sans-I/O).

Every connection keeps its scope, and with it the list of ``(name, value)`` byte pairs
the server built from the upgrade request, for as long as it is open: Channels gives
the consumer ``self.scope["headers"]`` at any time. Most of those pairs are the same on
every connection of a service (``host``, ``upgrade``, ``origin``, ``user-agent``,
``accept-language``...), yet each connection holds its own copies: a tuple and two
bytes objects per header, about 150-200 bytes each. :class:`SharedHeaders` replaces,
in the list itself, each pair by an equal one already held by an earlier connection.

What is guaranteed, and why:

- **Nothing a consumer can see changes.** The list stays the connection's own object
  with the same pairs in the same order; a pair is swapped only for an equal tuple of
  equal bytes, and both are immutable. Only ``is`` between two connections' pairs can
  tell. Anything that is not a list of 2-tuples of bytes is left alone.
- **Values are shared only where they repeat.** Only headers of :data:`SHARED_VALUES`
  (what a browser sends alike on every connection of a page) are kept whole, and only
  up to ``longest_value`` bytes; values that differ on every connection (the cookie,
  ``sec-websocket-key``, ``x-forwarded-for``) keep their value, and share only the
  header's name.
- **Nothing secret is kept.** The table holds the values of :data:`SHARED_VALUES`
  only; a cookie or an ``authorization`` header never outlives its connection here.
- **Bounded, whatever clients send.** At most ``capacity`` pairs of values up to
  ``longest_value`` bytes and ``capacity`` names up to ``longest_name`` bytes are held
  (about 0.7 MB at most with the defaults); a table that fills is emptied and starts
  again (the connections that hold its pairs keep them, as they would without it). A
  client that varies its ``user-agent`` or invents header names costs sharing, never
  memory.

Where it runs: ``channels-tuning-daphne`` shares the headers of every WebSocket it
starts, plain Channels consumers' included; the package's consumers share them on
other servers (uvicorn, hypercorn, plain daphne). Both use :data:`process_headers`.

Measured: ``python benchmarks/headers.py`` (the pairs as daphne builds them, 2 000
connections) gives 997 bytes per connection held each and 242 shared for the
benchmarks' client (six headers, five alike), 2 312 and 498 for Chromium's upgrade
request (thirteen, Django's session and CSRF cookies among them). In a server
(``python benchmarks/connections.py --kinds tuned --breakdown``, 2 000 idle
connections) daphne's share of the traced bytes per connection went from 1 723 to 919.
"""

from __future__ import annotations

from typing import Any

#: Headers whose values are, on a real service, the same for most connections.
SHARED_VALUES = frozenset(
    {
        b"host",
        b"connection",
        b"upgrade",
        b"origin",
        b"pragma",
        b"cache-control",
        b"user-agent",
        b"accept-encoding",
        b"accept-language",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"x-forwarded-proto",
        b"x-forwarded-port",
    }
)


class SharedHeaders:
    """A bounded table of header pairs and names, to share between connections."""

    def __init__(
        self, capacity: int = 1024, longest_value: int = 512, longest_name: int = 64
    ) -> None:
        self.capacity = capacity
        self.longest_value = longest_value
        self.longest_name = longest_name
        self._pairs: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
        self._names: dict[bytes, bytes] = {}

    def __len__(self) -> int:
        return len(self._pairs) + len(self._names)

    def share(self, headers: Any) -> None:
        """Replace, in place, each pair of the list ``headers`` by an equal shared one."""
        if type(headers) is not list:
            return
        pairs = self._pairs
        for index, pair in enumerate(headers):
            if (
                type(pair) is tuple
                and len(pair) == 2
                and type(pair[0]) is bytes
                and type(pair[1]) is bytes
            ):
                headers[index] = pairs.get(pair) or self._first_seen(pair)

    def _first_seen(self, pair: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
        name, value = pair
        if name in SHARED_VALUES and len(value) <= self.longest_value:
            if len(self._pairs) >= self.capacity:
                self._pairs.clear()
            self._pairs[pair] = pair  # this connection's pair becomes the shared one
            return pair
        shared_name = self._names.get(name)
        if shared_name is None:
            if len(name) > self.longest_name:
                return pair
            if len(self._names) >= self.capacity:
                self._names.clear()
            self._names[name] = name
            return pair
        return pair if shared_name is name else (shared_name, value)


#: One per process: what the server and the consumers share the headers through.
process_headers = SharedHeaders()
