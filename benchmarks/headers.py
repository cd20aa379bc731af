"""What an open connection's request headers cost, held by each connection or shared.

Every connection keeps its scope, and with it the ``(name, value)`` pairs of its
upgrade request (``self.scope["headers"]``). The package's consumers hold the pairs
alike on every connection once per process (``channels_tuning/core/headers.py``).
This builds N header lists as daphne does (a new tuple and bytes per header) for two
clients: the benchmarks' own (six headers) and Chromium's upgrade request (thirteen,
a session cookie among them), and reports the bytes tracemalloc counts per connection
for the lists kept as built and kept after ``SharedHeaders.share``.

    python benchmarks/headers.py [--connections 2000]
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from channels_tuning.core.headers import SharedHeaders  # noqa: E402

Raw = list[tuple[str, str]]


def benchmark_client() -> Raw:
    """What tests/support/fanout_client.py sends."""
    return [
        ("Host", "127.0.0.1"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()),
        ("Origin", "http://127.0.0.1:8000"),
        ("Sec-WebSocket-Version", "13"),
    ]


def chromium() -> Raw:
    """Chromium 131's upgrade request from a page with Django's session and CSRF cookies."""
    cookie = f"csrftoken={os.urandom(24).hex()}; sessionid={os.urandom(16).hex()}"
    return [
        ("Host", "chat.example.com"),
        ("Connection", "Upgrade"),
        ("Pragma", "no-cache"),
        ("Cache-Control", "no-cache"),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36",
        ),
        ("Upgrade", "websocket"),
        ("Origin", "https://chat.example.com"),
        ("Sec-WebSocket-Version", "13"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Accept-Language", "en-US,en;q=0.9"),
        ("Cookie", cookie),
        ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()),
        ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
    ]


def as_daphne_builds(raw: Raw) -> list[tuple[bytes, bytes]]:
    # daphne.ws_protocol.WebSocketProtocol.onConnect
    return [(name.encode("ascii").lower(), value.encode("latin1")) for name, value in raw]


def bytes_per_connection(client: Callable[[], Raw], connections: int, share: bool) -> float:
    table = SharedHeaders()
    raws = [client() for _ in range(connections)]  # the request's text is not counted
    kept = []
    tracemalloc.start()
    try:
        for raw in raws:
            headers = as_daphne_builds(raw)
            if share:
                table.share(headers)
            kept.append(headers)
        return tracemalloc.get_traced_memory()[0] / connections
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=2000)
    args = parser.parse_args()
    print(f"| {args.connections} connections | held each, B | shared, B | shared/held |")
    print("|---|---|---|---|")
    for name, client in (("benchmark client", benchmark_client), ("Chromium", chromium)):
        held = bytes_per_connection(client, args.connections, share=False)
        shared = bytes_per_connection(client, args.connections, share=True)
        print(f"| {name} | {held:.0f} | {shared:.0f} | {shared / held:.2f} |")


if __name__ == "__main__":
    main()
