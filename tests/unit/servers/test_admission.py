"""The accept gate of channels-tuning-daphne (servers.daphne.admission), with ports
that record what they were told; a real listening port in tests/unit/compat and the
server under load in tests/e2e/test_hostile.py."""

from __future__ import annotations

import logging

from channels_tuning.runtime.counters import ACCEPT_PAUSES
from channels_tuning.servers.daphne.admission import AcceptGate


class RecordingPort:
    def __init__(self) -> None:
        self.reading = True
        self.calls: list[str] = []

    def stopReading(self) -> None:
        self.reading = False
        self.calls.append("stop")

    def startReading(self) -> None:
        self.reading = True
        self.calls.append("start")


def gate_with(limit: int | None) -> tuple[AcceptGate, RecordingPort, list[int]]:
    count = [0]
    gate = AcceptGate(limit, lambda: count[0])
    port = RecordingPort()
    gate.add_port(port)
    return gate, port, count


def test_the_ports_stop_at_the_limit_and_start_below_it_once_each(caplog):
    caplog.set_level(logging.INFO, "channels_tuning.server")
    pauses = ACCEPT_PAUSES.get(())
    gate, port, count = gate_with(10)
    for count[0] in range(12):
        gate.update()
    assert port.calls == ["stop"] and not port.reading and gate.paused
    count[0] = 10
    gate.update()
    assert port.calls == ["stop"]  # still at the limit
    count[0] = 9
    gate.update()
    gate.update()
    assert port.calls == ["stop", "start"] and port.reading and not gate.paused
    assert ACCEPT_PAUSES.get(()) == pauses + 1
    assert caplog.text.count("not accepting connections: 10 upgrades pending") == 1


def test_an_accept_round_takes_a_tenth_of_the_limit_or_what_is_left():
    gate, _, count = gate_with(500)
    assert gate.allowance() == 50
    count[0] = 480
    assert gate.allowance() == 20
    assert gate.half_open_share == 250


def test_after_the_drain_the_ports_are_never_read_again():
    gate, port, count = gate_with(2)
    count[0] = 2
    gate.update()
    gate.close()  # the drain stops the ports listening
    count[0] = 0
    gate.update()
    assert port.calls == ["stop"] and not gate.paused


def test_without_a_limit_nothing_is_paused():
    gate, port, count = gate_with(None)
    count[0] = 10**6
    gate.update()
    assert port.calls == [] and gate.allowance() >= 10**6
