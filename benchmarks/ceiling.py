"""The ceiling the benchmarks compare against: a minimal server on the ``websockets``
library, with no Django, no ASGI and no channel layer.

What a hand-written asyncio WebSocket server costs on this machine, for the same
workloads the package is measured on (issue #16): idle connections, handshakes, and a
broadcast burst. Anything the package does above this is the price of Django, ASGI and
the channel layer; the benchmarks print the ratio.

- ``/pub``: every text frame received is sent to every other connection with
  ``websockets.broadcast`` (encoded once, written without waiting: the library's own
  fan-out primitive, the fastest path it has);
- ``/rpc``: each ``{"type":"ct.request","id":…,"params":…}`` text frame is answered
  ``{"kind":"reply","id":…,"result":params}`` (the requests benchmark);
- any other WebSocket path: a subscriber that receives broadcasts and otherwise idles;
- ``GET /_stats``: pid, open connections, asyncio tasks, GC-tracked objects
  (``?gc=1`` collects first) and the collections per generation with the longest
  pause, the same keys as the tests' ``/_stats``;
- ``GET /_ping``: the cheapest answer (the stall benchmark's probe).

Keepalive pings are off by default (``ping_interval=None``), as the package's
benchmarks turn its heartbeats off: an idle connection here is the library's minimum.
The stall benchmark gives it daphne's keepalive (``PING_INTERVAL``: 20 s).

    python benchmarks/ceiling.py PORT [PING_INTERVAL]
"""

from __future__ import annotations

import asyncio
import collections
import gc
import http
import json
import os
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

import websockets
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

REPO = Path(__file__).resolve().parent.parent
SUBSCRIBERS: set[ServerConnection] = set()
#: Per generation: collections and the longest pause (seconds), from gc.callbacks.
COLLECTIONS = [0, 0, 0]
LONGEST = [0.0, 0.0, 0.0]
TOTAL = [0.0, 0.0, 0.0]
_started = [0.0]


def _timed(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    generation, pause = info["generation"], time.perf_counter() - _started[0]
    COLLECTIONS[generation] += 1
    TOTAL[generation] += pause
    LONGEST[generation] = max(LONGEST[generation], pause)


def tracked_objects(by_type: bool) -> tuple[int, dict[str, int]]:
    """How many objects the collector tracks and, if asked, the 25 commonest types.

    One walk of the heap; the list is emptied before returning so that it holds
    nothing alive past this call (nothing is frozen in this server).
    """
    objects = gc.get_objects()
    try:
        types = {}
        if by_type:
            types = dict(collections.Counter(type(o).__qualname__ for o in objects).most_common(25))
        return len(objects), types
    finally:
        objects.clear()


def stats_response(connection: ServerConnection, request: Request) -> Response | None:
    if request.path == "/_ping":
        return connection.respond(http.HTTPStatus.OK, "pong")
    if not request.path.startswith("/_stats"):
        return None  # a WebSocket upgrade
    if request.path.endswith(("gc=1", "gc=all")):
        gc.collect()
    if request.path.endswith("reset_gc_max=1"):
        LONGEST[:] = [0.0, 0.0, 0.0]
    tracked, types = tracked_objects(by_type=request.path.endswith("gc=all"))
    body = json.dumps(
        {
            **({"gc_types": types} if types else {}),
            "pid": os.getpid(),
            "server": f"websockets {websockets.__version__}",
            "connections": len(SUBSCRIBERS),
            "tasks": len(asyncio.all_tasks()),
            "gc_objects": tracked,
            "gc_tracked": tracked + gc.get_freeze_count(),
            "gc": {
                "generations": [
                    {
                        "collections": n,
                        "pause_total_ms": round(total * 1000, 3),
                        "pause_max_ms": round(longest * 1000, 3),
                    }
                    for n, total, longest in zip(COLLECTIONS, TOTAL, LONGEST, strict=True)
                ]
            },
        }
    )
    response = connection.respond(http.HTTPStatus.OK, body)
    response.headers["Content-Type"] = "application/json"
    return response


async def handler(connection: ServerConnection) -> None:
    path = connection.request.path if connection.request else "/"
    if path.startswith("/pub"):
        async for message in connection:
            broadcast(SUBSCRIBERS, message)
        return
    if path.startswith("/rpc"):
        async for message in connection:
            request = json.loads(message)
            reply = {"kind": "reply", "id": request["id"], "result": request.get("params")}
            await connection.send(json.dumps(reply, separators=(",", ":")))
        return
    SUBSCRIBERS.add(connection)
    try:
        await connection.wait_closed()
    finally:
        SUBSCRIBERS.discard(connection)


async def main(port: int, ping_interval: float | None = None) -> None:
    gc.callbacks.append(_timed)
    async with serve(
        handler,
        "127.0.0.1",
        port,
        process_request=stats_response,
        ping_interval=ping_interval,
        compression=None,
        backlog=1024,
    ) as server:
        await server.serve_forever()


@dataclass
class CeilingProcess:
    """The ceiling server started by a benchmark, with DaphneProcess' interface."""

    port: int
    proc: Popen
    server: str = "websockets"

    @property
    def pid(self) -> int:
        return self.proc.pid

    app_pid = pid

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stats(
        self, gc_collect: bool = False, reset_gc_max: bool = False, with_frozen: bool = False
    ) -> dict:
        """As the test servers' (tests/support/processes.py): ``with_frozen`` adds
        ``gc_types``."""
        query = (
            "gc=all"
            if with_frozen
            else "gc=1"
            if gc_collect
            else "reset_gc_max=1"
            if reset_gc_max
            else ""
        )
        url = f"http://127.0.0.1:{self.port}/_stats" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


def start_ceiling(
    log_dir: Path, ping_interval: float | None = None, port: int | None = None
) -> CeilingProcess:
    """On a free port, or on ``port`` (a restart on the same address)."""
    sys.path.insert(0, str(REPO))
    from tests.support.processes import free_port, wait_for_port

    port = port or free_port()
    log = log_dir / f"websockets-{port}.log"
    proc = Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            str(port),
            *([str(ping_interval)] if ping_interval else []),
        ],
        stdout=log.open("w"),
        stderr=log.open("a"),
    )
    wait_for_port(port, proc, log)
    return CeilingProcess(port, proc)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else None))
