"""Request/reply to a consumer's declared methods, through TunedCommunicator on the
in-memory layer; the Python client against a real server is in tests/e2e/test_topics.py."""

from __future__ import annotations

import asyncio
import logging

import pytest

from channels_tuning import RequestError, TunedJsonWebsocketConsumer, rpc
from channels_tuning.client import RequestFailed
from channels_tuning.runtime.counters import REQUESTS
from channels_tuning.testing import TunedCommunicator, assert_no_leaks


class Cart(TunedJsonWebsocketConsumer):
    heartbeat_interval = None
    request_timeout = 0.2

    async def connect(self):
        self.items: list = []
        await self.accept()

    @rpc("cart.add")
    async def add(self, params):
        if not isinstance(params, int):
            raise RequestError("invalid", "an item number expected")
        self.items.append(params)
        return {"items": self.items}

    @rpc("cart.slow")
    async def slow(self, params):
        await asyncio.sleep(5)

    @rpc("cart.broken")
    async def broken(self, params):
        raise KeyError("secret detail")

    async def not_declared(self, params):
        return "never"

    async def receive_json(self, content, **kwargs):
        await self.send_json({"echo": content})


class MoreCart(Cart):
    @rpc("cart.count")
    async def count(self, params):
        return len(self.items)


@pytest.fixture(autouse=True)
def _counters():
    REQUESTS.clear()


def outcomes():
    return {labels[1]: n for labels, n in REQUESTS.items()}


async def test_declared_methods_answer_once_with_a_result_or_an_error():
    comm = TunedCommunicator(MoreCart.as_asgi(), "/")
    await comm.connect()
    assert await comm.request("cart.add", 3) == {"items": [3]}
    assert await comm.request("cart.add", 4) == {"items": [3, 4]}
    assert await comm.request("cart.count") == 2  # declared by the subclass
    with pytest.raises(RequestFailed) as failed:
        await comm.request("cart.add", "x")
    assert (failed.value.code, failed.value.message) == ("invalid", "an item number expected")
    for method, code in (
        ("not_declared", "unknown_method"),
        ("receive_json", "unknown_method"),
        ("cart.slow", "timeout"),
    ):
        with pytest.raises(RequestFailed) as failed:
            await comm.request(method, {})
        assert failed.value.code == code
    # Still open, and the application's own frames still reach receive().
    await comm.send_json_to({"plain": True})
    assert await comm.receive_json_from() == {"echo": {"plain": True}}
    assert outcomes() == {"ok": 3, "error": 1, "unknown_method": 2, "timeout": 1}
    await comm.disconnect()
    await assert_no_leaks()


class FormattedLines(logging.Handler):
    """Log lines as text only: a kept LogRecord (caplog's) would hold the traceback,
    and with it the consumer's frames, for the rest of the test."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def test_a_method_that_raises_fails_the_request_as_internal_and_logs_it():
    log = logging.getLogger("channels_tuning")
    lines = FormattedLines()
    log.addHandler(lines)
    log.propagate = False
    try:
        comm = TunedCommunicator(Cart.as_asgi(), "/")
        await comm.connect()
        with pytest.raises(RequestFailed) as failed:
            await comm.request("cart.broken", {})
        assert failed.value.code == "internal"
        assert await comm.request("cart.add", 1) == {"items": [1]}  # still serving
        await comm.disconnect()
    finally:
        log.removeHandler(lines)
        log.propagate = True
    assert "secret detail" not in str(failed.value)  # the traceback stays on the server
    text = "\n".join(lines.lines)
    assert "secret detail" in text and "Traceback" in text
    assert outcomes() == {"internal": 1, "ok": 1}
    await assert_no_leaks()


@pytest.mark.parametrize(
    "frame",
    ['{"type":"ct.request","method":"cart.add"}', '{"type":"ct.request","id":1,"method":7}'],
)
async def test_an_unreadable_request_closes_with_1008(frame, caplog):
    caplog.set_level(logging.INFO, "channels_tuning")
    comm = TunedCommunicator(Cart.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data=frame)
    closed = await comm.receive_output(timeout=1)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1008)
    assert outcomes() == {"malformed": 1}
    await comm.disconnect(code=1008)  # what the server delivers once the close is done


async def test_requests_are_frames_of_the_application_for_a_plain_page():
    comm = TunedCommunicator(Cart.as_asgi(), "/", tuned=False)
    await comm.connect()
    await comm.send_to(text_data='{"type":"ct.request","id":1,"method":"cart.add","params":1}')
    assert (await comm.receive_json_from())["echo"]["type"] == "ct.request"
    await comm.disconnect()
