"""manage.py wsstats against real daphne processes (issue #6, first part)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import websockets

from tests.support.processes import run_wsstats as wsstats
from tests.support.waiting import wait_until


def snapshots(env: dict) -> list[dict]:
    result = wsstats(env, "--json")
    return json.loads(result.stdout) if result.returncode == 0 else []


@pytest.mark.slow
async def test_file_backend_table_tasks_check_and_dead_process(daphne_factory, tmp_path):
    tuning = {"STATS_INTERVAL": 0.5, "STATS_DIR": str(tmp_path / "stats")}
    daphne = daphne_factory(tuned=True, tuning=tuning)
    clients = [await websockets.connect(daphne.ws("/ws/echo/")) for _ in range(3)]
    await wait_until(lambda: [s["connections"] for s in snapshots(daphne.env)] == [3])
    (snap,) = snapshots(daphne.env)
    assert (snap["pid"], snap["server"]) == (daphne.pid, "tuned daphne")
    assert snap["by_state"] == {"connecting": 0, "open": 3, "closing": 0}
    assert snap["consumer_instances"] == 3
    table = wsstats(daphne.env).stdout
    assert str(daphne.pid) in table and "total" in table
    tasks = wsstats(daphne.env, "--tasks").stdout
    # One task per connection, named by the application it runs: the consumer's, which
    # the tuned server and TunedURLRouter start below both routers
    # (compat.channels.application_for, route_match).
    assert "3  EchoConsumer" in tasks
    for ws in clients:
        await ws.close()
    await wait_until(lambda: [s["connections"] for s in snapshots(daphne.env)] == [0])
    assert wsstats(daphne.env, "--check").returncode == 0
    os.kill(daphne.pid, signal.SIGKILL)
    daphne.proc.wait(5)
    result = wsstats(daphne.env)
    assert result.returncode == 1
    assert "No WebSocket server process" in result.stderr


@pytest.mark.slow
async def test_redis_backend_two_processes_and_sigkill(daphne_factory, shared_redis):
    tuning = {"STATS_INTERVAL": 0.5}
    first = daphne_factory(tuned=True, redis=shared_redis, tuning=tuning)
    second = daphne_factory(tuned=False, redis=shared_redis, tuning=tuning)
    clients = [await websockets.connect(first.ws("/ws/chat/stats/")) for _ in range(4)]
    clients += [await websockets.connect(second.ws("/ws/chat/stats/")) for _ in range(2)]

    def counts() -> dict[int, int]:
        return {s["pid"]: s["connections"] for s in snapshots(first.env)}

    await wait_until(lambda: counts() == {first.pid: 4, second.pid: 2})
    servers = {s["pid"]: s["server"] for s in snapshots(first.env)}
    assert servers == {first.pid: "tuned daphne", second.pid: "daphne"}
    totals = wsstats(first.env).stdout.splitlines()[-1].split()
    assert totals[:3] == ["total", "2", "procs"] and totals[3] == "6"
    os.kill(second.pid, signal.SIGKILL)
    started = time.monotonic()
    await wait_until(lambda: counts() == {first.pid: 4}, timeout=5)
    print(f"killed process gone from wsstats after {time.monotonic() - started:.1f} s")
    for ws in clients[:4]:
        await ws.close()
    for ws in clients[4:]:
        ws.transport.abort()
    await wait_until(lambda: counts() == {first.pid: 0})
    check = wsstats(first.env, "--check")
    assert check.returncode == 0, check.stderr + wsstats(first.env, "--tasks").stdout


@pytest.mark.slow
async def test_tasks_and_check_reveal_a_leaking_consumer(daphne_factory, tmp_path):
    tuning = {"STATS_INTERVAL": 0.5, "STATS_DIR": str(tmp_path / "stats")}
    daphne = daphne_factory(tuned=True, tuning=tuning)
    for _ in range(2):
        ws = await websockets.connect(daphne.ws("/ws/leaky/"))
        await ws.close()
    await wait_until(lambda: [s["connections"] for s in snapshots(daphne.env)] == [0])
    await wait_until(lambda: "LeakyConsumer.poll_forever" in wsstats(daphne.env, "--tasks").stdout)
    tasks = wsstats(daphne.env, "--tasks").stdout
    assert "2  LeakyConsumer.poll_forever" in tasks, tasks
    check = wsstats(daphne.env, "--check")
    assert check.returncode == 1
    report = check.stdout + check.stderr
    assert "2 tasks besides the server's own" in report, report
    assert "2 consumer instances still alive" in report, report


@pytest.mark.slow
async def test_memory_lists_allocation_sites_while_the_server_keeps_answering(
    daphne_factory, tmp_path
):
    tuning = {"STATS_INTERVAL": 0.5, "STATS_DIR": str(tmp_path / "stats"), "TRACEMALLOC": 1}
    daphne = daphne_factory(tuned=True, tuning=tuning)
    async with websockets.connect(daphne.ws("/ws/echo/")) as ws:
        await wait_until(lambda: any(s["memory_top"] for s in snapshots(daphne.env)))
        memory = wsstats(daphne.env, "--memory").stdout
        assert f"pid {daphne.pid}" in memory and " s ago)" in memory, memory
        assert "KiB" in memory and ".py:" in memory, memory
        # Rounds keep publishing between takes (once a minute), and the server answers.
        published = snapshots(daphne.env)[0]["published_at"]
        await wait_until(lambda: snapshots(daphne.env)[0]["published_at"] > published)
        await ws.send("still here")
        assert await ws.recv() == "still here"
