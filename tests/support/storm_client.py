"""Lean WebSocket clients that reconnect as the package's clients do (a separate process),
for the reconnect-storm benchmark (``benchmarks/storm.py``).

Opens N connections (at most 50 handshakes at once), prints READY, then keeps each
one open: when it is lost, it waits what ``channels_tuning.client.reconnect_delay``
says for its close code and attempt (the package's ``Backoff`` defaults: full jitter,
0.5 s doubling to 20 s; 1012 "service restart" at once within 0.5 s), and tries
again, each attempt bounded by the Python client's 10 s ``open_timeout``. The attempt
count starts again after a connection stayed open ``STABLE_AFTER`` seconds, and a
client stops after ``MAX_REFUSALS`` permanent refusals in a row (4xx), as
``ReconnectingClient`` does: that is a client given up.

Once every connection has been lost and opened again (or ``MAX_WAIT`` seconds after
the first loss), prints one JSON line: per connection when it was first lost and
when it was open again, the failed attempts by reason, the close codes seen, the
clients given up; it holds its connections until its stdin closes.

    python tests/support/storm_client.py PORT PATH N
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from channels_tuning.client.backoff import Backoff, reconnect_delay

OPEN_TIMEOUT = 10.0  # ReconnectingClient's open_timeout
STABLE_AFTER = 10.0  # ReconnectingClient's stable_after
TRY_LATER_DELAY = 10.0  # ReconnectingClient's try_later_delay
MAX_REFUSALS = 3  # ReconnectingClient.max_refusals
PERMANENT_REFUSALS = frozenset({400, 401, 403, 404, 405})
MAX_WAIT = 120.0
ABNORMAL = 1006


class Connection(asyncio.Protocol):
    """One connection: its handshake's status, then pongs and the server's close code."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.status: asyncio.Future[int] = loop.create_future()
        self.lost: asyncio.Future[int] = loop.create_future()
        self.code = ABNORMAL
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.status.done():
            self.status.set_result(0)
        if not self.lost.done():
            self.lost.set_result(self.code)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.status.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].split(b" ", 2)
            self.status.set_result(int(head[1]) if len(head) > 1 else 0)
            self.buffer = self.buffer[end + 4 :]
        while len(self.buffer) >= 2:
            opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            header = 2 if length < 126 else 4 if length == 126 else 10
            if length >= 126:
                if len(self.buffer) < header:
                    return
                length = int.from_bytes(self.buffer[2:header], "big")
            if len(self.buffer) < header + length:
                return
            payload = self.buffer[header : header + length]
            self.buffer = self.buffer[header + length :]
            if opcode == 9:  # a protocol ping: answered, as every client library does
                self.write_masked(0x8A, payload)
            elif opcode == 8:
                if len(payload) >= 2:
                    self.code = int.from_bytes(payload[:2], "big")
                self.write_masked(0x88, payload[:2])

    def write_masked(self, first_byte: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            self.transport.write(bytes([first_byte, 0x80 | len(payload)]) + mask + masked)


class Storm:
    def __init__(self, port: int, path: str, count: int) -> None:
        self.port, self.path, self.count = port, path, count
        self.lost_at: list[float] = [0.0] * count
        self.back_at: list[float] = [0.0] * count
        self.failures: collections.Counter[str] = collections.Counter()
        self.codes: collections.Counter[int] = collections.Counter()
        self.gave_up = 0
        self.open = 0
        self.first_round = asyncio.Semaphore(50)
        self.changed = asyncio.Event()

    async def attempt(self) -> tuple[Connection | None, str]:
        """One connection attempt: the open connection, or None and why it failed."""
        loop = asyncio.get_running_loop()
        key = base64.b64encode(os.urandom(16)).decode()
        made: list[tuple[asyncio.BaseTransport, Connection]] = []

        async def handshake() -> int:
            made.append(await loop.create_connection(Connection, "127.0.0.1", self.port))
            made[0][0].write(  # type: ignore[attr-defined]
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nOrigin: http://127.0.0.1:{self.port}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            return await made[0][1].status

        try:
            status = await asyncio.wait_for(handshake(), OPEN_TIMEOUT)
        except asyncio.TimeoutError:
            if made:
                made[0][0].close()
            return None, "timeout"
        except ConnectionRefusedError:
            return None, "refused"
        except OSError as error:
            return None, type(error).__name__
        transport, connection = made[0]
        if status == 101:
            return connection, ""
        transport.close()
        return None, f"http {status}" if status else "closed in the handshake"

    async def keep(self, index: int) -> None:
        backoff, attempt, refusals = Backoff(), 0, 0
        first = True
        while True:
            if first:
                async with self.first_round:
                    connection, failure = await self.attempt()
            else:
                connection, failure = await self.attempt()
            code = ABNORMAL
            if connection is not None:
                opened_at, refusals = time.time(), 0
                if self.lost_at[index] and not self.back_at[index]:
                    self.back_at[index] = opened_at
                self.open += 1
                self.changed.set()
                first = False
                code = await connection.lost
                self.open -= 1
                if not self.lost_at[index]:
                    self.lost_at[index] = time.time()
                self.codes[code] += 1
                self.changed.set()
                if time.time() - opened_at >= STABLE_AFTER:
                    attempt = 0
            else:
                self.failures[failure] += 1
                status = int(failure[5:]) if failure.startswith("http ") else 0
                refusals = refusals + 1 if status in PERMANENT_REFUSALS else 0
                if refusals >= MAX_REFUSALS:
                    self.gave_up += 1
                    return
            delay = reconnect_delay(code, attempt, backoff, TRY_LATER_DELAY)
            if delay is None:
                self.gave_up += 1
                return
            attempt += 1
            await asyncio.sleep(delay)

    def all_back(self) -> bool:
        return all(back for back in self.back_at)

    async def run(self) -> None:
        keepers = [asyncio.ensure_future(self.keep(i)) for i in range(self.count)]
        while self.open < self.count:
            self.changed.clear()
            await self.changed.wait()
        print("READY", flush=True)
        while not any(self.lost_at):
            self.changed.clear()
            await self.changed.wait()
        deadline = time.monotonic() + MAX_WAIT
        while not self.all_back() and time.monotonic() < deadline and self.gave_up < self.count:
            await asyncio.sleep(0.1)
        report = {
            "lost_at": self.lost_at,
            "back_at": self.back_at,
            "failures": dict(self.failures),
            "codes": {str(code): n for code, n in self.codes.items()},
            "gave_up": self.gave_up,
        }
        print(json.dumps(report), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for keeper in keepers:
            keeper.cancel()


async def main() -> None:
    port, path, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    await Storm(port, path, count).run()


if __name__ == "__main__":
    asyncio.run(main())
