"""servers.transport: the transport chosen for each server, and what each promises
(in-process, with the servers' own send objects; on real servers: tests/e2e)."""

from __future__ import annotations

import functools
from types import SimpleNamespace

from daphne.server import Server

from channels_tuning.compat import twisted
from channels_tuning.core.state import Liveness
from channels_tuning.layers.redis.reader import ProcessLayerReader
from channels_tuning.runtime.writebatch import WriteBatch
from channels_tuning.servers.daphne.send import FlowControlledSend
from channels_tuning.servers.transport import (
    TRANSPORT_EXTENSION,
    AwaitingTransport,
    DaphneTransport,
    ServerKind,
    Transport,
    transport_for,
)
from tests.support.fakes import eager_transport


async def other_send(message):
    pass


def test_each_server_gets_its_transport():
    server = object.__new__(Server)
    flow = FlowControlledSend(server, SimpleNamespace(transport=None))
    tuned = transport_for({"extensions": {TRANSPORT_EXTENSION: flow}}, other_send)
    assert tuned is flow and tuned.kind is ServerKind.TUNED_DAPHNE
    assert tuned.liveness is Liveness.TRANSPORT

    daphne_send = functools.partial(server.handle_reply, object())
    plain = transport_for({}, daphne_send)
    assert isinstance(plain, DaphneTransport) and plain.kind is ServerKind.DAPHNE
    assert plain.can_write() and plain.liveness is Liveness.SERVER

    awaiting = transport_for({}, other_send)
    assert isinstance(awaiting, AwaitingTransport) and awaiting.kind is ServerKind.OTHER
    assert not awaiting.can_write() and not awaiting.can_write(urgent=True)
    for transport in (tuned, plain, awaiting):
        assert isinstance(transport, Transport)


def test_the_flow_controlled_send_writes_past_the_mark_only_when_urgent():
    flow = FlowControlledSend(object.__new__(Server), SimpleNamespace(transport=None))
    assert flow.can_write()
    flow.pauseProducing()
    assert not flow.can_write() and flow.can_write(urgent=True)
    flow.resumeProducing()
    assert flow.can_write()


async def test_an_awaited_write_is_timed_and_an_abort_ends_the_wait():
    transport = AwaitingTransport(ServerKind.OTHER, other_send, other_send)
    assert transport.stalled_for(100.0) == 0.0
    transport.waiting_since = 90.0  # as while its send waits for the socket
    assert transport.stalled_for(100.0) == 10.0
    assert transport.abort() is False  # no hook for an unknown server...
    assert transport.stalled_for(100.0) == 0.0  # ...and the wait is not aborted twice
    assert await transport.write({"type": "websocket.send", "text": "x"}) is True


def test_the_reader_hands_its_write_batch_to_each_attached_transport(monkeypatch):
    sent: list[bytes] = []
    eager = eager_transport(sent)
    flow = FlowControlledSend(object.__new__(Server), SimpleNamespace(transport=eager))
    reader = object.__new__(ProcessLayerReader)
    reader.consumers = {}
    reader.write_batch = WriteBatch()
    monkeypatch.setattr(ProcessLayerReader, "_ensure_running", lambda self: None)
    reader.attach(SimpleNamespace(channel_name="specific.a!b", transport=flow))
    assert eager.write_batch is reader.write_batch
    with reader.write_batch.collect():
        eager.write(b"1")
        eager.write(b"2")
        assert sent == []
    assert sent == [b"12"]
    assert twisted.use_write_batch(object(), reader.write_batch) is False


def test_the_guarantees_table_has_a_column_per_known_server_kind():
    from channels_tuning.servers.guarantees import GUARANTEES, SERVER_TITLES

    assert set(SERVER_TITLES) == {kind.value for kind in ServerKind if kind.known}
    for guarantee in GUARANTEES:
        assert set(guarantee.cells) == set(SERVER_TITLES), guarantee.title
