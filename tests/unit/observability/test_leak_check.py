"""``manage.py wsstats --check``'s reading of tasks: a task counts as leaked only if
it is in two snapshots of its process (snapshots written by the real file backend;
the whole command against real daphne processes: tests/e2e/test_wsstats.py)."""

from __future__ import annotations

import threading
import time

from django.test import override_settings

from channels_tuning.management.commands.wsstats import checked, read_snapshots
from channels_tuning.observability.leaks import lasting_task_groups
from channels_tuning.observability.snapshot import FileBackend

IDLE = {
    "host": "web1",
    "pid": 4242,
    "connections": 0,
    "send_queue": {"queued": 0},
    "memberships": 0,
    "consumer_instances": 0,
}
SERVICE = {"coroutine": "Scheduler._run", "count": 1}
PASSING = {"coroutine": "AbstractConnection._send_packed_command", "count": 1}


def test_lasting_groups_are_those_in_both_snapshots_at_the_smaller_count():
    earlier = [SERVICE, {"coroutine": "Leaky.poll", "count": 3}, PASSING]
    later = [{"coroutine": "Leaky.poll", "count": 2}, SERVICE]
    assert lasting_task_groups(earlier, later) == [
        {"coroutine": "Leaky.poll", "count": 2},
        SERVICE,
    ]


def check_with_next_snapshot(tmp_path, first_tasks, next_tasks) -> tuple[list[str], float]:
    """``checked()`` on a snapshot with ``first_tasks`` while the process publishes
    one with ``next_tasks`` 0.5 s later; the problems and the seconds it took."""
    tmp_path.chmod(0o700)
    backend = FileBackend(tmp_path, ttl=30)
    backend.publish({**IDLE, "published_at": time.time(), "task_groups": first_tasks})
    later = {**IDLE, "task_groups": next_tasks}
    publisher = threading.Timer(
        0.5, lambda: backend.publish({**later, "published_at": time.time()})
    )
    tuning = {"STATS_BACKEND": "files", "STATS_DIR": str(tmp_path), "STATS_INTERVAL": 0.5}
    with override_settings(CHANNELS_TUNING=tuning):
        snaps = read_snapshots()
        publisher.start()
        started = time.monotonic()
        try:
            return checked(snaps), time.monotonic() - started
        finally:
            publisher.join()


def test_a_task_only_passing_through_is_not_a_leak(tmp_path):
    problems, took = check_with_next_snapshot(tmp_path, [SERVICE, PASSING], [SERVICE])
    assert problems == []
    assert took >= 0.5  # it waited for the next snapshot


def test_a_task_in_both_snapshots_is_reported(tmp_path):
    leaky = {"coroutine": "LeakyConsumer.poll_forever", "count": 2}
    problems, _ = check_with_next_snapshot(tmp_path, [SERVICE, leaky], [leaky, SERVICE])
    assert problems == ["pid 4242 on web1: 2 tasks besides the server's own (see --tasks)"]


def test_an_idle_process_with_only_its_services_is_checked_at_once(tmp_path):
    problems, took = check_with_next_snapshot(tmp_path, [SERVICE], [SERVICE])
    assert problems == [] and took < 0.5
