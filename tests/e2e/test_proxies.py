"""Behind the deployment guide's HAProxy and nginx configurations, as written: a client
cannot choose the address it counts as (a spoofed ``X-Forwarded-For``), so the
per-address connection limit holds for it."""

from __future__ import annotations

import http.client
import json

import pytest
import websockets

from tests.support.balancers import start_haproxy, start_nginx
from tests.support.processes import stop_process
from tests.support.waiting import recv_data, wait_until

BALANCERS = {"haproxy": start_haproxy, "nginx": start_nginx}
#: The tests' client connects from here (loopback too, but not the address a spoofer
#: would name), so that what the server sees is told apart from what was written.
CLIENT = "127.0.0.2"


def claiming(url: str, address: str):
    """A WebSocket from CLIENT whose X-Forwarded-For names ``address``."""
    return websockets.connect(
        url, additional_headers={"X-Forwarded-For": address}, open_timeout=10,
        local_addr=(CLIENT, 0),
    )  # fmt: skip


def http_get(port: int, path: str, source: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """``GET path`` on loopback ``port`` from the ``source`` address: (status, body)."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0)
    )
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


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

    try:
        async with claiming(url, "203.0.113.9") as first:
            # The balancer's view of the client, not the header.
            address, owner = json.loads(await recv_data(first))
            assert (address, owner) == (CLIENT, f"addr:{CLIENT}")
            # Another "address" from the same client is the same client: over its limit.
            async with claiming(url, "198.51.100.7") as second:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await recv_data(second, timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    finally:
        stop_process(proxy.proc)


#: The guide's balancers turned into ones that *append* to X-Forwarded-For, as a chain
#: of proxies does (a CDN in front, then the balancer): only ``TRUSTED_PROXIES`` tells
#: the addresses they wrote from those the client wrote.
APPENDING = {
    "haproxy": {"http-request set-header X-Forwarded-For %[src]": "option forwardfor"},
    "nginx": {
        "proxy_set_header X-Forwarded-For $remote_addr;": (
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"
        )
    },
}


@pytest.mark.parametrize("balancer", sorted(BALANCERS))
async def test_behind_trusted_proxies_one_limit_holds_across_processes(
    daphne_factory, tmp_path, balancer, redis_server
):
    """Balancers that append, servers without --proxy-headers, ``TRUSTED_PROXIES``
    naming the balancer, two server processes on one Redis: a client that writes a
    new address into every handshake is still one client, and its limit is one limit
    for both processes (counted per process, it would get 2 x 2)."""
    tuning = {
        "MAX_CONNECTIONS_PER_USER": 2,
        "HEARTBEAT_INTERVAL": None,
        "TRUSTED_PROXIES": ["127.0.0.1"],
    }
    servers = [daphne_factory(tuned=True, redis=redis_server, tuning=tuning) for _ in range(2)]
    proxy = BALANCERS[balancer](tmp_path, [s.port for s in servers], APPENDING[balancer])
    url = f"ws://127.0.0.1:{proxy.port}/ws/whoami/"

    try:
        async with claiming(url, "203.0.113.9") as first, claiming(url, "198.51.100.7") as second:
            for connection in (first, second):
                address, owner = json.loads(await recv_data(connection))
                assert (address, owner) == (CLIENT, f"addr:{CLIENT}")
            for spoofed in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
                async with claiming(url, spoofed) as refused:
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        await recv_data(refused, timeout=10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        labels = "consumer=WhoAmIConsumer,reason=user connection limit"
        name = "channels_tuning_rejected_connections_total"
        assert sum(server.counter(name, labels) for server in servers) == 3
    finally:
        stop_process(proxy.proc)


@pytest.mark.parametrize("balancer", sorted(BALANCERS))
async def test_behind_trusted_proxies_metrics_refuse_a_client_naming_loopback(
    daphne_factory, tmp_path, balancer
):
    """With a balancer that appends, the server's peer is the balancer (127.0.0.1):
    without ``TRUSTED_PROXIES`` /metrics would serve everyone; with it, the client's
    own address decides, whatever it wrote."""
    tuning = {"TRUSTED_PROXIES": ["127.0.0.1"]}
    server = daphne_factory(tuned=True, tuning=tuning)
    proxy = BALANCERS[balancer](tmp_path, [server.port], APPENDING[balancer])

    def get(source: str, headers: dict[str, str]) -> int:
        return http_get(proxy.port, "/metrics", source, headers)[0]

    try:
        assert get(CLIENT, {"X-Forwarded-For": "127.0.0.1"}) == 403
        assert get(CLIENT, {}) == 403
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


async def test_one_client_filling_a_server_does_not_eject_it(daphne_factory, tmp_path):
    """One client opens ``MAX_CONNECTIONS`` through the guide's HAProxy: the server
    stays UP (its health check says 200 "full"), so another client still reaches it
    and is told 1013, instead of HAProxy's 503 "no server available" that a DOWN
    server gave every client."""
    import asyncio

    server = daphne_factory(
        tuned=True, tuning={"MAX_CONNECTIONS": 5, "HEARTBEAT_INTERVAL": None}, health_port=True
    )
    proxy = start_haproxy(tmp_path, [server.port], check_ports=[server.health_port])
    url = proxy.ws("/ws/echo/")
    filler = [websockets.connect(url, open_timeout=10) for _ in range(5)]
    try:
        opened = [await connection.__aenter__() for connection in filler]
        await wait_until(lambda: server.stats()["connections"] == 5)
        await asyncio.sleep(2)  # four of HAProxy's checks (500 ms apart, fall 2)
        assert proxy.server_states() == {"s1": "UP"}
        async with websockets.connect(url, open_timeout=10, local_addr=(CLIENT, 0)) as other:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv_data(other, timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert proxy.server_states() == {"s1": "UP"}
        for connection in opened:
            await connection.close()
    finally:
        stop_process(proxy.proc)


@pytest.mark.slow
async def test_a_server_that_stops_accepting_in_a_storm_stays_up(daphne_factory, tmp_path):
    """While three upgrades wait 3 s for their consumer (``--max-pending-upgrades 3``,
    as 500 do in a reconnect storm), the server does not read its port (the accept
    gate). HAProxy, configured as the guide says, checks it on ``--health-port``,
    which the gate never pauses: the server stays UP, and a client that comes
    meanwhile waits and is served, instead of HAProxy's 503 "no server available".
    A second HAProxy checking the serving port instead (the guide's configuration
    before ``--health-port``) marks the same server DOWN."""
    import asyncio

    server = daphne_factory(
        tuned=True,
        tuning={"HEARTBEAT_INTERVAL": None},
        extra_args=("--max-pending-upgrades", "3"),
        health_port=True,
    )
    proxy = start_haproxy(tmp_path, [server.port], check_ports=[server.health_port])
    on_serving_port = start_haproxy(tmp_path, [server.port])
    try:
        await wait_until(
            lambda: proxy.server_states() == on_serving_port.server_states() == {"s1": "UP"},
            timeout=10,
        )
        slow = [
            asyncio.ensure_future(websockets.connect(proxy.ws("/ws/slow-accept/"), open_timeout=10))
            for _ in "abc"
        ]
        # (Not /_stats: the serving port is not read until the gate opens.)
        await wait_until(lambda: "not accepting connections" in server.log.read_text())
        late = asyncio.ensure_future(websockets.connect(proxy.ws("/ws/echo/"), open_timeout=10))
        seen, seen_on_serving_port = set(), set()
        while not all(task.done() for task in slow):
            seen.add(proxy.server_states()["s1"])
            seen_on_serving_port.add(on_serving_port.server_states()["s1"])
            await asyncio.sleep(0.05)
        assert seen == {"UP"}
        assert "DOWN" in seen_on_serving_port
        opened = [*await asyncio.gather(*slow), await asyncio.wait_for(late, 10)]
        await opened[-1].send("after")
        assert await recv_data(opened[-1]) == "after"
        for connection in opened:
            await connection.close()
    finally:
        stop_process(proxy.proc)
        stop_process(on_serving_port.proc)


async def test_the_health_port_answers_the_health_check_only(daphne_factory):
    """``--health-port``: the health check (and ``?ready``) as on the serving port;
    any other path, a WebSocket upgrade included, 404 before Django."""
    import urllib.error
    import urllib.request

    server = daphne_factory(tuned=True, health_port=True)
    base = f"http://127.0.0.1:{server.health_port}"
    for path in ("/_ct/health", "/_ct/health?ready"):
        with urllib.request.urlopen(base + path, timeout=10) as answer:
            assert json.loads(answer.read())["status"] == "ok"
    for path in ("/", "/metrics", "/_stats"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + path, timeout=10)
        assert refused.value.code == 404
    with pytest.raises(websockets.InvalidStatus) as upgrade:
        await websockets.connect(f"ws://127.0.0.1:{server.health_port}/ws/echo/", open_timeout=10)
    assert upgrade.value.response.status_code == 404
    log = server.log.read_text()
    assert "Traceback" not in log
    assert "GET / from" in log and "on the health port: 404" in log  # one line a second
    rejected = server.stats()["counters"]["channels_tuning_rejected_connections_total"]
    assert rejected == {"consumer=(server),reason=health_port_only": 4}


async def test_the_health_answer_details_only_for_allowed_unrelayed_requests(daphne_factory):
    """Counts and the pid for a check from an allowed address (loopback) that no proxy
    relayed; the status alone for anyone else."""
    server = daphne_factory(tuned=True)

    def get(source: str, headers: dict[str, str]) -> dict:
        return json.loads(http_get(server.port, "/_ct/health", source, headers)[1])

    assert get("127.0.0.1", {}) == {"status": "ok", "connections": 0, "pid": server.pid}
    assert get(CLIENT, {}) == {"status": "ok"}
    assert get("127.0.0.1", {"X-Forwarded-For": "127.0.0.1"}) == {"status": "ok"}


@pytest.mark.parametrize("balancer", sorted(BALANCERS))
async def test_metrics_refuse_a_client_that_names_an_allowed_address(
    daphne_factory, tmp_path, balancer
):
    """/metrics answers METRICS_ALLOWED_ADDRESSES (loopback by default): a client from
    elsewhere that writes ``X-Forwarded-For: 127.0.0.1`` is still refused."""
    server = daphne_factory(tuned=True, extra_args=("--proxy-headers",))
    proxy = BALANCERS[balancer](tmp_path, [server.port])

    def get(source: str, headers: dict[str, str]) -> int:
        return http_get(proxy.port, "/metrics", source, headers)[0]

    try:
        assert get("127.0.0.1", {}) == 200  # from an allowed address: served
        assert get(CLIENT, {"X-Forwarded-For": "127.0.0.1"}) == 403
    finally:
        stop_process(proxy.proc)
