"""A group send's mapping of members to inboxes (channels_tuning/layers/redis/inboxes.py):
the loop serves other work between its steps, and only between them."""

from __future__ import annotations

import asyncio

from channels_tuning.layers import RedisChannelLayer
from channels_tuning.layers.redis import inboxes


async def turns_of_others_during(coroutine) -> tuple[int, object]:
    """How many turns another task got while ``coroutine`` ran, and its result."""
    turns = 0
    running = True

    async def other() -> None:
        nonlocal turns
        while running:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    turns = 0
    try:
        result = await coroutine
    finally:
        running = False
        await task
    return turns, result


async def test_a_large_group_is_mapped_in_steps_the_loop_runs_between(monkeypatch):
    monkeypatch.setattr(inboxes, "MEMBERS_PER_STEP", 10)
    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1"])
    channels = [f"specific.p{n % 3}!{n}" for n in range(45)]
    turns, mapped = await turns_of_others_during(
        inboxes.map_to_inboxes(layer, channels, {"type": "x"})
    )
    assert turns == 4  # five steps of at most 10 members
    assert sorted(c for names in mapped.channels.values() for c in names) == sorted(channels)
    assert [len(names) for names in mapped.channels.values()] == [15, 15, 15]


async def test_a_group_within_one_step_is_mapped_without_yielding(monkeypatch):
    monkeypatch.setattr(inboxes, "MEMBERS_PER_STEP", 10)
    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1"])
    channels = [f"specific.p!{n}" for n in range(10)]
    turns, mapped = await turns_of_others_during(
        inboxes.map_to_inboxes(layer, channels, {"type": "x"})
    )
    assert turns == 0
    assert mapped.channels == {f"{layer.prefix}specific.p!": channels}
