"""``--workers N``: N serving processes forked once the application is loaded.

A process that serves a Django Channels application loads Django, the application,
daphne, Twisted and autobahn before its first client: 69 MB of memory of its own
(private dirty) on the test machine, so five processes on one machine hold 345 MB
before any connection. Forked after loading, the workers share those pages with the
supervising process until they write to them. Measured, four processes on one port
(``python benchmarks/workers.py --connections 16000 --hold 60``, PSS, the supervisor
included): 287 MB together before any client when started one by one, 105 MB
forked; with 16 000 idle connections among them for a minute, 458 MB against 339 MB.
At C100K (``benchmarks/c100k.py --workers``): six workers held 100 002 idle
connections in 1 348 MB, five separate processes 99 000 in 1 541 MB.
Each write to a shared page (a reference count, a free block of the loaded heap
reused) copies that page for the worker, so the saving shrinks as the workers run.

What is guaranteed, and why:

- **Each worker is a whole ``channels-tuning-daphne``**: its own listening socket with
  ``SO_REUSEPORT`` on the same address (the kernel spreads new connections over the
  workers), its own event loop (``compat.twisted.renew_after_fork``: the epoll
  instance, self-pipe and waker a fork would share are made anew), its drain, health
  check and stats (one row per worker in ``wsstats``).
- **The collector leaves the shared pages alone**: everything loaded is frozen
  (``gc.freeze()``) before the fork, so no worker's collection writes to it. The
  other half of Python's advice for ``gc.freeze()``, the collector off while the
  application loads (no holes freed in the loaded pages for a worker's first objects
  to fill), was tried and measured no better: 344 against 340 MB of PSS for four
  workers with 16 000 connections (``benchmarks/workers.py --kinds forked
  --connections 16000 --hold 30``): the holes are not what a worker copies (the
  reference counts it writes are the likely rest; not measured).
- **Signals**: SIGTERM or SIGINT to the supervising process is passed on to every
  worker once (each drains: 1012 to its clients); a second is passed on again (each
  exits at once, as a second signal does to one server). Workers are in a process
  group of their own, so Ctrl-C in a terminal reaches them through the supervisor
  only, once. Under systemd use ``KillMode=mixed``: the default sends SIGTERM to every
  process of the unit at once, and a worker would get two.
- **A worker that exits is replaced**, forked again from the loaded state, no sooner
  than a second after it started; one that fails with a non-zero status within
  :data:`BOOT_PERIOD` seconds of starting (a port it cannot bind, an error at start)
  stops the whole group with its exit status instead: it would fail again. A worker
  killed by a signal (the OOM killer, an operator) is always replaced. A worker whose
  supervisor is gone (SIGKILL) drains and exits within :data:`PARENT_CHECK_EVERY`
  seconds.

What it does not do: reload code (a new group does: restart the supervisor); listen
on anything but IPv4
``-b``/``-p`` addresses (as ``--reuse-port``); fork a process that runs threads (it
refuses: a fork copies only the calling thread, and a lock another thread held
would stay held forever in the workers).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.error import ReactorNotRunning

from ...compat import daphne as daphne_hooks
from ...compat import twisted as twisted_hooks
from .handoff import reuse_port_endpoints

logger = logging.getLogger("channels_tuning.server")

#: Twisted's reactor (its interface types callLater without ``self``).
reactor: Any = _reactor

#: A worker that fails this soon after it started stops the group (seconds).
BOOT_PERIOD = 5.0
#: A replaced worker is forked no sooner than this after its predecessor started.
RESTART_INTERVAL = 1.0
#: How often a worker checks that its supervisor is still there (seconds).
PARENT_CHECK_EVERY = 1.0
#: The signals the supervisor passes on as SIGTERM.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def check_endpoints(endpoints: list[str]) -> None:
    """Raise ``ValueError`` unless every endpoint is an IPv4 TCP address: each worker
    listens on it with ``SO_REUSEPORT``."""
    for description in endpoints:
        if daphne_hooks.ipv4_tcp_address(description) is None:
            raise ValueError(f"--workers takes IPv4 addresses (-b/-p), not {description!r}")


def serve_forked(server: Any, serve: Callable[[], None], count: int) -> int:
    """Fork ``count`` workers, each running ``serve()`` on ``server`` (loaded, not yet
    listening), and supervise them; the exit status for the supervising process."""
    check_endpoints(server.endpoints)
    if not twisted_hooks.features["renew_after_fork"]:  # compat.self_check() said why
        raise RuntimeError(
            "--workers: this Twisted or asyncio cannot give each worker its own event "
            "loop (see the error logged at start); run processes with --reuse-port instead"
        )
    running = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if running:
        raise RuntimeError(
            "--workers: threads are running before the fork (" + ", ".join(running) + "); "
            "start them in the workers, or run processes with --reuse-port instead"
        )
    gc.collect()
    gc.freeze()
    supervisor = Supervisor(count, lambda: _worker(server, serve, os.getppid()))
    return supervisor.run()


def _worker(server: Any, serve: Callable[[], None], supervisor_pid: int) -> None:
    twisted_hooks.renew_after_fork(reactor)
    server.endpoints = reuse_port_endpoints(server.endpoints)
    reactor.callLater(PARENT_CHECK_EVERY, _watch_supervisor, supervisor_pid)
    serve()


def _watch_supervisor(supervisor_pid: int) -> None:
    if os.getppid() != supervisor_pid:
        logger.warning("channels-tuning-daphne: the supervising process is gone; draining")
        with contextlib.suppress(ReactorNotRunning):  # already stopping: draining
            reactor.stop()  # Twisted's shutdown: the server's drain, as on SIGTERM
        return
    reactor.callLater(PARENT_CHECK_EVERY, _watch_supervisor, supervisor_pid)


class Supervisor:
    """Forks ``count`` processes running ``start()`` and keeps that many running
    until a stop signal (see the module for the rules)."""

    def __init__(
        self,
        count: int,
        start: Callable[[], None],
        *,
        boot_period: float = BOOT_PERIOD,
        restart_interval: float = RESTART_INTERVAL,
    ) -> None:
        if count < 1:
            raise ValueError("--workers must be at least 1")
        self.count = count
        self.start = start
        self.boot_period = boot_period
        self.restart_interval = restart_interval
        #: Running workers: pid -> when it was forked (time.monotonic()).
        self.workers: dict[int, float] = {}
        self.signals_received = 0
        self.exit_status = 0

    def run(self) -> int:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._stop)
        for _ in range(self.count):
            if self.signals_received:
                break
            self._fork()
        while self.workers:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            started = self.workers.pop(pid, None)
            if started is None:
                continue
            status = os.waitstatus_to_exitcode(wait_status)
            if self.signals_received:
                continue
            lived = time.monotonic() - started
            if status > 0 and lived < self.boot_period:  # its own error, not a signal
                logger.error(
                    "channels-tuning-daphne: worker %d failed %.1f s after it started "
                    "(status %d): stopping every worker",
                    pid,
                    lived,
                    status,
                )
                self.exit_status = status
                self._stop(signal.SIGTERM, None)
                continue
            logger.warning(
                "channels-tuning-daphne: worker %d exited (status %d); starting another",
                pid,
                status,
            )
            time.sleep(max(0.0, started + self.restart_interval - time.monotonic()))
            if not self.signals_received:  # none arrived while it slept
                self._fork()
        return self.exit_status

    def _stop(self, signum: int, frame: Any) -> None:
        self.signals_received += 1
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):  # exited, not yet waited for
                os.kill(pid, signal.SIGTERM)

    def _fork(self) -> None:
        # Blocked until the pid is recorded: a stop signal in between would miss it.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._worker()
            self.workers[pid] = time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        logger.info("channels-tuning-daphne: worker %d started", pid)

    def _worker(self) -> None:
        """The forked process: runs ``start()`` and exits, never returns."""
        status = 1
        try:
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            os.setpgid(0, 0)  # Ctrl-C reaches the supervisor only
            self.start()
            status = 0
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            logger.exception("channels-tuning-daphne: worker %d failed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(status)
