"""Opt-in permessage-deflate on the tuned server, checked on the wire: the RSV1
bit of each server frame says whether it was compressed."""

from __future__ import annotations

import asyncio
import zlib

import websockets

from tests.support.rawws import handshake, read_frame, send_text


def inflate(payload: bytes) -> str:
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff").decode()


OFFER = "permessage-deflate; client_max_window_bits"


def test_compression_negotiated_and_threshold_applied(daphne_factory):
    daphne = daphne_factory(tuned=True, extra_args=("--ws-compression",))
    sock, response = handshake(daphne.port, "/ws/echo/", OFFER)
    assert b"permessage-deflate" in response.lower()
    small, large = "short message", "a compressible line of text. " * 200
    send_text(sock, small)
    compressed, payload = read_frame(sock)
    assert (compressed, payload.decode()) == (False, small)  # under the 1024-byte threshold
    send_text(sock, large)
    compressed, payload = read_frame(sock)
    assert compressed
    assert len(payload) < len(large) / 10
    assert inflate(payload) == large
    sock.close()


def test_no_compression_without_the_option(daphne_factory):
    daphne = daphne_factory(tuned=True)
    sock, response = handshake(daphne.port, "/ws/echo/", OFFER)
    assert b"sec-websocket-extensions" not in response.lower()
    large = "a compressible line of text. " * 200
    send_text(sock, large)
    compressed, payload = read_frame(sock)
    assert (compressed, payload.decode()) == (False, large)
    sock.close()


async def test_real_client_library_round_trips_with_compression(daphne_factory):
    daphne = daphne_factory(tuned=True, extra_args=("--ws-compression",))
    async with websockets.connect(daphne.ws("/ws/echo/"), compression="deflate") as ws:
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        messages = ["x", "y" * 5000, "ünïcode " * 500, "z" * 1023, "w" * 1024]
        for message in messages:
            await ws.send(message)
        received = [await asyncio.wait_for(ws.recv(), 5) for _ in messages]
        assert received == messages
