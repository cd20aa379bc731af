"""The server asks its client (request_client, send_with_ack), through TunedCommunicator
on the in-memory layer; both clients against a real server are in
tests/e2e/test_server_requests.py."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from channels_tuning import (
    RequestError,
    TunedJsonWebsocketConsumer,
    TunedProtobufWebsocketConsumer,
    rpc,
)
from channels_tuning.exceptions import ClientRequestFailed
from channels_tuning.runtime.counters import CLIENT_REQUESTS
from channels_tuning.testing import TunedCommunicator
from channels_tuning.wire.proto.envelope_pb2 import Envelope
from tests.support.waiting import until


class Asking(TunedJsonWebsocketConsumer):
    """Asks its client when a group event says so, and says what came of it."""

    heartbeat_interval = None
    client_request_timeout = 0.3
    max_client_requests = 3

    async def connect(self):
        await self.accept()
        await self.channel_layer.group_add("askers", self.channel_name)

    async def ask_client(self, event):
        try:
            if event.get("push") is not None:
                outcome = await self.send_with_ack(event["push"])
            else:
                outcome = await self.request_client(event["method"], event.get("params"))
        except ClientRequestFailed as failed:
            outcome = {"failed": failed.code, "message": failed.message}
        if not self.closing:
            await self.send_json({"outcome": outcome})

    async def ask_many(self, event):
        """Requests at once (events are handled one at a time, in order)."""
        asks = [self.request_client(f"page.m{n}") for n in range(event["count"])]
        results = await asyncio.gather(*asks, return_exceptions=True)
        self.many = [r.code if isinstance(r, ClientRequestFailed) else r for r in results]

    async def receive_json(self, content, **kwargs):
        if content == "ask from receive":
            try:
                await self.request_client("page.state")
            except RuntimeError as error:
                await self.send_json({"refused": str(error)[:60]})
            return
        await self.send_json({"echo": content})


@pytest.fixture(autouse=True)
def _counters():
    CLIENT_REQUESTS.clear()


def outcomes():
    return {labels[1]: n for labels, n in CLIENT_REQUESTS.items()}


async def ask(layer, **event):
    await layer.group_send("askers", {"type": "ask.client", **event})


async def test_the_client_answers_with_a_result_an_error_or_not_at_all(ct_layer, ct_no_leaks):
    comm = TunedCommunicator(Asking.as_asgi(), "/")
    assert (await comm.connect())[0]
    await ask(ct_layer, method="page.state", params={"full": True})
    request = await comm.receive_server_request()
    assert (request["kind"], request["method"], request["params"]) == (
        "request",
        "page.state",
        {"full": True},
    )
    await comm.reply(request["id"], {"visible": True})
    assert await comm.receive_json_from() == {"outcome": {"visible": True}}

    await ask(ct_layer, method="page.save")
    request = await comm.receive_server_request()
    assert "params" not in request
    await comm.reply(request["id"], error="read_only", message="the page is a viewer")
    assert await comm.receive_json_from() == {
        "outcome": {"failed": "read_only", "message": "the page is a viewer"}
    }

    await ask(ct_layer, method="page.silent")
    await comm.receive_server_request()  # never answered
    assert await comm.receive_json_from() == {"outcome": {"failed": "timeout", "message": ""}}

    # An acknowledged push: True once the client says it handled it, False in time.
    await ask(ct_layer, push={"shipped": 7})
    push = await comm.receive_server_request()
    assert (push["kind"], push["data"]) == ("push", {"shipped": 7})
    await comm.reply(push["id"])
    assert await comm.receive_json_from() == {"outcome": True}
    await ask(ct_layer, push={"shipped": 8})
    await comm.receive_server_request()
    assert await comm.receive_json_from() == {"outcome": False}
    assert outcomes() == {"ok": 2, "error": 1, "timeout": 2}

    # Still open: the application's frames reach receive() as before.
    await comm.send_json_to({"plain": 1})
    assert await comm.receive_json_from() == {"echo": {"plain": 1}}
    await comm.disconnect()


async def test_replies_to_no_pending_request_are_dropped_and_counted(ct_layer, caplog):
    comm = TunedCommunicator(Asking.as_asgi(), "/")
    await comm.connect()
    await ask(ct_layer, method="page.state")
    request = await comm.receive_server_request()
    await comm.reply(request["id"], 1)
    assert await comm.receive_json_from() == {"outcome": 1}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="channels_tuning"):
        await comm.reply(request["id"], 2)  # a second answer
        await comm.reply(99, 3)  # to an id never sent
        await comm.send_json_to("after")
        assert await comm.receive_json_from() == {"echo": "after"}
    assert outcomes() == {"ok": 1, "late": 2}
    lines = [r for r in caplog.records if "no pending request" in r.getMessage()]
    assert len(lines) == 1 and not lines[0].exc_info  # a line a second at most
    # An unreadable reply is a broken client: 1008.
    await comm.send_to(text_data='{"type":"ct.reply","id":"seven"}')
    assert (await comm.receive_output(1))["code"] == 1008
    assert outcomes()["malformed"] == 1
    await comm.disconnect()


async def test_a_client_that_leaves_requests_unanswered_is_closed_4006(ct_layer, ct_no_leaks):
    comm = TunedCommunicator(Asking.as_asgi(), "/")
    await comm.connect()
    # max_client_requests = 3: the fourth is one too many.
    await ct_layer.group_send("askers", {"type": "ask.many", "count": 4})
    close = await comm.receive_output(1)
    while close["type"] != "websocket.close":
        close = await comm.receive_output(1)
    assert close["code"] == 4006
    # The three waiting end at once, not at their timeout.
    await until(lambda: outcomes() == {"unanswered": 1, "closed": 3}, timeout=1)
    await comm.disconnect()


async def test_a_request_ends_when_the_connection_does(ct_layer, ct_no_leaks):
    comm = TunedCommunicator(Asking.as_asgi(), "/")
    await comm.connect()
    Asking.client_request_timeout = 30
    try:
        await ask(ct_layer, method="page.state")
        await comm.receive_server_request()
        await comm.disconnect()
        await until(lambda: "closed" in outcomes(), timeout=1)  # not the 30 s timeout
    finally:
        Asking.client_request_timeout = 0.3


async def test_asking_from_the_frame_reading_task_raises_at_once(ct_layer, ct_no_leaks):
    comm = TunedCommunicator(Asking.as_asgi(), "/")
    await comm.connect()
    await comm.send_json_to("ask from receive")
    answer = await comm.receive_json_from()
    assert answer["refused"].startswith("request_client()/send_with_ack() from the task")
    await comm.disconnect()


async def test_a_plain_page_cannot_be_asked_and_keeps_its_frames(ct_layer, ct_no_leaks):
    comm = TunedCommunicator(Asking.as_asgi(), "/", tuned=False)
    await comm.connect()
    await ask(ct_layer, method="page.state")
    assert await comm.receive_json_from() == {
        "outcome": {"failed": "unsupported", "message": "the client cannot answer"}
    }
    await comm.send_to(text_data='{"type":"ct.reply","id":1}')
    assert await comm.receive_json_from() == {"echo": {"type": "ct.reply", "id": 1}}
    await comm.disconnect()


class BinaryAsking(TunedProtobufWebsocketConsumer):
    """A codec consumer: requests both ways are protobuf envelopes."""

    heartbeat_interval = None
    client_request_timeout = 0.3

    async def connect(self):
        await self.accept()
        await self.channel_layer.group_add("askers", self.channel_name)

    @rpc("echo")
    async def echo(self, params):
        if params is None:
            raise RequestError("empty", "nothing to echo")
        return params

    async def ask_client(self, event):
        try:
            result = await self.request_client(event["method"], event.get("params"))
        except ClientRequestFailed as failed:
            result = {"failed": failed.code, "message": failed.message}
        try:
            await self.send_with_ack({"pushed": True})
        except ClientRequestFailed as failed:
            result = {"result": result, "push": failed.code}
        await self.send(
            bytes_data=Envelope(
                kind=Envelope.DATA, payload=json.dumps(result).encode()
            ).SerializeToString()
        )


async def test_a_codec_consumer_answers_and_asks_in_protobuf_envelopes(ct_layer, ct_no_leaks):
    comm = TunedCommunicator(BinaryAsking.as_asgi(), "/")
    await comm.connect()
    request = Envelope(kind=Envelope.REQUEST, seq=3, topic="echo", payload=b'{"n":1}')
    await comm.send_to(bytes_data=request.SerializeToString())
    reply = Envelope.FromString(await comm.receive_from())
    assert (reply.kind, reply.seq, json.loads(reply.payload)) == (Envelope.REPLY, 3, {"n": 1})
    await comm.send_to(
        bytes_data=Envelope(kind=Envelope.REQUEST, seq=4, topic="echo").SerializeToString()
    )
    refused = Envelope.FromString(await comm.receive_from())
    assert (refused.seq, refused.error, refused.detail) == (4, "empty", "nothing to echo")

    await ask(ct_layer, method="page.state", params=[1])
    asked = Envelope.FromString(await comm.receive_from())
    assert (asked.kind, asked.topic, json.loads(asked.payload)) == (
        Envelope.REQUEST,
        "page.state",
        [1],
    )
    answer = Envelope(kind=Envelope.REPLY, seq=asked.seq, payload=b'{"visible":true}')
    await comm.send_to(bytes_data=answer.SerializeToString())
    outcome = Envelope.FromString(await comm.receive_from())
    # The answer came back; a push to a binary client is refused (JSON text only).
    assert json.loads(outcome.payload) == {"result": {"visible": True}, "push": "unsupported"}
    # An envelope of kind REQUEST that is not one: 1008.
    await comm.send_to(bytes_data=b"\x08\x0b\xff")
    assert (await comm.receive_output(1))["code"] == 1008
    await comm.disconnect()
