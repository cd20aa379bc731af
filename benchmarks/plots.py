"""The benchmark report's pictures (matplotlib, no display needed), from what
``benchmarks.report`` measured in one sitting:

- ``slow-reader-rss.png``: the server's RSS over time behind a client that reads nothing;
- ``burst-latency.png``: the distribution of delivery latency in the broadcast burst;
- ``burst-throughput.png``: deliveries per second and server CPU per delivery;
- ``gc-pauses.png``: GC pauses during the burst at thousands of connections, by
  generation, with no freezing and with the package's defaults (which freeze);
- ``stalls.png``: the worst stall of the loop and the server's CPU against the number
  of idle connections in one process;
- ``broadcast.png``: one message to every idle connection of a process: time to the
  last delivery and server CPU per delivery against the number of connections;
- ``c100k.png``: each of the C100K run's processes: its worst stall, CPU and memory;
- ``storm.png``: clients back after a restart, second by second, for the three servers
  and the package's handoff.

Dashed lines are the goals the benchmarks are held to (a stall of 50 ms, 5 µs of
server CPU per delivery, 10 s to absorb a reconnect storm).

Written to ``docs/_static/benchmarks/`` by ``python -m benchmarks.report --write``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt

COLORS = {
    "plain": "#c0504d",
    "tuned": "#2a6bb0",
    "websockets": "#8a8a8a",
    "tuned-former": "#9bbbe0",
}
LABELS = {
    "plain": "plain Channels",
    "tuned": "channels-tuning",
    "websockets": "websockets (ceiling)",
    "tuned-former": "channels-tuning, former GC settings",
}


#: The goals drawn as dashed lines.
STALL_GOAL_MS = 50.0
DELIVERY_GOAL_US = 5.0
STORM_GOAL_S = 10.0


def _goal(axes: Any, value: float, label: str) -> None:
    axes.axhline(value, color="black", linestyle="--", linewidth=0.8, label=label)


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def slow_reader_rss(slow: dict[str, dict], seconds_per_point: float, out: Path) -> Path:
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    for kind, case in slow.items():
        curve = [case["start"], *case["curve"]]
        times = [i * seconds_per_point for i in range(len(curve))]
        axes.plot(times, curve, label=LABELS[kind], color=COLORS[kind], linewidth=2)
    axes.set_xlabel("seconds")
    axes.set_ylabel("server RSS, MB")
    axes.set_title("Behind one client that stops reading")
    axes.legend()
    axes.grid(alpha=0.3)
    return _save(figure, out / "slow-reader-rss.png")


def burst_latency(burst: dict[str, dict], shape: str, out: Path) -> Path:
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    for kind, case in burst.items():
        quantiles = case["latency_quantiles_ms"]
        axes.plot(quantiles, range(len(quantiles)), label=LABELS[kind], color=COLORS[kind])
    axes.set_xscale("log")
    axes.set_xlabel("delivery latency, ms (log)")
    axes.set_ylabel("% of delivered messages")
    axes.set_title(f"Broadcast burst {shape}: latency")
    axes.legend()
    axes.grid(alpha=0.3)
    return _save(figure, out / "burst-latency.png")


def burst_throughput(burst: dict[str, dict], shape: str, out: Path) -> Path:
    figure, (left, right) = plt.subplots(1, 2, figsize=(7.6, 3.2))
    kinds = list(burst)
    names = [LABELS[k].replace(" ", "\n", 1) for k in kinds]
    colors = [COLORS[k] for k in kinds]
    left.bar(names, [burst[k]["deliveries_per_s"] / 1000 for k in kinds], color=colors)
    left.set_ylabel("thousand deliveries / s")
    delivered = [100 * burst[k]["got"] / burst[k]["expected"] for k in kinds]
    for i, share in enumerate(delivered):
        left.annotate(f"{share:.0f} % delivered", (i, 0), ha="center", va="bottom", fontsize=8)
    right.bar(names, [burst[k]["us_per_delivery"] for k in kinds], color=colors)
    right.set_ylabel("server CPU per delivery, µs")
    for axes in (left, right):
        axes.tick_params(axis="x", labelsize=8)
        axes.grid(alpha=0.3, axis="y")
    figure.suptitle(f"Broadcast burst {shape}")
    return _save(figure, out / "burst-throughput.png")


def gc_pauses(cases: dict[str, dict], buckets: tuple[float, ...], out: Path) -> Path:
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    labels = [f"≤{b * 1000:g} ms" for b in buckets] + [f">{buckets[-1] * 1000:g} ms"]
    width = 0.8 / (3 * len(cases))
    for c, (name, case) in enumerate(cases.items()):
        for generation in range(3):
            counts = case["gc_histogram"][generation] or [0] * len(labels)
            offset = (c * 3 + generation) * width
            axes.bar(
                [i + offset for i in range(len(labels))],
                counts,
                width,
                label=f"gen {generation}, {name}",
                alpha=0.9 if c else 0.5,
            )
    axes.set_xticks([i + 0.4 for i in range(len(labels))], labels, fontsize=7, rotation=30)
    axes.set_ylabel("collections")
    axes.set_title("GC pauses during the burst")
    axes.legend(fontsize=7, ncol=2)
    return _save(figure, out / "gc-pauses.png")


def stalls(by_count: dict[int, dict[str, dict]], out: Path) -> Path:
    figure, (stall_axes, cpu_axes) = plt.subplots(1, 2, figsize=(8.4, 3.4))
    counts = sorted(by_count)
    for kind in LABELS:
        if not all(kind in by_count[n] for n in counts):
            continue
        stall_axes.plot(
            counts,
            [by_count[n][kind]["worst_stall_ms"] for n in counts],
            marker="o",
            label=LABELS[kind],
            color=COLORS[kind],
        )
        cpu_axes.plot(
            counts,
            [by_count[n][kind]["cpu_percent"] for n in counts],
            marker="o",
            label=LABELS[kind],
            color=COLORS[kind],
        )
    stall_axes.set_xlabel("idle connections in one process")
    _count_ticks(stall_axes, counts)
    stall_axes.set_ylabel("worst stall of the loop, ms")
    stall_axes.set_title("Stalls while idle")
    cpu_axes.set_xlabel("idle connections in one process")
    _count_ticks(cpu_axes, counts)
    cpu_axes.set_ylabel("server CPU, % of a core")
    cpu_axes.set_title("CPU while idle")
    for axes in (stall_axes, cpu_axes):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    return _save(figure, out / "stalls.png")


def _count_ticks(axes: Any, counts: list[int]) -> None:
    """Ticks at the counts measured (1 000, 5 000, 19 000), not crowded round numbers."""
    axes.set_xticks(counts, [f"{n:,}".replace(",", " ") for n in counts])


def broadcast(by_count: dict[int, dict[str, dict]], out: Path) -> Path:
    """One message to every idle connection, from ``stall.measure(..., to_all=True)``."""
    figure, (time_axes, cpu_axes) = plt.subplots(1, 2, figsize=(8.4, 3.4))
    counts = sorted(by_count)
    for kind in LABELS:
        if not all("broadcast" in by_count[n].get(kind, {}) for n in counts):
            continue
        sent = [by_count[n][kind]["broadcast"] for n in counts]
        style = {"marker": "o", "label": LABELS[kind], "color": COLORS[kind]}
        time_axes.plot(counts, [row["last_delivery_ms"] for row in sent], **style)
        cpu_axes.plot(counts, [row["us_per_delivery"] for row in sent], **style)
    _goal(cpu_axes, DELIVERY_GOAL_US, f"goal, {DELIVERY_GOAL_US:g} µs")
    time_axes.set_ylabel("ms to the last delivery")
    time_axes.set_title("One message to all")
    cpu_axes.set_ylabel("server CPU per delivery, µs")
    cpu_axes.set_title("Cost per delivery")
    for axes in (time_axes, cpu_axes):
        # Log scale: plain Channels is 20-50 times the others, which a linear axis
        # flattens onto each other. A zero (a CPU reading under one clock tick) is
        # left out by the log scale.
        axes.set_yscale("log")
        _count_ticks(axes, counts)
        axes.set_xlabel("idle connections in one process")
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=7)
    return _save(figure, out / "broadcast.png")


def c100k(result: dict, out: Path) -> Path:
    """Each process of the C100K run (``benchmarks/c100k.py``), side by side."""
    processes = result["processes"]
    names = [f"{i + 1}" for i in range(len(processes))]
    figure, (stall_axes, cpu_axes, memory_axes) = plt.subplots(1, 3, figsize=(9.6, 3.2))
    color = COLORS["tuned"]
    stall_axes.bar(names, [p["worst_stall_ms"] for p in processes], color=color)
    _goal(stall_axes, STALL_GOAL_MS, f"goal, {STALL_GOAL_MS:g} ms")
    stall_axes.set_ylabel("worst stall of the loop, ms")
    cpu_axes.bar(names, [p["cpu_percent"] for p in processes], color=color)
    cpu_axes.set_ylabel("CPU, % of a core")
    memory_axes.bar(names, [p["rss_mb"] for p in processes], color=color)
    memory_axes.set_ylabel("RSS, MB")
    held = sum(p["held_at_end"] for p in processes)
    stall_axes.legend(fontsize=7)
    for axes, title in ((stall_axes, "Stalls"), (cpu_axes, "CPU"), (memory_axes, "Memory")):
        axes.set_xlabel("server process")
        axes.set_title(f"{title}, {held} connections held", fontsize=9)
        axes.grid(alpha=0.3, axis="y")
    return _save(figure, out / "c100k.png")


def storm(runs: list[dict], out: Path) -> Path:
    """Clients back, cumulated second by second (``benchmarks/storm.py``)."""
    figure, axes = plt.subplots(figsize=(6.4, 3.6))
    for run in runs:
        kind = run["kind"].split()[0]
        label = LABELS.get(kind, kind) + (", handoff" if run["handoff"] else ", restart")
        total = 0
        cumulated = [0.0]  # by the end of each second
        for count in run["back_per_second"]:
            total += count
            cumulated.append(100 * total / run["connections"])
        axes.plot(
            range(len(cumulated)),
            cumulated,
            marker=".",
            label=label,
            color=COLORS.get(kind, "black"),
            linestyle=":" if run["handoff"] else "-",
        )
    axes.axvline(STORM_GOAL_S, color="black", linestyle="--", linewidth=0.8, label="goal")
    # The handoff's successor listens before the SIGTERM: its clock starts there.
    axes.set_xlabel("seconds since the new process could take clients (handoff: SIGTERM)")
    axes.set_ylabel("clients back, %")
    axes.set_title(f"Reconnect storm of {runs[0]['connections']} clients" if runs else "")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return _save(figure, out / "storm.png")
