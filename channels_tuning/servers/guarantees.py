"""What each server gives a tuned consumer: one row per guarantee, one column per server.

This table is the single source of the "Guarantees by server" table (in the README
and docs/topics/deployment.md; a test compares them), of the line each process logs
at its first connection, and of ``manage.py check --deploy``'s note for every server
installed. Each row names the
test in ``tests/e2e/test_servers.py`` that runs it on every server, asserting the
"no" cells too.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any, Final

from django.core.checks import Info

from .transport import ServerKind

#: Server keys (the values of :class:`~channels_tuning.servers.transport.ServerKind`),
#: in column order, with the names the documentation uses.
SERVER_TITLES: Final = {
    ServerKind.DAPHNE.value: "daphne",
    ServerKind.TUNED_DAPHNE.value: "channels-tuning-daphne",
    ServerKind.UVICORN.value: "uvicorn",
    ServerKind.HYPERCORN.value: "hypercorn",
}


@dataclass(frozen=True)
class Guarantee:
    title: str
    #: The test function in tests/e2e/test_servers.py that checks every cell.
    test: str
    #: Server key -> (holds, how or why not).
    cells: dict[str, tuple[bool, str]]

    def holds(self, server: str) -> bool:
        return self.cells[server][0]


def _everywhere(note: str = "") -> dict[str, tuple[bool, str]]:
    return {server: (True, note) for server in SERVER_TITLES}


GUARANTEES: Final = (
    Guarantee(
        "The package's clients (`channels-tuning.v1`): heartbeat pings; a client that "
        "stops answering is closed with 4000",
        "test_idle_client_closed_with_4000",
        _everywhere(),
    ),
    Guarantee(
        "A plain page that only reads stays connected and gets no frame it did not ask for",
        "test_a_plain_page_that_only_reads_stays_connected_and_sees_no_heartbeat",
        _everywhere(),
    ),
    Guarantee(
        "A plain client that vanished (answers no protocol ping) is closed",
        "test_a_vanished_plain_client_is_closed_by_a_keepalive",
        {
            "daphne": (True, "its keepalive drops it: --ping-interval + --ping-timeout (50 s)"),
            "tuned": (
                True,
                "4000 after `IDLE_TIMEOUT` without a pong to its --ping-interval pings",
            ),
            "uvicorn": (True, "its keepalive: --ws-ping-interval + --ws-ping-timeout (40 s)"),
            "hypercorn": (False, "only with --websocket-ping-interval (off by default)"),
        },
    ),
    Guarantee(
        "Message size (1009), message rate (1008) and connection limits (1013)",
        "test_limits_close_with_documented_codes",
        {
            **_everywhere(),
            "tuned": (True, "an oversized frame is refused as it begins"),
        },
    ),
    Guarantee(
        "Groups left on a close, a dropped connection and a handler crash",
        "test_group_memberships_left_on_every_exit",
        _everywhere(),
    ),
    Guarantee(
        "`wsstats`, `/metrics` and the GC settings",
        "test_stats_wsstats_metrics_and_gc_settings",
        _everywhere(),
    ),
    Guarantee(
        "Bounded memory behind a client that stops reading, which is closed with 4001",
        "test_non_reading_client_bounded_and_others_served",
        {
            "daphne": (False, "buffers without bound and never closes it (daphne #170)"),
            "tuned": (True, "flow control: the send queue fills, not the server"),
            "uvicorn": (True, "its send waits; a close stuck behind the backlog is aborted"),
            "hypercorn": (True, "its send waits; a close stuck behind the backlog is aborted"),
        },
    ),
    Guarantee(
        "SIGTERM: every client gets 1012, every group is left, the process exits",
        "test_sigterm_closes_every_client_and_leaves_groups",
        {
            "daphne": (True, "the package makes daphne's shutdown wait for cleanups"),
            "tuned": (True, "a drain in batches, bounded by --drain-timeout"),
            "uvicorn": (True, "uvicorn sends the 1012s; map `Lifespan`"),
            "hypercorn": (True, "after its --graceful-timeout (3 s); map `Lifespan`"),
        },
    ),
    Guarantee(
        "A client's ping flood is closed with 1008",
        "test_ping_flood_closed_with_1008",
        {
            "daphne": (False, "answers every ping"),
            "tuned": (True, "--ws-control-frame-rate"),
            "uvicorn": (False, "answers every ping"),
            "hypercorn": (False, "answers every ping"),
        },
    ),
)


def markdown_table() -> str:
    """The guarantees table: a check or a cross per cell, the note beside it."""
    header = "| guarantee | " + " | ".join(SERVER_TITLES.values()) + " |"
    rule = "|---" * (len(SERVER_TITLES) + 1) + "|"
    rows = [header, rule]
    for guarantee in GUARANTEES:
        cells = []
        for holds, note in guarantee.cells.values():
            mark = "yes" if holds else "**no**"
            cells.append(f"{mark}: {note}" if note else mark)
        rows.append(f"| {guarantee.title} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def summary(server: str) -> str:
    """One sentence: what holds on ``server`` (a key of :data:`SERVER_TITLES`), and
    what does not."""
    missing = [g.title for g in GUARANTEES if not g.holds(server)]
    text = f"WebSockets served by {SERVER_TITLES[server]}: {len(GUARANTEES) - len(missing)} of "
    text += f"{len(GUARANTEES)} guarantees hold"
    if missing:
        text += "; not: " + "; ".join(missing)
    return text


def check_servers(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``manage.py check --deploy``: for each ASGI server installed, which of the
    package's guarantees hold there (channels_tuning.I001). Registered by the app's
    ``ready()`` as a deployment check."""
    servers = [
        server
        for server, module in (
            ("tuned", "daphne"),
            ("daphne", "daphne"),
            ("uvicorn", "uvicorn"),
            ("hypercorn", "hypercorn"),
        )
        if find_spec(module) is not None
    ]
    return [Info(summary(server), id="channels_tuning.I001") for server in servers]
