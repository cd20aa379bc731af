"""The one raw WebSocket client of the tests: for tests that must control reads,
see frame bits, or behave as no library would (never read, vanish with a RST)."""

from __future__ import annotations

import os
import socket
import struct

#: A fixed key is fine: the server's answer is not checked against it.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
#: A masked close frame with code 1000 (mask of zeros: the payload stays readable).
CLOSE_FRAME = bytes([0x88, 0x82]) + b"\x00\x00\x00\x00" + struct.pack("!H", 1000)


def upgrade_request(path: str, extensions: str | None = None) -> bytes:
    """The client's opening handshake for ``path``."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
    )
    if extensions:
        request += f"Sec-WebSocket-Extensions: {extensions}\r\n"
    return (request + "\r\n").encode()


def handshake(
    port: int, path: str, extensions: str | None = None, rcvbuf: int | None = None
) -> tuple[socket.socket, bytes]:
    """A connected, upgraded socket (blocking, 5 s timeout) and the server's response."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(upgrade_request(path, extensions))
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)
        assert chunk, f"connection closed during the handshake: {response!r}"
        response += chunk
    assert b" 101 " in response, response
    return sock, response


def open_non_reading_client(port: int, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads."""
    sock, _ = handshake(port, path, rcvbuf=4096)
    return sock


def frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """One masked client frame (opcode 0 continuation, 1 text, 2 binary, 9 ping)."""
    mask = os.urandom(4)
    header = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    elif len(payload) < 1 << 16:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def send_text(sock: socket.socket, text: str) -> None:
    sock.sendall(frame(0x1, text.encode()))


def read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[bool, bytes]:
    """(compressed, payload) of the next server frame."""
    _, compressed, payload = read_any_frame(sock)
    return compressed, payload


def read_any_frame(sock: socket.socket) -> tuple[int, bool, bytes]:
    """(opcode, compressed, payload) of the next server frame."""
    first, second = read_exact(sock, 2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", read_exact(sock, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", read_exact(sock, 8))
    return first & 0x0F, bool(first & 0x40), read_exact(sock, length)


def read_burst(sock: socket.socket) -> tuple[list[int], int | None]:
    """Frame numbers received until the server goes quiet, and its close code.

    Buffered: it must reach a close frame behind megabytes of data within
    the server's closing-handshake timeout (1-2 s)."""
    numbers: list[int] = []
    buffer = b""
    sock.settimeout(1.0)
    while True:
        while len(buffer) >= 4:
            length, header = buffer[1] & 0x7F, 2
            if length == 126:
                length, header = struct.unpack("!H", buffer[2:4])[0], 4
            if len(buffer) < header + length:
                break
            opcode, payload = buffer[0] & 0x0F, buffer[header : header + length]
            buffer = buffer[header + length :]
            if opcode == 8:
                return numbers, struct.unpack("!H", payload[:2])[0]
            numbers.append(int(payload[:6]))
        try:
            chunk = sock.recv(1 << 20)
        except (TimeoutError, ConnectionResetError):  # quiet, or aborted by the server
            return numbers, None
        if not chunk:
            return numbers, None
        buffer += chunk


def read_close_code(sock: socket.socket, timeout: float = 5.0) -> int | None:
    """Skip frames until the server's close frame; its code (None: no close frame)."""
    sock.settimeout(timeout)
    try:
        while True:
            opcode, _, payload = read_any_frame(sock)
            if opcode == 8:
                return int(struct.unpack("!H", payload[:2])[0])
    except (AssertionError, OSError):
        return None
