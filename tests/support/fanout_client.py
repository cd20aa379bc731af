"""Lean WebSocket subscribers for the benchmarks and the burst tests (a separate process).

Opens N connections with a minimal asyncio protocol (handshake, then unmasked
server frames parsed from the buffer), prints READY, and counts data frames
``"<seq> <sent_at>"``: per-message latency is ``now - sent_at``. Prints one JSON
line when no frame arrived for --quiet seconds after the first one; it also counts
the connections the server closed or lost (``closed``), and per message
(``by_seq``: seq -> [frames of it, wall-clock time the last of them arrived, its
``sent_at``]) so a benchmark sending several rounds can tell where each one ended.

    python tests/support/fanout_client.py PORT PATH N QUIET MAX_WAIT
                                          [--in-flight K] [--messages M]

With ``--in-flight`` (handshakes in progress at once; one at a time without it), it
first prints ``HANDSHAKES <N> <seconds>``: the connection benchmark's handshake rate.
With ``--messages`` (1 by default), the quiet counts only once a frame of the last
message (seq M - 1) arrived: a benchmark waiting longer than QUIET between its
messages (until a slow server is idle again) still finds every client listening.

Latencies are sampled (at most 20 000 per process) to keep the report small.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import time

HEARTBEATS = (b'{"type":"ct.ping"}', b"\x00\x09")
STAMP = re.compile(rb"(\d+) (\d+\.\d+) ")


class Subscriber(asyncio.Protocol):
    def __init__(self, stats: dict, handshake: asyncio.Future) -> None:
        self.stats = stats
        self.handshake = handshake
        self.buffer = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats["closed"] += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.upgraded = True
            self.handshake.set_result(b" 101 " in self.buffer[:end])
            self.buffer = self.buffer[end + 4 :]
        self._frames()

    def _frames(self) -> None:
        buffer, now = self.buffer, time.time()
        pos = 0
        while len(buffer) - pos >= 2:
            opcode, length = buffer[pos] & 0x0F, buffer[pos + 1] & 0x7F
            header = 2
            if length == 126:
                if len(buffer) - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                header = 4
            elif length == 127:
                if len(buffer) - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                header = 10
            if len(buffer) - pos < header + length:
                break
            payload = buffer[pos + header : pos + header + length]
            pos += header + length
            if opcode == 9 and self.transport is not None:
                # A protocol ping (daphne's keepalive, every 20 s): answer it, as every
                # client library does, or the server drops the connection at 50 s.
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
            if opcode in (1, 2) and payload not in HEARTBEATS:
                # "<seq> <sent_at> xxx…" as a text frame, inside JSON, or inside a
                # protobuf envelope: found by pattern in every case.
                found = STAMP.search(payload)
                if found is not None:
                    self.stats["got"] += 1
                    sent_at = float(found.group(2))
                    self.stats["latencies"].append(now - sent_at)
                    seen = self.stats["by_seq"].setdefault(int(found.group(1)), [0, now, sent_at])
                    seen[0] += 1
                    seen[1] = now
                    if self.stats["last"]:
                        gap = now - self.stats["last"]
                        self.stats["max_gap"] = max(self.stats["max_gap"], gap)
                    self.stats["last"] = now
        self.buffer = buffer[pos:]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Lean WebSocket subscribers.")
    parser.add_argument("port", type=int)
    parser.add_argument("path")
    parser.add_argument("count", type=int)
    parser.add_argument("quiet", type=float)
    parser.add_argument("max_wait", type=float)
    parser.add_argument("--in-flight", type=int, default=None)
    parser.add_argument("--messages", type=int, default=1)
    parser.add_argument(
        "--source",
        default=None,
        help="a loopback address to connect from: each has its own ~28 000 ports to a "
        "server's address (the kernel's ephemeral range)",
    )
    return parser.parse_args()


async def main() -> None:
    options = arguments()
    port, path, count = options.port, options.path, options.count
    quiet, max_wait = options.quiet, options.max_wait
    last_seq = options.messages - 1
    loop = asyncio.get_running_loop()
    stats: dict = {
        "got": 0,
        "latencies": [],
        "last": 0.0,
        "max_gap": 0.0,
        "closed": 0,
        "by_seq": {},
    }
    slots = asyncio.Semaphore(options.in_flight or 1)

    async def connect() -> None:
        async with slots:
            handshake = loop.create_future()
            local = (options.source, 0) if options.source else None
            transport, _ = await loop.create_connection(
                lambda: Subscriber(stats, handshake), "127.0.0.1", port, local_addr=local
            )
            key = base64.b64encode(os.urandom(16)).decode()
            transport.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                # An Origin of the server's own, as a browser page sends (for
                # AllowedHostsOriginValidator in front of the consumers).
                f"Origin: http://127.0.0.1:{port}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            assert await handshake

    started = time.perf_counter()
    await asyncio.gather(*(connect() for _ in range(count)))
    if options.in_flight is not None:  # the handshake benchmark: how long the upgrades took
        print(f"HANDSHAKES {count} {time.perf_counter() - started:.4f}", flush=True)
    print("READY", flush=True)
    started = time.time()
    while time.time() - started < max_wait and (
        stats["last"] == 0.0
        or max(stats["by_seq"], default=0) < last_seq
        or time.time() - stats["last"] < quiet
    ):
        await asyncio.sleep(0.2)
    latencies = stats["latencies"]
    step = max(1, len(latencies) // 20_000)
    report = {
        "got": stats["got"],
        "latencies": latencies[::step],
        "max_gap": stats["max_gap"],
        "closed": stats["closed"],
        "by_seq": stats["by_seq"],
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
