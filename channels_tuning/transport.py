"""How a consumer writes to its server: detected once per connection from ``send``.

Three cases, from best to worst guarantees:

``FLOW``
    channels-tuning's daphne server (:mod:`channels_tuning.server`): ``send`` is a
    :class:`FlowControlledSend` that writes synchronously and knows when the
    client's TCP buffer is above its high-water mark, so the consumer can queue
    (bounded) instead of letting Twisted buffer without limit.
``DAPHNE``
    Plain daphne: ``send`` never waits for the socket (daphne #170). Writes are
    synchronous and complete at once, so they are done without a task, but the
    server buffers for a client that does not read: bounded queues cannot help.
``GENERIC``
    Any other ASGI server or Channels' test communicator: ``send`` may suspend,
    so queued messages are written by a short-lived writer task.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, runtime_checkable

GENERIC: Final = 0
DAPHNE: Final = 1
FLOW: Final = 2

SEND_MODE_NAMES: Final = {GENERIC: "generic", DAPHNE: "daphne", FLOW: "flow"}


@runtime_checkable
class FlowControlledSend(Protocol):
    """The ``send`` callable given to applications by the tuned daphne server."""

    paused: bool
    closed: bool

    def __call__(self, message: dict[str, Any]) -> Awaitable[None]: ...

    def write_nowait(self, message: dict[str, Any]) -> None: ...

    async def wait_writable(self) -> bool: ...


#: What served this process's last connection (for stats): "tuned daphne", "daphne"...
server_kind = "none yet"
_SERVER_KINDS: Final = {GENERIC: "other ASGI server", DAPHNE: "daphne", FLOW: "tuned daphne"}


def detect_send_mode(send: Callable[..., Any]) -> int:
    mode = _detect(send)
    global server_kind
    server_kind = _SERVER_KINDS[mode]
    return mode


def _detect(send: Callable[..., Any]) -> int:
    if getattr(send, "channels_tuning_flow_control", False):
        return FLOW
    if isinstance(send, functools.partial):
        func = send.func
        # Matched by name: importing daphne.server would install its Twisted reactor.
        if getattr(func, "__qualname__", "") == "Server.handle_reply" and getattr(
            func, "__module__", ""
        ).startswith("daphne."):
            return DAPHNE
    return GENERIC


_warned = False


def warn_if_not_flow_controlled(mode: int) -> None:
    """Once per process under plain daphne, state system check channels_tuning.W006
    in the log (unless listed in SILENCED_SYSTEM_CHECKS).

    Only plain daphne: other servers' ``send`` may wait for the socket (uvicorn
    does), and then the writer task applies backpressure through it."""
    global _warned
    if mode != DAPHNE or _warned:
        return
    _warned = True
    from .checks import server_without_flow_control

    warning = server_without_flow_control("plain daphne")
    if not warning.is_silenced():
        logging.getLogger("channels_tuning").warning("%s", warning)


def send_close_frame(protocol: Any, code: int, reason: str | None) -> None:
    """Close a daphne WebSocket protocol with any valid code.

    daphne hands ``websocket.close`` to autobahn's ``sendClose``, which accepts
    only 1000 and 3000-4999 from a server and raises for 1001, 1003, 1007-1013;
    it also drops the reason. The frame-level method has no such restriction.
    """
    if protocol.state == protocol.STATE_CONNECTING:
        protocol.serverReject()  # not accepted yet: daphne answers HTTP 403
    elif protocol.state == protocol.STATE_OPEN:
        from autobahn.util import encode_truncate

        reason_bytes = encode_truncate(reason, 123) if reason else None
        protocol.sendCloseFrame(code=code, reasonUtf8=reason_bytes, isReply=False)


#: Key under which a ``websocket.send`` message keeps its framed bytes, so a
#: broadcast frame shared by every local subscriber is framed once.
PREPARED_KEY: Final = "channels_tuning.prepared"


def write_to_protocol(protocol: Any, message: dict[str, Any]) -> None:
    """Write an ASGI message to a daphne (autobahn) WebSocket protocol, synchronously.

    Data frames are framed once per message object (autobahn's PreparedMessage,
    gorilla's PreparedMessage idea): a broadcast reaching 500 local subscribers
    builds its frame once and writes the same bytes 500 times."""
    kind = message["type"]
    if kind == "websocket.close":
        send_close_frame(protocol, message.get("code", 1000), message.get("reason"))
    elif kind == "websocket.send" and protocol.state == protocol.STATE_OPEN:
        prepared = message.get(PREPARED_KEY)
        if prepared is None:
            payload = message.get("bytes")
            binary = payload is not None
            if not binary:
                payload = message["text"].encode()
            prepared = message[PREPARED_KEY] = protocol.factory.prepareMessage(payload, binary)
        if protocol._perMessageCompress is None and not protocol.send_queue:
            # What sendPreparedMessage -> sendData does, minus the debug-log call
            # whose arguments autobahn formats (with colours) on every frame even
            # when debug logging is off: an eighth of a broadcast's CPU, profiled.
            protocol.transport.write(prepared.payloadHybi)
        else:
            protocol.sendPreparedMessage(prepared)
    else:
        protocol.handle_reply(message)


def write_to_daphne(send: Any, message: dict[str, Any]) -> None:
    """Write ``message`` through plain daphne's ``send`` without suspending."""
    server, protocol = send.func.__self__, send.args[0]
    details = server.connections.get(protocol)
    if details is not None and "disconnected" not in details:
        write_to_protocol(protocol, message)
