"""Where a server process spends its CPU during a benchmark step: py-spy samples it
(``pip install py-spy``, in the ``dev`` extra; it needs ptrace, so run as root or with
``kernel.yama.ptrace_scope=0``) and the stacks are summed by package, so a profile is
one command away from each number it explains.

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

#: Buckets a stack is counted in when one of its frames' files contains the marker.
CATEGORIES = {
    "Twisted HTTP (web/http.py)": "twisted/web/http.py",
    "autobahn": "autobahn/",
    "daphne": "daphne/",
    "channels_tuning": "channels_tuning/",
    "Channels routing": "channels/routing.py",
    "Django URL resolver": "django/urls/",
    "redis-py": "redis/",
    "channels-redis": "channels_redis/",
    "pprint": "pprint.py",
    "socket send/recv": "socket.py",
}


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

    def summary(self, top: int = 15) -> str:
        total = sum(self.stacks.values())
        if not total:
            return "  (no samples: py-spy missing or not permitted)"
        by_category: Counter[str] = Counter()
        by_function: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            for name, marker in CATEGORIES.items():
                if marker in stack:
                    by_category[name] += count
            by_function[stack.split(";")[-1].split(" (")[0]] += count
        lines = [f"  {total} samples; a stack counts in every bucket it passes through"]
        lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in by_category.most_common()]
        lines.append("  functions by own time:")
        lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in by_function.most_common(top)]
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
