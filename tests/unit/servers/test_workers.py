"""servers.daphne.workers: what --workers refuses before forking, and the supervisor's
rules with real forked processes (the server itself: tests/e2e/test_workers.py)."""

from __future__ import annotations

import os
import signal
import threading
import time
from types import SimpleNamespace

import pytest

from channels_tuning.servers.daphne import workers
from channels_tuning.servers.daphne.workers import Supervisor


def test_only_ipv4_tcp_endpoints_are_forked():
    workers.check_endpoints(["tcp:port=8000:interface=127.0.0.1"])
    for endpoint in ("unix:/tmp/daphne.sock", "tcp6:port=8000:interface=\\:\\:1"):
        with pytest.raises(ValueError, match="--workers takes IPv4 addresses"):
            workers.check_endpoints([endpoint])


def test_a_process_running_threads_is_not_forked():
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="some-client-thread")
    thread.start()
    try:
        server = SimpleNamespace(endpoints=["tcp:port=8000:interface=127.0.0.1"])
        with pytest.raises(RuntimeError, match="some-client-thread"):
            workers.serve_forked(server, lambda: None, 2)
    finally:
        release.set()
        thread.join()


def first(marks, name: str) -> bool:
    """True in the one process that creates ``marks/name``."""
    try:
        (marks / name).touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def test_no_fork_when_the_reactor_cannot_be_renewed(monkeypatch):
    from channels_tuning.compat import twisted as twisted_hooks

    monkeypatch.setitem(twisted_hooks.features, "renew_after_fork", False)
    server = SimpleNamespace(endpoints=["tcp:port=8000:interface=127.0.0.1"])
    with pytest.raises(RuntimeError, match="cannot give each worker its own event loop"):
        workers.serve_forked(server, lambda: None, 2)


def _run_supervisor(start, count=2, **options) -> tuple[int, Supervisor]:
    """Run a Supervisor of ``count`` workers running ``start`` in this process (its
    signal handlers restored after): its exit status, and itself."""
    previous = {signum: signal.getsignal(signum) for signum in workers.STOP_SIGNALS}
    supervisor = Supervisor(count, start, **options)
    try:
        return supervisor.run(), supervisor
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_a_worker_failing_at_start_stops_the_group_with_its_status(tmp_path, caplog):
    marks = tmp_path / "marks"
    marks.mkdir()

    def start():
        if first(marks, "failing"):
            raise SystemExit(3)  # the first worker cannot start
        time.sleep(30)  # the others serve until told to stop

    caplog.set_level("INFO", logger="channels_tuning.server")
    status, supervisor = _run_supervisor(start, count=2, boot_period=5.0)
    assert status == 3
    assert supervisor.workers == {}
    started = [r for r in caplog.records if r.getMessage().endswith(" started")]
    assert len(started) == 2  # no replacement forked
    assert "stopping every worker" in caplog.text


def test_a_worker_killed_is_replaced_and_a_signal_stops_all(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()

    def start():
        if first(marks, "killed"):
            os.kill(os.getpid(), signal.SIGKILL)  # killed, not failed: replaced
        (marks / str(os.getpid())).touch()
        if len(list(marks.iterdir())) == 3 and first(marks, "stopping"):
            os.kill(os.getppid(), signal.SIGTERM)  # the replacement is up: stop the group
        time.sleep(30)

    status, supervisor = _run_supervisor(start, count=2, restart_interval=0.0)
    assert status == 0 and supervisor.signals_received == 1
    # Two, then one in place of the killed one: "killed", two pids, "stopping".
    assert len(list(marks.iterdir())) == 4
