"""Where a server process spends its CPU during a benchmark step: py-spy samples it
(``pip install py-spy``, in the ``dev`` extra; it needs ptrace, so run as root or with
``kernel.yama.ptrace_scope=0``) and the samples are summed by the package of the
function running (own time) and by step (inclusive), so a profile is one command away
from each number it explains.

    with sampled(server.app_pid) as profile:
        ...  # the step
    print(profile.summary())
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

#: Steps whose inclusive share is printed (a sample counts once per step it is in).
STEPS = {
    "HTTP request parsed and processed (Twisted, daphne)": "HTTPChannel.dataReceived",
    "autobahn's opening handshake": "WebSocketServerProtocol.processHandshake",
    "autobahn's per-connection set-up": "WebSocketProtocol._connectionMade",
    "daphne's onConnect (scope, application)": "WebSocketProtocol.onConnect",
    "Channels' routers": "URLRouter.__call__",
    "the consumer (tuned)": "ManagedConnectionMixin.__call__",
    "group_add": ".group_add",
    "access log": "AccessLogGenerator",
    "daphne's application checker (every connection, each second)": "application_checker",
    "daphne's timeout checker and keepalive pings": "timeout_checker",
    "the package's scheduler (timers, jobs)": "Scheduler.run_once",
    "client frames, pongs included (autobahn)": "WebSocketProtocol.dataReceived",
    "a layer message to each consumer, to its held write": "ProcessLayerReader._deliver",
    "the held writes sent, a batch at once": "WriteBatch._end",
}


def owner(frame: str) -> str:
    """The package a py-spy frame ``"function (path:line)"`` belongs to."""
    # py-spy names installed files by their import path ("daphne/server.py",
    # "asyncio/events.py", "socket.py") and others by their full path.
    path = frame.rpartition(" (")[2].rsplit(":", 1)[0]
    parts = Path(path).parts
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    if "channels_tuning" in parts:
        return "channels_tuning"
    if "tests" in parts or "example_project" in parts:
        return "the test application"
    if not parts or Path(path).is_absolute():
        return path or "?"
    return parts[0].removesuffix(".py")


@dataclass
class Profile:
    raw: Path
    stacks: Counter[str] = field(default_factory=Counter)

    def load(self) -> None:
        if not self.raw.exists():
            return
        for line in self.raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if count.isdigit():
                self.stacks[stack] += int(count)

    def summary(self, top: int = 12) -> str:
        total = sum(self.stacks.values())
        if not total:
            return "  (no samples: py-spy missing or not permitted)"
        own: Counter[str] = Counter()
        steps: Counter[str] = Counter()
        functions: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            frames = stack.split(";")
            own[owner(frames[-1])] += count
            functions[frames[-1].split(" (")[0]] += count
            for name, marker in STEPS.items():
                if marker in stack:
                    steps[name] += count
        lines = [f"  {total} samples; own time by package:"]
        lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in own.most_common(top)]
        lines.append("  steps, inclusive (a sample counts in every step it is inside):")
        lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in steps.most_common()]
        lines.append("  functions by own time:")
        lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in functions.most_common(top)]
        return "\n".join(lines)


@contextmanager
def sampled(pid: int, rate: int = 500) -> Iterator[Profile]:
    """Sample ``pid`` with py-spy while the block runs."""
    directory = Path(tempfile.mkdtemp(prefix="ct-profile-"))
    profile = Profile(directory / "stacks.txt")
    spy = shutil.which("py-spy")
    proc = None
    if spy is not None:
        proc = subprocess.Popen(
            [spy, "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(profile.raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        yield profile
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            proc.wait(timeout=30)
        profile.load()
        shutil.rmtree(directory, ignore_errors=True)
