"""Behind the deployment guide's HAProxy and nginx configurations, as written: a client
cannot choose the address it counts as (a spoofed ``X-Forwarded-For``), so the
per-address connection limit holds for it."""

from __future__ import annotations

import json

import pytest
import websockets

from tests.support.balancers import start_haproxy, start_nginx
from tests.support.processes import stop_process
from tests.support.waiting import recv_data

BALANCERS = {"haproxy": start_haproxy, "nginx": start_nginx}
#: The tests' client connects from here (loopback too, but not the address a spoofer
#: would name), so that what the server sees is told apart from what was written.
CLIENT = "127.0.0.2"


@pytest.mark.parametrize("balancer", sorted(BALANCERS))
async def test_a_spoofed_forwarded_for_neither_changes_the_address_nor_the_limit(
    daphne_factory, tmp_path, balancer
):
    server = daphne_factory(
        tuned=True,
        tuning={"MAX_CONNECTIONS_PER_USER": 1, "HEARTBEAT_INTERVAL": None},
        extra_args=("--proxy-headers",),
    )
    proxy = BALANCERS[balancer](tmp_path, [server.port])
    url = f"ws://127.0.0.1:{proxy.port}/ws/whoami/"

    def claiming(address: str):
        """A connection from CLIENT whose X-Forwarded-For names ``address``."""
        return websockets.connect(
            url,
            additional_headers={"X-Forwarded-For": address},
            open_timeout=10,
            local_addr=(CLIENT, 0),
        )

    try:
        async with claiming("203.0.113.9") as first:
            # The balancer's view of the client, not the header.
            address, owner = json.loads(await recv_data(first))
            assert (address, owner) == (CLIENT, f"addr:{CLIENT}")
            # Another "address" from the same client is the same client: over its limit.
            async with claiming("198.51.100.7") as second:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await recv_data(second, timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    finally:
        stop_process(proxy.proc)


@pytest.mark.parametrize("balancer", sorted(BALANCERS))
async def test_the_health_endpoint_answers_the_balancer_not_clients(
    daphne_factory, tmp_path, balancer
):
    """The health check says how many connections a process holds and its pid: for the
    balancer (which checks the server directly), not for clients through it."""
    import urllib.error
    import urllib.request

    server = daphne_factory(tuned=True)
    proxy = BALANCERS[balancer](tmp_path, [server.port])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/_ct/health") as direct:
            assert json.loads(direct.read())["status"] == "ok"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{proxy.port}/_ct/health", timeout=10)
        assert refused.value.code == 404
    finally:
        stop_process(proxy.proc)


@pytest.mark.parametrize("balancer", sorted(BALANCERS))
async def test_metrics_refuse_a_client_that_names_an_allowed_address(
    daphne_factory, tmp_path, balancer
):
    """/metrics answers METRICS_ALLOWED_ADDRESSES (loopback by default): a client from
    elsewhere that writes ``X-Forwarded-For: 127.0.0.1`` is still refused."""
    import http.client

    server = daphne_factory(tuned=True, extra_args=("--proxy-headers",))
    proxy = BALANCERS[balancer](tmp_path, [server.port])

    def get(source: str, headers: dict[str, str]) -> int:
        connection = http.client.HTTPConnection(
            "127.0.0.1", proxy.port, timeout=10, source_address=(source, 0)
        )
        try:
            connection.request("GET", "/metrics", headers=headers)
            return connection.getresponse().status
        finally:
            connection.close()

    try:
        assert get("127.0.0.1", {}) == 200  # from an allowed address: served
        assert get(CLIENT, {"X-Forwarded-For": "127.0.0.1"}) == 403
    finally:
        stop_process(proxy.proc)
