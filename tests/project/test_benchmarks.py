"""The benchmarks cannot rot: the report runs end to end with small counts (real
servers, real Redis), and the table the documentation shows is the one the report wrote."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from benchmarks.fanout import cpu_seconds_between, thread_cpu_ns
from benchmarks.pools import BufferPool, ObjectPool, PooledProtobufCodec
from benchmarks.report import QUICK, Counts, Progress, SavedSteps, code_version
from benchmarks.stall import round_figures
from channels_tuning.wire.proto.envelope_pb2 import Envelope
from tests.support.processes import start_subscribers

REPO = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"


def block(path: Path) -> str:
    text = path.read_text()
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()


def run_script(command_line: str, timeout: float = 120) -> str:
    """What ``python benchmarks/<command_line>`` printed; it must succeed."""
    command = [sys.executable, *shlex.split(f"benchmarks/{command_line}")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_measurements_page_table_is_the_reports():
    docs = block(REPO / "docs" / "benchmarks.md")
    assert "| workload | plain Channels | channels-tuning | websockets (ceiling)" in docs
    assert "python -m benchmarks.report" in docs


def test_cpu_readings_of_a_few_milliseconds_are_not_lost_to_clock_ticks():
    """The broadcast rows read the server's CPU per thread in nanoseconds: 5 ms of work
    is below one clock tick, and a thread that exits between two readings costs
    nothing negative."""
    import os
    import threading
    import time

    before = thread_cpu_ns(os.getpid())
    started = time.thread_time()
    while time.thread_time() - started < 0.005:
        pass
    worker = threading.Thread(target=lambda: time.sleep(0.01))
    worker.start()
    worker.join()
    spent = cpu_seconds_between(before, thread_cpu_ns(os.getpid()))
    assert 0.004 < spent < 0.2
    assert cpu_seconds_between({**before, 1: 10**12}, before) == 0.0


@pytest.mark.slow
def test_report_runs_with_small_counts(tmp_path):
    results = tmp_path / "results.json"
    command = [sys.executable, "-m", "benchmarks.report", "--quick", "--results", str(results)]
    result = subprocess.run(
        [*command, "--plots", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Every step was saved as it ended: a second run with the file measures nothing
    # again and prints the same table (a run that fails late keeps the earlier steps).
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    steps = re.findall(r"^\[(\d+)/(\d+)\] .*: saved in ", again.stderr, re.MULTILINE)
    assert steps and len(steps) == int(steps[-1][1]) == int(steps[-1][0]), again.stderr
    assert again.stdout.split("\n", 1)[1] == result.stdout.split("\n", 1)[1]
    # The table names the code it measured (one version: nothing came from another).
    assert f", code {code_version()}. One server process" in result.stdout.splitlines()[0]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    titles = [row.split(" | ")[0] for row in rows[1:]]
    for expected in (
        "idle memory",
        "handshakes per second",
        "burst",
        "behind AuthMiddlewareStack",
        "slow reader",
        "codec",
        "worst stall of the loop",
        "one message to all: delivered",
        "C100K",
    ):
        assert any(expected in title for title in titles), (expected, titles)
    delivered = next(row for row in rows if "delivered, %" in row)
    # Every message reached every subscriber in the quick burst, on all three servers.
    assert re.findall(r"\| (\d+\.\d) ", delivered)[:3] == ["100.0"] * 3, delivered
    # One message to every idle connection reached all of them, on all three servers.
    to_all = next(row for row in rows if "300 idle, one message to all: delivered" in row)
    assert to_all.split(" | ")[1:4] == ["300"] * 3, to_all
    # The later rounds: each reached every connection, on all three servers.
    later = next(row for row in rows if "300 idle, rounds 2-3: delivered" in row)
    assert later.split(" | ")[1:4] == ["300"] * 3, later
    # The floor, measured next in the same sitting: every frame read, and each server's
    # CPU per delivery given as a multiple of it.
    title = "300 idle, rounds 2-3: server µs per delivery ÷ the floor"
    floor = next(row for row in rows if title in row)
    assert "; 1500 of 1500 read)" in floor, floor
    assert all(float(cell) > 0 for cell in floor.split(" | ")[1:4]), floor
    # C100K in small: every connection held to the end, the broadcast reached all.
    cell = next(row for row in rows if row.startswith("| C100K")).split(" | ")[2]
    held, *_, broadcast = cell.split("; ")
    assert held == "200" and broadcast.startswith("200, "), cell
    # The storm in small: every client back on all three servers and in the handoff.
    storms = [row.split(" | ")[1:4] for row in rows if row.startswith("| reconnect storm")]
    assert len(storms) == 2, storms
    for cell in (*storms[0], storms[1][1]):
        assert cell.endswith("; 100 of 100; 0"), storms
    assert re.search(r"\[(\d+)/\1\]", result.stderr)  # the progress display, to its end
    # The plots: each a real picture (PNG signature, not empty).
    pngs = sorted(path.name for path in tmp_path.glob("*.png"))
    assert pngs == [
        "broadcast.png",
        "burst-latency.png",
        "burst-throughput.png",
        "c100k.png",
        "gc-pauses.png",
        "slow-reader-rss.png",
        "stalls.png",
        "storm.png",
    ]
    for path in tmp_path.glob("*.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


async def test_saved_steps_are_reused_and_name_the_code_they_were_measured_on(tmp_path, capsys):
    results = tmp_path / "results.json"
    measured: list[str] = []

    async def measure(value: int) -> dict:
        measured.append(f"measured {value}")
        return {"value": value}

    first = SavedSteps(results, QUICK, Progress(2), "aaaa111")
    assert await first.step("one", lambda: measure(1)) == {"value": 1}
    # Resumed on the same code: the step is not measured again, and nothing is said.
    same = SavedSteps(results, QUICK, Progress(2), "aaaa111")
    assert await same.step("one", lambda: measure(2)) == {"value": 1}
    assert measured == ["measured 1"]
    assert "measured on" not in capsys.readouterr().err
    # Resumed on other code: still reused, and the step is named with both versions.
    later = SavedSteps(results, QUICK, Progress(2), "bbbb222-dirty")
    assert await later.step("one", lambda: measure(3)) == {"value": 1}
    assert await later.step("two", lambda: measure(4)) == {"value": 4}
    said = capsys.readouterr().err
    assert [line for line in said.splitlines() if "measured on" in line] == [
        f"[1/2] one: saved in {results} (measured on aaaa111, now bbbb222-dirty)"
    ]
    assert later.versions_used() == ["aaaa111", "bbbb222-dirty"]
    assert same.versions_used() == ["aaaa111"]
    # Other counts: the file starts over and every step is measured.
    other = SavedSteps(results, Counts(), Progress(2), "bbbb222-dirty")
    assert await other.step("one", lambda: measure(5)) == {"value": 5}
    assert measured == ["measured 1", "measured 4", "measured 5"]


def test_report_refuses_a_broadcast_of_one_round():
    """The report's steadier broadcast rows are the median of rounds 2 and on: counts
    that leave no second round are refused when made, not found empty after the run."""
    with pytest.raises(ValueError, match="broadcast_rounds"):
        Counts(broadcast_rounds=1)
    assert Counts(broadcast_rounds=2).broadcast_rounds == 2


def test_storm_sweeps_each_drain_rate_with_each_bound_in_place():
    from benchmarks.storm import planned_runs

    runs = planned_runs(("plain", "tuned"), (100, 500), 1000.0, (4000.0, 100_000.0))
    assert runs == [
        ("plain", (), False),
        *[
            ("tuned", ("--max-pending-upgrades", bound, "--drain-rate", rate), False)
            for bound in ("100", "500")
            for rate in ("4000", "100000")
        ],
        ("tuned", ("--drain-rate", "1000"), True),
    ]
    assert planned_runs(("tuned",)) == [("tuned", (), False)]


@pytest.mark.slow
def test_send_floor_counts_every_frame_its_clients_read():
    """The floor under a broadcast in small: connections spread over three client
    processes, every frame sent is read back and counted, and the CPU per send() is a
    positive figure."""
    output = run_script("send_floor.py --connections 50 --rounds 2 --per-client 20")
    line = output.strip()
    assert line.startswith("50 connections: ") and line.endswith("100 of 100 frames delivered")
    per_send = float(line.split("connections: ")[1].split(" µs")[0])
    assert 0 < per_send < 10_000, line


def test_group_members_reads_every_member_of_each_size():
    """A group send's read of its group and the whole send, by size, against real
    Redis: each size's group holds exactly that many members of five processes (the
    script asserts the read returned them all, that Redis counted one ZRANGE per read,
    and that every send reached every member in one message per process), and the
    costs are figures."""
    output = run_script("group_members.py --members 10,300 --reads 3")
    rows = [line for line in output.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["10", "300"], output
    for row in rows:
        redis_us, read_ms, read_held, send_ms, send_held = (
            float(c) for c in row.strip("|").split("|")[1:]
        )
        assert redis_us >= 0 and read_ms > 0 and send_ms > 0, row
        assert read_held >= 0 and send_held >= 0, row


@pytest.mark.slow
def test_c100k_reports_redis_load_over_the_window():
    """c100k.py in small: every connection held and reached by the broadcast, and
    Redis's load over the window read from Redis itself (its liveness and stats keys
    are written every few seconds, so the window sees calls)."""
    output = run_script(
        "c100k.py --processes 2 --per-process 30 --window 6 --probe-source 127.0.0.1",
        timeout=180,
    )
    assert "one broadcast() to all: 60 of 60 delivered" in output, output
    redis_line = next(line for line in output.splitlines() if line.startswith("Redis over"))
    calls = float(redis_line.split("core, ")[1].split(" calls/s")[0])
    assert calls > 0, redis_line


@pytest.mark.slow
def test_c100k_with_workers_reads_each_worker_and_the_supervisor():
    """``c100k.py --workers``: one forked group on one port; each worker's count and
    collections read from its own ``/_stats``, the supervisor counted in memory and
    CPU, every connection reached by the broadcast."""
    output = run_script(
        "c100k.py --workers --processes 2 --per-process 30 --window 4 --probe-source 127.0.0.1",
        timeout=180,
    )
    assert "over 2 workers of one --workers group" in output, output
    assert "one broadcast() to all: 60 of 60 delivered" in output, output
    rows = [line for line in output.splitlines() if line.startswith("| ")]
    workers = [row for row in rows if row.split("|")[1].strip() in ("1", "2")]
    assert len(workers) == 2 and any(row.startswith("| supervisor |") for row in rows), rows
    held = next(row for row in rows if row.startswith("| all |")).split("|")[2]
    assert held.strip() == "60 / 60", rows
    assert all(int(row.split("|")[2].split("/")[0]) > 0 for row in workers), workers


@pytest.mark.slow
def test_stall_probe_alone_is_a_row_of_its_own():
    """``--connections 0``: the probe against a server with nothing open, the floor
    under the p50 of the other rows; no memory per connection, no broadcast."""
    output = run_script("stall.py --connections 0 --kinds tuned --window 1 --broadcast")
    row = next(line for line in output.splitlines() if line.startswith("| 0, tuned |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    p50, p99 = (float(value) for value in cells[2].split(" / "))
    assert 0 < p50 <= p99 and cells[-1] == "—", row
    assert "one message to all N" not in output


def test_each_round_of_a_broadcast_is_measured_over_its_own_span():
    """``stall.py --rounds``: a round's CPU is read from the sample before its message
    was sent to the first sample after its last frame arrived, less the idle rate over
    that span, and divided by its own deliveries; a later round's frames and the quiet
    between rounds do not count."""
    idle, busy = 0.1, 1.0  # CPU seconds per second: idle, then while delivering

    def cpu_at(t: float) -> float:  # round 0 busy over [1.0, 1.2], round 1 over [3.0, 3.1]
        spans = ((1.0, 1.2), (3.0, 3.1))
        spent = idle * t
        for start, end in spans:
            spent += (busy - idle) * max(0.0, min(t, end) - start)
        return spent

    samples = [(i / 100, {7: round(cpu_at(i / 100) * 1e9)}) for i in range(500)]
    reports = [
        {"by_seq": {"0": [600, 1.15, 1.0], "1": [500, 3.1, 3.0]}},
        {"by_seq": {"0": [400, 1.2, 1.0]}},  # its round-1 frames never came
    ]
    first = round_figures(0, reports, samples, idle)
    assert first["delivered"] == 1000
    assert abs(first["last_delivery_ms"] - 200) < 1e-6
    assert abs(first["us_per_delivery"] - 0.18 / 1000 * 1e6) < 1.0  # 180 ms of work
    second = round_figures(1, reports, samples, idle)
    assert second["delivered"] == 500
    assert abs(second["us_per_delivery"] - 0.09 / 500 * 1e6) < 2.0  # 90 ms of work
    assert round_figures(2, reports, samples, idle)["delivered"] == 0


@pytest.mark.slow
def test_stall_rounds_each_reach_every_connection():
    """``--broadcast --rounds 3`` against a real tuned server: every round reaches all
    200 connections (a round that did not would be named with its count), and the
    later rounds' median comes with each one's figure."""
    output = run_script(
        "stall.py --connections 200 --kinds tuned --window 1 --broadcast --rounds 3",
        timeout=300,
    )
    row = next(line for line in output.splitlines() if line.startswith("| 200, tuned | 200 |"))
    later = row.strip("|").split("|")[-1].strip()
    median, each = later.split(" ", 1)
    figures = each.strip("()").split(", ")
    assert float(median) >= 0 and len(figures) == 2, row
    assert all(re.fullmatch(r"\d+\.\d", figure) for figure in figures), row


@pytest.mark.slow
def test_storm_brings_every_client_back_to_the_restarted_server():
    """The reconnect-storm benchmark in small: a restarted tuned server (with the bound
    on pending upgrades set) takes back all of its clients, none given up, and the old
    server's drain is read from its log (the table row says so); with the handoff
    (``--reuse-port``) no attempt failed at all."""
    arguments = "--connections 100 --kinds tuned --max-pending-upgrades 50 --handoff"
    output = run_script(f"storm.py {arguments}", timeout=300)
    label = "| tuned --max-pending-upgrades 50 |"
    row = next(line for line in output.splitlines() if line.startswith(label))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2] == "100 of 100" and cells[-2] == "0", row
    closes, handlers, exit_after = (float(value) for value in cells[-1].split(" / "))
    assert 0 <= closes < 10 and 0 <= handlers < 10 and exit_after >= 0, row
    handoff = "| tuned --reuse-port --drain-rate 1000 |"
    row = next(line for line in output.splitlines() if line.startswith(handoff))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2] == "100 of 100" and cells[6] == "0" and cells[7] == "0", row


@pytest.mark.slow
def test_storm_behind_haproxy_brings_every_client_to_the_other_server():
    """The storm behind the guide's HAProxy in small: the clients of the stopped
    process all come back through HAProxy to the other one, which its checks on
    ``--health-port`` never mark down."""
    arguments = "--connections 200 --runs 1 --variants 'health port'"
    output = run_script(f"storm_balancer.py {arguments}", timeout=300)
    row = next(line for line in output.splitlines() if line.startswith("| health port |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "0 / 0" and cells[2] == "200 of 200" and cells[-1] == "0", row


def test_plots_shown_are_the_reports_and_exist():
    """The measurements page shows the report's committed plots."""
    docs = (REPO / "docs" / "benchmarks.md").read_text()
    shown = re.findall(r"\((_static/benchmarks/[\w-]+\.png)\)", docs)
    for name in (
        "slow-reader-rss",
        "burst-latency",
        "burst-throughput",
        "gc-pauses",
        "stalls",
        "broadcast",
        "c100k",
        "storm",
    ):
        assert f"_static/benchmarks/{name}.png" in shown
    for path in shown:
        assert (REPO / "docs" / path).read_bytes()[:4] == b"\x89PNG", path


# ---------------------------------- the pools benchmarks/codecs.py compares


def test_object_pool_returns_reset_objects_and_stays_bounded():
    pool: ObjectPool[Envelope] = ObjectPool(Envelope, Envelope.Clear, maxsize=3)
    taken = [pool.acquire() for _ in range(5)]
    for i, envelope in enumerate(taken):
        envelope.topic, envelope.seq = f"secret-{i}", i + 1
    for envelope in taken:
        pool.release(envelope)
    assert len(pool) == 3  # two were dropped, not kept
    again = [pool.acquire() for _ in range(3)]
    assert all(envelope == Envelope() for envelope in again)  # no data from earlier use
    assert pool.created == 5 and pool.reused == 3


def test_pooled_decoding_leaks_nothing_between_messages():
    codec = PooledProtobufCodec(StringValue)
    first = codec.decode(codec.encode(StringValue(value="a"), topic="room", seq=9, error="x"))
    second = codec.decode(codec.encode(StringValue(value="b")))
    assert (first.topic, first.seq, first.error) == ("room", 9, "x")
    assert (second.topic, second.seq, second.error, second.message.value) == ("", 0, "", "b")


async def test_pools_shared_by_many_coroutines_hand_out_distinct_objects():
    pool: ObjectPool[Envelope] = ObjectPool(Envelope, Envelope.Clear, maxsize=8)
    buffers = BufferPool(maxsize=8)

    async def worker(n: int) -> None:
        for round_ in range(50):
            with pool.borrowed() as envelope:
                envelope.seq = n * 1000 + round_
                buffer = buffers.acquire()
                buffer += n.to_bytes(4, "big")
                await asyncio.sleep(0)  # other workers run while this one holds both
                assert envelope.seq == n * 1000 + round_
                assert bytes(buffer) == n.to_bytes(4, "big")
                buffers.release(buffer)

    await asyncio.gather(*(worker(n) for n in range(100)))
    assert len(pool) == 8 and len(buffers) == 8


def test_buffer_pool_does_not_keep_oversized_buffers():
    pool = BufferPool(maxsize=2, max_buffer_size=16)
    big = pool.acquire()
    big += b"x" * 17
    pool.release(big)
    assert len(pool) == 0
    small = pool.acquire()
    small += b"abc"
    pool.release(small)
    assert len(pool) == 1 and pool.acquire() == bytearray()


@pytest.mark.slow
async def test_lean_clients_listen_until_the_last_message_of_several():
    """stall.py's rounds wait until a slow server is idle again, which can be longer
    than the clients' quiet: with ``messages`` the quiet counts only once the last
    message came. (Plain Channels at 19 000 had its clients report after the first of
    six rounds, and its later rounds counted none delivered.)"""
    import websockets

    async def two_messages_far_apart(connection) -> None:
        await connection.send(f"0 {time.time():.6f} x")
        await asyncio.sleep(1.5)  # three times the clients' quiet
        await connection.send(f"1 {time.time():.6f} x")
        await asyncio.sleep(10)

    async with websockets.serve(two_messages_far_apart, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        clients = [
            await asyncio.to_thread(
                start_subscribers, port, "/", 2, quiet=0.5, max_wait=30, messages=messages
            )
            for messages in (1, 2)
        ]
        try:
            reports = [json.loads(await asyncio.to_thread(c.stdout.readline)) for c in clients]
        finally:
            for client in clients:
                client.kill()
                client.wait()
    assert sorted(reports[0]["by_seq"]) == ["0"]  # one message: reported in the gap
    assert sorted(reports[1]["by_seq"]) == ["0", "1"] and reports[1]["got"] == 4


def test_slow_callback_log_names_what_held_the_loop(tmp_path):
    """``benchmarks/slow_callbacks``: a process started with the directory first on its
    path logs a task step that held its loop 30 ms by its coroutine, leaves a 1 ms one
    out, and the summary groups the two 30 ms steps of one coroutine as one line."""
    import os

    from benchmarks import slow_callbacks

    program = (
        "import asyncio, time\n"
        "async def holds_the_loop():\n"
        "    for _ in range(2):\n"
        "        time.sleep(0.03)\n"
        "        await asyncio.sleep(0)\n"
        "async def brief():\n"
        "    time.sleep(0.001)\n"
        "async def main():\n"
        "    await asyncio.gather(holds_the_loop(), brief())\n"
        "asyncio.run(main())\n"
    )
    prefix = tmp_path / "callbacks"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(slow_callbacks.__file__).parent), str(REPO)]),
        CT_SLOW_CALLBACK_LOG=str(prefix),
    )
    began = time.time()
    subprocess.run([sys.executable, "-c", program], env=env, check=True, timeout=60)
    held = slow_callbacks.read(prefix, began, time.time())
    steps = [h for h in held if h.what == "task holds_the_loop"]
    assert len(steps) == 1 and steps[0].count == 2, held
    assert 30 <= steps[0].longest_ms < 1000 and steps[0].total_ms >= 60, held
    # A sleep holds the loop without the CPU: the log tells a busy loop from a wait.
    assert steps[0].longest_cpu_ms < 10, held
    assert not [h for h in held if "brief" in h.what], held
    assert "task holds_the_loop" in slow_callbacks.summary(held)
    assert slow_callbacks.read(prefix, began - 60, began - 30) == []
    with pytest.raises(FileNotFoundError):  # no log: the hook did not load
        slow_callbacks.read(tmp_path / "elsewhere", began, time.time())


def test_slow_callbacks_of_a_forked_worker_go_to_its_own_log(tmp_path):
    """A process that forks after loading (``--workers``): the child's loop is logged
    under the child's pid, and ``read_each`` tells the two processes apart."""
    import os

    from benchmarks import slow_callbacks

    program = (
        "import asyncio, os, time\n"
        "async def parent_step():\n"
        "    time.sleep(0.03)\n"
        "async def child_step():\n"
        "    time.sleep(0.03)\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    asyncio.run(child_step())\n"
        "    os._exit(0)\n"
        "asyncio.run(parent_step())\n"
        "os.waitpid(child, 0)\n"
        "print(child)\n"
    )
    prefix = tmp_path / "callbacks"
    logging = slow_callbacks.environment(prefix)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([logging.pop("PYTHONPATH_PREPEND"), str(REPO)]),
        **logging,
    )
    began = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", program], env=env, check=True, timeout=60, capture_output=True
    )
    child = int(proc.stdout)
    held = slow_callbacks.read_each(prefix, began, time.time())
    assert child in held and len(held) == 2, held
    (parent,) = set(held) - {child}
    steps = {pid: {h.what for h in logged if "task" in h.what} for pid, logged in held.items()}
    assert steps == {child: {"task child_step"}, parent: {"task parent_step"}}, held


def test_headers_shared_cost_less_than_held_each():
    """The request headers kept per connection, held each and shared, for the two
    clients: sharing keeps less for both (the values that differ stay per connection,
    so never nothing)."""
    output = run_script("headers.py --connections 200")
    rows = [line for line in output.splitlines() if line.startswith(("| benchmark", "| Chrom"))]
    assert len(rows) == 2, output
    for row in rows:
        held, shared = (float(c) for c in row.strip("|").split("|")[1:3])
        assert 0 < shared < held, row
