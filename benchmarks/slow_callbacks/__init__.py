"""Read the logs of ``benchmarks/slow_callbacks/sitecustomize.py``: what held a
server's loop over a window, grouped by what it was."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: Addresses and counts that differ between two calls of the same callback.
_VARYING = re.compile(r"0x[0-9a-f]+|\b\d+\b")


@dataclass
class Held:
    what: str
    count: int
    longest_ms: float
    total_ms: float
    #: The CPU time of the longest: far less than its ``longest_ms`` means the process
    #: waited for a core meanwhile (a busy machine), not that the loop was busy.
    longest_cpu_ms: float = 0.0
    total_cpu_ms: float = 0.0


def environment(prefix: Path) -> dict[str, str]:
    """What a server process's environment needs to log to ``<prefix>.<pid>``
    (``start_daphne(..., **environment(prefix))``)."""
    return {"PYTHONPATH_PREPEND": str(Path(__file__).parent), "CT_SLOW_CALLBACK_LOG": str(prefix)}


def read(prefix: Path, since: float, until: float) -> list[Held]:
    """Every ``<prefix>.<pid>`` log's entries between ``since`` and ``until`` (Unix
    time), grouped by what held the loop, longest first. No log at all means the
    hook never loaded: an error, not a loop that nothing held."""
    return _grouped(_logs(prefix).values(), since, until)


def read_each(prefix: Path, since: float, until: float) -> dict[int, list[Held]]:
    """:func:`read` for each process on its own, by pid (a ``--workers`` group's
    workers each log to their own file)."""
    return {pid: _grouped([log], since, until) for pid, log in _logs(prefix).items()}


def _logs(prefix: Path) -> dict[int, Path]:
    logs = {int(log.name.rsplit(".", 1)[1]): log for log in prefix.parent.glob(prefix.name + ".*")}
    if not logs:
        raise FileNotFoundError(f"no {prefix}.<pid>: the sitecustomize did not load")
    return dict(sorted(logs.items()))


def _grouped(logs: Iterable[Path], since: float, until: float) -> list[Held]:
    groups: dict[str, Held] = {}
    for log in logs:
        for line in log.read_text().splitlines():
            stamp, took, cpu, what = line.split(" ", 3)
            if not since <= float(stamp) <= until:
                continue
            key = _VARYING.sub("N", what)
            held = groups.setdefault(key, Held(key, 0, 0.0, 0.0))
            held.count += 1
            if float(took) > held.longest_ms:
                held.longest_ms, held.longest_cpu_ms = float(took), float(cpu)
            held.total_ms += float(took)
            held.total_cpu_ms += float(cpu)
    return sorted(groups.values(), key=lambda held: held.longest_ms, reverse=True)


def summary(held: list[Held], limit: int = 10) -> str:
    """One line per kind of callback, the longest first."""
    if not held:
        return "no callback or collection over the threshold"
    lines = [f"{'longest ms':>10} {'its CPU':>8} {'count':>6} {'total ms':>9} {'CPU':>8}  what"]
    lines += [
        f"{h.longest_ms:10.1f} {h.longest_cpu_ms:8.1f} {h.count:6d} {h.total_ms:9.1f} "
        f"{h.total_cpu_ms:8.1f}  {h.what}"
        for h in held[:limit]
    ]
    return "\n".join(lines)
