"""The process reader hands a large broadcast on in parts, with the event loop running
between them (channels_tuning.layers.redis.parts), against a real redis-server."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace

from channels_tuning.broadcast import broadcast
from channels_tuning.layers.redis.parts import DELIVERIES_PER_PART
from channels_tuning.layers.redis.reader import reader_for
from tests.support.waiting import wait_until

MEMBERS = 3 * DELIVERIES_PER_PART + 100


class Member:
    """What the reader needs of a tuned consumer; notes the loop turn it was given
    the message in."""

    layer_backlog = 0
    inbox_high_water = 10
    closing = False

    def __init__(self, channel: str, turns: list[int], got: list[int]) -> None:
        self.channel_name = channel
        self.transport = SimpleNamespace(use_write_batch=lambda batch: None)
        self._turns, self._got = turns, got

    def deliver_layer_message(self, message: dict) -> None:
        self._got.append(self._turns[0])


async def test_a_broadcast_to_more_members_than_a_part_lets_the_loop_run(shared_redis):
    layer = shared_redis.layer()
    reader = reader_for(layer)
    assert reader is not None
    turns, got = [0], []

    async def count_turns() -> None:
        while True:
            await asyncio.sleep(0)
            turns[0] += 1

    channels = [await layer.new_channel() for _ in range(MEMBERS)]
    await asyncio.gather(*(layer.group_add("parts", channel) for channel in channels))
    members = [Member(channel, turns, got) for channel in channels]
    for member in members:
        reader.attach(member)
    counter = asyncio.create_task(count_turns())
    try:
        report = await broadcast("parts", "x", layer=layer)
        assert report.receivers == MEMBERS
        await wait_until(lambda: len(got) == MEMBERS, timeout=10)
        per_turn = Counter(got)
        # Never more than a part between two turns of the loop, and the loop ran
        # between the parts (one hand-over would give every member the same turn).
        assert max(per_turn.values()) <= DELIVERIES_PER_PART, per_turn
        assert len(per_turn) >= 4, per_turn
    finally:
        counter.cancel()
        for member in members:
            reader.detach(member)
        await layer.flush()
        await layer.close_pools()
