"""Stand-ins for the parts of other libraries that unit tests cannot run for real
(a socket's system calls): shared by the unit tests that need them."""

from __future__ import annotations

from typing import Any

from channels_tuning.compat import twisted


def eager_transport(sent: list[bytes]) -> Any:
    """An eager-write Twisted transport whose system calls append to ``sent``."""
    transport = twisted.EagerWriteServer.__new__(twisted.EagerWriteServer)
    transport.connected, transport.disconnecting, transport._writeDisconnected = 1, 0, False
    transport.dataBuffer, transport._tempDataBuffer = b"", []

    def write_some_data(data):
        sent.append(bytes(data))
        return len(data)

    transport.writeSomeData = write_some_data
    return transport
