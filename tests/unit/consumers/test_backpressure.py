"""The bounded outbound queue: its policies alone, then behind a consumer whose
server stops taking frames (a slow client)."""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings

from channels_tuning import TunedWebsocketConsumer
from channels_tuning.core.queue import OutboundQueue
from channels_tuning.exceptions import QueueOverflow as Overflow
from channels_tuning.runtime.counters import CLOSES, DROPPED
from channels_tuning.runtime.registry import registry


def text(i: int, size: int = 10) -> dict:
    return {"type": "websocket.send", "text": str(i).rjust(size, ".")}


def drain(queue: OutboundQueue) -> list[str]:
    out = []
    while queue:
        out.append(queue.get()["text"].lstrip("."))
    return out


def test_bounded_in_messages_disconnect_policy_raises():
    queue = OutboundQueue(max_messages=3, max_bytes=10_000, policy="disconnect")
    for i in range(3):
        assert queue.put(text(i)) == 0
    with pytest.raises(Overflow):
        queue.put(text(3))
    assert drain(queue) == ["0", "1", "2"]


def test_bounded_in_bytes():
    queue = OutboundQueue(max_messages=100, max_bytes=25, policy="drop_newest")
    assert queue.put(text(0)) == 0
    assert queue.put(text(1)) == 0
    assert queue.put(text(2)) == 1  # 30 bytes > 25
    assert queue.nbytes == 20
    assert drain(queue) == ["0", "1"]


def test_drop_oldest_keeps_the_newest():
    queue = OutboundQueue(max_messages=3, max_bytes=10_000, policy="drop_oldest")
    dropped = sum(queue.put(text(i)) for i in range(10))
    assert dropped == 7
    assert queue.last_drop_reason == "drop_oldest"
    assert drain(queue) == ["7", "8", "9"]


def test_drop_newest_keeps_the_first():
    queue = OutboundQueue(max_messages=3, max_bytes=10_000, policy="drop_newest")
    dropped = sum(queue.put(text(i)) for i in range(10))
    assert dropped == 7
    assert drain(queue) == ["0", "1", "2"]


def test_coalesce_keeps_latest_per_key_in_first_position():
    queue = OutboundQueue(max_messages=10, max_bytes=10_000, policy="coalesce")
    replaced = 0
    for i in range(30):
        replaced += queue.put(text(i), key=("AAA", "BBB", "CCC")[i % 3])
    assert replaced == 27
    assert queue.last_drop_reason == "coalesced"
    assert drain(queue) == ["27", "28", "29"]


def test_coalesce_falls_back_to_drop_oldest_for_new_keys():
    queue = OutboundQueue(max_messages=2, max_bytes=10_000, policy="coalesce")
    queue.put(text(0), key="a")
    queue.put(text(1), key="b")
    assert queue.put(text(2), key="c") == 1
    assert queue.put(text(3), key="b") == 1  # replaces the pending "b"
    assert drain(queue) == ["3", "2"]


def test_control_frames_bypass_the_bound():
    queue = OutboundQueue(max_messages=1, max_bytes=5, policy="disconnect")
    queue.put(text(0, size=5))
    queue.put({"type": "websocket.close", "code": 1000}, force=True)
    assert len(queue) == 2
    assert queue.clear() == 1  # only data frames count as dropped


def test_unknown_policy_rejected():
    with pytest.raises(ValueError):
        OutboundQueue(1, 1, "drop_everything")


# ------------------------------------------------------- behind a real consumer


class Broadcaster(TunedWebsocketConsumer):
    heartbeat_interval = None

    async def receive(self, text_data=None, bytes_data=None):
        for i in range(int(text_data)):
            await self.send(text_data=f"m{i}", coalesce_key=i % 2 if self.keyed else None)

    keyed = False


class SlowServer:
    """An ASGI server side whose client reads nothing until ``release()``."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.sent: list[dict] = []
        self.gate = asyncio.Event()

    async def send(self, message: dict) -> None:
        if message["type"] == "websocket.send":
            await self.gate.wait()
        self.sent.append(message)

    def release(self) -> None:
        self.gate.set()

    def texts(self) -> list[str]:
        return [m["text"] for m in self.sent if m["type"] == "websocket.send"]

    def close_codes(self) -> list[int]:
        return [m["code"] for m in self.sent if m["type"] == "websocket.close"]


async def run_slow(consumer: type, burst: int, **attrs) -> SlowServer:
    server = SlowServer()
    cls = type(consumer.__name__, (consumer,), attrs)
    app = asyncio.ensure_future(
        cls.as_asgi()({"type": "websocket", "path": "/"}, server.inbox.get, server.send)
    )
    await server.inbox.put({"type": "websocket.connect"})
    await server.inbox.put({"type": "websocket.receive", "text": str(burst)})
    await asyncio.sleep(0.05)
    server.release()
    await asyncio.sleep(0.05)
    await server.inbox.put({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(app, 2)
    assert len(registry) == 0
    return server


# The handler sends its 100 frames before the writer task first runs, so the
# queue holds the accept frame (never dropped) and four data frames.
@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("drop_oldest", ["m96", "m97", "m98", "m99"]),
        ("drop_newest", ["m0", "m1", "m2", "m3"]),
    ],
)
async def test_policies_behind_a_slow_client(policy, expected):
    with override_settings(CHANNELS_TUNING={"OVERFLOW_POLICY": policy}):
        server = await run_slow(Broadcaster, 100, send_queue_max_messages=5)
    assert server.texts() == expected
    assert DROPPED.get(("Broadcaster", policy)) == 96
    assert server.close_codes() == []


async def test_disconnect_policy_closes_4001_and_counts():
    server = await run_slow(Broadcaster, 100, send_queue_max_messages=5)
    assert server.close_codes() == [4001]
    assert CLOSES.get(("Broadcaster", "4001")) == 1
    assert server.texts() == []
    # The four queued and the one that overflowed; the rest came after the close.
    assert DROPPED.get(("Broadcaster", "slow_consumer")) == 5
    assert DROPPED.get(("Broadcaster", "closed")) == 95


async def test_coalesce_delivers_latest_per_key():
    with override_settings(CHANNELS_TUNING={"OVERFLOW_POLICY": "coalesce"}):
        server = await run_slow(Broadcaster, 100, send_queue_max_messages=5, keyed=True)
    # Only the latest of each key (0: even, 1: odd) remains, in first-queued order.
    assert server.texts() == ["m98", "m99"]
    assert DROPPED.get(("Broadcaster", "coalesced")) == 98
