"""Redis Cluster end to end (issue #29): a real cluster started from Debian's
redis-server (three primaries with a replica each, ``redis-cli --cluster create``), two
``channels-tuning-daphne`` processes on ``RedisClusterChannelLayer``, lean subscriber
processes. The burst is delivered whole with every report counting every member;
``wsstats`` lists both processes; a primary SIGKILLed and a slot migrated while a
producer broadcasts lose nothing without telling the producer. History recovery and
presence on a cluster run in ``test_recovery.py`` and ``test_presence.py``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time

import pytest
import websockets

from channels_tuning.broadcast import broadcast
from tests.support.fleet import assert_memberships_refreshed, member_processes
from tests.support.processes import run_wsstats, start_subscribers
from tests.support.redis_cluster import RedisCluster, start_redis_cluster
from tests.support.waiting import wait_until

SUBSCRIBERS = 500  # over 2 server processes, one client process per group and server
MESSAGES = 2000  # to each group
RATE = 50  # broadcasts per second in the fault tests
TUNING = {"HEARTBEAT_INTERVAL": None, "GROUP_REFRESH_INTERVAL": 1, "STATS_INTERVAL": 1}


def group_on(cluster: RedisCluster, port: int, stem: str) -> str:
    """A group name whose members' key is served by the primary on ``port``."""
    n = 0
    while cluster.port_of_key(f"asgi:group:{stem}-{n}") != port:
        n += 1
    return f"{stem}-{n}"


def zcard(cluster: RedisCluster, group: str) -> int:
    return int(cluster.cli("ZCARD", f"asgi:group:{group}") or 0)


@pytest.mark.slow
async def test_burst_reports_and_wsstats_on_a_cluster(daphne_factory, redis_cluster):
    """500 subscribers over 2 processes in 3 groups, one on each primary: memberships
    are refreshed on every primary; 2 000 broadcasts to each group reach every
    subscriber, and every report counts every member and both processes; wsstats
    (through the cluster) lists both processes."""
    primaries = sorted(redis_cluster.primary_ports())
    assert len(primaries) == 3
    groups = [group_on(redis_cluster, port, "burst") for port in primaries]
    processes = [daphne_factory(tuned=True, tuning=TUNING, **redis_cluster.env) for _ in range(2)]
    per_client = SUBSCRIBERS // (len(processes) * len(groups))
    members = 2 * per_client
    layer = redis_cluster.layer()
    clients = []
    try:
        for process in processes:
            for group in groups:
                clients.append(
                    start_subscribers(
                        process.port, f"/ws/group/{group}/", per_client, quiet=3, max_wait=300
                    )
                )
        await wait_until(lambda: all(zcard(redis_cluster, g) == members for g in groups))

        # Refreshed on every primary: each member's score moves forward.
        await assert_memberships_refreshed(groups, lambda _: redis_cluster)
        inboxes = {
            redis_cluster.port_of_key(f"asgi{process}!")
            for group in groups
            for process in member_processes(redis_cluster, group)
        }
        began = time.monotonic()
        reports = []
        for i in range(MESSAGES):
            for group in groups:
                reports.append(
                    await broadcast(group, f"{i} {time.time():.6f} x", on_full="wait", layer=layer)
                )
        produced = time.monotonic() - began
        outputs = [c.communicate(timeout=300)[0] for c in clients]
        got = [json.loads(out.splitlines()[-1])["got"] for out in outputs]
        assert got == [MESSAGES * per_client] * len(clients)  # per client process
        assert all(r.receivers == members and r.complete and r.processes == 2 for r in reports)
        print(
            f"\n{SUBSCRIBERS} subscribers over 2 processes, groups on primaries {primaries}, "
            f"inboxes on {sorted(inboxes)}: {len(reports)} broadcasts in {produced:.1f} s, "
            f"{sum(got)} deliveries, every report complete"
        )

        listed = await asyncio.to_thread(run_wsstats, processes[0].env, "--json")
        assert listed.returncode == 0, listed.stderr
        pids = {snap["pid"] for snap in json.loads(listed.stdout)}
        assert {p.app_pid for p in processes} <= pids
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
        await layer.close_pools()


class Subscribers:
    """``count`` WebSocket clients of one group recording the numbers they receive."""

    def __init__(self) -> None:
        self.clients: list[websockets.ClientConnection] = []
        self.received: list[list[int]] = []
        self._readers: list[asyncio.Future[None]] = []

    async def open(self, url: str, count: int) -> None:
        for _ in range(count):
            ws = await websockets.connect(url)
            numbers: list[int] = []
            self.clients.append(ws)
            self.received.append(numbers)
            self._readers.append(asyncio.ensure_future(self._read(ws, numbers)))

    @staticmethod
    async def _read(ws: websockets.ClientConnection, numbers: list[int]) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in ws:
                numbers.append(int(frame))

    async def close(self) -> None:
        for ws in self.clients:
            await ws.close()
        await asyncio.gather(*self._readers)


class Producer:
    """Broadcasts numbers at RATE to a group of ``expected`` members; each either
    reaches them all or the producer is told: an exception, or a report that says
    fewer were reached (full, taken for gone, or no longer members: a failover longer
    than LIVENESS_TTL makes producers take the processes whose inboxes were on that
    primary for gone and remove their members, until those processes re-add them)."""

    def __init__(self, layer, group: str, expected: int) -> None:
        self.layer = layer
        self.group = group
        self.expected = expected
        self.told: dict[int, str] = {}
        self.reports: dict[int, object] = {}
        self._stop = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        seq, began = 0, time.monotonic()
        while not self._stop.is_set():
            try:
                report = await broadcast(
                    self.group, str(seq), on_full="drop", timeout=2, layer=self.layer
                )
                self.reports[seq] = report
                if report.state_lost:
                    self.told[seq] = "report: state lost"
                elif report.receivers_gone or report.receivers_over_capacity:
                    self.told[seq] = "report: receivers gone or full"
                elif report.receivers < self.expected:
                    self.told[seq] = "report: fewer members"
            except Exception as exc:  # the producer hears of every failed send
                self.told[seq] = type(exc).__name__
            seq += 1
            await asyncio.sleep(max(0.0, began + seq / RATE - time.monotonic()))

    @property
    def sent(self) -> int:
        return len(self.reports) + sum(1 for seq in self.told if seq not in self.reports)

    async def stop(self) -> None:
        self._stop.set()
        await self._task


def losses(subscribers: Subscribers, producer: Producer) -> tuple[int, int]:
    """(deliveries lost without the producer being told, deliveries duplicated)."""
    lost_silently = duplicated = 0
    for numbers in subscribers.received:
        assert numbers == sorted(numbers), "out of order"
        duplicated += len(numbers) - len(set(numbers))
        got = set(numbers)
        lost_silently += sum(
            1 for seq in range(producer.sent) if seq not in got and seq not in producer.told
        )
    return lost_silently, duplicated


async def fault_under_broadcasts(daphne_factory, cluster: RedisCluster, fault) -> dict:
    """20 subscribers on one server process, in a group whose key is on the primary
    that also holds the process' inbox; the producer broadcasts at RATE while
    ``fault(port of that primary)`` runs; returns what was measured."""
    tuning = {**TUNING, "IDLE_TIMEOUT": None}
    # Memberships outlive the failover, as the default group_expiry (300 s) does; with
    # the refresh interval of 1 s alone they would expire 5 s after the last refresh.
    server = daphne_factory(tuned=True, tuning=tuning, GROUP_EXPIRY="60", **cluster.env)
    layer = cluster.layer(group_expiry=60)
    subscribers = Subscribers()
    try:
        probe = await websockets.connect(server.ws("/ws/group/probe/"))
        await wait_until(lambda: zcard(cluster, "probe") == 1)
        (process,) = member_processes(cluster, "probe")
        await probe.close()
        inbox_port = cluster.port_of_key(f"asgi{process}!")
        group = group_on(cluster, inbox_port, "fault")
        await subscribers.open(server.ws(f"/ws/group/{group}/"), 20)
        await wait_until(lambda: zcard(cluster, group) == 20)
        producer = Producer(layer, group, expected=20)
        await asyncio.sleep(1.5)
        counts = [len(r) for r in subscribers.received]
        began = time.monotonic()
        measured = await fault(inbox_port)
        await wait_until(
            lambda: all(len(r) > c for r, c in zip(subscribers.received, counts, strict=True)),
            timeout=30,
        )
        counts = [len(r) for r in subscribers.received]
        await wait_until(
            lambda: all(len(r) > c for r, c in zip(subscribers.received, counts, strict=True)),
            timeout=30,
        )
        measured["resumed_after"] = time.monotonic() - began
        await asyncio.sleep(2)
        await producer.stop()
        await asyncio.sleep(1)
        await subscribers.close()
        lost_silently, duplicated = losses(subscribers, producer)
        measured.update(
            sent=producer.sent,
            told=len(producer.told),
            reasons=sorted(set(producer.told.values())),
            gone_reported=sum(r.receivers_gone for r in producer.reports.values()),
            lost_silently=lost_silently,
            duplicated=duplicated,
            deliveries=producer.sent * len(subscribers.clients),
        )
        return measured
    finally:
        await layer.close_pools()


@pytest.mark.slow
async def test_a_primary_killed_while_broadcasting(daphne_factory, redis_cluster):
    """SIGKILL the primary holding the group and the server's inbox under 50
    broadcasts/s: its replica is promoted, delivery resumes, every broadcast is
    delivered or told to the producer (none twice)."""

    async def kill(port: int) -> dict:
        killed_at = time.monotonic()
        node = redis_cluster.node(port)
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait()
        await wait_until(lambda: port not in redis_cluster.primary_ports(), timeout=30)
        await wait_until(redis_cluster.ok, timeout=30)
        return {"promoted_after": time.monotonic() - killed_at}

    measured = await fault_under_broadcasts(daphne_factory, redis_cluster, kill)
    print(f"\nprimary SIGKILLed under {RATE} broadcasts/s: {measured}")
    assert measured["duplicated"] == 0
    # Asynchronous replication: what the primary accepted but had not yet sent to its
    # replica is gone, the one loss nobody can be told of (as with Sentinel).
    assert measured["lost_silently"] <= 2 * 20, measured


@pytest.mark.slow
async def test_a_slot_migrated_while_broadcasting(daphne_factory, redis_cluster):
    """Move the slots of the group and of the server's inbox to another primary
    (``redis-cli --cluster reshard``) under 50 broadcasts/s: nothing lost or doubled."""

    async def reshard(port: int) -> dict:
        ids = {port: node_id for node_id, port, _ in redis_cluster.primaries()}
        target = next(p for p in ids if p != port)
        began = time.monotonic()
        command = [
            "redis-cli",
            "--cluster",
            "reshard",
            f"127.0.0.1:{port}",
            "--cluster-from",
            ids[port],
            "--cluster-to",
            ids[target],
            "--cluster-slots",
            str(16384),  # all of that primary's slots: the group's and the inbox's
            "--cluster-yes",
        ]
        await asyncio.to_thread(
            subprocess.run, command, check=True, capture_output=True, text=True, timeout=120
        )
        return {"migrated_in": time.monotonic() - began, "to": target}

    measured = await fault_under_broadcasts(daphne_factory, redis_cluster, reshard)
    print(f"\nslots migrated under {RATE} broadcasts/s: {measured}")
    assert (measured["duplicated"], measured["lost_silently"]) == (0, 0), measured


@pytest.mark.slow
async def test_a_new_clients_first_commands_may_run_together(shared_redis_cluster):
    """A server's first handshakes reach a new cluster client together. redis-py
    (8.1) raced them against its own discovery (AttributeError in 49 of 60 new
    clients given 40 concurrent EVALs); the layer's client discovers first."""
    for _ in range(20):
        layer = shared_redis_cluster.layer()
        client = layer.connection(0)
        results = await asyncio.gather(
            *(client.eval("return redis.call('INCR', KEYS[1])", 1, f"n{i % 3}") for i in range(40))
        )
        assert len(results) == 40
        await layer.close_pools()


async def test_a_cluster_that_asks_for_a_password(tmp_path):
    """The URL's password reaches every node (redis-py's RedisCluster keywords); a
    wrong one is refused at the first command, not later."""
    from channels_tuning.layers import RedisClusterChannelLayer

    cluster = start_redis_cluster(tmp_path, password="s3cret")
    try:
        assert all("s3cret@" in url for url in cluster.urls)
        layer = cluster.layer()
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        report = await layer.group_send("room", {"type": "hello"})
        assert report.delivered == 1
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "hello"}
        await layer.close_pools()
        port = cluster.nodes[0].port
        wrong = RedisClusterChannelLayer(hosts=[f"redis://:wrong@127.0.0.1:{port}"])
        with pytest.raises(Exception, match=r"(?i)invalid username-password") as refused:
            await wrong.group_add("room", channel)
        print(f"\nwrong password: {type(refused.value).__name__}: {refused.value}")
        await wrong.close_pools()
    finally:
        cluster.stop()


async def test_a_primary_that_lost_its_data_is_told_from_the_others(shared_redis_cluster):
    """The servers' marker is per hash slot: after one primary loses its data (FLUSHALL,
    as a restart without persistence or replica would), a send to an emptied group
    there says ``state_lost``; groups on the other primaries are untouched; a
    membership added again brings the marker back."""
    cluster = shared_redis_cluster
    primaries = sorted(cluster.primary_ports())
    groups = [group_on(cluster, port, "lost") for port in primaries]
    layer = cluster.layer()
    channel = await layer.new_channel()
    try:
        for group in groups:
            await layer.group_add(group, channel)
        for group in groups:
            report = await layer.group_send_report(group, {"type": "x"})
            assert (report.receivers, report.state_lost) == (1, False)
        cluster.node(primaries[0]).cli("FLUSHALL")
        lost, *kept = [await layer.group_send_report(g, {"type": "x"}) for g in groups]
        assert (lost.receivers, lost.state_lost) == (0, True)
        assert all((r.receivers, r.state_lost) == (1, False) for r in kept)
        await layer.refresh_memberships([(groups[0], channel)])
        report = await layer.group_send_report(groups[0], {"type": "x"})
        assert (report.receivers, report.state_lost) == (1, False)
    finally:
        await layer.flush()
