"""N ``ReconnectingClient``s (the package's Python client) in one process, for the
load-balancer tests: each subscribes through the URL, records what it receives and
when it was connected, and reconnects as the package's backoff says.

    python tests/support/lb_clients.py URL N [json]

Prints ``READY`` once every client is open, then runs until its stdin closes and
prints one JSON report. If stdin gave a number (the last sequence number sent), it
first waits, at most ``DRAIN_TIMEOUT`` seconds, until every client has received it:
600 clients in one process on a busy 2-core machine can be seconds behind the
producer, and a report taken earlier would count their backlog as lost. The report:
per client, the sequence numbers it received (frames ``"<seq> ..."``), when it
opened (``opens``), when it lost its connection (``closes``: time and code), and the
backoff delays it waited (``delays``).

With ``json`` (groups with history): the frames are JSON envelopes whose ``data`` is
``"<seq> ..."``; the report adds, per client, each ``subscribed`` message's
``recovered`` with its arrival time, when each message arrived, and the client's
``duplicates`` and ``gaps``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from channels_tuning.client import Backoff, ReconnectingClient

DRAIN_TIMEOUT = 30.0


class Recorder:
    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.opens: list[float] = []
        self.closes: list[tuple[float, int]] = []
        self.delays: list[float] = []
        self.recovered: list[tuple[float, bool]] = []
        self.last_message_at = 0.0
        self.arrivals: list[float] = []

    def on_open(self) -> None:
        self.opens.append(time.time())

    def on_message(self, message: str | dict) -> None:
        self.last_message_at = time.time()
        if isinstance(message, dict):
            if message.get("kind") == "subscribed":
                self.recovered.append((time.time(), message["recovered"]))
                return
            message = message["data"]
        self.seqs.append(int(message.split(" ", 1)[0]))
        self.arrivals.append(self.last_message_at)

    def on_reconnecting(self, delay: float, attempt: int, code: int) -> None:
        self.closes.append((time.time(), code))
        self.delays.append(delay)


async def received_by_all(recorders: list[Recorder], last_seq: int, timeout: float) -> None:
    """Until every client's latest message is ``last_seq`` or later, or ``timeout``
    passed (the report then shows what is missing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(r.seqs and r.seqs[-1] >= last_seq for r in recorders):
            return
        await asyncio.sleep(0.05)


async def main() -> None:
    url, count = sys.argv[1], int(sys.argv[2])
    codec = sys.argv[3] if len(sys.argv) > 3 else None
    recorders = [Recorder() for _ in range(count)]
    clients = [
        ReconnectingClient(
            url,
            codec=codec,
            backoff=Backoff(initial_delay=0.5, max_delay=5.0),
            on_open=r.on_open,
            on_message=r.on_message,
            on_reconnecting=r.on_reconnecting,
        )
        for r in recorders
    ]
    for client in clients:
        client.start()
        await asyncio.sleep(0.002)  # a steady arrival, not 600 SYNs at once
    await asyncio.gather(*(client.wait_open(timeout=60) for client in clients))
    print("READY", flush=True)
    told = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    if told.strip():
        await received_by_all(recorders, int(told), DRAIN_TIMEOUT)
    await asyncio.gather(*(client.close() for client in clients))
    report = [
        {
            "seqs": r.seqs,
            "opens": r.opens,
            "closes": r.closes,
            "delays": r.delays,
            "recovered": r.recovered,
            "last_message_at": r.last_message_at,
            "arrivals": r.arrivals,
            "duplicates": c.duplicates,
            "gaps": c.gaps,
        }
        for r, c in zip(recorders, clients, strict=True)
    ]
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
