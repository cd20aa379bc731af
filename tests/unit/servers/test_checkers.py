"""channels-tuning-daphne's timeout loop (``servers/daphne/checkers.py``), one run at a
time: the runs are called here, Twisted's reactor is not running (the e2e tests in
``tests/e2e/test_due_checkers.py`` run the real loop)."""

from __future__ import annotations

from typing import Any

from channels_tuning.servers.daphne import checkers
from channels_tuning.servers.daphne.checkers import CHECKS_PER_RUN, DueCheckers


class NextRuns:
    """Stands for the reactor's ``callLater``: the test calls the runs itself."""

    def __init__(self) -> None:
        self.scheduled: list[Any] = []

    def callLater(self, delay: float, function: Any) -> None:
        self.scheduled.append(function)


class Connection:
    """A connection in its HTTP phase: daphne checks it every two seconds."""

    def __init__(self) -> None:
        self.checked = 0

    def check_timeouts(self) -> None:
        self.checked += 1


def test_connections_due_together_are_checked_at_most_checks_per_run_in_order(monkeypatch):
    """Connections that opened together are due together at every ping: one run
    checks CHECKS_PER_RUN of them and leaves the rest to the next runs, first."""
    monkeypatch.setattr(checkers, "reactor", NextRuns())
    server = DueCheckers(application=None, endpoints=["tcp:port=0"])
    server.connections = {}  # daphne's run() makes it
    count = 2 * CHECKS_PER_RUN + 50
    connections = [Connection() for _ in range(count)]
    for connection in connections:
        server.protocol_connected(connection)  # each due at the next run, as daphne
    checks_before = checkers.WORK["timeout_checks"]
    server.timeout_checker()
    assert [c.checked for c in connections] == [1] * CHECKS_PER_RUN + [0] * (count - CHECKS_PER_RUN)
    server.timeout_checker()
    assert [c.checked for c in connections] == [1] * 2 * CHECKS_PER_RUN + [0] * 50
    server.timeout_checker()
    assert all(c.checked == 1 for c in connections)
    server.timeout_checker()  # the next checks are two seconds away
    assert all(c.checked == 1 for c in connections)
    assert checkers.WORK["timeout_checks"] - checks_before == count
