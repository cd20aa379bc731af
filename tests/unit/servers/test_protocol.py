"""The tuned WebSocket protocol as a dict key (servers/daphne/protocol.py): daphne's
connections dict is asked on every write, so its lookups must run no Python code."""

from __future__ import annotations

import sys

from daphne.ws_protocol import WebSocketProtocol

from channels_tuning.servers.daphne.protocol import ProtocolLimits, tuned_protocol


def python_calls_during(action) -> list[str]:
    calls: list[str] = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is not action.__code__:
            calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return calls


def test_a_lookup_by_protocol_runs_no_python_function_and_keeps_identity():
    cls = tuned_protocol(WebSocketProtocol, ProtocolLimits())
    first, second = cls.__new__(cls), cls.__new__(cls)
    connections = {first: {"connected": 1.0}, second: {"connected": 2.0}}
    assert python_calls_during(lambda: connections.get(first)) == []
    # Identity, as daphne's own __hash__/__eq__ (by id()) meant it.
    assert connections[first] == {"connected": 1.0} and connections[second]["connected"] == 2.0
    assert first == first and first != second and len({first, second, first}) == 2
    if "__hash__" in WebSocketProtocol.__dict__:  # daphne 4.1-4.2 define it in Python
        # What the first assertion catches, should the subclass lose its own.
        plain = WebSocketProtocol.__new__(WebSocketProtocol)
        assert "__hash__" in python_calls_during(lambda: {plain: 1}.get(plain))
