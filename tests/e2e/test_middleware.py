"""The tuned path behind the middleware stacks projects deploy: the example project
(``AllowedHostsOriginValidator(AuthMiddlewareStack(...))``, as Channels' tutorial) on
every server, and ``manage.py runserver`` (Django's static-files handler around it).
``wsstats`` and the log say which way each consumer class writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import websockets

from tests.support.processes import REPO, free_port, run_wsstats, stop_process, wait_for_port
from tests.support.waiting import wait_until

#: What each server is called in ``wsstats`` behind AuthMiddlewareStack.
EXPECTED_PATH = {
    "tuned": "tuned daphne",
    "daphne": "daphne",
    "uvicorn": "uvicorn",
    "hypercorn": "hypercorn",
}
QUIET = {"STATS_INTERVAL": 0.5, "HEARTBEAT_INTERVAL": None}


def paths_of(env: dict[str, str]) -> dict[str, str]:
    result = run_wsstats(env, "--json")
    if result.returncode != 0:
        return {}
    snaps = json.loads(result.stdout)
    return snaps[0].get("paths", {}) if snaps else {}


@pytest.mark.parametrize("server", sorted(EXPECTED_PATH))
@pytest.mark.slow
async def test_behind_auth_middleware_stack_each_server_is_recognised(daphne_factory, server):
    """Channels' SessionMiddleware wraps ``send``: the tuned server is still found
    (through the scope's extensions), and plain daphne, uvicorn and hypercorn are
    found under the wrapper (compat.channels)."""
    proc = daphne_factory(
        server=server, application="example_project.asgi:application", tuning=QUIET
    )
    origin = f"http://127.0.0.1:{proc.port}"
    async with websockets.connect(proc.ws("/ws/echo/"), origin=origin) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await wait_until(lambda: paths_of(proc.env).get("EchoConsumer"), timeout=10)
        assert paths_of(proc.env) == {"EchoConsumer": EXPECTED_PATH[server]}
    assert f"EchoConsumer writes through {EXPECTED_PATH[server]}" in proc.log.read_text()


@pytest.mark.slow
async def test_runserver_serves_websockets_on_the_tuned_server(tmp_path):
    """``manage.py runserver`` with ``channels_tuning`` before ``daphne`` (the example's
    INSTALLED_APPS): the consumer writes through the tuned server, behind Django's
    static-files handler and AuthMiddlewareStack."""
    port = free_port()
    log = tmp_path / "runserver.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "CHANNELS_TUNING_JSON": json.dumps({**QUIET, "MAX_CONNECTIONS_PER_USER": None}),
        "CT_LOG_LEVEL": "INFO",
    }
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "example_project" / "manage.py"),
            "runserver",
            "--noreload",
            f"127.0.0.1:{port}",
        ],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc, log)
        origin = f"http://127.0.0.1:{port}"
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/echo/", origin=origin) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await wait_until(lambda: paths_of(env).get("EchoConsumer"), timeout=10)
            assert paths_of(env) == {"EchoConsumer": "tuned daphne"}
    finally:
        stop_process(proc)
    assert "EchoConsumer writes through tuned daphne" in log.read_text()
