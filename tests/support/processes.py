"""Real processes for end-to-end tests and benchmarks: redis-server and daphne (plain
or ``channels-tuning-daphne``) on free ports of 127.0.0.1, stopped by their PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from channels_tuning.testing.live import free_port, wait_for_port

REPO = Path(__file__).resolve().parent.parent.parent


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """End a process this test rig started (by its PID), escalating to SIGKILL."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen
    log: Path
    password: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> str:
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        return subprocess.run(
            ["redis-cli", *auth, "-p", str(self.port), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()

    def keys(self, pattern: str) -> list[str]:
        out = self.cli("--scan", "--pattern", pattern)
        return [line for line in out.splitlines() if line]

    @property
    def env(self) -> dict[str, str]:
        """What points the example project's settings at this Redis."""
        return {"REDIS_URL": self.url}

    def layer(self, **config: Any) -> Any:
        """A tuned Redis layer on this Redis, for a test's producer."""
        from channels_tuning.layers import RedisChannelLayer

        return RedisChannelLayer(hosts=[self.url], **config)


def start_redis(tmp: Path, port: int | None = None, *extra: str) -> RedisServer:
    """redis-server on 127.0.0.1 (``extra``: more options, e.g. ``--replicaof``)."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    log = tmp / f"redis-{port}.log"
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
            *extra,
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, proc, log)
    return RedisServer(port, proc, log)


def start_sentinel(
    tmp: Path, master: RedisServer, name: str = "main", password: str | None = None
) -> RedisServer:
    """A Redis Sentinel (redis-server in sentinel mode, from the same package)
    watching ``master`` with a quorum of one and a 1 s down-after: fast failovers.
    ``password``: what clients of the sentinel itself must give (``requirepass``)."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    config = tmp / f"sentinel-{port}.conf"  # sentinel rewrites its configuration
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp}\n"
        f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {name} 1000\n"
        f"sentinel failover-timeout {name} 5000\n"
        f"sentinel parallel-syncs {name} 1\n" + (f"requirepass {password}\n" if password else "")
    )
    log = tmp / f"sentinel-{port}.log"
    proc = subprocess.Popen(
        [server, str(config), "--sentinel"], stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    wait_for_port(port, proc, log)
    return RedisServer(port, proc, log)


@dataclass
class DaphneProcess:
    port: int
    proc: subprocess.Popen
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    server: str = "daphne"
    #: The application's process when the caller knows it; else read from /_stats
    #: once (a successor sharing its port through --reuse-port knows it: the old
    #: process may answer that request).
    known_app_pid: int | None = None
    #: Its ``--health-port`` (``start_daphne(health_port=True)``).
    health_port: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def app_pid(self) -> int:
        """The process that runs the application: the server's own, except under
        hypercorn, whose command starts its worker as a child process."""
        if self.known_app_pid is None:
            self.known_app_pid = int(self.stats()["pid"])
        return self.known_app_pid

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stats(
        self, gc_collect: bool = False, reset_gc_max: bool = False, with_frozen: bool = False
    ) -> dict:
        """``with_frozen``: a collection, and ``gc_types`` counts frozen objects too."""
        query = (
            "gc=all"
            if with_frozen
            else "gc=1"
            if gc_collect
            else "reset_gc_max=1"
            if reset_gc_max
            else ""
        )
        return self._stats(query, timeout=10)

    def _stats(self, query: str, timeout: float = 30) -> dict:
        """GET /_stats?query (the tests' application, ``tests/e2e_asgi.py``)."""
        url = f"http://127.0.0.1:{self.port}/_stats" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())

    def forked_workers(self, count: int, timeout: float = 30) -> list[int]:
        """The pids of a ``--workers`` group's workers, once all ``count`` are forked."""
        deadline = time.monotonic() + timeout
        while len(pids := child_pids(self.pid)) != count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.pid} forked {pids}, not {count}")
            time.sleep(0.2)
        return pids

    def stats_by_worker(
        self, workers: Iterable[int], reset_gc_max: bool = False, tries_per_worker: int = 20
    ) -> dict[int, dict]:
        """Each worker's ``/_stats``, by pid: asked on new connections until every one
        of ``workers`` answered (each connection is a new choice of the kernel's hash;
        with 6 workers the last is reached within 15 requests on average)."""
        wanted = set(workers)
        answers: dict[int, dict] = {}
        for _ in range(tries_per_worker * len(wanted)):
            answer = self.stats(reset_gc_max=reset_gc_max)
            answers.setdefault(answer["pid"], answer)
            if set(answers) >= wanted:
                return answers
        raise RuntimeError(f"/_stats answered from {sorted(answers)}, workers {sorted(wanted)}")

    def collect_and_freeze(self) -> dict:
        """A collection, then ``gc.freeze()``: from here, what the collector scans is
        what was made since."""
        return self._stats("gc=freeze")

    def collect_everything(self) -> dict:
        """Stats after ``gc.unfreeze()`` and a full collection: ``unreachable`` is the
        cyclic garbage the process kept, frozen or not."""
        return self._stats("gc=unfreeze")

    def keep_cyclic_garbage(self) -> None:
        """From now on, every collection keeps what it finds (``gc.DEBUG_SAVEALL``)."""
        self._stats("gc=save")

    def cyclic_garbage(self) -> dict:
        """The cyclic garbage since :meth:`keep_cyclic_garbage`, all collected:
        ``unreachable`` (objects), and ``garbage`` with their ``types`` and one
        reference ``cycles`` per type."""
        return self._stats("gc=garbage")

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        """GET /metrics (django-prometheus) as {(sample name, labels): value}."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def counter(self, name: str, labels: str) -> int:
        return int(self.stats()["counters"][name].get(labels, 0))

    def rss_kb(self) -> int:
        return proc_kb(self.app_pid, "status", "VmRSS")

    def pss_kb(self) -> int:
        """Proportional set size: pages shared with other processes (the interpreter,
        libraries) counted in shares, so a sum over processes counts them once."""
        return proc_kb(self.app_pid, "smaps_rollup", "Pss")


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (``--workers``' workers), by pid."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # "pid (comm) state ppid ...": comm may hold spaces, so after the ")".
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def memory_kb(pid: int) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` in KB: Rss, Pss, Shared_Dirty, Private_Dirty..."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value)
    return fields


def memory_mb(pid: int) -> dict[str, float]:
    """:func:`memory_kb` in MB."""
    return {name: kb / 1024 for name, kb in memory_kb(pid).items()}


def proc_kb(pid: int, file: str, field: str) -> int:
    """A ``field: N kB`` line of ``/proc/<pid>/<file>``."""
    for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/{file}")


#: The ASGI servers the tests start, by the name the README's server table uses.
SERVERS = ("daphne", "tuned", "uvicorn", "hypercorn")


def _server_command(server: str, port: int, application: str, extra_args: tuple[str, ...]):
    if server == "daphne":
        entry = "import daphne.cli as m; m.CommandLineInterface.entrypoint()"
        return ["-c", entry, "-b", "127.0.0.1", "-p", str(port), *extra_args, application]
    if server == "tuned":
        entry = "import channels_tuning.servers.daphne as m; m.main()"
        return ["-c", entry, "-b", "127.0.0.1", "-p", str(port), *extra_args, application]
    if server == "uvicorn":
        # --lifespan on: the application's lifespan handler must work (it is mapped).
        return [
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lifespan",
            "on",
            "--no-access-log",
            *extra_args,
            application,
        ]
    if server == "hypercorn":
        return ["-m", "hypercorn", "-b", f"127.0.0.1:{port}", *extra_args, application]
    raise ValueError(f"unknown server {server!r}; one of {SERVERS}")


def start_daphne(
    log_dir: Path,
    *,
    tuned: bool = False,
    server: str | None = None,
    redis: RedisServer | None = None,
    tuning: dict | None = None,
    extra_args: tuple[str, ...] = (),
    port: int | None = None,
    application: str = "tests.e2e_asgi:application",
    health_port: bool = False,
    **env: str,
) -> DaphneProcess:
    """Start daphne (or ``channels-tuning-daphne`` with ``tuned``, or any of
    :data:`SERVERS` with ``server``) on ``application`` (the tests' ASGI app by
    default, on the example project's settings) on a free port (or on ``port``: a
    restart on the same address). The example's per-user connection limit is off
    unless ``tuning`` sets it: the tests connect from one address. ``health_port``:
    ``channels-tuning-daphne`` answers its health check on a free port of its own too
    (``--health-port``), as the deployment guide's servers do."""
    server = server or ("tuned" if tuned else "daphne")
    port = port or free_port()
    health = free_port() if health_port else None
    if health is not None:
        extra_args = (*extra_args, "--health-port", str(health))
    log = log_dir / f"{server}-{port}.log"
    full_env = dict(os.environ)
    full_env.pop("REDIS_URL", None)
    full_env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        CHANNELS_TUNING_JSON=json.dumps({"MAX_CONNECTIONS_PER_USER": None, **(tuning or {})}),
        CT_LOG_LEVEL="INFO",
        **env,
    )
    prepend = full_env.pop("PYTHONPATH_PREPEND", None)
    if (
        prepend
    ):  # a sitecustomize that patches an upstream library (tests/unit/compat/test_compat.py)
        full_env["PYTHONPATH"] = os.pathsep.join([prepend, full_env["PYTHONPATH"]])
    if redis is not None:
        full_env.update(redis.env)
    proc = subprocess.Popen(
        [sys.executable, *_server_command(server, port, application, extra_args)],
        cwd=REPO,
        env=full_env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, proc, log)
    if health is not None:
        wait_for_port(health, proc, log)
    return DaphneProcess(port, proc, log, full_env, server, health_port=health)


def migrate(env: dict[str, str]) -> None:
    """The example project's tables in the database a server's environment names
    (``DJANGO_DB_PATH``)."""
    subprocess.run(
        [sys.executable, str(REPO / "example_project" / "manage.py"), "migrate", "-v", "0"],
        cwd=REPO,
        env=env,
        check=True,
        timeout=120,
    )


def run_django(env: dict[str, str], code: str, *args: str) -> str:
    """Run ``code`` after ``django.setup()`` in a process of its own with a server's
    environment (its settings, database and Redis): what it printed."""
    result = subprocess.run(
        [sys.executable, "-c", f"import django\ndjango.setup()\n{code}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def user_with_session(env: dict[str, str], name: str) -> tuple[int, str]:
    """A user in the database and a logged-in session of theirs: (pk, session key)."""
    out = run_django(
        env,
        "from django.contrib.auth.models import User\n"
        "from django.contrib.sessions.backends.db import SessionStore\n"
        f"u = User.objects.create_user({name!r})\n"
        "s = SessionStore(); s['_auth_user_id'] = str(u.pk)\n"
        "s['_auth_user_backend'] = 'django.contrib.auth.backends.ModelBackend'\n"
        "s['_auth_user_hash'] = u.get_session_auth_hash(); s.create()\n"
        "print(u.pk, s.session_key)",
    )
    pk, session = out.split()
    return int(pk), session


def run_wsstats(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``manage.py wsstats`` of the example project, with a server's environment."""
    return subprocess.run(
        [sys.executable, str(REPO / "example_project" / "manage.py"), "wsstats", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def tcp_kernel_bytes() -> int:
    """Memory the kernel holds for all TCP sockets of the machine
    (``/proc/net/sockstat``, counted in pages)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE")
    raise RuntimeError("no TCP line in /proc/net/sockstat")


def start_subscribers(
    port: int,
    path: str,
    count: int,
    *,
    quiet: float = 3,
    max_wait: float = 400,
    in_flight: int | None = None,
    wait_ready: bool = True,
    messages: int = 1,
    source: str | None = None,
) -> subprocess.Popen[str]:
    """A lean subscriber process (``tests/support/fanout_client.py``) holding ``count``
    connections to ``path``; it reports (one JSON line) after ``quiet`` seconds without
    a frame, once a frame of message ``messages - 1`` came. With ``in_flight`` it first
    prints ``HANDSHAKES <n> <seconds>``; with ``wait_ready`` this returns once every
    connection is open (READY). ``source``: the loopback address it connects from."""
    args = [str(port), path, str(count), str(quiet), str(max_wait), "--messages", str(messages)]
    if in_flight is not None:
        args += ["--in-flight", str(in_flight)]
    if source is not None:
        args += ["--source", source]
    client = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "support" / "fanout_client.py"), *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    if wait_ready and in_flight is None:
        assert client.stdout is not None and client.stdout.readline().strip() == "READY"
    return client
