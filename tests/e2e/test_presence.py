"""Presence across real server processes on one redis-server: exact counts, entries of a
SIGKILLed process gone within PRESENCE_TTL, join/leave events coalesced under a
reconnect storm."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time

import pytest
import websockets
from django.conf import settings
from django.test import override_settings

from channels_tuning.layers import RedisChannelLayer
from channels_tuning.presence import presence, presence_count
from channels_tuning.wire.subprotocol import SUBPROTOCOL
from tests.support.fleet import lb_clients_report, start_lb_clients
from tests.support.processes import start_daphne
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

PRESENCE = {"PRESENCE": {"pres.*": {"events": True}}, "PRESENCE_TTL": 3}
GROUP = "pres.room"


class Watcher:
    """One client in the group that records the presence events it receives."""

    def __init__(self, url: str) -> None:
        self.events: list[tuple[float, dict]] = []
        self._task = asyncio.ensure_future(self._run(url))

    async def _run(self, url: str) -> None:
        # A package client: presence events go only to those (channels-tuning.v1).
        async with websockets.connect(url, max_queue=None, subprotocols=[SUBPROTOCOL]) as ws:
            async for frame in ws:
                if frame.startswith('{"kind":"presence"'):
                    self.events.append((time.time(), json.loads(frame)["data"]))

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def count_until(layer, expected: int, timeout: float) -> float:
    """Seconds until presence_count(GROUP) is ``expected``."""
    began = time.monotonic()
    while await presence_count(GROUP, layer=layer) != expected:
        if time.monotonic() - began > timeout:
            raise AssertionError(f"presence_count never reached {expected}")
        await asyncio.sleep(0.05)
    return time.monotonic() - began


async def test_presence_across_processes_kill_and_reconnect_storm(tmp_path, redis_or_cluster):
    """On one Redis and on a Redis Cluster."""
    redis_server = redis_or_cluster
    servers = [
        start_daphne(tmp_path, tuned=True, redis=redis_server, tuning=PRESENCE) for _ in range(2)
    ]
    layer = redis_server.layer()
    fleets: list = []
    watcher = None
    try:
        with override_settings(CHANNELS_TUNING={**settings.CHANNELS_TUNING, **PRESENCE}):
            # 500 connections over 2 processes: exact count, and one entry each.
            for server in servers:
                fleets.append(await start_lb_clients(server, GROUP, 250))
            await count_until(layer, 500, timeout=10)
            entries = await presence(GROUP, layer=layer)
            assert len({entry.channel for entry in entries}) == 500
            assert {entry.identity for entry in entries} == {e.channel for e in entries}

            # SIGKILL one: its entries are gone within PRESENCE_TTL.
            watcher = Watcher(servers[1].ws(f"/ws/group/{GROUP}/"))
            await count_until(layer, 501, timeout=10)
            killed_at = time.monotonic()
            victim = servers[0]
            os.kill(victim.pid, signal.SIGKILL)
            victim.proc.wait(10)
            await count_until(layer, 251, timeout=PRESENCE["PRESENCE_TTL"] + 5)
            gone_after = time.monotonic() - killed_at

            # A reconnect storm: 1000 more clients on the restarted server, which is
            # killed and restarted again; all of them (and the first 250) reconnect.
            servers[0] = start_daphne(
                tmp_path, tuned=True, redis=redis_server, tuning=PRESENCE, port=victim.port
            )
            fleets.append(await start_lb_clients(servers[0], GROUP, 1000))
            await count_until(layer, 1501, timeout=30)
            await asyncio.sleep(1.5)  # the last join events of the start-up
            os.kill(servers[0].pid, signal.SIGKILL)
            servers[0].proc.wait(10)
            events_before = len(watcher.events)
            servers[0] = start_daphne(
                tmp_path, tuned=True, redis=redis_server, tuning=PRESENCE, port=victim.port
            )
            storm_began = time.time()

            def joins() -> int:
                return sum(len(e["joined"]) for _, e in watcher.events[events_before:])

            def leaves() -> int:
                return sum(len(e["left"]) for _, e in watcher.events[events_before:])

            # Every reconnection announced, the dead process' entries expired and
            # announced as left.
            await wait_until(lambda: joins() >= 1250 and leaves() >= 1250, timeout=40)
            await count_until(layer, 1501, timeout=PRESENCE["PRESENCE_TTL"] + 5)
            await asyncio.sleep(2)  # nothing more should come
            storm = watcher.events[events_before:]
    finally:
        if watcher is not None:
            await watcher.close()
        reports = [await lb_clients_report(fleet) for fleet in fleets if fleet.poll() is None]
        await layer.close_pools()
        for server in servers:
            server.proc.kill()
            server.proc.wait(10)

    joined = [identity for _, event in storm for identity in event["joined"]]
    left = [identity for _, event in storm for identity in event["left"]]
    span = max(at for at, _ in storm) - storm_began
    print(
        f"\npresence: 500 over 2 processes exact; SIGKILL: its 250 entries gone after "
        f"{gone_after:.1f} s (PRESENCE_TTL {PRESENCE['PRESENCE_TTL']} s); reconnect storm of "
        f"1250 connections over {span:.1f} s: {len(storm)} event frames at the watcher "
        f"({len(joined)} joins in them, {len(left)} leaves)"
    )
    assert gone_after <= PRESENCE["PRESENCE_TTL"] + 1.5
    # Every reconnection announced once, and every entry of the killed process as left
    # once (by the live process that found it expired), in at most one frame per
    # second of the storm.
    assert len(joined) == len(set(joined)) == 1250
    assert len(left) == len(set(left)) == 1250 and not set(left) & set(joined)
    assert len(storm) <= span + 2
    assert sum(len(report) for report in reports) == 1500


async def test_a_stalled_process_leaves_presence_and_comes_back(tmp_path, redis_server):
    """SIGSTOP (a process cut off from Redis, or whose loop is stuck): its entries are
    gone within PRESENCE_TTL and announced as left; after SIGCONT its next refresh puts
    them back and announces them as joined."""
    servers = [
        start_daphne(tmp_path, tuned=True, redis=redis_server, tuning=PRESENCE) for _ in range(2)
    ]
    layer = RedisChannelLayer(hosts=[redis_server.url])
    fleets: list = []
    watcher = None
    try:
        with override_settings(CHANNELS_TUNING={**settings.CHANNELS_TUNING, **PRESENCE}):
            for server in servers:
                fleets.append(await start_lb_clients(server, GROUP, 50))
            watcher = Watcher(servers[0].ws(f"/ws/group/{GROUP}/"))
            await count_until(layer, 101, timeout=10)
            await asyncio.sleep(1.5)
            start = len(watcher.events)
            os.kill(servers[1].pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            await count_until(layer, 51, timeout=PRESENCE["PRESENCE_TTL"] + 5)
            gone_after = time.monotonic() - stopped_at

            def announced(kind: str) -> int:
                return sum(len(event[kind]) for _, event in watcher.events[start:])

            # The live process' next refresh removes them and announces them.
            await wait_until(lambda: announced("left") >= 50, timeout=5)
            os.kill(servers[1].pid, signal.SIGCONT)
            back_after = await count_until(layer, 101, timeout=PRESENCE["PRESENCE_TTL"] + 5)
            await wait_until(lambda: announced("joined") >= 50, timeout=5)
            await asyncio.sleep(1.5)
            events = [event for _, event in watcher.events[start:]]
    finally:
        if watcher is not None:
            await watcher.close()
        for fleet in fleets:
            if fleet.poll() is None:
                await lb_clients_report(fleet)
        await layer.close_pools()
        for server in servers:
            os.kill(server.pid, signal.SIGCONT)
            server.proc.kill()
            server.proc.wait(10)
    left = [identity for event in events for identity in event["left"]]
    joined = [identity for event in events for identity in event["joined"]]
    print(
        f"\nSIGSTOP: the stalled process' 50 entries gone after {gone_after:.1f} s, back "
        f"{back_after:.1f} s after SIGCONT; events: {len(left)} left, {len(joined)} joined"
    )
    assert gone_after <= PRESENCE["PRESENCE_TTL"] + 1.5
    assert sorted(left) == sorted(joined) and len(left) == 50
