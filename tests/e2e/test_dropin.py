"""Drop-in for real (issue #11), end to end on real daphne and redis-server: the
README quickstart's plain ``group_send`` under a burst, a process mixing plain and
tuned consumers, and stale memberships with the layer's default settings."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time

import pytest
import websockets

from channels_tuning.layers import RedisChannelLayer
from tests.support.processes import run_wsstats, start_subscribers
from tests.support.waiting import wait_until

QUIET = {"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None, "STATS_INTERVAL": 0.5}
CLIENT_PROCESSES = 2


def subscriber_processes(port: int, path: str, count: int) -> list[subprocess.Popen]:
    """Lean subscriber processes (tests/support/fanout_client.py), READY when connected;
    10 s without a frame is the end of a burst for them."""
    return [
        start_subscribers(port, path, count // CLIENT_PROCESSES, quiet=10, max_wait=240)
        for _ in range(CLIENT_PROCESSES)
    ]


def received(clients: list[subprocess.Popen]) -> tuple[int, float]:
    """Frames the subscriber processes counted, and the longest silence one saw."""
    reports = [
        json.loads(client.communicate(timeout=300)[0].splitlines()[-1]) for client in clients
    ]
    return sum(r["got"] for r in reports), max(r["max_gap"] for r in reports)


async def burst(layer: RedisChannelLayer, messages: int) -> tuple[int, int]:
    """The quickstart's own send: plain ``group_send``, unthrottled. Returns what the
    reports say was delivered and what they say was lost."""
    delivered = lost = 0
    for i in range(messages):
        report = await layer.group_send(
            "chat.lobby", {"type": "chat.message", "text": f"{i} {time.time():.6f} x"}
        )
        delivered += report.delivered
        lost += report.receivers_over_capacity
    return delivered, lost


@pytest.mark.slow
@pytest.mark.parametrize(
    ("on_full", "redis_kind"), [("default", "redis"), ("drop", "redis"), ("drop", "cluster")]
)
async def test_readme_quickstart_group_send_burst(daphne_factory, request, on_full, redis_kind):
    """500 subscribers of the README's ChatConsumer, 2000 unthrottled ``group_send``:
    with the layer's defaults every message arrives; with ``on_full="drop"`` what
    arrives plus what the reports and the receiving server count as lost is
    everything sent. On a Redis Cluster too, where the missed counts live in the slot
    of the receiving process' inbox."""
    shared_redis = request.getfixturevalue(
        "shared_redis" if redis_kind == "redis" else "shared_redis_cluster"
    )
    subscribers, messages = 500, 2000
    # The subscriber processes share this machine's two cores with the server: a
    # deeper send queue keeps their read lag (not what this test is about) from
    # ending connections with 4001. The layer's configuration is the default.
    # The README's settings have no PRESENCE: the example project's would make the server
    # itself send join events to chat.lobby, which the burst can find full too (counted
    # as missed by the receiving server but not in this producer's reports).
    tuning = {
        **QUIET,
        "SEND_QUEUE_MAX_MESSAGES": 20_000,
        "SEND_QUEUE_MAX_BYTES": 8 << 20,
        "PRESENCE": {},
        "HISTORY": {},
    }
    daphne = daphne_factory(tuned=True, redis=shared_redis, tuning=tuning)
    clients = subscriber_processes(daphne.port, "/ws/readme-chat/", subscribers)
    try:
        await wait_until(
            lambda: shared_redis.cli("ZCARD", "asgi:group:chat.lobby") == str(subscribers)
        )
        config = {} if on_full == "default" else {"on_full": "drop"}
        layer = shared_redis.layer(**config)
        started = time.monotonic()
        delivered, lost = await burst(layer, messages)
        elapsed = time.monotonic() - started
        got, max_gap = received(clients)
        await layer.close_pools()
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
    sent = subscribers * messages
    print(
        f"quickstart burst ({on_full}): received {got}/{sent} "
        f"({100 * got / sent:.1f} %), reported lost {lost}, producer {elapsed:.1f} s, "
        f"longest silence at a subscriber process {max_gap:.1f} s"
    )
    counters = daphne.stats()["counters"]
    assert delivered + lost == sent
    assert counters["channels_tuning_closes_total"] == {}, counters
    assert counters["channels_tuning_dropped_messages_total"] == {}, counters
    if on_full == "default":
        assert (got, lost) == (sent, 0), counters
        return
    assert lost > 0, "nothing was full: the test proves nothing"
    assert got == delivered
    # The receiving server counts what its consumers missed; wsstats shows it.
    missed_total = "channels_tuning_group_messages_missed_total"
    try:
        await wait_until(
            lambda: daphne.counter(missed_total, "reason=over_capacity") == lost, timeout=15
        )
    except AssertionError:
        raise AssertionError(
            f"missed {daphne.counter(missed_total, 'reason=over_capacity')} != lost {lost}; "
            f"{daphne.stats()['counters'].get('channels_tuning_layer_errors_total')}"
        ) from None
    await wait_until(
        lambda: (
            json.loads(run_wsstats(daphne.env, "--json").stdout)[0]["counters"][missed_total]
            == {"reason=over_capacity": lost}
        )
    )
    header, row = run_wsstats(daphne.env).stdout.splitlines()[:2]
    assert row.split()[header.split().index("missed")] == str(lost)


async def read_all(ws, count: int, timeout: float = 60) -> list[str]:
    frames: list[str] = []

    async def read() -> None:
        while len(frames) < count:
            frames.append(await ws.recv())

    await asyncio.wait_for(read(), timeout)
    return frames


@pytest.mark.slow
async def test_a_process_mixing_plain_and_tuned_consumers_loses_nothing(
    daphne_factory, shared_redis
):
    """Gradual migration: a plain AsyncWebsocketConsumer room and a tuned room in one
    daphne process on the tuned Redis layer, 300 group sends to each, interleaved."""
    daphne = daphne_factory(tuned=True, redis=shared_redis, tuning=QUIET)
    plain = [await websockets.connect(daphne.ws("/ws/plain-group/plain-room/")) for _ in range(40)]
    tuned = [await websockets.connect(daphne.ws("/ws/group/tuned-room/")) for _ in range(40)]
    await wait_until(
        lambda: (
            shared_redis.cli("ZCARD", "asgi:group:plain-room") == "40"
            and shared_redis.cli("ZCARD", "asgi:group:tuned-room") == "40"
        )
    )
    readers = [asyncio.ensure_future(read_all(ws, 300)) for ws in plain + tuned]
    layer = RedisChannelLayer(hosts=[shared_redis.url])

    async def send(room: str, tag: str) -> None:
        for i in range(300):
            report = await layer.group_send(room, {"type": "relay", "text": f"{tag}{i}"})
            assert report.complete

    await asyncio.gather(send("plain-room", "p"), send("tuned-room", "t"))
    results = await asyncio.gather(*readers)
    for frames in results[:40]:
        assert frames == [f"p{i}" for i in range(300)]
    for frames in results[40:]:
        assert frames == [f"t{i}" for i in range(300)]
    stats = daphne.stats()["counters"]
    assert stats["channels_tuning_dropped_messages_total"] == {}
    await layer.close_pools()
    for ws in plain + tuned:
        await ws.close()


@pytest.mark.slow
async def test_members_of_a_killed_process_expire_with_default_layer_settings(
    daphne_factory, shared_redis
):
    """No group_expiry in the layer's CONFIG: derived as 5 refresh intervals (here
    GROUP_REFRESH_INTERVAL = 2, so 10 s; 300 s with the default 60 s interval)."""
    tuning = {**QUIET, "GROUP_REFRESH_INTERVAL": 2}
    survivor = daphne_factory(tuned=True, redis=shared_redis, tuning=tuning)
    doomed = daphne_factory(tuned=True, redis=shared_redis, tuning=tuning)
    assert "GROUP_EXPIRY" not in survivor.env
    live = [await websockets.connect(survivor.ws("/ws/group/stale/")) for _ in range(3)]
    ghosts = [await websockets.connect(doomed.ws("/ws/group/stale/")) for _ in range(50)]
    await wait_until(lambda: shared_redis.cli("ZCARD", "asgi:group:stale") == "53")
    ttl = int(shared_redis.cli("TTL", "asgi:group:stale"))
    assert 0 < ttl <= 10, f"group key TTL {ttl}: group_expiry was not derived"
    log = survivor.log.read_text()
    assert "group_expiry is not set in the Redis layer's CONFIG: using 10 s" in log
    os.kill(doomed.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    layer = RedisChannelLayer(hosts=[shared_redis.url])
    # The survivor's refresh (every 2 s) drops members older than group_expiry.
    await wait_until(lambda: shared_redis.cli("ZCARD", "asgi:group:stale") == "3", timeout=20)
    gone_after = time.monotonic() - killed_at
    print(f"members of the killed process gone {gone_after:.1f} s after SIGKILL (bound 12 s)")
    assert gone_after <= 10 + 2 + 1  # group_expiry + one refresh interval + slack
    report = await layer.group_send("stale", {"type": "relay", "text": "still here"})
    assert (report.receivers, report.complete) == (3, True)
    await layer.close_pools()
    for ws in live:
        await ws.close()
    for ws in ghosts:
        ws.transport.abort()
