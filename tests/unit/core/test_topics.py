"""The topic table: patterns, what they admit, the request limits (no I/O)."""

from __future__ import annotations

import pytest

from channels_tuning.core.tokens import TokenBucket
from channels_tuning.core.topics import SubscriptionLimits, Topic, TopicTable


def test_a_placeholder_matches_one_segment_of_group_name_characters():
    topic = Topic("user.{user_id}")
    assert topic.match("user.42") == {"user_id": "42"}
    assert topic.match("user.a-b_C") == {"user_id": "a-b_C"}
    assert topic.match("user.42.secrets") is None  # never spans a dot
    assert topic.match("user.") is None
    assert topic.match("user." + "x" * 65) is None
    assert topic.match("user.4 2") is None
    assert topic.match("xuser.42") is None
    assert topic.match("user.42" + "x" * 100) is None


def test_literal_parts_are_literal_not_regular_expressions():
    topic = Topic("a.b")
    assert topic.match("a.b") == {}
    assert topic.match("axb") is None


@pytest.mark.parametrize("pattern", ["room/{x}", "a b", "{x}.{x}", "chat:{id}"])
def test_a_pattern_that_could_admit_a_name_channels_refuses_is_an_error(pattern):
    with pytest.raises(ValueError):
        Topic(pattern)


def test_the_first_matching_row_decides_and_unknown_names_match_nothing():
    table = TopicTable([Topic("room.lobby", public=True), Topic("room.{slug}")])
    assert table.match("room.lobby").topic.public
    found = table.match("room.kitchen", {"since": 3})
    assert found.args == {"slug": "kitchen"} and found.params == {"since": 3}
    assert not found.topic.public
    assert table.match("admin") is None
    with pytest.raises(TypeError):
        TopicTable(["room.{slug}"])


def test_requests_over_the_rate_are_refused_and_the_burst_refills():
    limits = SubscriptionLimits(10, TokenBucket(rate=1.0, burst=3.0))
    tokens, now, results = None, 100.0, []
    for _ in range(4):
        allowed, tokens = limits.take(tokens, now, now)
        results.append(allowed)
    assert results == [True, True, True, False]
    allowed, tokens = limits.take(tokens, now, now + 1.0)
    assert allowed
