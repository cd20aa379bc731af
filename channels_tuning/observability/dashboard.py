"""The Grafana dashboard shipped with the package, written from this module.

Import ``channels_tuning/observability/grafana/channels-tuning.json`` into Grafana
(Dashboards > New > Import) and pick the Prometheus data source that scrapes the
servers' ``/metrics``. Example alert rules for the same metrics are in
``grafana/alerts.yml`` next to it. Regenerate after changing a panel::

    python -m channels_tuning.observability.dashboard --write

Every panel shows the fleet in total and, where it matters, per process (the
``instance`` label Prometheus adds); ``$job`` and ``$instance`` narrow it down. A test
scrapes a real tuned server under traffic and checks that every metric and label the
panels and the rules use exists there (``tests/e2e/test_dashboard.py``), and that the
committed JSON is what this module writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DASHBOARD_PATH = Path(__file__).resolve().parent / "grafana" / "channels-tuning.json"
ALERTS_PATH = DASHBOARD_PATH.parent / "alerts.yml"

#: Label selector every query carries (the dashboard's variables).
SELECT = 'job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
    }


def _panel(
    title: str,
    description: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    x: int,
    y: int,
    width: int = 12,
    stack: bool = False,
    heatmap: bool = False,
) -> dict[str, Any]:
    common = {
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": width, "x": x, "y": y},
    }
    refs = [(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)]
    if heatmap:
        # Bucket counts over time (Prometheus histogram buckets, not re-bucketed).
        return {
            "type": "heatmap",
            **common,
            "options": {
                "calculate": False,
                "yAxis": {"unit": unit},
                "cellGap": 1,
                "color": {"mode": "scheme", "scheme": "Blues"},
            },
            "targets": [{**_target(*ref), "format": "heatmap"} for ref in refs],
        }
    return {
        "type": "timeseries",
        **common,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {"stacking": {"mode": "normal" if stack else "none"}, "fillOpacity": 10},
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["max"]}},
        "targets": [_target(*ref) for ref in refs],
    }


def panels() -> list[dict[str, Any]]:
    s = SELECT
    rows: list[tuple[str, str, list[tuple[str, str]], dict[str, Any]]] = [
        (
            "Open connections by consumer",
            "Accepted WebSocket connections open now (channels_tuning_open_connections).",
            [
                (f"sum by (consumer) (channels_tuning_open_connections{{{s}}})", "{{consumer}}"),
                (f"sum(channels_tuning_open_connections{{{s}}})", "total"),
            ],
            {"stack": False},
        ),
        (
            "Open connections per process",
            "The same per server process: a process far from the others is a balancer problem.",
            [(f"sum by (instance) (channels_tuning_open_connections{{{s}}})", "{{instance}}")],
            {},
        ),
        (
            "Closes by code",
            "Connections closed by the server per second, by close code (4001: slow "
            "consumer, 4000: heartbeat missed, 1012: drain, 1008/1009: limits).",
            [
                (
                    f"sum by (code) (rate(channels_tuning_closes_total{{{s}}}[{RATE}]))",
                    "{{code}}",
                )
            ],
            {"unit": "ops", "stack": True},
        ),
        (
            "Dropped messages by reason",
            "Frames not sent to a client, per second, by reason (slow_consumer, drop_oldest, "
            "drop_newest, coalesced, closed, inbox_full).",
            [
                (
                    "sum by (reason) "
                    f"(rate(channels_tuning_dropped_messages_total{{{s}}}[{RATE}]))",
                    "{{reason}}",
                )
            ],
            {"unit": "ops", "stack": True},
        ),
        (
            "Send queues",
            "Messages waiting in outbound queues (total), and connections with more than 10 "
            "and more than 100 queued (send_queue_depth buckets).",
            [
                (f"sum(channels_tuning_send_queue_messages{{{s}}})", "queued messages"),
                (
                    f"sum(channels_tuning_send_queue_depth_gcount{{{s}}}) - "
                    f'sum(channels_tuning_send_queue_depth_bucket{{{s}, le="10.0"}})',
                    "connections > 10 queued",
                ),
                (
                    f"sum(channels_tuning_send_queue_depth_gcount{{{s}}}) - "
                    f'sum(channels_tuning_send_queue_depth_bucket{{{s}, le="100.0"}})',
                    "connections > 100 queued",
                ),
            ],
            {},
        ),
        (
            "Group sends and their losses",
            "Group sends per second, receivers that missed one (by reason: over_capacity, "
            "deadline, raised, process_gone...), and group messages this fleet's processes "
            "missed because their inbox was full.",
            [
                (f"sum(rate(channels_tuning_group_sends_total{{{s}}}[{RATE}]))", "sends"),
                (
                    "sum by (reason) "
                    f"(rate(channels_tuning_group_send_dropped_total{{{s}}}[{RATE}]))",
                    "dropped: {{reason}}",
                ),
                (
                    "sum by (reason) "
                    f"(rate(channels_tuning_group_messages_missed_total{{{s}}}[{RATE}]))",
                    "missed: {{reason}}",
                ),
            ],
            {"unit": "ops"},
        ),
        (
            "GC pause p99 by generation",
            "99th percentile of garbage-collection pauses, by generation (gen 2 pauses stall "
            "every connection of the process).",
            [
                (
                    "histogram_quantile(0.99, sum by (le, generation) "
                    f"(rate(channels_tuning_gc_pause_seconds_bucket{{{s}}}[{RATE}])))",
                    "gen {{generation}}",
                )
            ],
            {"unit": "s"},
        ),
        (
            "GC pause distribution",
            "Collections per pause-duration bucket over time, all generations (the "
            "histogram channels_tuning_gc_pause_seconds): where the pauses fall.",
            [
                (
                    "sum by (le) "
                    f"(increase(channels_tuning_gc_pause_seconds_bucket{{{s}}}[{RATE}]))",
                    "{{le}}",
                )
            ],
            {"unit": "s", "heatmap": True},
        ),
        (
            "GC collections by generation",
            "Collections per second, by generation.",
            [
                (
                    "sum by (generation) "
                    f"(rate(channels_tuning_gc_collections_total{{{s}}}[{RATE}]))",
                    "gen {{generation}}",
                )
            ],
            {"unit": "ops"},
        ),
        (
            "asyncio tasks per process",
            "Tasks on each server's event loop: about one per idle connection; growth "
            "without connections is a leak (wsstats --tasks).",
            [(f"sum by (instance) (channels_tuning_asyncio_tasks{{{s}}})", "{{instance}}")],
            {},
        ),
        (
            "Resident memory per process",
            "RSS of each server process (prometheus_client's process collector).",
            [
                (f"sum by (instance) (process_resident_memory_bytes{{{s}}})", "{{instance}}"),
                (f"sum(process_resident_memory_bytes{{{s}}})", "total"),
            ],
            {"unit": "bytes"},
        ),
        (
            "Recovery and presence",
            "History replays and gap fills per second by outcome, and presence event frames.",
            [
                (
                    f"sum by (outcome) (rate(channels_tuning_recovery_total{{{s}}}[{RATE}]))",
                    "recovery: {{outcome}}",
                ),
                (
                    "sum by (outcome) "
                    f"(rate(channels_tuning_presence_events_total{{{s}}}[{RATE}]))",
                    "presence: {{outcome}}",
                ),
            ],
            {"unit": "ops"},
        ),
        (
            "Traffic",
            "Data frames received from and sent to clients per second, all processes.",
            [
                (f"sum(rate(channels_tuning_messages_received_total{{{s}}}[{RATE}]))", "in"),
                (f"sum(rate(channels_tuning_messages_sent_total{{{s}}}[{RATE}]))", "out"),
            ],
            {"unit": "ops"},
        ),
    ]
    result = []
    for index, (title, description, targets, options) in enumerate(rows):
        x, y = (index % 2) * 12, (index // 2) * 8
        result.append(_panel(title, description, targets, x=x, y=y, **options))
    for panel_id, panel in enumerate(result, start=1):
        panel["id"] = panel_id
    return result


def _variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    return {
        "title": "channels-tuning",
        "uid": "channels-tuning",
        "description": "WebSocket servers running channels-tuning: connections, closes, drops, "
        "send queues, group sends, GC pauses, tasks, memory.",
        "tags": ["django", "channels", "websocket"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                _variable("job", "label_values(channels_tuning_info, job)"),
                _variable("instance", 'label_values(channels_tuning_info{job=~"$job"}, instance)'),
            ]
        },
        "panels": panels(),
    }


def expressions() -> list[str]:
    """Every PromQL expression of the dashboard and the alert rules."""
    exprs = [t["expr"] for panel in panels() for t in panel["targets"]]
    for line in ALERTS_PATH.read_text().splitlines():
        if line.strip().startswith("expr:"):
            exprs.append(line.split("expr:", 1)[1].strip().strip("'\""))
    return exprs


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        DASHBOARD_PATH.write_text(render())
        print(f"wrote {DASHBOARD_PATH}")
    else:
        sys.stdout.write(render())
