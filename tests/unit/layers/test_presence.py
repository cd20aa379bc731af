"""Presence on the in-memory layer: entries, counts, identities, coalesced events.
Across processes, with real servers and Redis: ``tests/e2e/test_presence.py``."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from channels_tuning import TunedWebsocketConsumer
from channels_tuning.layers import presence as presence_module
from channels_tuning.layers.presence import MemoryPresence, presence_policy
from channels_tuning.presence import presence, presence_count
from channels_tuning.runtime.counters import PRESENCE_EVENTS
from channels_tuning.wire.subprotocol import SUBPROTOCOL

SETTINGS = {
    "CHANNELS_TUNING": {
        "PRESENCE": {"room.*": {"events": True}, "quiet.*": {}},
        "PRESENCE_TTL": 3,
    }
}


class Member(TunedWebsocketConsumer):
    heartbeat_interval = None

    async def connect(self):
        await self.join_group(self.scope["url_route"]["kwargs"]["group"])
        await self.accept()

    def presence_identity(self):
        return self.scope["url_route"]["kwargs"]["who"]


@pytest.fixture(autouse=True)
async def _fresh_layer(monkeypatch):
    monkeypatch.setattr(presence_module, "EVENT_INTERVAL", 0.05)
    layer = get_channel_layer()
    await layer.flush()
    layer.presence = MemoryPresence(layer)
    with override_settings(**SETTINGS):
        yield
    await layer.flush()


async def connect(group, who):
    comm = WebsocketCommunicator(Member.as_asgi(), "/", subprotocols=[SUBPROTOCOL])
    comm.scope["url_route"] = {"kwargs": {"group": group, "who": who}}
    assert (await comm.connect())[0]
    return comm


async def test_entries_and_counts_follow_connections():
    alice = await connect("quiet.a", "alice")
    bob = await connect("quiet.a", "bob")
    assert await presence_count("quiet.a") == 2
    assert sorted(e.identity for e in await presence("quiet.a")) == ["alice", "bob"]
    await bob.disconnect()
    assert [e.identity for e in await presence("quiet.a")] == ["alice"]
    await alice.disconnect()
    assert await presence_count("quiet.a") == 0
    with pytest.raises(ValueError, match="PRESENCE"):
        await presence_count("other")  # not configured: an error, not a silent 0


async def test_events_are_coalesced_per_interval():
    watcher = await connect("room.a", "watcher")
    first = json.loads((await watcher.receive_output(timeout=1))["text"])
    assert first == {
        "kind": "presence",
        "topic": "room.a",
        "data": {"joined": ["watcher"], "left": []},
    }
    # A reconnect within one interval cancels out: no event.
    carol = await connect("room.a", "carol")
    await carol.disconnect()
    carol = await connect("room.a", "carol")
    dave = await connect("room.a", "dave")
    event = json.loads((await watcher.receive_output(timeout=1))["text"])
    assert event["data"] == {"joined": ["carol", "dave"], "left": []}
    await dave.disconnect()
    event = json.loads((await watcher.receive_output(timeout=1))["text"])
    assert event["data"] == {"joined": [], "left": ["dave"]}
    await carol.disconnect()
    event = json.loads((await watcher.receive_output(timeout=1))["text"])
    assert event["data"] == {"joined": [], "left": ["carol"]}
    await watcher.disconnect()
    assert PRESENCE_EVENTS.get(("sent",)) >= 3


async def test_a_storm_of_reconnects_sends_at_most_one_event_per_interval():
    watcher = await connect("room.b", "watcher")
    await watcher.receive_output(timeout=1)
    PRESENCE_EVENTS.clear()
    for _ in range(5):
        comms = [await connect("room.b", f"u{i}") for i in range(50)]
        for comm in comms:
            await comm.disconnect()
    await asyncio.sleep(0.2)
    events = 0
    while not await watcher.receive_nothing(0.1):
        await watcher.receive_output()
        events += 1
    # 500 joins and 500 leaves: a handful of events, none once it is over.
    assert events == PRESENCE_EVENTS.get(("sent",)) < 20
    assert await presence_count("room.b") == 1
    await watcher.disconnect()


@override_settings(CHANNELS_TUNING={"PRESENCE": {"chat.*": {"events": False}}})
async def test_a_group_name_that_misses_a_pattern_is_said_once_and_named_in_errors(caplog):
    """Channels' tutorial names groups chat_<room>; a "chat.*" pattern matches none."""
    with pytest.raises(ValueError) as raised:
        await presence_count("chat_lobby")
    message = str(raised.value)
    assert "CHANNELS_TUNING['PRESENCE']" in message
    assert "'chat.*' looks meant for it" in message and "'chat_*'" in message
    with caplog.at_level("WARNING", logger="channels_tuning"):
        for group in ("chat_lobby", "chat_other", "unrelated"):
            presence_policy(group)
    warnings = [r.getMessage() for r in caplog.records if "matches no PRESENCE" in r.getMessage()]
    assert len(warnings) == 1 and "'chat_lobby'" in warnings[0]


async def test_stop_ends_the_trackers_task_and_the_next_entry_starts_it():
    """What the tests' fixtures call before their loop closes (``ct_layer`` too)."""

    def running():
        return [t for t in asyncio.all_tasks() if t.get_name() == "channels_tuning.presence"]

    ann = await connect("room.s", "ann")
    assert running()
    await get_channel_layer().presence.stop()
    assert running() == []
    bob = await connect("room.s", "bob")
    assert running()
    assert await presence_count("room.s") == 2
    await ann.disconnect()
    await bob.disconnect()
    await get_channel_layer().presence.stop()
    assert running() == []
