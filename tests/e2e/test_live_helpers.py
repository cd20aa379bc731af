"""The shipped live-server helpers (channels_tuning.testing.live and the plugin's
ct_live_server / ct_live_redis), used as a project would: the example project's
application and settings, its chat room across two real servers on the test's Redis."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
import websockets

from channels_tuning.testing import LiveServer

EXAMPLE = {"DJANGO_SETTINGS_MODULE": "example_project.settings"}


@pytest.fixture
def ct_live_application() -> str:
    return "example_project.asgi.application"  # Django's dotted form, as settings have it


@pytest.fixture
def ct_live_env(tmp_path) -> dict[str, str]:
    return {**EXAMPLE, "DJANGO_DB_PATH": str(tmp_path / "db.sqlite3")}


async def next_chat_message(ws) -> dict:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if message.get("type") == "message":
            return message


async def test_the_live_server_fixture_serves_the_project_on_the_tests_redis(
    ct_live_server, ct_live_redis, ct_live_env, tmp_path
):
    assert ct_live_redis is not None, "redis-server is installed where the tests run"
    second = LiveServer(
        "example_project.asgi:application",
        tmp_path,
        env={**ct_live_env, "REDIS_URL": ct_live_redis.url},
    )
    with second:
        origin = ct_live_server.url
        async with (
            websockets.connect(ct_live_server.ws_url("/ws/chat/lobby/"), origin=origin) as ann,
            websockets.connect(second.ws_url("/ws/chat/lobby/"), origin=second.url) as bob,
        ):
            await asyncio.sleep(0.3)  # both memberships are in Redis
            await ann.send(json.dumps({"message": "hello from the first server"}))
            for ws in (ann, bob):
                assert (await next_chat_message(ws))["message"] == "hello from the first server"
        keys = redis.Redis.from_url(ct_live_redis.url).keys("*")
        assert keys, "the servers used the test's redis-server"
        proc = second.proc
    assert proc is not None and proc.poll() is not None  # ended by its PID at the exit


def test_a_server_that_cannot_start_says_why(tmp_path):
    with pytest.raises(RuntimeError, match="exited early"):
        LiveServer("no_such_module:application", tmp_path, env=EXAMPLE).start()
