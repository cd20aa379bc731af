"""The floor under any broadcast: one ``send()`` of a small frame to each of N
loopback TCP connections, from plain Python with nothing else around it (issue #25).

A message to every connection of a process is at least one system call per
connection: nothing in CPython writes to many sockets in one call. This measures that
call alone: a process holds N accepted connections, non-blocking, ``TCP_NODELAY`` as
the servers set it; client processes (each under its own fd limit) read and count
every byte; the process sends one 102-byte WebSocket text frame (a 100-byte payload,
the broadcast rows' size) to each connection, ``--rounds`` times. It prints the CPU
of the sending thread per ``send()`` (user and system time: on loopback the sender's
system call also runs the receiving side's TCP work) and the wall time of a round,
and checks that every frame arrived.

No server, no WebSocket library, no event loop: a goal of server CPU per delivery
below this figure, measured at the same time, cannot be met by any server that writes
each frame to its socket, the ceiling included. The figure moves with the machine's
load from one hour to the next (4.1 and 8.7 µs at 19 000 on the same VM on two days),
so ``python -m benchmarks.report`` measures it right after the broadcast rows it
bounds and shows each server's figure as a multiple of it.

    python benchmarks/send_floor.py [--connections 1000,5000,19000] [--rounds 5]
                                    [--per-client 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import selectors
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The stall rows' clients hold this many each; the floor is measured the same way.
from benchmarks.connections import PER_CLIENT_PROCESS  # noqa: E402

#: A WebSocket text frame from a server (unmasked) with a 100-byte payload.
FRAME = b"\x81\x64" + b"x" * 100
#: Seconds a client process may take to read what was sent after the last round.
SETTLE = 2.0


@dataclass
class Floor:
    connections: int
    rounds: int
    delivered: int
    us_per_send: list[float]
    ms_per_round: list[float]

    @property
    def expected(self) -> int:
        return self.connections * self.rounds

    def line(self) -> str:
        return (
            f"{self.connections} connections: {statistics.median(self.us_per_send):.2f} µs of CPU "
            f"per send() (median of {self.rounds} rounds; "
            f"{min(self.us_per_send):.2f}-{max(self.us_per_send):.2f}), "
            f"{statistics.median(self.ms_per_round):.0f} ms per round; "
            f"{self.delivered} of {self.expected} frames delivered"
        )


def read_all(port: int, count: int, connected, stop: Event, report) -> None:
    """A client process: ``count`` connections, every byte read and counted."""
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    connected.put(count)
    received = 0
    quiet_since: float | None = None
    while True:
        events = selector.select(0.05)
        for key, _ in events:
            with contextlib.suppress(BlockingIOError):
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:  # closed by the sender (its run failed): never readable again
                    selector.unregister(key.fileobj)
                received += len(data)
        if not stop.is_set():
            continue
        # Stopped: read on until nothing has come for SETTLE seconds.
        if events:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > SETTLE:
            break
    report.put(received // len(FRAME))
    for sock in sockets:
        sock.close()


def measure(connections: int, rounds: int, per_client: int = PER_CLIENT_PROCESS) -> Floor:
    context = multiprocessing.get_context("fork")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.settimeout(60)  # a client process that died mid-way fails the run, not hangs it
    port = listener.getsockname()[1]
    connected, report, stop = context.Queue(), context.Queue(), context.Event()
    counts = [per_client] * (connections // per_client)
    if connections % per_client:
        counts.append(connections % per_client)
    clients = [
        context.Process(target=read_all, args=(port, count, connected, stop, report))
        for count in counts
    ]
    for client in clients:
        client.start()
    accepted: list[socket.socket] = []
    try:
        while len(accepted) < connections:
            sock, _ = listener.accept()
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            accepted.append(sock)
        for _ in clients:
            connected.get(timeout=60)
        time.sleep(0.5)
        us_per_send, ms_per_round = [], []
        for _ in range(rounds):
            wall, cpu = time.perf_counter(), time.thread_time_ns()
            for sock in accepted:
                sock.send(FRAME)
            cpu, wall = time.thread_time_ns() - cpu, time.perf_counter() - wall
            us_per_send.append(cpu / connections / 1000)
            ms_per_round.append(wall * 1000)
            time.sleep(0.5)
        stop.set()
        delivered = sum(report.get(timeout=60) for _ in clients)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=30)
            if client.is_alive():  # one of ours that did not end: ended by its PID
                client.terminate()
                client.join(timeout=5)
        for sock in accepted:
            sock.close()
        listener.close()
    return Floor(connections, rounds, delivered, us_per_send, ms_per_round)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", default="1000,5000,19000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--per-client", type=int, default=PER_CLIENT_PROCESS, help="connections each"
    )
    args = parser.parse_args()
    for count in (int(n) for n in args.connections.split(",")):
        print(measure(count, args.rounds, args.per_client).line(), flush=True)


if __name__ == "__main__":
    main()
