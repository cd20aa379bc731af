"""Churn against a real daphne with Redis: connect, join, disconnect, thousands of
times, half of the clients vanishing with a TCP RST (issue #6); and 100 000 times
with the default collector settings, memory and tracked objects flat (issue #25)."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from channels_tuning.observability.leaks import extra_tasks, lasting_task_groups
from tests.support.processes import run_wsstats as wsstats
from tests.support.rawws import CLOSE_FRAME, upgrade_request
from tests.support.waiting import wait_until

HANDSHAKE = upgrade_request("/ws/group/churn/")
CONCURRENCY = 40
WARM_UP_CYCLES = 1500
CYCLES = 3000


async def one_cycle(port: int, abort: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HANDSHAKE)
    response = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in response
    if abort:
        sock = writer.get_extra_info("socket")
        # Linger 0: close() sends RST, as a vanished client's kernel would.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return
    writer.write(CLOSE_FRAME)
    await reader.read()  # the server's close frame, then EOF
    writer.close()


async def churn(port: int, cycles: int, concurrency: int = CONCURRENCY) -> None:
    semaphore = asyncio.Semaphore(concurrency)

    async def bounded(i: int) -> None:
        async with semaphore:
            await asyncio.wait_for(one_cycle(port, abort=i % 2 == 1), 20)

    await asyncio.gather(*(bounded(i) for i in range(cycles)))


async def lasting_extra_tasks(daphne, stats: dict) -> int:
    """Tasks besides the server's own in ``stats`` that are still there a second
    later (a Redis write of the stats round is in one snapshot, a leak in both)."""
    await asyncio.sleep(1)
    later = await asyncio.to_thread(daphne.stats)
    return extra_tasks(lasting_task_groups(stats["task_groups"], later["task_groups"]))


async def settled(daphne) -> dict:
    """Stats once every connection's cleanup has ended: wsstats --check passes (no
    consumer instances, queued frames, extra tasks or memberships, here or in Redis)."""
    await wait_until(lambda: wsstats(daphne.env, "--check").returncode == 0, timeout=30)
    return await asyncio.to_thread(daphne.stats, True)


@pytest.mark.slow
async def test_churn_leaves_no_consumers_tasks_memberships_or_memory(daphne_factory, shared_redis):
    # The collector freezes what survives its rounds; the garbage of connections that
    # closed after a round waits for GC_FROZEN_GARBAGE_LIMIT (500 000 objects by
    # default: ~10 000 closures, ~40 MB). A lower bound brings its full collections
    # within this test's 4 500 closures, so what is asserted is that memory stays
    # within the bound, round after round.
    daphne = daphne_factory(
        tuned=True,
        redis=shared_redis,
        tuning={"STATS_INTERVAL": 0.5, "GC_FROZEN_GARBAGE_LIMIT": 20_000},
    )
    await churn(daphne.port, WARM_UP_CYCLES)
    warm = await settled(daphne)
    warm_rss = daphne.rss_kb()
    rounds = [warm_rss]
    for _ in range(4):
        await churn(daphne.port, CYCLES // 4)
        final = await settled(daphne)
        final_rss = daphne.rss_kb()
        rounds.append(final_rss)
    print(
        f"churn: {CYCLES} cycles, tasks {warm['tasks']} -> {final['tasks']}, "
        f"gc objects {warm['gc_objects']} -> {final['gc_objects']}, "
        "RSS after warm-up and each round (MB): " + " ".join(f"{kb / 1024:.1f}" for kb in rounds)
    )
    growth = {
        name: count - warm["gc_types"].get(name, 0)
        for name, count in final["gc_types"].items()
        if count - warm["gc_types"].get(name, 0) > 100
    }
    print("object types grown:", growth)
    # The total count includes the package's services, some of which end and restart
    # on their own (presence, stats rounds, group-add batches): 4 -> 2 was seen. What
    # must be zero is every task that is not one of them.
    print("tasks after the last round:", final["task_groups"])
    assert await lasting_extra_tasks(daphne, final) == 0
    assert shared_redis.cli("ZCARD", "asgi:group:churn") == "0"
    accepted = final["counters"]["channels_tuning_connections_total"]
    assert accepted == {"consumer=GroupConsumer": WARM_UP_CYCLES + CYCLES}
    # Twisted frees the last round's protocol objects (Deferreds, Headers) a little
    # after their closing handshakes; then the object count is back at its level.
    limit = warm["gc_objects"] + 2000
    await wait_until(lambda: daphne.stats(gc_collect=True)["gc_objects"] < limit)
    # The allocator keeps its high-water mark; what must not happen is growth per round.
    assert final_rss - warm_rss < 6 * 1024, rounds


#: Issue #25's leak guard: 100 000 connect/close cycles, in rounds, default settings.
HUNDRED_THOUSAND = 100_000
ROUNDS = 5
FAST_CONCURRENCY = 100


def tracked_objects(stats: dict) -> int:
    """Every object the collector tracks: the young generations' and the frozen ones.
    Garbage kept by a freeze grows the frozen part, which ``gc.get_objects()`` leaves
    out."""
    return stats["gc_tracked"]


@pytest.mark.slow
async def test_hundred_thousand_cycles_leave_memory_and_tracked_objects_flat(
    daphne_factory, shared_redis
):
    """The package's own collector settings (no lowered frozen-garbage bound): a closed
    connection leaves no reference cycle (test_gc.py), so the freezes keep nothing of
    it, and 100 000 closures, half of them by RST, leave the process where the first
    20 000 left it: RSS, tracked objects (frozen included), tasks, memberships."""
    daphne = daphne_factory(tuned=True, redis=shared_redis, tuning={"STATS_INTERVAL": 0.5})
    per_round = HUNDRED_THOUSAND // ROUNDS
    rounds: list[tuple[int, int]] = []
    for _ in range(ROUNDS):
        started = asyncio.get_running_loop().time()
        await churn(daphne.port, per_round, FAST_CONCURRENCY)
        elapsed = asyncio.get_running_loop().time() - started
        stats = await settled(daphne)
        rounds.append((daphne.rss_kb(), tracked_objects(stats)))
        print(f"round of {per_round}: {per_round / elapsed:.0f} cycles/s, {rounds[-1]}")
    print(
        "after each round, RSS MB / tracked objects: "
        + ", ".join(f"{kb / 1024:.1f} / {objects}" for kb, objects in rounds)
    )
    assert await lasting_extra_tasks(daphne, stats) == 0
    assert shared_redis.cli("ZCARD", "asgi:group:churn") == "0"
    accepted = stats["counters"]["channels_tuning_connections_total"]
    assert accepted == {"consumer=GroupConsumer": HUNDRED_THOUSAND}
    # One full collection, the one that learns what a closure leaves (the estimate
    # starts at the server's measured figure, 18 objects each, Twisted 22.10's: the
    # bound of 500 000 is reached after about 28 000 closures). It finds ~0 per
    # closure, so the estimate drops to its floor of 1 and no other comes; a
    # connection leaving ~50 would bring one every 10 000 closures.
    gc_figures = stats["gc"]
    assert gc_figures["full_collections_for_frozen_garbage"] == 1, gc_figures
    assert gc_figures["frozen_garbage_estimate"] <= 2 * HUNDRED_THOUSAND, gc_figures
    (warm_rss, warm_objects), (final_rss, _) = rounds[0], rounds[-1]
    # Twisted frees a round's last protocol objects a little after their closing
    # handshakes; tracked objects come back to the warm level without any collection
    # forced from outside (one closure's cycle would be ~50 objects: 4 million here).
    limit = warm_objects + 5000
    await wait_until(lambda: tracked_objects(daphne.stats()) < limit, timeout=30)
    assert final_rss - warm_rss < 8 * 1024, rounds
