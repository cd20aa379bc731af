"""Redis sharded the way channels-redis shards it: a ``hosts`` list, groups and
process inboxes spread by consistent hashing. Two redis-server processes, two tuned
server processes: broadcast and its delivery reports, membership refresh, stale
members of a SIGKILLed process, and ``wsstats``, across both shards (issue #15)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from channels_tuning.broadcast import broadcast
from channels_tuning.layers import RedisChannelLayer
from tests.support.fleet import assert_memberships_refreshed
from tests.support.processes import run_wsstats, start_redis, start_subscribers, stop_process
from tests.support.waiting import wait_until

SUBSCRIBERS = 500  # over 2 server processes, 2 client processes each
MESSAGES = 200


@pytest.fixture
def shards(tmp_path):
    servers = [start_redis(tmp_path) for _ in range(2)]
    yield servers
    for server in servers:
        stop_process(server.proc)


def groups_on_each_shard(layer: RedisChannelLayer, count: int) -> list[str]:
    """``count`` group names, alternating between the two shards."""
    by_shard: dict[int, list[str]] = {0: [], 1: []}
    n = 0
    while min(len(names) for names in by_shard.values()) < count // 2:
        name = f"sharded-{n}"
        by_shard[layer.consistent_hash(name)].append(name)
        n += 1
    return [name for pair in zip(by_shard[0], by_shard[1], strict=False) for name in pair][:count]


def zcard(shards, layer, group: str) -> int:
    return int(shards[layer.consistent_hash(group)].cli("ZCARD", f"asgi:group:{group}"))


@pytest.mark.slow
async def test_broadcast_refresh_and_wsstats_across_two_shards(daphne_factory, shards):
    """500 subscribers over 2 processes in 4 groups (2 on each shard): every broadcast
    reaches every subscriber and its report counts them; memberships on both shards
    are refreshed; wsstats sees both processes."""
    urls = ",".join(server.url for server in shards)
    tuning = {"HEARTBEAT_INTERVAL": None, "GROUP_REFRESH_INTERVAL": 1, "STATS_INTERVAL": 1}
    processes = [daphne_factory(tuned=True, tuning=tuning, REDIS_URL=urls) for _ in range(2)]
    layer = RedisChannelLayer(hosts=[server.url for server in shards])
    groups = groups_on_each_shard(layer, 4)
    assert {layer.consistent_hash(group) for group in groups} == {0, 1}
    per_client = SUBSCRIBERS // (len(processes) * len(groups))
    clients = []
    try:
        for process in processes:
            for group in groups:
                clients.append(
                    start_subscribers(
                        process.port, f"/ws/group/{group}/", per_client, quiet=2, max_wait=120
                    )
                )
        members = 2 * per_client
        await wait_until(lambda: all(zcard(shards, layer, g) == members for g in groups))

        # Refreshed on both shards: every member's score moves forward.
        await assert_memberships_refreshed(groups, lambda g: shards[layer.consistent_hash(g)])

        reports = []
        for i in range(MESSAGES):
            for group in groups:
                reports.append(
                    await broadcast(group, f"{i} {time.time():.6f} x", on_full="wait", layer=layer)
                )
        got = [json.loads(c.communicate(timeout=120)[0].splitlines()[-1])["got"] for c in clients]
        assert sum(got) == MESSAGES * members * len(groups)
        assert all(report.receivers == members and report.complete for report in reports)
        assert {report.processes for report in reports} == {2}

        listed = await asyncio.to_thread(run_wsstats, processes[0].env, "--json")
        pids = {snap["pid"] for snap in json.loads(listed.stdout)}
        assert {p.app_pid for p in processes} <= pids
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
        await layer.close_pools()


@pytest.mark.slow
async def test_members_of_a_killed_process_expire_on_both_shards(daphne_factory, shards):
    """SIGKILL one of two processes: its memberships, on both shards, are gone within
    the group expiry (4 s) plus a refresh, removed by the survivor's refreshes."""
    urls = ",".join(server.url for server in shards)
    tuning = {"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None, "GROUP_REFRESH_INTERVAL": 1}
    expiry = {"GROUP_EXPIRY": "4", "LAYER_EXPIRY": "3", "REDIS_URL": urls}
    survivor = daphne_factory(tuned=True, tuning=tuning, **expiry)
    doomed = daphne_factory(tuned=True, tuning=tuning, **expiry)
    layer = RedisChannelLayer(hosts=[server.url for server in shards], group_expiry=4)
    groups = groups_on_each_shard(layer, 2)
    clients = []
    try:
        for group in groups:
            clients.append(
                start_subscribers(survivor.port, f"/ws/group/{group}/", 5, quiet=2, max_wait=120)
            )
            clients.append(
                start_subscribers(doomed.port, f"/ws/group/{group}/", 100, quiet=2, max_wait=120)
            )
        await wait_until(lambda: all(zcard(shards, layer, g) == 105 for g in groups))
        await asyncio.sleep(2)  # refreshes keep live memberships past the expiry
        assert all(zcard(shards, layer, g) == 105 for g in groups)
        os.kill(doomed.pid, signal.SIGKILL)
        started = time.monotonic()
        await wait_until(lambda: all(zcard(shards, layer, g) == 5 for g in groups), timeout=12)
        purged_after = time.monotonic() - started
        print(f"\ndead members purged on both shards {purged_after:.1f} s after SIGKILL")
        for group in groups:
            report = await broadcast(group, "0 0.0 after", on_full="drop", layer=layer)
            assert (report.receivers, report.processes, report.complete) == (5, 1, True)
    finally:
        for client in clients:
            client.kill()
        await layer.close_pools()
