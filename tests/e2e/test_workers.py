"""``channels-tuning-daphne --workers N`` (servers/daphne/workers.py), as an operator
runs it: one command, N forked workers on one port sharing the loaded application's
memory, SIGTERM passed on once (every client gets 1012), a killed worker replaced."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from tests.support.processes import (
    REPO,
    child_pids,
    memory_kb,
    start_daphne,
    stop_process,
)
from tests.support.waiting import close_code, wait_until

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc"
)


def children(pid: int) -> set[int]:
    return set(child_pids(pid))


def running(pid: int) -> bool:
    """Not exited (a zombie no one reaped yet has exited: an orphan's reaper may be
    slow, or absent in a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kernel_objects(pid: int) -> set[int]:
    """Inodes of the sockets and pipes ``pid`` has open."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith(("socket:[", "pipe:[")):
                found.add(int(target[target.index("[") + 1 : -1]))
    return found


def polled(pid: int) -> set[int]:
    """Inodes of what the epoll instances ``pid`` has open are watching."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd) == "anon_inode:[eventpoll]":
                info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
                found |= {int(ino, 16) for ino in re.findall(r"tfd:.* ino:\s*([0-9a-f]+)", info)}
    return found


def end_leftover_workers(pids: set[int]) -> None:
    """The workers drain on their own once the supervisor is gone; any left is ended
    (by pid, only if that pid is still one of this server's processes)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            ours = b"channels_tuning" in Path(f"/proc/{pid}/cmdline").read_bytes()
            if ours and running(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def workers_daphne(tmp_path):
    daphne = start_daphne(tmp_path, tuned=True, extra_args=("--workers", "2", "--no-access-log"))
    started: set[int] = set()
    try:
        yield daphne, started
    finally:
        stop_process(daphne.proc)
        end_leftover_workers(started)


async def test_workers_share_memory_spread_connections_and_drain_once(workers_daphne):
    daphne, started = workers_daphne
    workers = set(await asyncio.to_thread(daphne.forked_workers, 2))
    started |= workers
    # Each worker polls its own sockets and pipes only: no epoll instance, self-pipe
    # or waker is shared (compat.twisted.renew_after_fork).
    first, second = sorted(workers)
    assert not kernel_objects(first) & kernel_objects(second)
    for pid in workers:
        assert polled(pid) and polled(pid) <= kernel_objects(pid), pid
    # Forked after loading: most of what a worker wrote is shared with the others and
    # the supervisor (a process started on its own shares none of it: 64 MB private).
    for pid in workers:
        memory = memory_kb(pid)
        assert memory["Shared_Dirty"] > 3 * memory["Private_Dirty"], (pid, memory)
    clients = [
        await websockets.connect(daphne.ws("/ws/echo/"), ping_interval=None) for _ in range(40)
    ]
    for ws in clients[:3]:
        await ws.send("hello")
        assert await ws.recv() == "hello"
    stats = await asyncio.to_thread(daphne.stats_by_worker, workers)
    by_worker = {pid: answer["connections"] for pid, answer in stats.items()}
    assert set(by_worker) == workers, by_worker  # both serve, on the one port
    assert sum(by_worker.values()) == 40 and min(by_worker.values()) > 0, by_worker
    # SIGTERM to the supervisor: each worker drains once (1012 to every client) and
    # the group exits 0.
    os.kill(daphne.pid, signal.SIGTERM)
    codes = await asyncio.gather(*(close_code(ws, timeout=15) for ws in clients))
    assert set(codes) == {1012}
    assert await asyncio.to_thread(daphne.proc.wait, 15) == 0
    await wait_until(lambda: not any(running(pid) for pid in workers))
    log = daphne.log.read_text()
    assert "Second signal" not in log  # one signal each: a drain, not an exit at once
    assert log.count("Draining ") == 2, log  # once per worker


async def test_a_killed_worker_is_replaced(workers_daphne):
    daphne, started = workers_daphne
    workers = set(await asyncio.to_thread(daphne.forked_workers, 2))
    started |= workers
    killed = min(workers)
    os.kill(killed, signal.SIGKILL)
    await wait_until(lambda: len(children(daphne.pid) - {killed}) == 2, timeout=15)
    now = children(daphne.pid)
    started |= now
    assert killed not in now and len(now & workers) == 1
    assert f"worker {killed} exited" in daphne.log.read_text()
    # The group still serves, on both workers.
    ws = await websockets.connect(daphne.ws("/ws/echo/"), ping_interval=None)
    await ws.send("still here")
    assert await ws.recv() == "still here"
    await ws.close()
    assert set(await asyncio.to_thread(daphne.stats_by_worker, now)) == now


def test_a_worker_that_cannot_start_stops_the_group(tmp_path):
    """A port one worker cannot bind (another process holds it without SO_REUSEPORT)
    fails at start: the group stops with an error instead of forking forever."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        env = dict(
            os.environ,
            DJANGO_SETTINGS_MODULE="example_project.settings",
            PYTHONPATH=str(REPO),
        )
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import channels_tuning.servers.daphne as m; m.main()",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "--workers",
                "2",
                "tests.e2e_asgi:application",
            ],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.close()
    assert result.returncode != 0
    assert "stopping every worker" in result.stderr + result.stdout


async def test_workers_drain_when_their_supervisor_is_killed(workers_daphne):
    daphne, started = workers_daphne
    workers = set(await asyncio.to_thread(daphne.forked_workers, 2))
    started |= workers
    clients = [
        await websockets.connect(daphne.ws("/ws/echo/"), ping_interval=None) for _ in range(10)
    ]
    os.kill(daphne.pid, signal.SIGKILL)  # no signal passed on: the workers notice
    daphne.proc.wait(5)
    codes = await asyncio.gather(*(close_code(ws, timeout=15) for ws in clients))
    assert set(codes) == {1012}
    await wait_until(lambda: not any(running(pid) for pid in workers))
    assert "the supervising process is gone; draining" in daphne.log.read_text()


async def code_or_open(ws: websockets.ClientConnection, timeout: float) -> int | None:
    """The close code the server sent within ``timeout``, or None: still open."""
    try:
        return await close_code(ws, timeout=timeout)
    except asyncio.TimeoutError:
        return None


#: The guide's flags for the servers behind its HAProxy (docs/topics/deployment.md).
GUIDE_FLAGS = ("--proxy-headers", "--drain-health-delay", "2", "--no-access-log")


@pytest.mark.slow
async def test_a_workers_group_behind_the_guides_haproxy_is_one_server(
    daphne_factory, redis_server, tmp_path
):
    """The deployment guide's HAProxy block with a ``--workers 2`` group as s1 (its
    ``--health-port`` bound by both workers, as the port is) and one process as s2,
    both started with the guide's flags and Redis. Both are UP; clients through the
    frontend reach s2 and both workers of s1; SIGTERM to the group's supervisor closes
    each of s1's clients with 1012 while s2's stay open, HAProxy marks s1 down, new
    clients reach s2 through the same frontend, and the group exits 0."""
    from tests.support.balancers import start_haproxy

    group = daphne_factory(
        tuned=True,
        redis=redis_server,
        extra_args=("--workers", "2", *GUIDE_FLAGS),
        health_port=True,
    )
    single = daphne_factory(
        tuned=True, redis=redis_server, extra_args=GUIDE_FLAGS, health_port=True
    )
    workers: set[int] = set()
    proxy = start_haproxy(
        tmp_path,
        [group.port, single.port],
        check_ports=[group.health_port, single.health_port],
    )
    try:
        workers |= set(await asyncio.to_thread(group.forked_workers, 2))
        await wait_until(lambda: proxy.server_states() == {"s1": "UP", "s2": "UP"}, timeout=10)
        url = proxy.ws("/ws/echo/")
        clients = [await websockets.connect(url, ping_interval=None) for _ in range(24)]
        for ws in clients[:4]:
            await ws.send("through haproxy")
            assert await ws.recv() == "through haproxy"
        on_workers = {
            pid: answer["connections"]
            for pid, answer in (await asyncio.to_thread(group.stats_by_worker, workers)).items()
        }
        on_single = single.stats()["connections"]
        assert min(on_workers.values()) > 0 and on_single > 0, (on_workers, on_single)
        assert sum(on_workers.values()) + on_single == len(clients)

        os.kill(group.pid, signal.SIGTERM)
        codes = await asyncio.gather(*(code_or_open(ws, timeout=10) for ws in clients))
        closed = [code for code in codes if code is not None]
        assert closed == [1012] * sum(on_workers.values()), codes
        still_open = [ws for ws, code in zip(clients, codes, strict=True) if code is None]
        assert len(still_open) == on_single
        await still_open[0].send("still here")
        assert await still_open[0].recv() == "still here"
        await wait_until(lambda: proxy.server_states()["s1"] != "UP", timeout=10)
        assert await asyncio.to_thread(group.proc.wait, 15) == 0

        late = [await websockets.connect(url, ping_interval=None) for _ in range(5)]
        for ws in late:
            await ws.send("after")
            assert await ws.recv() == "after"
        assert single.stats()["connections"] == on_single + len(late)
        for ws in [*still_open, *late]:
            await ws.close()
    finally:
        stop_process(proxy.proc)
        stop_process(group.proc)
        end_leftover_workers(workers)
