"""The registry's weak pass: ``refs()`` keeps no connection alive and ``live()``
gives back only the connections still registered (the membership refresh and the
stats publisher step through it)."""

from __future__ import annotations

import weakref

from channels_tuning.runtime.registry import ConnectionRegistry


class Consumer:
    def __init__(self, key: str) -> None:
        self.registry_key = key


def test_a_pass_over_refs_holds_nothing_and_skips_the_freed_the_closed_and_the_replaced():
    registry = ConnectionRegistry()
    consumers = {key: Consumer(key) for key in "abcde"}
    for consumer in consumers.values():
        registry.add(consumer)
    refs = registry.refs()
    assert len(refs) == 5
    freed = weakref.ref(consumers.pop("a"))
    assert freed() is None  # the refs did not keep it
    registry.discard(consumers["b"])  # closed, still alive
    replacement = Consumer("c")
    registry.add(replacement)  # the key now names another connection
    assert [c.registry_key for c in registry.live(refs)] == ["d", "e"]
    assert list(registry.live(registry.refs())) == [replacement, consumers["d"], consumers["e"]]
