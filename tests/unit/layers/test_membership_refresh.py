"""The periodic membership refresh on a real redis-server: every tracked membership
re-added, collected in slices so the loop serves other work meanwhile."""

from __future__ import annotations

from typing import Any

from channels_tuning.layers.redis import membership
from tests.support.waiting import read_at_each_loop_turn


class Tracking:
    """What the refresh reads of a consumer: its layer, channel and tracked groups."""

    reads = 0

    def __init__(self, layer: Any, channel: str, groups: list[str]) -> None:
        self.channel_layer = layer
        self.channel_name = channel
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
