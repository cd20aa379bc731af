"""The fake clock users drive their consumers' timers with: heartbeats, the idle
timeout and the lifetime act at the fake time, in order, without sleeping."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings

from channels_tuning import TunedJsonWebsocketConsumer
from channels_tuning.runtime import clock as package_clock
from channels_tuning.testing import TunedCommunicator, capture_closes, fake_clock
from channels_tuning.wire.heartbeat import PING_TEXT

# The defaults, written out: heartbeat every 25 s, closed after 60 s of silence.
TIMERS = {"HEARTBEAT_INTERVAL": 25.0, "IDLE_TIMEOUT": 60.0, "SCHEDULER_TICK": 1.0}


class Echo(TunedJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json(content)


@pytest.fixture(autouse=True)
async def _fresh_layer(ct_layer):
    yield


async def test_a_client_that_never_answers_is_closed_4000_at_the_idle_timeout():
    began = time.monotonic()
    with override_settings(CHANNELS_TUNING=TIMERS), fake_clock() as clock:
        comm = TunedCommunicator(Echo.as_asgi(), "/")
        assert (await comm.connect())[0]
        with capture_closes() as closed:
            await clock.advance(59)
            assert closed == []  # pinged at 25 and 50, not answered yet
            await clock.advance(2)
        assert closed.codes() == [4000]
        # What the client saw: the two pings, then the close.
        seen = [await comm.receive_output() for _ in range(3)]
        assert [m.get("text") for m in seen[:2]] == [PING_TEXT, PING_TEXT]
        assert seen[2] == {"type": "websocket.close", "code": 4000, "reason": "heartbeat timeout"}
        await comm.disconnect()
    assert time.monotonic() - began < 5  # a minute of timers, without sleeping it


async def test_a_client_that_answers_stays_open_for_an_hour():
    with override_settings(CHANNELS_TUNING=TIMERS), fake_clock() as clock:
        comm = TunedCommunicator(Echo.as_asgi(), "/")
        assert (await comm.connect())[0]
        with capture_closes() as closed:
            for _ in range(3600 // 20):
                await clock.advance(20)
                await comm.receive_nothing(0)  # reads, so the ping is answered
        assert closed == []
        assert comm.pings == 3600 // 25
        await comm.send_json_to({"still": "open"})
        assert await comm.receive_json_from() == {"still": "open"}
        await comm.disconnect()


async def test_the_lifetime_ends_a_connection_with_1001_at_the_fake_time():
    tuning = {**TIMERS, "HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None}
    tuning.update(MAX_LIFETIME=600, LIFETIME_JITTER=0)
    with override_settings(CHANNELS_TUNING=tuning), fake_clock() as clock:
        comm = TunedCommunicator(Echo.as_asgi(), "/")
        assert (await comm.connect())[0]
        await clock.advance(599)
        assert await comm.receive_nothing(0)
        await clock.advance(1)
        close = await comm.receive_output()
        assert (close["type"], close["code"]) == ("websocket.close", 1001)
        await comm.disconnect()


async def test_the_fixture_is_the_fake_clock_for_the_whole_test(ct_fake_clock):
    assert package_clock.monotonic == ct_fake_clock.monotonic
    with override_settings(CHANNELS_TUNING=TIMERS):
        comm = TunedCommunicator(Echo.as_asgi(), "/")
        assert (await comm.connect())[0]
        await ct_fake_clock.advance(25)
        assert await comm.receive_nothing(0) and comm.pings == 1  # pinged at 25, answered
        await comm.disconnect()


async def test_the_package_clock_is_moved_only_inside_the_block():
    with fake_clock() as clock:
        assert package_clock.monotonic() == clock.monotonic()
        before = clock.monotonic()
        await clock.advance(3600)
        assert package_clock.monotonic() == before + 3600
        with pytest.raises(ValueError):
            await clock.advance(-1)
    assert package_clock.monotonic is time.monotonic
