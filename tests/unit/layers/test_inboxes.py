"""A group send's mapping of members to inboxes (channels_tuning/layers/redis/inboxes.py):
the loop serves other work between its steps, and only between them."""

from __future__ import annotations

import asyncio

import pytest

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


@pytest.mark.parametrize(
    ("members", "processes", "turns_expected"),
    [
        (45, 3, 4),  # five steps of at most 10 members: the loop runs between them
        (10, 1, 0),  # one step: mapped without yielding
    ],
)
async def test_a_group_is_mapped_in_steps_the_loop_runs_between(
    monkeypatch, members, processes, turns_expected
):
    monkeypatch.setattr(inboxes, "MEMBERS_PER_STEP", 10)
    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1"])
    channels = [f"specific.p{n % processes}!{n}" for n in range(members)]
    turns, mapped = await turns_of_others_during(
        inboxes.map_to_inboxes(layer, channels, {"type": "x"})
    )
    assert turns == turns_expected
    assert mapped.channels == {
        f"{layer.prefix}specific.p{p}!": channels[p::processes] for p in range(processes)
    }
