"""Opt-in permessage-deflate on the tuned server, checked on the wire: the RSV1
bit of each server frame says whether it was compressed."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import zlib

import pytest
import websockets

pytestmark = pytest.mark.e2e


def handshake(port: int, path: str, extensions: str | None) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n"
    )
    if extensions:
        request += f"Sec-WebSocket-Extensions: {extensions}\r\n"
    sock.sendall((request + "\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert b" 101 " in response
    return sock, response


def send_text(sock: socket.socket, text: str) -> None:
    payload = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    else:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(header + mask + masked)


def read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[bool, bytes]:
    """(compressed, payload) of the next server frame."""
    first, second = read_exact(sock, 2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", read_exact(sock, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", read_exact(sock, 8))
    return bool(first & 0x40), read_exact(sock, length)


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
