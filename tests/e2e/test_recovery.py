"""Recovery end to end: real channels-tuning-daphne processes and redis-server, clients
of the package's Python client, a producer broadcasting throughout; the server the
clients are on is SIGKILLed and started again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import time

import pytest
from django.conf import settings
from django.test import override_settings

from channels_tuning.broadcast import broadcast
from channels_tuning.layers import RedisChannelLayer
from tests.support.fleet import Producer, lb_clients_report, member_processes, start_lb_clients
from tests.support.processes import start_daphne, stop_process
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

CLIENTS = 200
RATE = 50  # messages per second


def history(size: int) -> dict:
    return {"HISTORY": {"rec.*": {"size": size, "ttl": 300}}}


async def kill_and_restart(
    tmp_path, redis_server, size: int, outage: float
) -> tuple[list[dict], Producer, dict]:
    """CLIENTS clients on one server; the producer runs 2 s, the server is SIGKILLed,
    stays down ``outage`` seconds, is started again on the same port; the producer
    runs until every client is back, and 2 s more. Returns the clients' reports, the
    producer and the times."""
    group = "rec.room"
    tuning = history(size)
    server = start_daphne(tmp_path, tuned=True, redis=redis_server, tuning=tuning)
    layer = redis_server.layer()
    clients = None
    times: dict = {}
    try:
        with override_settings(CHANNELS_TUNING={**settings.CHANNELS_TUNING, **tuning}):
            clients = await start_lb_clients(server, group, CLIENTS, codec="json")
            producer = Producer(layer, group, RATE)
            await asyncio.sleep(2)
            (killed_process,) = member_processes(redis_server, group)
            times["killed"] = time.time()
            os.kill(server.pid, signal.SIGKILL)
            server.proc.wait(10)
            await asyncio.sleep(outage)
            times["restarted"] = time.time()
            server = start_daphne(
                tmp_path, tuned=True, redis=redis_server, tuning=tuning, port=server.port
            )
            times["listening"] = time.time()
            # Every client back (the dead process' members are removed by the
            # producer's sends once its liveness key expired, 5 s after the kill).
            await wait_until(
                lambda: (
                    member_processes(redis_server, group).keys() - {killed_process}
                    and member_processes(redis_server, group).get(killed_process) is None
                    and redis_server.cli("ZCARD", f"asgi:group:{group}") == str(CLIENTS)
                ),
                timeout=40,
            )
            times["all_back"] = time.time()
            await asyncio.sleep(2)
            await producer.stop()
            times["stopped"] = time.time()
            report = await lb_clients_report(clients, producer.last_seq)
    finally:
        await layer.close_pools()
        if clients is not None and clients.poll() is None:
            clients.kill()
        server.proc.kill()
        server.proc.wait(10)
    return report, producer, times


async def test_clients_recover_every_message_after_their_server_is_killed(
    tmp_path, redis_or_cluster
):
    """200 clients, 50 messages/s; SIGKILL, 1 s down, restart: every client ends with
    every message exactly once, in order, told ``recovered: true``. On one Redis and
    on a Redis Cluster (history's keys in the group's slot)."""
    report, producer, times = await kill_and_restart(tmp_path, redis_or_cluster, 1000, 1.0)
    sent = sorted(producer.sent)
    gaps, catch_up = [], []
    for client in report:
        assert client["seqs"] == sent, (
            "a message missing, twice or out of order",
            {k: v for k, v in client.items() if k != "seqs"},
            "see the report above",
        )
        assert len(client["opens"]) == 2 and client["closes"][0][1] == 1006
        assert [recovered for _, recovered in client["recovered"]] == [False, True]
        assert client["duplicates"] == 0 and client["gaps"] == 0
        reopened = client["opens"][1]
        gaps.append(reopened - times["killed"])
        # Caught up: the last message sent before the reconnect has arrived.
        last_before = max(seq for seq, at in producer.sent.items() if at < reopened)
        catch_up.append(client["arrivals"][client["seqs"].index(last_before)] - reopened)
    missed = [
        seq
        for seq, at in producer.sent.items()
        if times["killed"] <= at <= max(gaps) + times["killed"]
    ]
    print(
        f"\n{CLIENTS} clients, {RATE} messages/s, {len(sent)} sent; SIGKILL, restart after "
        f"{times['listening'] - times['killed']:.1f} s: clients back {min(gaps):.1f}-"
        f"{max(gaps):.1f} s after the kill (median {statistics.median(gaps):.1f}), each "
        f"recovered what it missed (up to {len(missed)} messages) and had caught up "
        f"{statistics.median(catch_up) * 1000:.0f} ms (median, max "
        f"{max(catch_up) * 1000:.0f}) after its reconnect; 0 lost, 0 twice"
    )
    assert producer.over_capacity == 0


async def test_history_shorter_than_the_outage_says_not_recovered(tmp_path, redis_server):
    """Same, with a history of 20 messages and 2 s down (100+ missed): every client is
    told ``recovered: false`` (and counts a gap); the messages after it arrive in order."""
    report, producer, _ = await kill_and_restart(tmp_path, redis_server, 20, 2.0)
    for client in report:
        # The first join, then the reconnect: both false (a reconnect storm can add one
        # more: more than 20 messages numbered while its membership waited its turn).
        told = [recovered for _, recovered in client["recovered"]]
        assert len(told) >= 2 and not any(told), {k: v for k, v in client.items() if k != "seqs"}
        assert client["gaps"] == len(told) - 1 and client["duplicates"] == 0
        seqs = client["seqs"]
        assert seqs == sorted(set(seqs))
        sent_after = [s for s, at in producer.sent.items() if at > client["opens"][1] + 0.5]
        assert set(sent_after) <= set(seqs)  # live again after the reload point


async def test_concurrent_producers_reach_every_client_in_offset_order(tmp_path, redis_server):
    """Eight producers, each its own layer and Redis connections, broadcast at once: their
    offsets reach the server out of order; every client still gets every message once,
    in offset order (the server fills gaps from the history and drops the late ones)."""
    group, per_producer = "rec.concurrent", 100
    tuning = history(1000)
    server = start_daphne(tmp_path, tuned=True, redis=redis_server, tuning=tuning)
    layers = [RedisChannelLayer(hosts=[redis_server.url]) for _ in range(8)]
    clients = None
    try:
        with override_settings(CHANNELS_TUNING={**settings.CHANNELS_TUNING, **tuning}):
            clients = await start_lb_clients(server, group, 50, codec="json")

            async def produce(index: int, layer) -> None:
                for n in range(per_producer):
                    await broadcast(group, f"{index * per_producer + n} x", layer=layer)

            await asyncio.gather(*(produce(i, layer) for i, layer in enumerate(layers)))
            # Every frame handed to the clients' sockets (50 subscribed + 50 x 800), then
            # a moment for the client process to read them: on a loaded machine the
            # gap fills and the writes can take seconds after the last broadcast.
            sent_key = ("channels_tuning_messages_sent_total", frozenset())
            with contextlib.suppress(AssertionError):  # if not, the report says what is missing
                await wait_until(
                    lambda: server.metrics().get(sent_key, 0) >= 50 * (8 * per_producer + 1),
                    timeout=30,
                )
            await asyncio.sleep(1.0)
            report = await lb_clients_report(clients)
            recovery = server.stats()["counters"]["channels_tuning_recovery_total"]
    finally:
        for layer in layers:
            await layer.close_pools()
        if clients is not None and clients.poll() is None:
            clients.kill()
        stop_process(server.proc)
    every = set(range(8 * per_producer))
    for client in report:
        missing = sorted(every - set(client["seqs"]))
        assert len(client["seqs"]) == len(every) and not missing, (missing[:20], recovery)
        assert client["duplicates"] == client["gaps"] == 0
    # The offsets the clients saw are consecutive (their tracking counted no gap), and
    # each producer's own messages kept their order.
    for index in range(8):
        mine = [s for s in report[0]["seqs"] if s // per_producer == index]
        assert mine == sorted(mine)
    print(f"\n8 producers x {per_producer}, 50 clients: server recovery counters {recovery}")
