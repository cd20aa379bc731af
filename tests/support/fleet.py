"""A fleet under test: many clients of the package's Python client in one process,
a paced producer, and the checks of what each client received (the scale-out and
recovery end-to-end tests)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

from channels_tuning.broadcast import broadcast
from channels_tuning.layers import RedisChannelLayer
from tests.support.processes import REPO


def health(port: int, query: str = "") -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_ct/health{query}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def assert_memberships_refreshed(groups: list[str], redis_of, wait: float = 2.5) -> None:
    """Every member's score in ``groups`` moves forward within ``wait`` seconds (the
    servers' membership refresh); ``redis_of(group)``: the Redis that holds it."""

    def scores() -> dict[str, float]:
        found = {}
        for group in groups:
            flat = redis_of(group).cli("ZRANGE", f"asgi:group:{group}", "0", "-1", "WITHSCORES")
            pairs = flat.split()
            found.update(
                {f"{group}/{m}": float(s) for m, s in zip(pairs[::2], pairs[1::2], strict=True)}
            )
        return found

    first = scores()
    await asyncio.sleep(wait)
    later = scores()
    assert first.keys() == later.keys() and all(later[k] > first[k] for k in first)


def member_processes(redis, group: str) -> dict[str, int]:
    """Members of ``group`` by the server process whose channel they are."""
    members = redis.cli("ZRANGE", f"asgi:group:{group}", "0", "-1").split()
    counts: dict[str, int] = {}
    for channel in members:
        process = channel.split("!", 1)[0]
        counts[process] = counts.get(process, 0) + 1
    return counts


async def start_lb_clients(
    balancer, group: str, count: int, codec: str | None = None
) -> subprocess.Popen:
    """``count`` clients of the package's Python client (tests/support/lb_clients.py)
    in one process, subscribed to ``group`` through the balancer (or a server: anything
    with ``ws(path)``); returns once all are open."""
    clients = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tests" / "support" / "lb_clients.py"),
            balancer.ws(f"/ws/group/{group}/"),
            str(count),
            *([codec] if codec else []),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert clients.stdout is not None
    assert await asyncio.to_thread(clients.stdout.readline) == "READY\n"
    return clients


async def lb_clients_report(clients: subprocess.Popen, last_seq: int | None = None) -> list[dict]:
    """Close the clients (stdin) and read what each received and when it was open;
    with ``last_seq``, once each has received it (bounded: tests/support/lb_clients.py)."""
    told = "" if last_seq is None else str(last_seq)
    output, _ = await asyncio.to_thread(clients.communicate, told, 90)
    return json.loads(output.splitlines()[-1])


class Producer:
    """``broadcast(on_full="wait")`` of ``"<seq> x"`` at ``rate`` per second until stopped,
    remembering when each was sent and what the reports said."""

    def __init__(self, layer: RedisChannelLayer, group: str, rate: float = 20) -> None:
        self.layer, self.group, self.rate = layer, group, rate
        self.sent: dict[int, float] = {}
        self.over_capacity = 0
        self.gone = 0
        self._stop = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        seq, began = 0, time.monotonic()
        while not self._stop.is_set():
            self.sent[seq] = time.time()
            report = await broadcast(
                self.group, f"{seq} x", on_full="wait", timeout=10, layer=self.layer
            )
            self.over_capacity += report.receivers_over_capacity
            self.gone += report.receivers_gone
            seq += 1
            await asyncio.sleep(max(0.0, began + seq / self.rate - time.monotonic()))

    @property
    def last_seq(self) -> int:
        return max(self.sent)

    async def stop(self) -> None:
        self._stop.set()
        await self._task


def check_order_and_gaps(report: list[dict], sent: dict[int, float], window) -> tuple[int, list]:
    """Every client's messages in order and once; a message it lacks must have been sent
    inside ``window(client)`` (None: the client was never disconnected). Returns the
    deliveries missed inside the windows and examples of those missed outside."""
    inside, outside = 0, []
    for client in report:
        seqs = client["seqs"]
        assert seqs == sorted(set(seqs)), "a message twice or out of order"
        got, span = set(seqs), window(client)
        for seq, at in sent.items():
            if seq in got:
                continue
            if span and span[0] <= at <= span[1]:
                inside += 1
            else:
                outside.append(f"seq {seq} sent at {at:.2f}, window {span}")
    return inside, outside
