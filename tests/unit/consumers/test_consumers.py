"""Unit tests of the tuned consumers with Channels' WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from channels_tuning import TunedJsonWebsocketConsumer
from channels_tuning.runtime.counters import CLOSES, DROPPED, REJECTED
from channels_tuning.runtime.registry import registry
from channels_tuning.wire.heartbeat import PING_BYTES, PING_TEXT, PONG_BYTES, PONG_TEXT
from channels_tuning.wire.subprotocol import SUBPROTOCOL
from tests.support.consumers import Echo, Grouped, communicator

FAST = {"SCHEDULER_TICK": 0.02, "HEARTBEAT_INTERVAL": 0.1, "IDLE_TIMEOUT": 0.35}


class JsonEcho(TunedJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json(content)


class BinaryOnly(Echo):
    accept_text_frames = False
    heartbeat_binary = True


class Limited(Echo):
    max_connections_per_consumer = 2


async def expect_close(comm: WebsocketCommunicator, code: int, timeout: float = 2.0) -> None:
    """Read frames until the close; pings in between are allowed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        output = await comm.receive_output(timeout=max(remaining, 0.01))
        if output["type"] == "websocket.close":
            assert output.get("code") == code, output
            # What daphne delivers once the close handshake is done.
            await comm.disconnect(code=code)
            return
        assert output.get("text") == PING_TEXT or output.get("bytes") == PING_BYTES, output


@pytest.fixture(autouse=True)
async def _no_leftover_connections():
    yield
    assert len(registry) == 0, registry.describe()


def group_members(group: str) -> dict:
    return get_channel_layer().groups.get(group, {})


# --------------------------------------------------------------------- heartbeat


@override_settings(CHANNELS_TUNING=FAST)
async def test_server_sends_pings_and_swallows_pongs():
    comm = communicator(Echo, tuned_client=True)
    assert (await comm.connect())[0]
    assert await comm.receive_from(timeout=1) == PING_TEXT
    await comm.send_to(text_data=PONG_TEXT)  # swallowed, not echoed
    await comm.send_to(text_data="hello")
    # The echo arrives (pings may come between); the pong never comes back.
    received = []
    while "hello" not in received:
        received.append(await comm.receive_from(timeout=1))
    assert set(received) <= {"hello", PING_TEXT}, received
    assert PONG_TEXT not in received
    await comm.disconnect()


@override_settings(CHANNELS_TUNING=FAST)
async def test_client_ping_gets_pong_in_same_form():
    comm = communicator(Echo, tuned_client=True)
    await comm.connect()
    await comm.send_to(text_data=PING_TEXT)
    frames = [await comm.receive_output(timeout=1) for _ in range(2)]
    assert {"type": "websocket.send", "text": PONG_TEXT} in frames
    await comm.send_to(bytes_data=b"\x00\x09")
    frames = [await comm.receive_output(timeout=1) for _ in range(3)]
    assert {"type": "websocket.send", "bytes": PONG_BYTES} in frames
    await comm.disconnect()


@override_settings(CHANNELS_TUNING=FAST)
async def test_silent_client_is_closed_with_4000_and_counted():
    comm = communicator(Echo, tuned_client=True)
    await comm.connect()
    started = asyncio.get_running_loop().time()
    await expect_close(comm, 4000)
    elapsed = asyncio.get_running_loop().time() - started
    assert 0.3 <= elapsed < 1.5
    assert CLOSES.get(("Echo", "4000")) == 1


@override_settings(CHANNELS_TUNING=FAST)
async def test_answering_pings_keeps_connection_past_idle_timeout():
    comm = communicator(Echo, tuned_client=True)
    await comm.connect()
    deadline = asyncio.get_running_loop().time() + 1.0  # ~3 idle timeouts
    while asyncio.get_running_loop().time() < deadline:
        frame = await comm.receive_output(timeout=1)
        assert frame.get("text") == PING_TEXT, frame
        await comm.send_to(text_data=PONG_TEXT)
    await comm.send_to(text_data="still here")
    frames = [await comm.receive_from(timeout=1) for _ in range(2)]
    assert "still here" in frames
    await comm.disconnect()
    assert CLOSES.total() == 0


@override_settings(CHANNELS_TUNING=FAST)
async def test_binary_consumer_pings_in_binary():
    comm = communicator(BinaryOnly, tuned_client=True)
    await comm.connect()
    assert (await comm.receive_output(timeout=1))["bytes"] == PING_BYTES
    await comm.send_to(bytes_data=PONG_BYTES)  # swallowed, not echoed
    await comm.send_to(bytes_data=b"data")
    received = []
    while b"data" not in received:
        received.append((await comm.receive_output(timeout=1))["bytes"])
    assert set(received) <= {b"data", PING_BYTES}, received
    await comm.send_to(text_data="text")  # text to a binary-only consumer: 1003
    await expect_close(comm, 1003)


@override_settings(CHANNELS_TUNING=FAST)
async def test_a_plain_client_gets_only_what_the_consumer_sends():
    """No ``ct.ping`` to a page that did not offer the channels-tuning subprotocol, and
    its own ``{"type":"ct.ping"}`` is data like any other (echoed here)."""
    comm = communicator(Echo)
    connected, subprotocol = await comm.connect()
    assert connected and subprotocol is None
    assert await comm.receive_nothing(timeout=1.0)  # 3 heartbeat intervals, 2 idle timeouts
    await comm.send_to(text_data=PING_TEXT)
    assert await comm.receive_from(timeout=1) == PING_TEXT  # the echo, not a pong
    await comm.disconnect()
    assert CLOSES.total() == 0


@override_settings(CHANNELS_TUNING=FAST)
async def test_the_channels_tuning_subprotocol_is_selected_when_offered():
    comm = communicator(Echo, tuned_client=True)
    connected, subprotocol = await comm.connect()
    assert connected and subprotocol == SUBPROTOCOL
    await comm.disconnect()


@override_settings(CHANNELS_TUNING={**FAST, "CLIENT_PROTOCOL": "always"})
async def test_client_protocol_always_treats_every_client_as_a_tuned_one():
    comm = communicator(Echo)
    connected, subprotocol = await comm.connect()
    assert connected and subprotocol is None  # nothing offered, nothing selected
    assert await comm.receive_from(timeout=1) == PING_TEXT
    await comm.disconnect()


# ------------------------------------------------------------------------ limits


@override_settings(CHANNELS_TUNING={"MAX_MESSAGE_SIZE": 10})
async def test_oversized_message_closes_1009():
    comm = communicator(Echo)
    await comm.connect()
    await comm.send_to(text_data="0123456789")
    assert await comm.receive_from() == "0123456789"
    await comm.send_to(bytes_data=b"x" * 11)
    await expect_close(comm, 1009)
    assert CLOSES.get(("Echo", "1009")) == 1


@override_settings(CHANNELS_TUNING={"MAX_MESSAGE_SIZE": 10})
async def test_multibyte_text_is_measured_in_utf8_bytes():
    comm = communicator(Echo)
    await comm.connect()
    await comm.send_to(text_data="é" * 5)  # 10 bytes
    assert await comm.receive_from() == "é" * 5
    await comm.send_to(text_data="é" * 6)  # 6 characters, 12 bytes
    await expect_close(comm, 1009)


@override_settings(CHANNELS_TUNING={"RATE_LIMIT": 5, "RATE_BURST": 3})
async def test_flood_closes_1008_after_burst():
    comm = communicator(Echo)
    await comm.connect()
    for i in range(3):
        await comm.send_to(text_data=str(i))
    for i in range(3):
        assert await comm.receive_from() == str(i)
    await comm.send_to(text_data="one too many")
    await expect_close(comm, 1008)
    assert CLOSES.get(("Echo", "1008")) == 1


@override_settings(CHANNELS_TUNING={"RATE_LIMIT": 20, "RATE_BURST": 1})
async def test_rate_limit_refills_over_time():
    comm = communicator(Echo)
    await comm.connect()
    for i in range(3):
        await comm.send_to(text_data=str(i))
        assert await comm.receive_from() == str(i)
        await asyncio.sleep(0.06)  # > 1/20 s: one token back
    await comm.disconnect()
    assert CLOSES.total() == 0


async def test_connection_limit_per_consumer_closes_1013_and_leaks_nothing():
    first, second, third = communicator(Limited), communicator(Limited), communicator(Limited)
    assert (await first.connect())[0]
    assert (await second.connect())[0]
    assert registry.count(Limited) == 2
    assert (await third.connect())[0]  # accepted, then told to come back later
    await expect_close(third, 1013)
    assert registry.count(Limited) == 2
    assert REJECTED.get(("Limited", "consumer connection limit")) == 1
    await first.disconnect()
    again = communicator(Limited)
    assert (await again.connect())[0]
    await again.send_to(text_data="in")
    assert await again.receive_from() == "in"
    await again.disconnect()
    await second.disconnect()
    assert registry.count(Limited) == 0


@override_settings(CHANNELS_TUNING={"MAX_CONNECTIONS": 1})
async def test_process_connection_limit_counts_all_consumers():
    first = communicator(Echo)
    await first.connect()
    other = communicator(JsonEcho)
    await other.connect()
    await expect_close(other, 1013)
    await first.disconnect()
    assert len(registry) == 0


@override_settings(
    CHANNELS_TUNING={"SCHEDULER_TICK": 0.02, "MAX_LIFETIME": 0.2, "LIFETIME_JITTER": 0.5}
)
async def test_max_lifetime_closes_1001_within_jitter():
    comm = communicator(Echo)
    await comm.connect()
    started = asyncio.get_running_loop().time()
    await expect_close(comm, 1001)
    elapsed = asyncio.get_running_loop().time() - started
    assert 0.09 <= elapsed <= 0.5


# -------------------------------------------------------------------- bad input


async def test_malformed_json_closes_1007_and_counts():
    comm = communicator(JsonEcho)
    await comm.connect()
    await comm.send_json_to({"ok": 1})
    assert await comm.receive_json_from() == {"ok": 1}
    await comm.send_to(text_data="{not json")
    await expect_close(comm, 1007)
    assert CLOSES.get(("JsonEcho", "1007")) == 1


async def test_binary_frame_to_json_consumer_closes_1003():
    comm = communicator(JsonEcho)
    await comm.connect()
    await comm.send_to(bytes_data=b"\x01")
    await expect_close(comm, 1003)


async def test_text_frame_to_binary_only_consumer_closes_1003():
    comm = communicator(BinaryOnly)
    await comm.connect()
    await comm.send_to(bytes_data=b"\x01\x02")
    assert await comm.receive_from() == b"\x01\x02"
    await comm.send_to(text_data="text")
    await expect_close(comm, 1003)
    assert CLOSES.get(("BinaryOnly", "1003")) == 1


# ----------------------------------------------------------------- group hygiene


@pytest.fixture
def grouped():
    Grouped.disconnect_codes = []
    return Grouped


async def test_groups_left_on_normal_disconnect(grouped):
    comm = communicator(grouped)
    await comm.connect()
    layer = get_channel_layer()
    assert len(group_members("static-group")) == 1
    assert len(group_members("dynamic-group")) == 1
    await layer.group_send("dynamic-group", {"type": "relay", "text": "via group"})
    assert await comm.receive_from() == "via group"
    await comm.disconnect(code=1000)
    assert group_members("static-group") == {}
    assert group_members("dynamic-group") == {}
    assert grouped.disconnect_codes == [1000]
    assert len(registry) == 0


async def test_leave_group_stops_delivery(grouped):
    comm = communicator(grouped)
    await comm.connect()
    await comm.send_to(text_data="leave")
    assert await comm.receive_from() == "left"
    assert group_members("dynamic-group") == {}
    assert len(group_members("static-group")) == 1
    await comm.disconnect()
    assert group_members("static-group") == {}


async def test_groups_left_and_1011_when_handler_raises(grouped):
    comm = communicator(grouped)
    await comm.connect()
    await comm.send_to(text_data="crash")
    await expect_close(comm, 1011)
    assert group_members("static-group") == {}
    assert group_members("dynamic-group") == {}
    assert grouped.disconnect_codes == [1011]
    assert CLOSES.get(("Grouped", "1011")) == 1


async def test_groups_left_when_application_task_is_cancelled(grouped):
    comm = communicator(grouped)
    await comm.connect()
    await comm.send_to(text_data="hang")
    await asyncio.sleep(0.05)
    comm.future.cancel()  # what daphne does to every application on shutdown
    with pytest.raises(asyncio.CancelledError):
        await comm.future  # cleans up first, then re-raises (asyncio's contract)
    assert group_members("static-group") == {}
    assert group_members("dynamic-group") == {}
    assert grouped.disconnect_codes == [1006]
    assert len(registry) == 0


async def test_registry_tracks_connections_and_groups(grouped):
    comm = communicator(grouped)
    await comm.connect()
    (consumer,) = registry
    # Joined: the set of groups being joined is gone (216 bytes per connection).
    assert consumer._joining is None and consumer.tracked_group_count() == 2
    (row,) = registry.describe()
    assert row["consumer"].endswith("Grouped")
    assert row["groups"] == ["dynamic-group", "static-group"]
    assert row["idle_seconds"] >= 0
    await comm.disconnect()
    assert registry.describe() == []


def test_tracked_groups_one_group_holds_no_set():
    """Most connections join one group: tracked as its name, a set only from the
    second (216 bytes for the connection's life otherwise); leaving works both ways."""
    from channels_tuning.consumers.memberships import MembershipMixin

    memberships = MembershipMixin()
    memberships.track_group("room")
    memberships.track_group("room")
    assert memberships.tracked_groups() == {"room"} and memberships.tracked_group_count() == 1
    assert not isinstance(memberships._joined, set)
    memberships.track_group("lobby")
    assert memberships.tracked_groups() == {"room", "lobby"}
    memberships.untrack_group("room")
    memberships.untrack_group("elsewhere")
    assert memberships.tracked_groups() == {"lobby"}
    assert not memberships.wants_membership_hooks("lobby")
    assert memberships.wants_membership_hooks("room")
    memberships.untrack_group("lobby")
    assert memberships.tracked_group_count() == 0
    memberships.track_group("room")
    memberships.untrack_group("room")
    assert memberships.tracked_groups() == frozenset() and memberships._joined is None


async def test_layer_events_reach_handlers_in_order(grouped):
    comm = communicator(grouped)
    await comm.connect()
    layer = get_channel_layer()
    for i in range(20):
        await layer.group_send("static-group", {"type": "relay", "text": str(i)})
    assert [await comm.receive_from() for _ in range(20)] == [str(i) for i in range(20)]
    await comm.disconnect()
    assert DROPPED.total() == 0


async def test_json_consumer_send_json_is_compact():
    comm = communicator(JsonEcho)
    await comm.connect()
    await comm.send_to(text_data=json.dumps({"a": [1, 2]}))
    assert await comm.receive_from() == '{"a":[1,2]}'
    await comm.disconnect()


@override_settings(CHANNELS_TUNING={"MAX_CONNECTIONS_PER_USER": 2, "HEARTBEAT_INTERVAL": None})
async def test_per_user_limit_counts_one_client_address_across_tabs():
    """One user with a script or many tabs cannot take every slot of the process."""

    def from_address(address: str) -> WebsocketCommunicator:
        c = communicator(Echo)
        c.scope["client"] = (address, 50000)
        return c

    first, second = from_address("10.0.0.1"), from_address("10.0.0.1")
    assert (await first.connect())[0] and (await second.connect())[0]
    third = from_address("10.0.0.1")
    assert (await third.connect())[0]  # accepted, then told to come back later
    assert await third.receive_output() == {
        "type": "websocket.close",
        "code": 1013,
        "reason": "user connection limit",
    }
    other = from_address("10.0.0.2")
    assert (await other.connect())[0]
    await other.send_to(text_data="hi")
    assert await other.receive_from() == "hi"
    for c in (first, second, third, other):
        await c.disconnect()
    assert REJECTED.get(("Echo", "user connection limit")) == 1
