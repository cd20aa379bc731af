"""The process reader's batches in parts (channels_tuning.layers.redis.parts)."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from channels_tuning.layers.redis.parts import in_parts


def received(parts) -> dict[str, list[int]]:
    """What each channel gets, in order, when the parts are handed on in turn."""
    got: dict[str, list[int]] = defaultdict(list)
    for part in parts:
        for channels, message in part:
            for channel in channels:
                got[channel].append(message["n"])
    return got


def deliveries(part) -> int:
    return sum(len(channels) for channels, _ in part)


def test_a_broadcast_to_more_members_than_a_part_is_split_by_members():
    members = [f"c{i}" for i in range(19_000)]
    parts = list(in_parts([(members, {"n": 0})], limit=2000))
    assert [deliveries(part) for part in parts] == [2000] * 9 + [1000]
    assert received(parts) == {member: [0] for member in members}


def test_a_burst_to_one_group_keeps_each_members_messages_in_one_part():
    members = [f"c{i}" for i in range(500)]
    batch = [(list(members), {"n": n}) for n in range(64)]  # equal lists, as from Redis
    parts = list(in_parts(batch, limit=2000))
    assert all(deliveries(part) <= 2000 for part in parts)
    for part in parts:  # a member in a part has every message of the batch there
        counts: dict[str, int] = defaultdict(int)
        for channels, _ in part:
            for channel in channels:
                counts[channel] += 1
        assert set(counts.values()) == {64}
    assert received(parts) == {member: list(range(64)) for member in members}


def test_a_small_batch_is_one_part_unchanged_in_order():
    batch = [(["a", "b"], {"n": 0}), ("a", {"n": 1}), (["b"], {"n": 2})]
    parts = list(in_parts(batch, limit=2000))
    assert len(parts) == 1
    assert received(parts) == {"a": [0, 1], "b": [0, 2]}


@given(
    st.lists(
        # A group's members are unique (a Redis sorted set).
        st.tuples(
            st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=8, unique=True),
            st.booleans(),
        ),
        max_size=40,
    ),
    st.integers(min_value=1, max_value=20),
)
def test_parts_deliver_exactly_the_batch_in_each_channels_order(spec, limit):
    batch = [
        (channels if as_list else channels[0], {"n": n})
        for n, (channels, as_list) in enumerate(spec)
    ]
    expected: dict[str, list[int]] = defaultdict(list)
    for target, message in batch:
        for channel in target if isinstance(target, list) else [target]:
            expected[channel].append(message["n"])
    parts = list(in_parts(batch, limit=limit))
    assert received(parts) == expected
    for part in parts:
        # Over the limit only where one member's messages of a run need it.
        assert deliveries(part) <= max(limit, len(part))
