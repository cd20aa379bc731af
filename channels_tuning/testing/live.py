"""A real server for end-to-end tests: :class:`LiveServer` (channels-tuning-daphne on a
free loopback port) and :class:`LiveRedis` (a ``redis-server`` of the test's own).

A ``WebsocketCommunicator`` runs the consumer in the test's process and loop; what a
user's client meets — the handshake, the server's flow control, heartbeats on the real
clock, Redis between processes — needs the server as it is deployed::

    def test_the_chat_in_a_real_server(tmp_path):
        with LiveRedis(tmp_path) as redis, LiveServer(
            "mysite.asgi:application", tmp_path, env={"REDIS_URL": redis.url}
        ) as server:
            asyncio.run(talk(server.ws_url("/ws/chat/lobby/")))

Both are processes this module started, ended by their PID (SIGTERM, then SIGKILL
after ``stop_timeout``); their output is in ``log``. The settings are the project's
(``DJANGO_SETTINGS_MODULE`` of the test's environment, or ``settings``); a layer that
should use the test's Redis reads it from the environment (``env``). The pytest
fixtures ``ct_live_server`` and ``ct_live_redis`` (:mod:`.plugin`) start them per test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["LiveRedis", "LiveServer", "free_port", "wait_for_port"]

_INTERPRETER_PATHS = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
#: Seconds a process has to open its port.
START_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, proc: subprocess.Popen[Any], log: Path, timeout: float = START_TIMEOUT
) -> None:
    """Return once ``port`` accepts connections; RuntimeError (with the log) when the
    process exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early ({proc.returncode}):\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not open after {timeout}s:\n{log.read_text()}")


class _Process:
    """A process started here, ended by its PID."""

    proc: subprocess.Popen[Any] | None = None
    stop_timeout = 15.0

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("not started")
        return self.proc.pid

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class LiveRedis(_Process):
    """``redis-server`` on a free port of 127.0.0.1, without persistence."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log = Path(log_dir) / f"redis-{self.port}.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> LiveRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [binary, *options, "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.port, self.proc, self.log)
        return self

    def __enter__(self) -> LiveRedis:
        return self.start()


class LiveServer(_Process):
    """``application`` ("module:attribute", or Django's dotted ``ASGI_APPLICATION``)
    served by channels-tuning-daphne on a free port of 127.0.0.1."""

    def __init__(
        self,
        application: str,
        log_dir: Path,
        *,
        settings: str | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        cwd: Path | None = None,
    ) -> None:
        if ":" not in application:  # Django's ASGI_APPLICATION: "mysite.asgi.application"
            module, _, attribute = application.rpartition(".")
            application = f"{module}:{attribute}"
        self.application = application
        self.port = free_port()
        self.log = Path(log_dir) / f"channels-tuning-daphne-{self.port}.log"
        self.env = dict(os.environ)
        if settings is not None:
            self.env["DJANGO_SETTINGS_MODULE"] = settings
        self.env.update(env or {})
        # The test's own import path (its project directories, not the interpreter's),
        # so the project's modules import in the server as they do in the test.
        own = [p for p in sys.path[1:] if p and not p.startswith(_INTERPRETER_PATHS)]
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [*own, self.env.get("PYTHONPATH")]))
        self.args, self.cwd = args, cwd or Path.cwd()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def start(self) -> LiveServer:
        entry = "import channels_tuning.servers.daphne as m; m.main()"
        command = [sys.executable, "-c", entry, "-b", "127.0.0.1", "-p", str(self.port)]
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [*command, *self.args, self.application],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, self.proc, self.log)
        return self

    def __enter__(self) -> LiveServer:
        return self.start()
