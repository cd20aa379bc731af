"""One command for the table of the measurements page: every comparison side by side in
one run, plain Channels, channels-tuning and the ``websockets`` ceiling where it applies,
with ratios and the machine it ran on.

    python -m benchmarks.report             # full counts, 30-65 minutes
    python -m benchmarks.report --quick     # small counts, about a minute (CI runs it)
    python -m benchmarks.report --write     # also rewrite docs/benchmarks.md's table
                                            # between its markers, and the plots in
                                            # docs/_static/benchmarks/
    python -m benchmarks.report --quick --plots DIR   # plots of a smoke run, in DIR
    python -m benchmarks.report --results FILE        # go on from a run that failed

Each step's measurements are written to a JSON file as soon as the step ends (the path
is printed first). A run that fails in its C100K step, after most of the run, keeps
what came before: the same command with ``--results FILE`` measures only the steps the
file does not have yet, with the same counts (a file from other counts is started over).
Each step records the code it was measured on (``git describe --always --dirty``); a
step kept from other code is named on stderr, to be deleted from the file if the
change concerns it.

Rows (each from the benchmark named, run in this process' sitting):

- connections: handshakes per second and server CPU per handshake, idle RSS, tasks
  and GC-tracked objects per connection (``benchmarks/connections.py``);
- broadcast burst, 500 subscribers x 2000 x 100 B: server CPU per delivery,
  deliveries per second, delivered (``benchmarks/fanout.py``);
- slow reader, 500 x 1 KiB/s: peak RSS growth and kernel TCP memory growth
  (``benchmarks/slow_reader.py``);
- codec, a 5-field message: protobuf against JSON (``benchmarks/codecs.py``);
- GC at 5000 idle connections during a burst: time in the collector and the longest
  gen2 pause, with and without ``GC_FREEZE`` (``benchmarks/gc_pause.py``);
- stalls at 1 000, 5 000 and 19 000 idle connections in one process over a minute:
  the worst stall of the loop, probe p50 and p99, server CPU; then one message to all of them:
  time to the last delivery, server CPU per delivery, the longest probe meanwhile
  (``benchmarks/stall.py --broadcast``), and for five more messages, each sent a
  second after the server was idle again (``--rounds 6``), the least delivered and
  the median CPU per delivery, the steadier figure; that median as a multiple of the
  floor, one ``send()`` per connection from plain Python measured right after the
  three servers at the same count (``benchmarks/send_floor.py``): the floor moves with
  the machine's day, so only a floor from the same sitting bounds these rows;
- C100K: 99 000 idle connections over five package processes for 10 minutes, then one
  ``broadcast()`` to all (``benchmarks/c100k.py``; the package only).
- a reconnect storm: 19 000 clients of one restarted process, for the three servers,
  and the package's handoff to a process already listening (``benchmarks/storm.py
  --handoff``).

Progress goes to stderr, one line per step with the time it took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import (  # noqa: E402
    c100k,
    connections,
    fanout,
    gc_pause,
    send_floor,
    slow_reader,
    stall,
    storm,
)
from benchmarks import codecs as codec_benchmark  # noqa: E402
from tests.support.processes import start_redis, stop_process  # noqa: E402

BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"
#: Rounds of the floor at each stall count; its row shows their median.
FLOOR_ROUNDS = 5
#: Where --write puts the plots (the measurements page shows them).
PLOTS = REPO / "docs" / "_static" / "benchmarks"


@dataclass(frozen=True)
class Counts:
    connections: int = 2000
    in_flight: int = 50
    subscribers: int = 500
    messages: int = 2000
    slow_seconds: float = 30.0
    slow_rate: int = 500
    codec_calls: int = 200_000
    gc_subscribers: int = 5000
    gc_messages: int = 100
    stall_counts: tuple[int, ...] = (1000, 5000, 19000)
    stall_window: float = 60.0
    broadcast_rounds: int = 6
    c100k_processes: int = 5
    c100k_per_process: int = 19_800
    c100k_window: float = 600.0
    storm_clients: int = 19_000

    def __post_init__(self) -> None:
        if self.broadcast_rounds < 2:  # the steadier rows are of rounds 2 and on
            raise ValueError("broadcast_rounds must be at least 2")


QUICK = Counts(
    connections=200,
    in_flight=20,
    subscribers=50,
    messages=100,
    slow_seconds=4.0,
    slow_rate=100,
    codec_calls=2000,
    gc_subscribers=200,
    gc_messages=10,
    stall_counts=(100, 300),
    stall_window=3.0,
    broadcast_rounds=3,
    c100k_processes=2,
    c100k_per_process=100,
    c100k_window=3.0,
    storm_clients=100,
)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, loopback"
    )


class Progress:
    def __init__(self, steps: int) -> None:
        self.steps, self.done, self.began = steps, 0, time.monotonic()

    def step(self, title: str) -> Progress:
        self.title, self.started = title, time.monotonic()
        print(f"[{self.done + 1}/{self.steps}] {title} ...", file=sys.stderr, flush=True)
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self.done += 1
        took, total = time.monotonic() - self.started, time.monotonic() - self.began
        print(f"      {self.title}: {took:.0f} s ({total:.0f} s so far)", file=sys.stderr)


def code_version() -> str:
    """The commit measured, ``-dirty`` if the work tree has changes; "unknown" outside git."""
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return described.stdout.strip() if described.returncode == 0 else "unknown"


class SavedSteps:
    """Each step's measurements, kept in ``path`` from the moment the step ends.

    A step already in the file (measured with the same counts) is not measured again.
    Every result goes through JSON even in a fresh run, so the rows and plots built
    from a resumed run are built from exactly the same values and types. Each step
    keeps the code version it was measured on; one kept from another version is
    named on stderr when it is used (the file may predate a change that matters)."""

    def __init__(self, path: Path, counts: Counts, progress: Progress, version: str) -> None:
        self.path, self.progress, self.version = path, progress, version
        self.counts = json.loads(json.dumps(asdict(counts)))
        saved = json.loads(path.read_text()) if path.exists() else {}
        same_counts = saved.get("counts") == self.counts
        self.steps: dict[str, Any] = saved.get("steps", {}) if same_counts else {}
        # Files written before versions were kept: "unknown".
        self.versions: dict[str, str] = {
            title: saved.get("versions", {}).get(title, "unknown") for title in self.steps
        }
        self.used: set[str] = set()  # the steps of this run, measured or kept

    def versions_used(self) -> list[str]:
        return sorted({self.versions[title] for title in self.used})

    async def step(self, title: str, measure: Callable[[], Awaitable[Any]]) -> Any:
        self.used.add(title)
        if title in self.steps:
            self.progress.done += 1
            measured_on = self.versions[title]
            other = f" (measured on {measured_on}, now {self.version})"
            print(
                f"[{self.progress.done}/{self.progress.steps}] {title}: saved in {self.path}"
                + (other if measured_on != self.version else ""),
                file=sys.stderr,
                flush=True,
            )
            return self.steps[title]
        with self.progress.step(title):
            result = json.loads(json.dumps(await measure()))
        self.steps[title], self.versions[title] = result, self.version
        partial = self.path.with_name(self.path.name + ".partial")
        saved = {"counts": self.counts, "steps": self.steps, "versions": self.versions}
        partial.write_text(json.dumps(saved, indent=1))
        partial.replace(self.path)  # a crash while writing keeps the previous file whole
        return result


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else ""


async def measure(
    counts: Counts, results: Path
) -> tuple[list[tuple[str, str, str, str, str, str]], dict]:
    """Rows: (workload, plain, tuned, websockets, tuned/plain, tuned/websockets), and
    the measurements behind them (for the plots); each step saved in ``results``."""
    progress = Progress(16 + 2 * len(counts.stall_counts))
    saved = SavedSteps(results, counts, progress, code_version())
    rows: list[tuple[str, str, str, str, str, str]] = []

    def row(title: str, plain: float | None, tuned: float, ceiling: float | None, fmt: str):
        def cell(value: float | None) -> str:
            return "—" if value is None else fmt.format(value)

        rows.append(
            (
                title,
                cell(plain),
                cell(tuned),
                cell(ceiling),
                ratio(tuned, plain) if plain is not None else "",
                ratio(tuned, ceiling) if ceiling is not None else "",
            )
        )

    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        redis = start_redis(tmp)
        try:
            held = {}
            for kind in connections.KINDS:
                held[kind] = await saved.step(
                    f"{counts.connections} connections, {kind}",
                    lambda kind=kind: connections.measure(
                        kind, redis, tmp, counts.connections, counts.in_flight
                    ),
                )
            n = counts.connections
            for title, key, fmt in (
                (f"idle memory per connection ({n} idle), KB", "kb", "{:.1f}"),
                ("asyncio tasks per idle connection", "tasks", "{:.2f}"),
                ("GC-tracked objects per idle connection", "objects", "{:.0f}"),
                (
                    f"handshakes per second ({n}, {counts.in_flight} in flight)",
                    "handshakes_per_s",
                    "{:.0f}",
                ),
                ("server CPU per handshake, µs", "handshake_cpu_us", "{:.0f}"),
            ):
                row(
                    title,
                    held["plain"][key],
                    held["tuned"][key],
                    held["websockets"][key],
                    fmt,
                )

            # The same idle connections behind the stack Channels' tutorial deploys.
            behind_idle = {}
            for kind in ("plain", "tuned"):
                behind_idle[kind] = await saved.step(
                    f"{n} connections behind AuthMiddlewareStack, {kind}",
                    lambda kind=kind: connections.measure(
                        kind,
                        redis,
                        tmp,
                        n,
                        counts.in_flight,
                        application=connections.BEHIND_AUTH,
                    ),
                )
            row(
                f"same {n} idle behind AuthMiddlewareStack: memory per connection, KB",
                behind_idle["plain"]["kb"],
                behind_idle["tuned"]["kb"],
                None,
                "{:.1f}",
            )
            row(
                "same: handshakes per second",
                behind_idle["plain"]["handshakes_per_s"],
                behind_idle["tuned"]["handshakes_per_s"],
                None,
                "{:.0f}",
            )

            burst = {}
            shape = f"{counts.subscribers} x {counts.messages} x 100 B"
            for kind in ("plain", "tuned"):
                burst[kind] = await saved.step(
                    f"burst {shape}, {kind}",
                    lambda kind=kind: fanout.run_case(
                        kind, redis, counts.subscribers, counts.messages, None, tmp
                    ),
                )
            burst["websockets"] = await saved.step(
                f"burst {shape}, websockets",
                lambda: fanout.run_ceiling(counts.subscribers, counts.messages, None, tmp),
            )
            row(
                f"burst {shape}: server CPU per delivery, µs",
                burst["plain"]["us_per_delivery"],
                burst["tuned"]["us_per_delivery"],
                burst["websockets"]["us_per_delivery"],
                "{:.1f}",
            )
            row(
                "same: deliveries per second",
                burst["plain"]["deliveries_per_s"],
                burst["tuned"]["deliveries_per_s"],
                burst["websockets"]["deliveries_per_s"],
                "{:.0f}",
            )
            row(
                "same: delivered, %",
                100 * burst["plain"]["got"] / burst["plain"]["expected"],
                100 * burst["tuned"]["got"] / burst["tuned"]["expected"],
                100 * burst["websockets"]["got"] / burst["websockets"]["expected"],
                "{:.1f}",
            )

            # The same burst behind the stack Channels' tutorial deploys
            # (AllowedHostsOriginValidator(AuthMiddlewareStack(...))): the tuned path
            # must hold there (its session wrapper hides the server's send).
            behind = {}
            for kind in ("plain", "tuned"):
                behind[kind] = await saved.step(
                    f"burst {shape} behind AuthMiddlewareStack, {kind}",
                    lambda kind=kind: fanout.run_case(
                        kind,
                        redis,
                        counts.subscribers,
                        counts.messages,
                        None,
                        tmp,
                        application="tests.e2e_asgi:application_behind_auth",
                    ),
                )
            row(
                "same burst behind AuthMiddlewareStack: server CPU per delivery, µs",
                behind["plain"]["us_per_delivery"],
                behind["tuned"]["us_per_delivery"],
                None,
                "{:.1f}",
            )
            row(
                "same: deliveries per second",
                behind["plain"]["deliveries_per_s"],
                behind["tuned"]["deliveries_per_s"],
                None,
                "{:.0f}",
            )
            row(
                "same: delivered, %",
                100 * behind["plain"]["got"] / behind["plain"]["expected"],
                100 * behind["tuned"]["got"] / behind["tuned"]["expected"],
                None,
                "{:.1f}",
            )

            slow = {}
            common = (redis, counts.slow_seconds, counts.slow_rate, tmp, 1)
            for kind, tuned, path in (
                ("plain", False, "/ws/plain-group/"),
                ("tuned", True, "/ws/group/"),
            ):
                slow[kind] = await saved.step(
                    f"slow reader {counts.slow_seconds:.0f} s, {kind}",
                    lambda kind=kind, tuned=tuned, path=path: slow_reader.run_case(
                        kind, tuned, path, *common
                    ),
                )
            reader = f"slow reader, {counts.slow_rate} x 1 KiB/s for {counts.slow_seconds:.0f} s"
            row(
                f"{reader}: peak RSS growth, MB",
                slow["plain"]["growth"],
                slow["tuned"]["growth"],
                None,
                "{:.1f}",
            )
            row(
                "same: kernel TCP memory growth, MB",
                slow["plain"]["kernel_growth"],
                slow["tuned"]["kernel_growth"],
                None,
                "{:.1f}",
            )

            async def gc_cases() -> dict:
                gc_rows = {}
                for name in (gc_pause.WITHOUT_FREEZING, gc_pause.DEFAULTS):
                    kind, tuning = gc_pause.CASES[name]
                    gc_rows[name] = await fanout.run_case(
                        kind,
                        redis,
                        counts.gc_subscribers,
                        counts.gc_messages,
                        None,
                        tmp,
                        tuning,
                    )
                return gc_rows

            gc_rows = await saved.step(
                f"GC at {counts.gc_subscribers} connections, with and without", gc_cases
            )
            stalls: dict[int, dict[str, dict]] = {}
            floors: dict[int, dict] = {}
            for count in counts.stall_counts:

                async def three_servers(count: int = count) -> dict:
                    return {
                        kind: await stall.measure(
                            kind,
                            count,
                            redis,
                            tmp,
                            stall.Options(
                                window=counts.stall_window,
                                broadcast=True,
                                rounds=counts.broadcast_rounds,
                            ),
                        )
                        for kind in stall.KINDS
                    }

                stalls[count] = await saved.step(
                    f"stalls at {count} idle connections, three servers", three_servers
                )

                async def no_server(count: int = count) -> dict:
                    # Synchronous on purpose: nothing else runs in this process meanwhile.
                    return asdict(send_floor.measure(count, FLOOR_ROUNDS))

                floors[count] = await saved.step(
                    f"the floor at {count} connections: one send() each, no server", no_server
                )
            for count, by_kind in stalls.items():
                for title, key, fmt in (
                    ("worst stall of the loop, ms", "worst_stall_ms", "{:.0f}"),
                    ("probe p50, ms", "probe_p50_ms", "{:.1f}"),
                    ("probe p99, ms", "probe_p99_ms", "{:.1f}"),
                    ("server CPU, % of a core", "cpu_percent", "{:.1f}"),
                ):
                    row(
                        f"{count} idle, {counts.stall_window:.0f} s: {title}",
                        by_kind["plain"][key],
                        by_kind["tuned"][key],
                        by_kind["websockets"][key],
                        fmt,
                    )
                for title, key, fmt in (
                    ("delivered", "delivered", "{:.0f}"),
                    ("ms to the last delivery", "last_delivery_ms", "{:.0f}"),
                    ("server µs per delivery", "us_per_delivery", "{:.1f}"),
                    ("longest probe meanwhile (all rounds), ms", "probe_max_ms", "{:.0f}"),
                ):
                    row(
                        f"{count} idle, one message to all: {title}",
                        by_kind["plain"]["broadcast"][key],
                        by_kind["tuned"]["broadcast"][key],
                        by_kind["websockets"]["broadcast"][key],
                        fmt,
                    )
                # The first round pays for the idle window before it; the later ones,
                # each a second after the one before, are the steadier figure.
                later = f"{count} idle, rounds 2-{counts.broadcast_rounds}"
                sent = [by_kind[kind]["broadcast"] for kind in stall.KINDS]
                row(
                    f"{later}: delivered, the least of any round",
                    *(min(r["delivered"] for r in one["rounds"][1:]) for one in sent),
                    "{:.0f}",
                )
                row(
                    f"{later}: server µs per delivery, median",
                    *(one["later_us_per_delivery"] for one in sent),
                    "{:.1f}",
                )
                floor = floors[count]
                floor_us = statistics.median(floor["us_per_send"])
                row(
                    f"{later}: server µs per delivery ÷ the floor "
                    f"({floor_us:.1f} µs per send(), no server, measured next; "
                    f"{floor['delivered']} of {floor['connections'] * floor['rounds']} read)",
                    *(one["later_us_per_delivery"] / floor_us for one in sent),
                    "{:.2f}",
                )
        finally:
            stop_process(redis.proc)

    held = counts.c100k_processes * counts.c100k_per_process
    c100k_result = await saved.step(
        f"C100K: {held} idle over {counts.c100k_processes} processes",
        lambda: c100k.run(counts.c100k_processes, counts.c100k_per_process, counts.c100k_window),
    )
    rows.append(c100k_row(c100k_result, held, counts))

    title = f"reconnect storm, {counts.storm_clients} clients, three servers and a handoff"
    storms = await saved.step(
        title,
        lambda: asyncio.to_thread(
            storm.run, storm.KINDS, counts.storm_clients, (), storm.HANDOFF_DRAIN_RATE
        ),
    )
    rows.extend(storm_rows(storms, counts))

    async def codec_timing() -> dict:
        return {
            name: (wire, micros)
            for name, wire, micros, _, _ in codec_benchmark.run(100, counts.codec_calls)
        }

    timing = await saved.step(f"codecs, {counts.codec_calls} calls per case", codec_timing)
    json_wire, json_encode = timing["json encode"]
    proto_wire, proto_encode = timing["protobuf encode"]
    rows.append(
        (
            "codec, 5-field message: protobuf speed-up over JSON, encode / decode / "
            "decode reading every field; bytes",
            "—",
            f"x{json_encode / proto_encode:.1f} / "
            f"x{timing['json decode'][1] / timing['protobuf decode'][1]:.1f} / "
            f"x{timing['json decode'][1] / timing['protobuf decode, every field read'][1]:.1f}"
            f"; {proto_wire / json_wire:.2f} of the bytes",
            "—",
            "",
            "",
        )
    )
    no_freeze = gc_rows[gc_pause.WITHOUT_FREEZING]
    frozen = gc_rows[gc_pause.DEFAULTS]
    for label, case in (("no freezing", no_freeze), ("package defaults (freezing)", frozen)):
        share = case["gc_ms"] / 1000 / case["window_s"] if case["window_s"] else 0.0
        rows.append(
            (
                f"GC, {counts.gc_subscribers} idle + burst of {counts.gc_messages}, {label}: "
                "share of the burst in the collector (gen0/1/2 collections); longest gen2 "
                "pause in the burst; a full collection after it",
                "—",
                f"{100 * share:.1f} % ({'/'.join(map(str, case['gc_collections']))}); "
                f"{case['gen2_max_ms']:.0f} ms; {case['full_collection_ms']:.0f} ms",
                "—",
                "",
                "",
            )
        )
    raw = {
        "slow": slow,
        "burst": burst,
        "gc": gc_rows,
        "shape": shape,
        "stalls": stalls,
        "c100k": c100k_result,
        "storms": storms,
        "versions": saved.versions_used(),
    }
    return rows, raw


def storm_rows(runs: list[dict], counts: Counts) -> list[tuple[str, str, str, str, str, str]]:
    """The restart in place for the three servers; the package's handoff in its column."""
    by_kind = {run["kind"]: run for run in runs if not run["handoff"]}

    def cell(run: dict) -> str:
        back = f"{run['back']} of {run['connections']}"
        return f"{run['back_p50_s']:.1f} / {run['absorbed_s']:.1f} s; {back}; {run['gave_up']}"

    plain, tuned, ceiling = (by_kind[kind] for kind in storm.KINDS)
    handoff = next(run for run in runs if run["handoff"])
    intro = f"reconnect storm, {counts.storm_clients} clients, SIGTERM"
    return [
        (
            f"{intro}, the new process started once the old one exited: median / last "
            "client back after it listened; back; given up",
            cell(plain),
            cell(tuned),
            cell(ceiling),
            ratio(tuned["absorbed_s"], plain["absorbed_s"]),
            ratio(tuned["absorbed_s"], ceiling["absorbed_s"]),
        ),
        (
            f"{intro}, handed to a new process already listening (--reuse-port, "
            f"--drain-rate {storm.HANDOFF_DRAIN_RATE:g}): the same, after the SIGTERM",
            "—",
            cell(handoff),
            "—",
            "",
            "",
        ),
    ]


def c100k_row(result: dict, held: int, counts: Counts) -> tuple[str, str, str, str, str, str]:
    processes = result["processes"]
    rss_mb = sum(process["rss_mb"] for process in processes)
    return (
        f"C100K, {held} idle over {counts.c100k_processes} processes, "
        f"{counts.c100k_window:.0f} s: held at the end; worst stall of any process; server "
        "CPU of all, % of a core; server RSS of all; one broadcast(): delivered, ms to "
        "the last",
        "—",
        f"{sum(p['held_at_end'] for p in processes)}; "
        f"{max(p['worst_stall_ms'] for p in processes):.0f} ms; "
        f"{sum(p['cpu_percent'] for p in processes):.1f} %; {rss_mb:.0f} MB; "
        f"{result['delivered']}, {result['last_delivery_ms']:.0f} ms",
        "—",
        "",
        "",
    )


def write_plots(raw: dict, out: Path) -> list[Path]:
    """The report's PNGs (benchmarks/plots.py) in ``out``."""
    from benchmarks import plots
    from channels_tuning.observability.gctuning import PAUSE_BUCKETS

    out.mkdir(parents=True, exist_ok=True)
    return [
        plots.slow_reader_rss(raw["slow"], 2.0, out),
        plots.burst_latency(raw["burst"], raw["shape"], out),
        plots.burst_throughput(raw["burst"], raw["shape"], out),
        plots.gc_pauses(
            {
                "no freezing": raw["gc"][gc_pause.WITHOUT_FREEZING],
                "package defaults (freezing)": raw["gc"][gc_pause.DEFAULTS],
            },
            PAUSE_BUCKETS,
            out,
        ),
        plots.stalls(raw["stalls"], out),
        plots.broadcast(raw["stalls"], out),
        plots.c100k(raw["c100k"], out),
        plots.storm(raw["storms"], out),
    ]


def markdown(
    rows: list[tuple[str, str, str, str, str, str]], counts: Counts, versions: list[str]
) -> str:
    """The table, after a line naming the machine, the date and the code measured (more
    than one version when a run went on from steps saved on another)."""
    lines = [
        f"Measured by `python -m benchmarks.report` on {machine()}, "
        f"{time.strftime('%Y-%m-%d')}, code {' and '.join(versions)}. One server process "
        "each, Redis layer, clients in other processes on the same machine.",
        "",
        "| workload | plain Channels | channels-tuning | websockets (ceiling) "
        "| tuned / plain | tuned / websockets |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def replace_between_markers(path: Path, block: str) -> None:
    text = path.read_text()
    begin, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    path.write_text(text[:begin] + "\n" + block + text[end:])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--write", action="store_true", help="rewrite docs/benchmarks.md")
    parser.add_argument("--plots", type=Path, help="write the plots (PNG) into this directory")
    parser.add_argument(
        "--results",
        type=Path,
        help="JSON file of each step's results: steps it already has are not measured again",
    )
    options = parser.parse_args()
    counts = QUICK if options.quick else Counts()
    if options.write and options.quick:
        raise SystemExit("--write takes full counts: run without --quick")
    size = "quick" if options.quick else "full"
    results = options.results or Path(tempfile.gettempdir()) / (
        f"benchmarks-report-{size}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    print(
        f"each step's results: {results} (--results {results} goes on from a failure)",
        file=sys.stderr,
        flush=True,
    )
    rows, raw = await measure(counts, results)
    table = markdown(rows, counts, raw["versions"])
    print(table)
    plots_dir = options.plots or (PLOTS if options.write else None)
    if plots_dir is not None:
        for path in write_plots(raw, plots_dir):
            print(f"plot: {path}", file=sys.stderr)
    if options.write:
        replace_between_markers(REPO / "docs" / "benchmarks.md", table)


if __name__ == "__main__":
    asyncio.run(main())
