"""channels-tuning-daphne's timeout loop (``servers/daphne/checkers.py``), one run at a
time: the runs are called here, Twisted's reactor is not running (the e2e tests in
``tests/e2e/test_due_checkers.py`` run the real loop)."""

from __future__ import annotations

import asyncio
import gc
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


async def test_an_ended_application_is_checked_once_and_costs_no_object_per_connection(
    monkeypatch,
):
    """Each application's done callback puts its connection up for the application
    check, and holds nothing per connection the collector tracks: the mapping and the
    callback are one for all (a ``partial`` per connection was three objects)."""
    monkeypatch.setattr(checkers, "reactor", NextRuns())
    server = DueCheckers(application=None, endpoints=["tcp:port=0"])
    server.connections = {}
    protocols = [Connection() for _ in range(200)]
    tasks = [asyncio.ensure_future(asyncio.sleep(3600)) for _ in protocols]
    server.application_started(protocols[0], tasks[0])  # the mapping and callback made
    gc.collect()
    tracked_before = len(gc.get_objects())
    for protocol, task in zip(protocols[1:], tasks[1:], strict=True):
        server.application_started(protocol, task)
    assert len(gc.get_objects()) - tracked_before < 10  # not 3 per connection
    tasks[5].cancel()
    tasks[7].cancel()
    await asyncio.gather(tasks[5], tasks[7], return_exceptions=True)  # callbacks ran first
    assert server._pending() == {protocols[5], protocols[7]}
    assert len(server._application_tasks()) == len(protocols) - 2
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert server._pending() == set(protocols)
    assert server._application_tasks() == {}
