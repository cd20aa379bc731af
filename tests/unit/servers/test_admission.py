"""The accept gate of channels-tuning-daphne (servers.daphne.admission), with ports
that record what they were told; a real listening port in tests/unit/compat and the
server under load in tests/e2e/test_hostile.py."""

from __future__ import annotations

import logging
from collections.abc import Callable

from channels_tuning.runtime.counters import ACCEPT_PAUSES
from channels_tuning.servers.daphne.admission import AcceptGate


class RecordingPort:
    def __init__(self) -> None:
        self.reading = True
        self.calls: list[str] = []

    def stopListening(self) -> None:
        self.calls.append("stop listening")

    def stopReading(self) -> None:
        self.reading = False
        self.calls.append("stop")

    def startReading(self) -> None:
        self.reading = True
        self.calls.append("start")


class Soon:
    """The event loop's ``call_soon``, run by hand: ``run()`` is the loop's next turn."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def __call__(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def run(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


def gate_with(limit: int | None) -> tuple[AcceptGate, RecordingPort, list[int], Soon]:
    count = [0]
    soon = Soon()
    gate = AcceptGate(limit, lambda: count[0], soon)
    port = RecordingPort()
    gate.add_port(port)
    return gate, port, count, soon


def test_the_ports_stop_at_the_limit_and_start_below_it_once_each(caplog):
    caplog.set_level(logging.INFO, "channels_tuning.server")
    pauses = ACCEPT_PAUSES.get(())
    gate, port, count, soon = gate_with(10)
    for count[0] in range(12):
        gate.update()
    assert port.calls == ["stop"] and not port.reading and gate.paused
    count[0] = 10
    gate.update()
    soon.run()
    assert port.calls == ["stop"]  # still at the limit
    count[0] = 9
    gate.update()
    gate.update()
    assert port.calls == ["stop"]  # resumed on the loop's next turn, once
    soon.run()
    assert port.calls == ["stop", "start"] and port.reading and not gate.paused
    assert ACCEPT_PAUSES.get(()) == pauses + 1
    assert caplog.text.count("not accepting connections: 10 upgrades pending") == 1


def test_a_first_request_that_becomes_a_pending_upgrade_does_not_reopen_the_gate():
    gate, port, count, soon = gate_with(10)
    count[0] = 10
    gate.update()
    count[0] = 9  # its first request arrived: out of the half-open count
    gate.update()
    count[0] = 10  # in the same call, its application: into the pending one
    gate.update()
    soon.run()
    assert port.calls == ["stop"] and gate.paused
    count[0] = 9  # an upgrade settled
    gate.update()
    soon.run()
    assert port.calls == ["stop", "start"]


def test_the_health_port_is_never_paused_and_stops_listening_in_the_drain():
    gate, port, count, soon = gate_with(2)
    health = RecordingPort()
    gate.add_port(health, gated=False)
    count[0] = 2
    gate.update()
    count[0] = 0
    gate.update()
    soon.run()
    assert port.calls == ["stop", "start"] and health.calls == []
    gate.stop_listening()
    assert health.calls == ["stop listening"]


def test_an_accept_round_takes_a_tenth_of_the_limit_or_what_is_left():
    gate, _, count, _ = gate_with(500)
    assert gate.allowance() == 50
    count[0] = 480
    assert gate.allowance() == 20
    assert gate.half_open_share == 250


def test_after_the_drain_the_ports_are_never_read_again():
    gate, port, count, soon = gate_with(2)
    count[0] = 2
    gate.update()
    count[0] = 0
    gate.update()  # a resume is scheduled...
    gate.stop_listening()  # ...and the drain comes first
    gate.update()
    soon.run()
    assert port.calls == ["stop", "stop listening"] and not gate.paused


def test_without_a_limit_nothing_is_paused():
    gate, port, count, _ = gate_with(None)
    count[0] = 10**6
    gate.update()
    assert port.calls == [] and gate.allowance() >= 10**6
