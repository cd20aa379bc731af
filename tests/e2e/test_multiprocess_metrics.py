"""prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR), as django-prometheus
exports it: two real server processes sharing the directory; a scrape of either shows
the package's metrics summed over both."""

from __future__ import annotations

import pytest
import websockets

from tests.support.waiting import recv_data, wait_until


def labels(**pairs: str) -> frozenset:
    return frozenset(pairs.items())


@pytest.mark.slow
async def test_metrics_are_summed_over_processes_in_multiprocess_mode(daphne_factory, tmp_path):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    first = daphne_factory(tuned=True, **env)
    second = daphne_factory(tuned=True, **env)
    clients = [await websockets.connect(first.ws("/ws/echo/")) for _ in range(3)]
    clients += [await websockets.connect(second.ws("/ws/echo/")) for _ in range(2)]
    for ws in clients:
        await ws.send("hi")
        assert await recv_data(ws) == "hi"
    first.stats(gc_collect=True)  # a collection, observed into the pause histogram

    def scraped() -> dict:
        return first.metrics()

    open_key = ("channels_tuning_open_connections", labels(consumer="EchoConsumer"))
    received = ("channels_tuning_messages_received_total", labels())
    await wait_until(lambda: scraped().get(open_key) == 5 and scraped().get(received) == 5)
    metrics = second.metrics()  # either process answers for both
    assert metrics[open_key] == 5
    assert metrics[("channels_tuning_connections_total", labels(consumer="EchoConsumer"))] == 5
    assert metrics[("channels_tuning_gc_pause_seconds_count", labels(generation="2"))] >= 1
    for ws in clients:
        await ws.close()
    # Gauges follow the connections down (a consumer class with none left reads 0).
    await wait_until(lambda: scraped().get(open_key) == 0)
