"""What the package asks of a layer, answered once per layer class."""

from __future__ import annotations

from typing import Any

from channels_tuning.layers import InMemoryChannelLayer, RedisChannelLayer
from channels_tuning.layers.capabilities import (
    DirectDelivery,
    MissedMessages,
    direct_delivery,
    missed_messages,
    provides,
)
from channels_tuning.layers.delivery import process_reader_for


class DeliversItself:
    def attach(self, consumer: Any) -> None: ...

    def detach(self, consumer: Any) -> None: ...


class Plain:
    pass


def test_provides_answers_as_isinstance_does_for_each_class():
    for layer in (DeliversItself(), Plain(), InMemoryChannelLayer(), RedisChannelLayer()):
        for capability in (DirectDelivery, MissedMessages):
            assert provides(layer, capability) is isinstance(layer, capability)
    assert direct_delivery(Plain()) is None
    assert missed_messages(InMemoryChannelLayer()) is None
    layer = RedisChannelLayer()
    assert missed_messages(layer) is layer


def test_the_answer_is_the_classes_not_the_first_instances():
    """A later instance of another class gets its own answer, and an instance of a
    class asked before gets the same one without the Protocol's member lookups."""
    assert provides(DeliversItself(), DirectDelivery)
    assert not provides(Plain(), DirectDelivery)
    checks: list[Any] = []

    class Counted(DeliversItself):
        def __getattribute__(self, name: str) -> Any:
            checks.append(name)
            return super().__getattribute__(name)

    assert provides(Counted(), DirectDelivery)
    asked_first = len(checks)
    assert provides(Counted(), DirectDelivery)
    assert len(checks) == asked_first  # answered from the class' entry


def test_a_layer_that_delivers_itself_is_its_own_reader():
    layer = InMemoryChannelLayer()
    assert process_reader_for(layer) is layer
    assert process_reader_for(Plain()) is None
