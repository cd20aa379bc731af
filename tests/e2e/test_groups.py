"""Group sends that never lose silently (issue #4), end to end: real redis-server,
real daphne processes, the tuned Redis layer and broadcast()."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import websockets

from channels_tuning.broadcast import DeliveryTimeout, broadcast, broadcast_many
from channels_tuning.layers import RedisChannelLayer
from channels_tuning.layers.redis.membership import MEMBERS_PER_PIPELINE, refresh_groups
from tests.support.waiting import recv_data, wait_until

QUIET = {"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None}
#: "Several minutes" of idleness: plain Channels loses a consumer every 5-6 s.
IDLE_SECONDS = 180


def producer(redis, **config) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[redis.url], **config)


async def subscribe(daphne, group: str, count: int) -> list:
    return [
        await websockets.connect(daphne.ws(f"/ws/group/{group}/"), max_size=None)
        for _ in range(count)
    ]


async def read_numbers(ws, count: int, timeout: float = 30) -> list[int]:
    numbers: list[int] = []

    async def read() -> None:
        while len(numbers) < count:
            numbers.append(int(await ws.recv()))

    await asyncio.wait_for(read(), timeout)
    return numbers


@pytest.mark.slow
async def test_burst_with_wait_delivers_every_message_in_order(daphne_factory, shared_redis):
    """200 subscribers, 2000 back-to-back broadcasts, a producer whose receivers hold
    only 10 pending messages per process, and the process stalled for a second
    midway: the producer waits instead of losing any."""
    daphne = daphne_factory(
        tuned=True, redis=shared_redis, tuning={**QUIET, "SEND_QUEUE_MAX_MESSAGES": 100_000}
    )
    clients = await subscribe(daphne, "burst", 200)
    await wait_until(lambda: shared_redis.cli("ZCARD", "asgi:group:burst") == "200")
    layer = producer(shared_redis, capacity=10)
    readers = [asyncio.ensure_future(read_numbers(ws, 2000, timeout=120)) for ws in clients]
    retries = 0
    for i in range(2000):
        if i == 1000:
            # The process keeps up with one producer; stall it for a second so the
            # producer must wait for room.
            os.kill(daphne.pid, signal.SIGSTOP)
            asyncio.get_running_loop().call_later(1.0, os.kill, daphne.pid, signal.SIGCONT)
        report = await broadcast("burst", str(i), on_full="wait", timeout=10, layer=layer)
        assert (report.receivers, report.delivered) == (200, 200)
        retries += report.retries
    results = await asyncio.gather(*readers)
    assert all(numbers == list(range(2000)) for numbers in results)
    assert retries > 0, "the producer never had to wait: the test proves nothing"
    await layer.close_pools()
    for ws in clients:
        await ws.close()


@pytest.mark.slow
async def test_burst_with_drop_accounts_for_every_missing_message(daphne_factory, shared_redis):
    daphne = daphne_factory(
        tuned=True, redis=shared_redis, tuning={**QUIET, "SEND_QUEUE_MAX_MESSAGES": 100_000}
    )
    clients = await subscribe(daphne, "lossy", 100)
    await wait_until(lambda: shared_redis.cli("ZCARD", "asgi:group:lossy") == "100")
    layer = producer(shared_redis, capacity=3)
    sent, dropped_by_layer = 1000, 0
    # Ten at a time: an inbox of 3 then overflows whatever the machine's speed (one at
    # a time, a fast server sometimes kept up and nothing was full).
    for start in range(0, sent, 10):
        reports = await asyncio.gather(
            *(
                broadcast("lossy", str(i), on_full="drop", layer=layer)
                for i in range(start, start + 10)
            )
        )
        dropped_by_layer += sum(report.receivers_over_capacity for report in reports)
    await asyncio.sleep(2)  # let the process deliver what it accepted

    async def drain(ws) -> int:
        got = 0
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 1)
                got += 1
        except asyncio.TimeoutError:  # not TimeoutError before Python 3.11
            return got

    delivered = sum(await asyncio.gather(*(drain(ws) for ws in clients)))
    counters = daphne.stats()["counters"]["channels_tuning_dropped_messages_total"]
    dropped_by_consumers = sum(counters.values())
    print(
        f"delivered {delivered}, dropped by layer {dropped_by_layer}, "
        f"by consumers {dropped_by_consumers}"
    )
    assert dropped_by_layer > 0, "nothing was full: the test proves nothing"
    assert delivered + dropped_by_layer + dropped_by_consumers == sent * len(clients)
    await layer.close_pools()
    for ws in clients:
        await ws.close()


async def test_wait_gives_up_at_its_deadline_and_nothing_grows(daphne_factory, shared_redis):
    daphne = daphne_factory(tuned=True, redis=shared_redis, tuning=QUIET)
    clients = await subscribe(daphne, "stalled", 5)
    await wait_until(lambda: shared_redis.cli("ZCARD", "asgi:group:stalled") == "5")
    layer = producer(shared_redis, capacity=20)
    os.kill(daphne.pid, signal.SIGSTOP)  # the receiving process stops reading
    try:
        # Fill its key (a blocking read already under way may take one more).
        accepted = []
        for i in range(40):
            if (await broadcast("stalled", str(i), on_full="drop", layer=layer)).complete:
                accepted.append(i)
        assert 20 <= len(accepted) <= 21
        started = time.monotonic()
        with pytest.raises(DeliveryTimeout) as caught:
            await broadcast("stalled", "one too many", on_full="wait", timeout=1.0, layer=layer)
        assert 1.0 <= time.monotonic() - started < 3.0
        assert caught.value.report.receivers_over_capacity == 5
        (key,) = shared_redis.keys("asgispecific.*")
        assert shared_redis.cli("ZCARD", key) == "20"  # bounded by capacity
    finally:
        os.kill(daphne.pid, signal.SIGCONT)
    for ws in clients:
        assert [int(await recv_data(ws)) for _ in accepted] == accepted
        await ws.close()
    await layer.close_pools()


def layer_keys(redis) -> list[str]:
    """The channel layer's keys: groups and channel queues (not the stats keys)."""
    return sorted(redis.keys("asgi:group:*") + redis.keys("asgispecific.*"))


def channel_layer_memory(redis) -> int:
    """Bytes Redis holds for the layer's keys."""
    return sum(int(redis.cli("MEMORY", "USAGE", key) or 0) for key in layer_keys(redis))


@pytest.mark.slow
async def test_members_of_a_killed_process_expire(daphne_factory, shared_redis):
    fast_expiry = {"GROUP_EXPIRY": "4", "LAYER_EXPIRY": "3"}
    tuning = {**QUIET, "GROUP_REFRESH_INTERVAL": 1}
    survivor = daphne_factory(tuned=True, redis=shared_redis, tuning=tuning, **fast_expiry)
    doomed = daphne_factory(tuned=True, redis=shared_redis, tuning=tuning, **fast_expiry)
    live = await subscribe(survivor, "dying", 5)
    await wait_until(lambda: shared_redis.cli("ZCARD", "asgi:group:dying") == "5")
    layer = producer(shared_redis, group_expiry=4, expiry=3)
    await broadcast("dying", "warm-up", layer=layer)  # Redis caches the send script
    memory_before = channel_layer_memory(shared_redis)
    keys_before = layer_keys(shared_redis)
    ghosts = await subscribe(doomed, "dying", 200)
    await wait_until(lambda: shared_redis.cli("ZCARD", "asgi:group:dying") == "205")
    await asyncio.sleep(2)  # refreshes run: memberships outlive group_expiry while alive
    assert shared_redis.cli("ZCARD", "asgi:group:dying") == "205"
    os.kill(doomed.pid, signal.SIGKILL)
    started = time.monotonic()
    while shared_redis.cli("ZCARD", "asgi:group:dying") != "5":
        assert time.monotonic() - started < 10, "dead members still in the group"
        await broadcast("dying", "tick", on_full="drop", layer=layer)
        await asyncio.sleep(0.25)
    purged_after = time.monotonic() - started
    report = await broadcast("dying", "after", on_full="drop", layer=layer)
    assert (report.receivers, report.processes, report.complete) == (5, 1, True)
    await wait_until(lambda: not shared_redis.keys("asgispecific.*"), timeout=10)
    print(
        f"dead members purged {purged_after:.1f} s after SIGKILL; redis memory "
        f"{memory_before} -> {channel_layer_memory(shared_redis)} bytes"
    )
    assert layer_keys(shared_redis) == keys_before
    # A sorted set that once held 205 members keeps Redis' larger encoding.
    assert channel_layer_memory(shared_redis) <= memory_before + 4 * 1024
    for ws in live:
        assert await recv_data(ws) in ("warm-up", "tick", "after")
        # Unread ticks filled the client's queue (websockets pauses reading at 16),
        # so a closing handshake would wait for its 10 s timeout.
        ws.transport.abort()
    for ws in ghosts:
        ws.transport.abort()  # their server is dead: no closing handshake to wait for
    await layer.close_pools()


@pytest.mark.slow
async def test_idle_process_keeps_consumers_with_redis_py_default_timeouts(
    daphne_factory, shared_redis
):
    """redis-py 8's default socket timeout (5 s) is as long as channels-redis' blocking
    pop, so it fired on every idle read (plain Channels loses a consumer, and leaks its
    membership, each time). The tuned layer's pools read with a longer timeout: an
    idle process sees none at all, and keeps its consumers and memberships."""
    daphne = daphne_factory(tuned=True, redis=shared_redis, tuning=QUIET)
    clients = await subscribe(daphne, "idle", 20)
    await asyncio.sleep(IDLE_SECONDS)
    stats = daphne.stats()
    timeouts = stats["counters"]["channels_tuning_layer_receive_errors_total"]
    print(
        f"after {IDLE_SECONDS} s idle: {stats['connections']} connections, "
        f"reader timeouts {timeouts}"
    )
    assert timeouts == {}  # not one idle pop ended in an error (one per 5 s did)
    assert stats["connections"] == 20
    assert shared_redis.cli("ZCARD", "asgi:group:idle") == "20"
    layer = producer(shared_redis)
    report = await broadcast("idle", "still there?", layer=layer)
    assert report.delivered == 20
    for ws in clients:
        assert await recv_data(ws) == "still there?"
        await ws.close()
    await layer.close_pools()


@pytest.mark.slow
async def test_redis_restart_is_survived(daphne_factory, redis_server, tmp_path):
    """Redis killed and restarted under a producer: the server re-adds its memberships
    as soon as Redis answers (not at the next refresh, 60 s here), delivery resumes
    within 2 s, and every message of the gap is either raised to the producer (Redis
    down) or counted (``redis_state_lost``: Redis up, memberships not back yet)."""
    from channels_tuning.runtime.counters import GROUP_SEND_DROPPED
    from tests.support.processes import start_redis, stop_process

    daphne = daphne_factory(tuned=True, redis=redis_server, tuning=QUIET)
    clients = await subscribe(daphne, "phoenix", 5)
    await wait_until(lambda: redis_server.cli("ZCARD", "asgi:group:phoenix") == "5")
    layer = producer(redis_server)
    await broadcast("phoenix", "before", layer=layer)
    stop_process(redis_server.proc)
    with pytest.raises(Exception) as caught:  # the producer hears about it
        await broadcast("phoenix", "during", layer=layer)
    assert "connect" in type(caught.value).__name__.lower() + str(caught.value).lower()
    await asyncio.sleep(2)
    restarted = start_redis(tmp_path, port=redis_server.port)
    redis_server.proc = restarted.proc  # the fixture stops this one
    up_at = time.monotonic()
    delivered, lost, resumed_after = [], 0, None
    for i in range(200):
        try:
            report = await broadcast("phoenix", f"after-{i}", on_full="drop", layer=layer)
        except Exception:
            await asyncio.sleep(0.02)  # redis-py still reconnecting: told, not lost
            continue
        if report.delivered == 5:
            delivered.append(f"after-{i}")
            resumed_after = resumed_after or time.monotonic() - up_at
            if len(delivered) == 5:
                break
        else:
            assert report.state_lost and report.receivers == 0
            lost += 1
        await asyncio.sleep(0.02)
    print(f"delivery resumed {resumed_after:.2f} s after Redis restarted; {lost} counted lost")
    assert resumed_after is not None and resumed_after < 2.0
    assert GROUP_SEND_DROPPED.get(("*", "redis_state_lost")) == lost
    assert restarted.cli("ZCARD", "asgi:group:phoenix") == "5"
    assert "re-added 5 group memberships" in daphne.log.read_text()
    for ws in clients:
        assert [await recv_data(ws) for _ in range(6)] == ["before", *delivered]
        await ws.close()
    await layer.close_pools()


async def test_two_processes_one_group_report(daphne_factory, shared_redis):
    first = daphne_factory(tuned=True, redis=shared_redis, tuning=QUIET)
    second = daphne_factory(tuned=False, redis=shared_redis, tuning=QUIET)
    clients = await subscribe(first, "pair", 3) + await subscribe(second, "pair", 2)
    await wait_until(lambda: shared_redis.cli("ZCARD", "asgi:group:pair") == "5")
    layer = producer(shared_redis)
    report = await broadcast("pair", {"n": 1}, layer=layer)
    assert (report.receivers, report.processes, report.delivered) == (5, 2, 5)
    batch = await broadcast_many("pair", [f"b{i}" for i in range(50)], layer=layer)
    assert (batch.receivers, batch.processes, batch.delivered) == (5, 2, 5)
    for ws in clients:
        assert await recv_data(ws) == '{"n":1}'
        assert [await recv_data(ws) for _ in range(50)] == [f"b{i}" for i in range(50)]
        await ws.close()
    await layer.close_pools()


def command_calls(redis, command: str) -> int:
    stats = redis.cli("INFO", "commandstats")
    line = next((x for x in stats.splitlines() if x.startswith(f"cmdstat_{command}:")), "")
    return int(line.split("calls=")[1].split(",")[0]) if line else 0


def zadd_calls(redis) -> int:
    return command_calls(redis, "zadd")


async def test_concurrent_group_adds_share_pipelines(shared_redis):
    """A reconnect storm's joins: 200 concurrent ``group_add`` calls are all in Redis
    when they return, with the group's expiry, in far fewer ZADDs than members."""
    layer = RedisChannelLayer(hosts=[shared_redis.url], group_expiry=120)
    channels = [await layer.new_channel() for _ in range(200)]
    before = zadd_calls(shared_redis)
    await asyncio.gather(*(layer.group_add("storm", channel) for channel in channels))
    assert shared_redis.cli("ZCARD", "asgi:group:storm") == "200"
    assert 0 < int(shared_redis.cli("TTL", "asgi:group:storm")) <= 120
    calls = zadd_calls(shared_redis) - before
    print(f"200 group_add: {calls} ZADD commands")
    assert calls <= 20
    await layer.group_add("storm-alone", channels[0])  # alone: added as before
    assert shared_redis.cli("ZSCORE", "asgi:group:storm-alone", channels[0]) != ""
    await layer.close_pools()


async def test_concurrent_group_discards_share_pipelines(shared_redis):
    """A drain's leaves: 200 concurrent ``group_discard`` calls over two groups have
    all left Redis when they return, in far fewer ZREMs than members; one alone, and
    one of a channel that is not a member, still do what channels-redis' does."""
    layer = RedisChannelLayer(hosts=[shared_redis.url])
    channels = [await layer.new_channel() for _ in range(200)]
    await asyncio.gather(*(layer.group_add("leaving", channel) for channel in channels))
    await asyncio.gather(*(layer.group_add("staying", channel) for channel in channels[:2]))
    before = command_calls(shared_redis, "zrem")
    await asyncio.gather(
        *(layer.group_discard("leaving", channel) for channel in channels),
        layer.group_discard("staying", channels[0]),
    )
    assert shared_redis.cli("ZCARD", "asgi:group:leaving") == "0"
    assert shared_redis.cli("ZRANGE", "asgi:group:staying", "0", "-1") == channels[1]
    calls = command_calls(shared_redis, "zrem") - before
    print(f"201 group_discard: {calls} ZREM commands")
    assert calls <= 20
    await layer.group_discard("staying", channels[0])  # not a member: nothing happens
    await layer.group_discard("staying", channels[1])  # alone: removed as before
    assert shared_redis.cli("ZCARD", "asgi:group:staying") == "0"
    await layer.close_pools()


async def test_a_refresh_of_thousands_of_memberships_goes_in_parts(shared_redis):
    """The periodic refresh of 2 500 memberships of one group and 10 of another: every
    one re-added with the group's expiry, in ZADDs of at most MEMBERS_PER_PIPELINE
    members (one pipeline of 19 000 held the loop 59 ms), and the stale member
    dropped."""
    layer = RedisChannelLayer(hosts=[shared_redis.url], group_expiry=120)
    large = [f"specific.refresh!{i}" for i in range(2500)]
    small = [f"specific.refresh!small{i}" for i in range(10)]
    shared_redis.cli("ZADD", "asgi:group:refreshed", "1", "specific.refresh!gone")
    before = zadd_calls(shared_redis)
    await refresh_groups(layer, {"refreshed": large, "few": small})
    parts = -(-len(large) // MEMBERS_PER_PIPELINE)  # rounded up
    assert parts > 1
    assert zadd_calls(shared_redis) - before == parts + 1  # the large in parts, the 10
    assert shared_redis.cli("ZCARD", "asgi:group:refreshed") == "2500"
    assert shared_redis.cli("ZSCORE", "asgi:group:refreshed", "specific.refresh!gone") == ""
    assert shared_redis.cli("ZCARD", "asgi:group:few") == "10"
    assert 0 < int(shared_redis.cli("TTL", "asgi:group:refreshed")) <= 120
    await layer.close_pools()


async def test_group_adds_fail_together_when_redis_is_gone(redis_server, tmp_path):
    """Every ``group_add`` and ``group_discard`` a failed pipeline carried raises
    (none is lost silently), and the next ones work again once Redis is back."""
    from tests.support.processes import start_redis, stop_process

    layer = RedisChannelLayer(hosts=[redis_server.url])
    channels = [await layer.new_channel() for _ in range(20)]
    await layer.group_add("warm", channels[0])
    stop_process(redis_server.proc)
    results = await asyncio.gather(
        *(layer.group_add("gone", channel) for channel in channels), return_exceptions=True
    )
    assert all(isinstance(result, Exception) for result in results), results
    discarded = await asyncio.gather(
        *(layer.group_discard("warm", channel) for channel in channels), return_exceptions=True
    )
    assert all(isinstance(result, Exception) for result in discarded), discarded
    redis_server.proc = start_redis(tmp_path, port=redis_server.port).proc
    await asyncio.gather(*(layer.group_add("back", channel) for channel in channels))
    assert redis_server.cli("ZCARD", "asgi:group:back") == "20"
    await asyncio.gather(*(layer.group_discard("back", channel) for channel in channels))
    assert redis_server.cli("ZCARD", "asgi:group:back") == "0"
    await layer.close_pools()


@pytest.mark.slow
async def test_broadcasts_to_a_killed_process_are_counted(daphne_factory, redis_or_cluster):
    """SIGKILL one of two processes: within LIVENESS_TTL (+ a tick) of the kill, group
    sends stop writing to its inbox and count its members as gone
    (``group_send_dropped_total{reason="process_gone"}``); the survivor's members
    still get every message. Before that, its inbox takes them silently: the bound
    of that window is the liveness TTL, not the group expiry. On one Redis and on a
    Redis Cluster (where each inbox's liveness keys are in the inbox's slot)."""
    from channels_tuning.layers.redis import LIVENESS_TTL
    from channels_tuning.runtime.counters import GROUP_SEND_DROPPED, group_label

    shared_redis = redis_or_cluster

    def seen() -> int:
        return len(shared_redis.keys("*ct:seen*"))  # asgi:ct:seen:<p>, {asgi<p>}:ct:seen

    seen_before = seen()
    survivor = daphne_factory(tuned=True, redis=shared_redis, tuning=QUIET)
    doomed = daphne_factory(tuned=True, redis=shared_redis, tuning=QUIET)
    live = await subscribe(survivor, "killed-counted", 3)
    ghosts = await subscribe(doomed, "killed-counted", 7)
    await wait_until(lambda: shared_redis.cli("ZCARD", "asgi:group:killed-counted") == "10")
    await wait_until(lambda: seen() == seen_before + 2)  # both said they are alive
    layer = shared_redis.layer()
    report = await broadcast("killed-counted", "0", layer=layer)
    assert (report.delivered, report.receivers_gone) == (10, 0)
    label = (group_label("killed-counted"), "process_gone")
    before = GROUP_SEND_DROPPED.get(label)
    os.kill(doomed.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    sent = 1
    while True:
        report = await broadcast("killed-counted", str(sent), on_full="drop", layer=layer)
        sent += 1
        if report.receivers_gone:
            break
        assert time.monotonic() - killed_at < LIVENESS_TTL + 3, "the dead process is not seen"
        await asyncio.sleep(0.2)
    detected_after = time.monotonic() - killed_at
    print(f"\nkilled process seen as gone {detected_after:.1f} s after SIGKILL")
    assert (report.receivers, report.receivers_gone, report.delivered) == (10, 7, 3)
    assert report.processes == 1 and report.complete
    assert GROUP_SEND_DROPPED.get(label) - before == 7
    # Counted once: the dead members are removed from the group with it.
    assert shared_redis.cli("ZCARD", "asgi:group:killed-counted") == "3"
    report = await broadcast("killed-counted", str(sent), layer=layer)
    sent += 1
    assert (report.receivers, report.receivers_gone, report.delivered) == (3, 0, 3)
    for ws in live:
        assert await read_numbers(ws, sent) == list(range(sent))
        await ws.close()
    for ws in ghosts:
        ws.transport.abort()
    await layer.close_pools()


@pytest.mark.slow
async def test_a_stalled_process_is_counted_then_rejoins(daphne_factory, shared_redis):
    """A server process stopped (SIGSTOP) past the liveness TTL is taken for gone:
    sends to its members are counted (``process_gone``) and its members removed. When
    it runs again (SIGCONT) it notices within a second and re-adds its memberships, and
    its clients get the messages sent from then on."""
    from channels_tuning.layers.redis import LIVENESS_TTL

    other = daphne_factory(tuned=True, redis=shared_redis, tuning=QUIET)
    stalled = daphne_factory(tuned=True, redis=shared_redis, tuning=QUIET)
    live = await subscribe(other, "stalled", 2)
    paused = await subscribe(stalled, "stalled", 4)
    await wait_until(lambda: shared_redis.cli("ZCARD", "asgi:group:stalled") == "6")
    layer = producer(shared_redis)
    await asyncio.sleep(1.5)  # both processes have said they are alive
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        gone = 0
        started = time.monotonic()
        while not gone:
            assert time.monotonic() - started < LIVENESS_TTL + 3
            gone = (
                await broadcast("stalled", "during", on_full="drop", layer=layer)
            ).receivers_gone
            await asyncio.sleep(0.2)
        assert gone == 4
        assert shared_redis.cli("ZCARD", "asgi:group:stalled") == "2"
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    await wait_until(lambda: shared_redis.cli("ZCARD", "asgi:group:stalled") == "6", timeout=5)
    report = await broadcast("stalled", "after", layer=layer)
    assert (report.receivers, report.delivered, report.receivers_gone) == (6, 6, 0)
    for ws in paused:
        # What its inbox took before it was taken for gone arrives first, then "after".
        frames = [await recv_data(ws)]
        while frames[-1] != "after":
            frames.append(await recv_data(ws))
        assert set(frames[:-1]) <= {"during"}
    for ws in live + paused:
        ws.transport.abort()
    await layer.close_pools()
