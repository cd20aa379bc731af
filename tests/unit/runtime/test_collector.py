"""The collector's rounds and its frozen-garbage bound, with a fake clock and a fake
count of closed connections (the real collector underneath; every test unfreezes)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from channels_tuning.runtime.collector import FIRST_ESTIMATE, SettlingCollector


class Closed:
    closed = 0
    garbage_per_closed: float | None = None  # a server not measured


class Backlogged:
    send_queue_length = 3


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    """No automatic collection (each would count as a promotion) and nothing frozen
    by earlier tests, during each test and after it. Earlier tests' garbage is
    collected first: left, a test's full collection counts it as its own (about
    10 000 objects after tests/unit/layers, and the garbage bound's test failed)."""
    gc.unfreeze()
    gc.collect()
    gc.disable()
    yield
    gc.enable()
    gc.unfreeze()


def test_a_round_is_a_young_collection_and_a_freeze_at_its_interval():
    collector = SettlingCollector(Closed(), interval=60.0, garbage_limit=None, now=0.0)
    collector(59.0, [])
    assert collector.rounds == 0 and gc.get_freeze_count() == 0
    collector(60.0, [])
    assert collector.rounds == 1 and gc.get_freeze_count() > 0
    assert collector.every.next_at == 120.0 and collector.full_collections == 0


def test_the_garbage_bound_brings_a_full_collection_and_is_measured_by_it():
    connections = Closed()
    collector = SettlingCollector(connections, interval=1.0, garbage_limit=10_000, now=0.0)
    collector(1.0, [])
    connections.closed = 150  # 150 x 50 = 7 500: under the bound
    assert collector.frozen_garbage_estimate() == 150 * FIRST_ESTIMATE
    collector(2.0, [])
    assert collector.full_collections == 0
    connections.closed = 250  # 12 500: over it
    collector(3.0, [])
    assert collector.full_collections == 1
    # Credited with the closures up to the previous round (150): the 100 since are
    # still in the estimate, their garbage may have come after this collection.
    assert collector.closed_at_full == 150
    assert collector.frozen_garbage_estimate() == 100 * collector.garbage_per_closed
    # Found next to nothing for 150 closures: the estimate per connection falls from
    # the first guess towards what is found (a running total, weighted by a prior).
    assert collector.garbage_per_closed < FIRST_ESTIMATE


def test_the_full_collection_waits_for_backlogs_but_not_past_one_interval():
    connections = Closed()
    collector = SettlingCollector(connections, interval=10.0, garbage_limit=100, now=0.0)
    connections.closed = 10
    collector(5.0, [Backlogged()])
    assert collector.full_collections == 0 and collector.rounds == 0
    collector(14.0, [Backlogged()])
    assert collector.full_collections == 0
    collector(15.0, [Backlogged()])  # due since 5.0: a whole interval late, runs anyway
    assert collector.full_collections == 1


def test_a_round_follows_each_promotion_by_cpythons_own_collections():
    collector = SettlingCollector(Closed(), interval=3600.0, garbage_limit=None, now=0.0)
    collector(1.0, [])
    assert collector.rounds == 0  # nothing promoted, the interval far off
    gc.collect(1)  # what a generation-1 collection of CPython's does
    collector(2.0, [])
    assert collector.rounds == 1 and gc.get_freeze_count() > 0
    collector(3.0, [])
    assert collector.rounds == 1


def test_without_a_limit_there_is_never_a_full_collection():
    connections = Closed()
    collector = SettlingCollector(connections, interval=1.0, garbage_limit=None, now=0.0)
    connections.closed = 10**6
    for now in range(1, 6):
        collector(float(now), [])
    assert collector.rounds == 5 and collector.full_collections == 0


def test_a_measured_server_starts_the_estimate_from_its_own_figure():
    """channels-tuning-daphne leaves at most 18 objects per closed connection (none on
    Twisted 23+): 19 000 clients gone at once are 342 000, under the default limit, so
    no full collection stops the loop while they come back. From the unmeasured
    first estimate, 950 000: a stop of 1.1 s at 19 000 (docs/gc.md)."""
    connections = Closed()
    connections.garbage_per_closed = 18.0
    collector = SettlingCollector(connections, interval=1.0, garbage_limit=500_000, now=0.0)
    collector(1.0, [])
    connections.closed = 19_000
    assert collector.frozen_garbage_estimate() == 19_000 * 18.0
    collector(2.0, [])
    assert collector.full_collections == 0
    connections.garbage_per_closed = None
    assert collector.frozen_garbage_estimate() == 19_000 * FIRST_ESTIMATE
    collector(3.0, [])
    assert collector.full_collections == 1


def test_a_server_measured_at_zero_is_still_estimated_at_the_least():
    connections = Closed()
    connections.garbage_per_closed = 0.0
    collector = SettlingCollector(connections, interval=1.0, garbage_limit=None, now=0.0)
    connections.closed = 10
    assert collector.frozen_garbage_estimate() == 10 * 1.0
