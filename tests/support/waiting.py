"""Waiting in async tests without blocking the event loop, on Python 3.10 too."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import websockets

from channels_tuning.wire.heartbeat import PING_TEXT


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1
) -> None:
    """Poll ``predicate`` (run in a thread: it may do blocking I/O, an HTTP request
    or redis-cli) until it is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {timeout} s")
        await asyncio.sleep(interval)


async def until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    """Wait (polling every 20 ms, on the loop) until a cheap in-process ``predicate``
    holds; TimeoutError after ``timeout`` seconds."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


def read_at_each_loop_turn(read: Callable[[], int], until: int) -> list[int]:
    """Start recording ``read()`` once per turn of the running loop (a callback that
    schedules itself again) until it reaches ``until``; the list fills as the loop
    turns. A step that holds the loop is seen only before and after it: what a test
    of work done in slices reads."""
    seen: list[int] = []
    loop = asyncio.get_running_loop()

    def record() -> None:
        seen.append(read())
        if seen[-1] < until:
            loop.call_soon(record)

    loop.call_soon(record)
    return seen


async def close_code(ws: Any, timeout: float = 5.0) -> int:
    """Read (and ignore) frames until the server closes; return its close code."""

    async def drain() -> None:
        async for _ in ws:
            pass

    with contextlib.suppress(websockets.ConnectionClosed):
        await asyncio.wait_for(drain(), timeout)
    assert ws.close_code is not None, "server did not close"
    code: int = ws.close_code
    return code


async def recv_data(ws: Any, timeout: float = 5.0) -> Any:
    """Next frame that is not a heartbeat ping."""
    while True:
        frame = await asyncio.wait_for(ws.recv(), timeout)
        if frame != PING_TEXT:
            return frame


async def recv_chat(ws: Any, timeout: float = 5.0) -> Any:
    """The example chat's next room message: its envelope's ``data`` for a client that
    offered the channels-tuning subprotocol, the message itself for a plain one; the
    room's ``subscribed``, presence and online-list frames are skipped."""
    while True:
        message = json.loads(await recv_data(ws, timeout))
        if message.get("kind") == "data":
            return message["data"]
        if message.get("type") == "message":
            return message
