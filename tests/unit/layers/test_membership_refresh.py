"""The periodic membership refresh on a real redis-server: every tracked membership
re-added, collected in slices so the loop serves other work meanwhile."""

from __future__ import annotations

import weakref
from typing import Any

from channels_tuning.layers.redis import membership
from channels_tuning.runtime.registry import ConnectionRegistry
from tests.support.waiting import read_at_each_loop_turn


class Tracking:
    """What the refresh reads of a consumer: its layer, channel and tracked groups."""

    reads = 0

    def __init__(self, layer: Any, channel: str, groups: list[str]) -> None:
        self.channel_layer = layer
        self.channel_name = channel
        self.registry_key = channel
        self.groups = groups

    def tracked_groups(self) -> list[str]:
        type(self).reads += 1
        return self.groups


async def test_a_refresh_of_many_consumers_collects_in_slices_and_writes_every_member(
    shared_redis,
):
    """19 000 consumers read in one go held the loop 23 ms once a minute (the worst
    stall of an idle process): the refresh reads COLLECT_SLICE of them, lets the loop
    run, reads on; every membership still reaches Redis."""
    layer = shared_redis.layer()
    count = 2 * membership.COLLECT_SLICE + 500
    consumers = [
        Tracking(layer, f"specific.refresh!{n}", ["refresh-slices"] if n % 2 else [])
        for n in range(count)
    ]
    try:
        Tracking.reads = 0
        seen_by_others = read_at_each_loop_turn(lambda: Tracking.reads, count)
        membership.refresh_tracked_memberships(consumers)
        await membership.refresh_finished()
        assert Tracking.reads == count
        slices = {membership.COLLECT_SLICE, 2 * membership.COLLECT_SLICE}
        assert slices <= set(seen_by_others)  # the loop ran between the slices
        assert shared_redis.cli("ZCARD", "asgi:group:refresh-slices") == str(count // 2)
    finally:
        shared_redis.cli("DEL", "asgi:group:refresh-slices")
        await layer.close_pools()


async def test_a_refresh_of_the_registry_holds_no_consumer_and_skips_the_freed(shared_redis):
    """The scheduler's job hands the registry: the refresh reads it by weak
    reference, so the connections that close before their slice is read are neither
    kept alive by the refresh nor added back to their groups (a copy of the
    consumers, as the refresh took before, kept them and re-added them)."""
    layer = shared_redis.layer()
    registry = ConnectionRegistry()
    count = 2 * membership.COLLECT_SLICE
    consumers = [Tracking(layer, f"specific.freed!{n}", ["refresh-freed"]) for n in range(count)]
    for consumer in consumers:
        registry.add(consumer)
    del consumer  # the loop's name held the last one
    freed = [weakref.ref(consumer) for consumer in consumers[count // 2 :]]
    try:
        membership.refresh_tracked_memberships(registry)
        del consumers[count // 2 :]  # closed and freed before the task's first slice
        assert all(ref() is None for ref in freed)
        await membership.refresh_finished()
        assert shared_redis.cli("ZCARD", "asgi:group:refresh-freed") == str(count // 2)
        shared_redis.cli("DEL", "asgi:group:refresh-freed")
        membership.refresh_tracked_memberships(registry)
        registry.discard(consumers[0])  # closed, still alive: not added either
        await membership.refresh_finished()
        assert shared_redis.cli("ZCARD", "asgi:group:refresh-freed") == str(count // 2 - 1)
    finally:
        shared_redis.cli("DEL", "asgi:group:refresh-freed")
        await layer.close_pools()
