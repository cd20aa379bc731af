"""Request/reply benchmark: plain Channels, channels-tuning and the ``websockets``
ceiling, in one run.

- plain Channels: what applications write by hand (``PlainRequestConsumer`` in
  ``tests/e2e_asgi.py``: an ``AsyncJsonWebsocketConsumer`` that answers
  ``{"action":…,"request_id":…}`` with the id, as djangochannelsrestframework does) on
  daphne;
- channels-tuning: an ``@rpc("echo")`` method (``TunedRequestConsumer``) on
  channels-tuning-daphne, the package's protocol (``ct.request`` / ``reply``);
- the ceiling: ``benchmarks/ceiling.py``'s ``/rpc``, a ``websockets`` server that
  answers each request inline (no Django, no ASGI).

``--clients`` connections each send ``--requests`` requests, one in flight per
connection (the client waits for each answer): requests per second, server CPU per
request, round-trip p50/p99, and the ratios to plain Channels and to the ceiling. The
in-memory channel layer; no Redis (a request touches no layer).

    python -m benchmarks.requests [--clients 50] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import websockets

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.ceiling import start_ceiling  # noqa: E402
from benchmarks.fanout import cpu_seconds  # noqa: E402
from tests.support.processes import start_daphne, stop_process  # noqa: E402

APPLICATION = "tests.e2e_asgi:application_behind_auth"
QUIET = {"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None, "RATE_LIMIT": None}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def plain_request(n: int, params: dict) -> tuple[str, str]:
    return json.dumps({"action": "echo", "request_id": n, "data": params}), "request_id"


def tuned_request(n: int, params: dict) -> tuple[str, str]:
    return json.dumps({"type": "ct.request", "id": n, "method": "echo", "params": params}), "id"


async def run(server, path: str, tuned: bool, clients: int, requests: int) -> dict:
    make = tuned_request if tuned else plain_request
    sockets = [
        await websockets.connect(
            server.ws(path),
            origin=f"http://127.0.0.1:{server.port}",
            subprotocols=[websockets.Subprotocol("channels-tuning.v1")] if tuned else None,
        )
        for _ in range(clients)
    ]
    latencies: list[float] = []

    async def one(client: int, ws) -> None:
        for n in range(1, requests + 1):
            frame, id_key = make(n, {"client": client, "n": n})
            began = time.perf_counter()
            await ws.send(frame)
            answer = json.loads(await ws.recv())
            latencies.append(time.perf_counter() - began)
            assert answer[id_key] == n, answer

    cpu_before, began = cpu_seconds(server.app_pid), time.perf_counter()
    await asyncio.gather(*(one(n, ws) for n, ws in enumerate(sockets)))
    elapsed, cpu = time.perf_counter() - began, cpu_seconds(server.app_pid) - cpu_before
    for ws in sockets:
        await ws.close()
    total = len(latencies)
    return {
        "requests/s": total / elapsed,
        "µs CPU/request": cpu / total * 1e6,
        "p50 ms": percentile(latencies, 0.5) * 1000,
        "p99 ms": percentile(latencies, 0.99) * 1000,
    }


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ct-requests-"))
    rows: dict[str, dict] = {}
    contenders = (
        ("plain Channels", "/ws/plain-rpc/", False),
        ("channels-tuning", "/ws/tuned-rpc/", True),
        ("websockets ceiling", "/rpc", True),
    )
    for name, path, tuned in contenders:
        if name == "websockets ceiling":
            server = start_ceiling(tmp)
        else:
            server = start_daphne(tmp, tuned=tuned, tuning=QUIET, application=APPLICATION)
        try:
            rows[name] = await run(server, path, tuned, args.clients, args.requests)
        finally:
            stop_process(server.proc)
    print(f"{args.clients} clients x {args.requests} requests, one in flight per connection")
    header = ("", "requests/s", "µs CPU/request", "p50 ms", "p99 ms")
    print("{:<20}{:>12}{:>16}{:>10}{:>10}".format(*header))
    for name, row in rows.items():
        print(
            f"{name:<20}{row['requests/s']:>12.0f}{row['µs CPU/request']:>16.0f}"
            f"{row['p50 ms']:>10.1f}{row['p99 ms']:>10.1f}"
        )
    base, mine, top = rows["plain Channels"], rows["channels-tuning"], rows["websockets ceiling"]
    print(
        f"channels-tuning / plain Channels: {mine['requests/s'] / base['requests/s']:.2f}x "
        f"the rate, {mine['µs CPU/request'] / base['µs CPU/request']:.2f}x the CPU; "
        f"/ ceiling: {mine['requests/s'] / top['requests/s']:.2f}x the rate, "
        f"{mine['µs CPU/request'] / top['µs CPU/request']:.2f}x the CPU"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
