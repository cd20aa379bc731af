"""A reconnect storm after a restart (issue #25): N clients lose their server at once
and come back to its successor on the same port.

Per server (plain Channels on daphne, the package on ``channels-tuning-daphne``, the
``websockets`` ceiling; as ``benchmarks/stall.py`` starts them): one process holds N
connections of lean clients (``tests/support/storm_client.py``, at most 5 000 per
client process) that reconnect as the package's clients do: the package's close-code
policy and ``Backoff`` (full jitter from 0.5 s, doubling to 20 s), a 10 s limit per
attempt. Then SIGTERM, as a deployment restarts a service: the process exits (the
package drains first, closing with 1012 "service restart"), a new one starts on the
same port (``systemctl restart`` order: the new one after the old one is gone), and
the clients find it. Reported per server:

- the old process' exit after the SIGTERM, the new one listening after the SIGTERM;
- clients back: all, the median and the last, counted from the moment the new
  process listens ("absorbed in");
- the busiest second of the new process (handshakes completed in one second);
- failed attempts by reason (refused while no process listened, timeouts, HTTP
  statuses) and clients given up (the package's clients stop only on a close code
  that says so or on repeated 4xx);
- CPU of the new process from listening until the last client was back;
- for the package, the old process' drain by its own log line ("Drained in ..."): the
  closes, the applications' disconnect handlers, and what is left of the exit after it.

    python benchmarks/storm.py [--connections 19000] [--kinds plain,tuned,websockets]
        [--max-pending-upgrades 100,500,2000] [--drain-rates 4000,100000]
        [--handoff [--handoff-drain-rate 1000]]

``--max-pending-upgrades`` runs the package once per value (a sweep of the bound);
``--drain-rates`` once per ``--drain-rate`` of the old process (with each bound);
``--handoff`` adds a run of the package with ``--reuse-port``, its successor listening
before the SIGTERM (a restart without refused connections), draining at
``--handoff-drain-rate`` closes a second (1 000).

Clients and server share the machine's cores, as in every benchmark here; the
clients' backoff, not only the server, decides how long the storm lasts: it spreads
the attempts of clients refused while no process listened over seconds.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.connections import PER_CLIENT_PROCESS, ROUTES  # noqa: E402
from benchmarks.fanout import cpu_seconds  # noqa: E402
from benchmarks.stall import KINDS, start_server  # noqa: E402
from tests.support.processes import start_redis, stop_process  # noqa: E402

#: How long the clients wait for everyone to be back (storm_client.MAX_WAIT) and more.
REPORT_TIMEOUT = 180.0


def start_clients(port: int, path: str, count: int) -> list[subprocess.Popen[str]]:
    """Client processes holding ``count`` connections; returns once all are open."""
    clients = []
    for start in range(0, count, PER_CLIENT_PROCESS):
        batch = min(PER_CLIENT_PROCESS, count - start)
        client = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tests/support/storm_client.py"),
                str(port),
                path,
                str(batch),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        clients.append(client)
        assert client.stdout is not None and client.stdout.readline().strip() == "READY"
    return clients


def report_line(client: subprocess.Popen[str]) -> str:
    """The client's report, once all its connections are back (or it gave up waiting)."""
    assert client.stdout is not None
    with concurrent.futures.ThreadPoolExecutor(1) as reader:
        return reader.submit(client.stdout.readline).result(REPORT_TIMEOUT)


def held(kind: str, server) -> int | None:
    """Open connections by the server's own count (plain Channels keeps none)."""
    return None if kind == "plain" else int(server.stats()["connections"])


#: The tuned server's last line of a drain (servers/daphne/server.py).
DRAINED = re.compile(
    r"Drained in ([0-9.]+) s: closes sent in ([0-9.]+) s, applications finished in ([0-9.]+) s"
)


def drain_phases(log: str) -> dict[str, float]:
    """The drain's phases from a tuned server's log (empty for other servers)."""
    found = DRAINED.search(log)
    if found is None:
        return {}
    drain, closes, handlers = (float(value) for value in found.groups())
    return {"drain_s": drain, "closes_s": closes, "handlers_s": handlers}


def exited(proc: subprocess.Popen) -> float:
    """When ``proc`` exited (waiting at most two minutes)."""
    proc.wait(120)
    return time.time()


def start_successor(
    kind: str, redis, tmp: Path, port: int, extra_args: tuple[str, ...], handoff: bool
):
    """The new process on ``port``, listening (its own log: the old one may still run)."""
    log_dir = Path(tempfile.mkdtemp(dir=tmp))
    successor = start_server(kind, redis, log_dir, port=port, extra_args=extra_args)
    if handoff:  # the old process may have answered start_server and /_stats
        successor.known_app_pid = successor.pid  # the package's server is the process
        deadline = time.monotonic() + 60
        while "Listening on TCP address" not in successor.log.read_text():
            assert time.monotonic() < deadline and successor.proc.poll() is None
            time.sleep(0.05)
    return successor


def storm(
    kind: str,
    count: int,
    redis,
    tmp: Path,
    extra_args: tuple[str, ...] = (),
    handoff: bool = False,
) -> dict:
    """One restart under ``count`` clients; with ``handoff`` (the package's server,
    ``--reuse-port``) the successor listens before the SIGTERM
    (servers/daphne/handoff.py) and clients are counted back from the SIGTERM instead."""
    if handoff:
        extra_args = ("--reuse-port", *extra_args)
    server = start_server(kind, redis, tmp, extra_args=extra_args)
    path = ROUTES[kind].format(f"storm-{time.monotonic_ns()}")
    clients: list[subprocess.Popen[str]] = []
    successor = None
    try:
        clients = start_clients(server.port, path, count)
        held_before = held(kind, server)
        if handoff:
            successor = start_successor(kind, redis, tmp, server.port, extra_args, True)
        signalled_at = time.time()
        os.kill(server.pid, signal.SIGTERM)
        with concurrent.futures.ThreadPoolExecutor(1) as waiter:
            exit_time = waiter.submit(exited, server.proc)
            if successor is None:  # systemctl restart: the new one once the old is gone
                exit_time.result()
                successor = start_successor(kind, redis, tmp, server.port, extra_args, False)
            # Clients are counted back from when the new process can take them.
            listening_at = signalled_at if handoff else time.time()
            cpu_at_listening = cpu_seconds(successor.app_pid)
            reports = [json.loads(report_line(client)) for client in clients]
            cpu = cpu_seconds(successor.app_pid) - cpu_at_listening
            exited_at = exit_time.result()
            held_after = held(kind, successor)  # the only one listening now
        log = getattr(server, "log", None)  # the ceiling writes none
        drain = drain_phases(log.read_text()) if log is not None else {}
    finally:
        for client in clients:
            if client.poll() is None and client.stdin is not None:
                client.stdin.close()  # the client lets go of its connections and exits
                with contextlib.suppress(subprocess.TimeoutExpired):
                    client.wait(30)
            if client.poll() is None:
                client.kill()
                client.wait()
        stop_process(server.proc)
        if successor is not None:
            stop_process(successor.proc)
    back = sorted(at - listening_at for report in reports for at in report["back_at"] if at)
    per_second = collections.Counter(int(at) for at in back)
    failures: collections.Counter[str] = collections.Counter()
    codes: collections.Counter[str] = collections.Counter()
    for report in reports:
        failures.update(report["failures"])
        codes.update(report["codes"])
    absorbed = back[-1] if back else float("nan")
    return {
        "kind": " ".join((kind, *extra_args)),
        "handoff": handoff,
        "connections": count,
        "held_before": held_before,
        "held_after": held_after,
        "exited_s": exited_at - signalled_at,
        "listening_s": listening_at - signalled_at,
        "back": len(back),
        "back_p50_s": statistics.median(back) if back else float("nan"),
        "absorbed_s": absorbed,
        "busiest_second": max(per_second.values(), default=0),
        # Clients back in each second from when the new process listened (the plot).
        "back_per_second": [per_second[second] for second in range(int(absorbed) + 1)]
        if back
        else [],
        "failures": dict(failures.most_common()),
        "close_codes": dict(codes),
        "gave_up": sum(report["gave_up"] for report in reports),
        "cpu_percent": 100 * cpu / absorbed if back and absorbed > 0 else float("nan"),
        **drain,
    }


#: The handoff run's ``--drain-rate``: about what a successor absorbed on the 2-core test
#: machine while the old process drained beside it, before the accept gate
#: (servers/daphne/admission.py); since the gate it takes the server's default, 4 000
#: (``--handoff-drain-rate 4000``: docs/benchmarks.md). Kept for the report's history.
HANDOFF_DRAIN_RATE = 1000.0


def planned_runs(
    kinds: tuple[str, ...],
    pending_bounds: tuple[int, ...] = (),
    handoff_drain_rate: float | None = None,
    drain_rates: tuple[float, ...] = (),
) -> list[tuple[str, tuple[str, ...], bool]]:
    """(kind, the server's extra arguments, handoff) of each storm: one per kind; the
    package's once per bound in ``pending_bounds`` and per rate in ``drain_rates`` if
    any, and with a ``handoff_drain_rate`` once more with ``--reuse-port`` at that
    rate."""
    tuned_in_place: list[tuple[str, ...]] = [()]
    if pending_bounds:
        tuned_in_place = [("--max-pending-upgrades", str(bound)) for bound in pending_bounds]
    if drain_rates:
        tuned_in_place = [
            (*args, "--drain-rate", f"{rate:g}") for args in tuned_in_place for rate in drain_rates
        ]
    runs: list[tuple[str, tuple[str, ...], bool]] = []
    for kind in kinds:
        if kind == "tuned":
            runs += [(kind, args, False) for args in tuned_in_place]
        else:
            runs.append((kind, (), False))
        if kind == "tuned" and handoff_drain_rate is not None:
            runs.append((kind, ("--drain-rate", f"{handoff_drain_rate:g}"), True))
    return runs


def run(
    kinds: tuple[str, ...],
    count: int,
    pending_bounds: tuple[int, ...] = (),
    handoff_drain_rate: float | None = None,
    drain_rates: tuple[float, ...] = (),
) -> list[dict]:
    """The storms of :func:`planned_runs`, against one redis-server."""
    runs = planned_runs(kinds, pending_bounds, handoff_drain_rate, drain_rates)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = start_redis(tmp)
        try:
            return [storm(kind, count, redis, tmp, extra, handoff) for kind, extra, handoff in runs]
        finally:
            stop_process(redis.proc)


def table(rows: list[dict]) -> str:
    lines = [
        f"{rows[0]['connections']} clients, SIGTERM, a new process on the same port",
        "",
        "| server | old exited / new listening after SIGTERM, s | back | median / last "
        "back after listening, s | busiest second | CPU % of a core | failed attempts "
        "| gave up | drain: closes / handlers / exit after, s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        failures = failures_cell(row["failures"])
        lines.append(
            f"| {row['kind']} | {row['exited_s']:.1f} / {row['listening_s']:.1f} | "
            f"{row['back']} of {row['connections']} | {row['back_p50_s']:.1f} / "
            f"{row['absorbed_s']:.1f} | {row['busiest_second']} | {row['cpu_percent']:.0f} | "
            f"{failures} | {row['gave_up']} | {drain_cell(row)} |"
        )
    return "\n".join(lines)


def failures_cell(failures: dict[str, int]) -> str:
    """Failed attempts by reason, the most frequent first: "66066 refused, 628 timeout"."""
    return ", ".join(f"{n} {reason}" for reason, n in failures.items()) or "0"


def drain_cell(row: dict) -> str:
    if "drain_s" not in row:
        return "-"
    exit_after = row["exited_s"] - row["drain_s"]
    return f"{row['closes_s']:.1f} / {row['handlers_s']:.1f} / {exit_after:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=19_000)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--max-pending-upgrades", default="")
    parser.add_argument("--drain-rates", default="")
    parser.add_argument("--handoff", action="store_true")
    parser.add_argument("--handoff-drain-rate", type=float, default=HANDOFF_DRAIN_RATE)
    args = parser.parse_args()
    bounds = tuple(int(bound) for bound in args.max_pending_upgrades.split(",") if bound)
    rate = args.handoff_drain_rate if args.handoff else None
    rates = tuple(float(rate) for rate in args.drain_rates.split(",") if rate)
    rows = run(tuple(args.kinds.split(",")), args.connections, bounds, rate, rates)
    print(json.dumps(rows), file=sys.stderr)
    print(table(rows))


if __name__ == "__main__":
    main()
