"""What several server processes could share if they were forked after their imports.

The C100K run's five processes take about 450 MB before any connection (88-90 MB each,
30 MB of it code objects; docs/benchmarks.md, "C100K"). A server that imported Django,
the application and the package once, called ``gc.freeze()`` and then forked its
processes (Instagram's pre-fork with the collector kept off the shared pages) would
share those pages until written. Nothing in the package does this yet; this measures
what it would save, before anyone builds it:

- independent: N processes that each import what ``channels-tuning-daphne`` serving
  ``tests.e2e_asgi`` imports, summed PSS;
- forked: one process imports the same, ``gc.freeze()``, forks N children: summed PSS of
  all, with children that touch nothing (the best case) and with children that each
  unfreeze and collect once (every object's header written: near the worst case).

The reactor is installed by ``daphne.server``'s import; a real pre-fork server would
fork before it (an epoll instance is shared across a fork). Here it is imported first
to count its modules, and no child runs it.

    python benchmarks/preload.py [--processes 5]
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load() -> None:
    """What a server process of the benchmarks imports before its first connection."""
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    import django

    django.setup()
    import daphne.server  # noqa: F401

    import tests.e2e_asgi  # noqa: F401
    from channels_tuning.servers.daphne import cli  # noqa: F401

    gc.collect()


def pss_mb(pid: int) -> float:
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    return sum(int(line.split()[1]) for line in lines if line.startswith("Pss:")) / 1024


def independent(count: int) -> float:
    command = [sys.executable, __file__, "--one"]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    try:
        for process in processes:
            assert process.stdout is not None and process.stdout.readline().strip() == "READY"
        return sum(pss_mb(process.pid) for process in processes)
    finally:
        for process in processes:
            process.kill()
            process.wait()


def forked(count: int, touch: bool) -> float:
    """Forks from a child of this process, so that each measurement starts clean."""
    reader, writer = os.pipe()
    parent = os.fork()
    if parent == 0:
        load()
        gc.freeze()
        children = []
        for _ in range(count):
            child = os.fork()
            if child == 0:
                if touch:
                    gc.unfreeze()
                    gc.collect()
                    gc.freeze()
                time.sleep(60)
                os._exit(0)
            children.append(child)
        time.sleep(3)
        total = pss_mb(os.getpid()) + sum(pss_mb(child) for child in children)
        os.write(writer, f"{total}\n".encode())
        for child in children:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as answer:
        total = float(answer.readline())
    os.waitpid(parent, 0)
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.one:
        load()
        print("READY", flush=True)
        time.sleep(60)
        return
    count = options.processes
    alone = independent(count)
    best, touched = forked(count, touch=False), forked(count, touch=True)
    print(f"| {count} server processes before any connection | PSS, MB | of independent |")
    print("|---|---|---|")
    print(f"| independent | {alone:.0f} | 1.00 |")
    print(f"| forked after the imports, children touch nothing | {best:.0f} | {best / alone:.2f} |")
    print(f"| forked, each child collects once | {touched:.0f} | {touched / alone:.2f} |")


if __name__ == "__main__":
    main()
