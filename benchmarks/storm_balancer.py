"""A reconnect storm behind the deployment guide's HAProxy: is the server that takes
it marked down?

Two ``channels-tuning-daphne`` processes behind HAProxy configured as
``docs/topics/deployment.md`` says (checks 500 ms apart, each timing out after 500 ms,
a server down after 2 failed ones, up after 2 passed), started with the guide's
``--proxy-headers --drain-health-delay 2``. N lean clients
(``tests/support/storm_client.py``, reconnecting as the package's clients do) connect
through HAProxy while only the first process runs; the second starts once they are
all open and is UP and empty. Then SIGTERM to the first: its health check answers
503, HAProxy takes it out, and 2 s later it closes its clients with 1012. They all
come back through HAProxy to the second process in a second or two, while its accept
gate (``servers/daphne/admission.py``) holds the rest in its listen backlog.

Per variant, each ``--runs`` times:

- ``health port``: the guide's configuration, HAProxy checks ``--health-port``;
- ``serving port``: the checks on the port the server serves (the guide before
  ``--health-port``): they wait in the backlog with the storm, or find it full;
- ``serving port without the gate``: the same, the servers started with
  ``--no-accept-gate`` (accepting at every count).

Reported: the second process' check failures and times marked down (HAProxy's stats
page, read every 50 ms), the clients back (median and last after the SIGTERM), and
their failed attempts (503: HAProxy's "no server available" while both were down, or
the server's own beyond ``--max-pending-upgrades``).

    python benchmarks/storm_balancer.py [--connections 8000] [--runs 3]

HAProxy holds two sockets per client under a per-process limit of 20 000 files
here: 8 000 clients at most.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.stall import start_server  # noqa: E402
from benchmarks.storm import failures_cell, report_line, start_clients  # noqa: E402
from tests.support.balancers import HAProxy, start_haproxy  # noqa: E402
from tests.support.processes import free_port, start_redis, stop_process  # noqa: E402

#: The guide's server options (docs/topics/deployment.md, the HAProxy block).
GUIDE_ARGS = ("--proxy-headers", "--drain-health-delay", "2")
VARIANTS = {
    "health port": (True, ()),
    "serving port": (False, ()),
    "serving port without the gate": (False, ("--no-accept-gate",)),
}
PATH = "/ws/group/storm-balancer/"


class StateLog:
    """HAProxy's view of one server, read every 50 ms in a thread: each change."""

    def __init__(self, balancer: HAProxy, server: str) -> None:
        self.balancer, self.server = balancer, server
        self.changes: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> StateLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        last = None
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                state = self.balancer.server_states()[self.server]
                if state != last:
                    self.changes.append((time.time(), state))
                    last = state
            time.sleep(0.05)

    def count(self, state: str) -> int:
        return sum(1 for _, seen in self.changes if seen == state)


def one_storm(variant: str, count: int, redis, tmp: Path) -> dict:
    checked_on_health_port, extra = VARIANTS[variant]
    ports = [free_port(), free_port()]
    health_ports = [free_port(), free_port()] if checked_on_health_port else [None, None]

    def start(index: int):
        args = (*GUIDE_ARGS, *extra)
        if health_ports[index]:
            args = (*args, "--health-port", str(health_ports[index]))
        log_dir = Path(tempfile.mkdtemp(dir=tmp))
        return start_server("tuned", redis, log_dir, port=ports[index], extra_args=args)

    servers = [start(0)]
    balancer = start_haproxy(tmp, ports, check_ports=health_ports)
    clients = []
    try:
        deadline = time.monotonic() + 30
        while balancer.server_states().get("s1") != "UP":
            assert time.monotonic() < deadline, "the first server never came UP"
            time.sleep(0.1)
        clients = start_clients(balancer.port, PATH, count)
        servers.append(start(1))
        while balancer.server_states().get("s2") != "UP":
            assert time.monotonic() < deadline + 60, "the second server never came UP"
            time.sleep(0.1)
        with StateLog(balancer, "s2") as states:
            signalled_at = time.time()
            os.kill(servers[0].pid, signal.SIGTERM)
            reports = [json.loads(report_line(client)) for client in clients]
    finally:
        for client in clients:
            if client.poll() is None and client.stdin is not None:
                client.stdin.close()
        for client in clients:
            with contextlib.suppress(Exception):
                client.wait(30)
            if client.poll() is None:
                client.kill()
        stop_process(balancer.proc)
        for server in servers:
            stop_process(server.proc)
    back = sorted(at - signalled_at for report in reports for at in report["back_at"] if at)
    failures: collections.Counter[str] = collections.Counter()
    for report in reports:
        failures.update(report["failures"])
    return {
        "variant": variant,
        "connections": count,
        "check_failures": sum(1 for _, state in states.changes if state.startswith("UP ")),
        "marked_down": states.count("DOWN"),
        "back": len(back),
        "back_p50_s": statistics.median(back) if back else float("nan"),
        "last_back_s": back[-1] if back else float("nan"),
        "failures": dict(failures.most_common()),
        "gave_up": sum(report["gave_up"] for report in reports),
    }


def run(count: int, runs: int, variants: tuple[str, ...] = tuple(VARIANTS)) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = start_redis(tmp)
        try:
            return [
                one_storm(variant, count, redis, tmp) for variant in variants for _ in range(runs)
            ]
        finally:
            stop_process(redis.proc)


def table(rows: list[dict]) -> str:
    lines = [
        f"{rows[0]['connections']} clients move to the other server behind HAProxy",
        "",
        "| HAProxy checks | times failing / marked down | back | median / last back "
        "after SIGTERM, s | failed attempts | gave up |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['check_failures']} / {row['marked_down']} | "
            f"{row['back']} of {row['connections']} | {row['back_p50_s']:.1f} / "
            f"{row['last_back_s']:.1f} | {failures_cell(row['failures'])} | {row['gave_up']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=8_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    args = parser.parse_args()
    variants = tuple(args.variants.split(","))
    rows = run(args.connections, args.runs, variants)
    print(json.dumps(rows), file=sys.stderr)
    print(table(rows))


if __name__ == "__main__":
    main()
