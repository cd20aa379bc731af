"""The tuned server's frame path under frames a client makes up (hypothesis): reserved
bits and opcodes, unmasked frames, fragments in any order, control frames too long
or fragmented, invalid UTF-8, lengths announced and not sent. Whatever comes, the
connection is kept or closed with a documented code, never dropped without a close
frame (autobahn's default for a protocol error, which the tuned server turns off) and
never 1011 (that would be the server's own failure); the server logs no traceback,
and it goes on serving others."""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.rawws import handshake, read_any_frame

#: The whole module: the second test checks what the fuzzing one left (the outcomes it
#: saw, the server's log), so the two run together or not at all.
pytestmark = pytest.mark.slow

#: What a client's bad frames may be told (RFC 6455 7.4.1 and the package's codes).
DOCUMENTED = {1000, 1002, 1003, 1007, 1008, 1009}
OPCODES = [0x0, 0x1, 0x2, 0x3, 0x7, 0x8, 0x9, 0xA, 0xB, 0xF]


@st.composite
def client_frame(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):  # well-formed: the paths past the parser get fuzzed too
        opcode = draw(st.sampled_from([0x1, 0x2, 0x9, 0xA]))
        fin, rsv, masked = True, 0, True
        if opcode == 0x1:
            payload = draw(st.text(max_size=100)).encode()
        else:
            payload = draw(st.binary(max_size=100 if opcode == 0x2 else 125))
        announced = len(payload)
        return _encode(opcode, fin, rsv, masked, payload, announced)
    opcode = draw(st.sampled_from(OPCODES))
    fin = draw(st.booleans())
    rsv = draw(st.sampled_from([0, 0, 0, 1, 2, 4, 7]))
    masked = draw(st.sampled_from([True, True, True, False]))
    payload = draw(
        st.one_of(
            st.binary(max_size=300),
            st.text(max_size=100).map(lambda text: text.encode()),
            st.just(struct.pack("!H", 1000) + b"bye"),  # a close payload
        )
    )
    announced = len(payload)
    if draw(st.integers(0, 9)) == 0:  # a length announced and not (all) sent
        announced = draw(st.sampled_from([len(payload) + 1, 200, 70_000, 1 << 40]))
    return _encode(opcode, fin, rsv, masked, payload, announced)


def _encode(
    opcode: int, fin: bool, rsv: int, masked: bool, payload: bytes, announced: int
) -> bytes:
    header = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if announced < 126:
        header += bytes([mask_bit | announced])
    elif announced < 1 << 16:
        header += bytes([mask_bit | 126]) + struct.pack("!H", announced)
    else:
        header += bytes([mask_bit | 127]) + struct.pack("!Q", announced)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def outcome(sock: socket.socket) -> int | str:
    """The server's close code, "dropped" (reset or closed without a close frame) or
    "kept" (quiet for 0.3 s: it waits for more)."""
    sock.settimeout(0.3)
    try:
        while True:
            opcode, _, payload = read_any_frame(sock)
            if opcode == 8:
                return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005
    except TimeoutError:
        return "kept"
    except (AssertionError, OSError):
        return "dropped"


#: Outcomes seen across the examples: the fuzzing must reach more than one path.
SEEN: collections.Counter[int | str] = collections.Counter()


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):
    from tests.support.processes import start_daphne, stop_process

    server = start_daphne(
        tmp_path_factory.mktemp("fuzz"),
        tuned=True,
        tuning={"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None, "RATE_LIMIT": None},
    )
    yield server
    stop_process(server.proc)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=st.lists(client_frame(), min_size=1, max_size=6))
def test_made_up_frames_get_a_documented_answer(fuzzed_server, frames):
    sock, _ = handshake(fuzzed_server.port, "/ws/echo/")
    with sock:
        # Closed by the server while we wrote: its code is read next.
        with contextlib.suppress(OSError):
            sock.sendall(b"".join(frames))
        seen = outcome(sock)
    SEEN[seen] += 1
    assert seen == "kept" or seen in DOCUMENTED, seen


def test_the_fuzzed_server_logged_no_traceback_and_still_serves(fuzzed_server):
    sock, _ = handshake(fuzzed_server.port, "/ws/echo/")
    with sock:
        from tests.support.rawws import CLOSE_FRAME, frame

        sock.sendall(frame(0x1, b"still here"))
        opcode, _, payload = read_any_frame(sock)
        assert (opcode, payload) == (0x1, b"still here")
        sock.sendall(CLOSE_FRAME)
    log = fuzzed_server.log.read_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    closes = fuzzed_server.stats()["counters"].get("channels_tuning_closes_total", {})
    assert not any(labels.endswith("code=1011") for labels in closes), closes
    print(f"outcomes of the made-up frames: {dict(SEEN)}")
    assert len(SEEN) >= 2, SEEN  # kept and closed at least: both paths were fuzzed
