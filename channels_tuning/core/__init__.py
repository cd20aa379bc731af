"""The sans-I/O connection core: one object per WebSocket connection, no I/O.

Nothing in this package imports asyncio, Django, Channels or Twisted. A
:class:`ConnectionCore` is fed events (a frame arrived, the clock ticked, the
application wants to send, the peer closed) with the time passed in, and answers
with what to do (deliver this frame, write this message, close with this code).
The consumer classes (:mod:`channels_tuning.consumers`) and the servers are the
I/O around it; the unit tests drive it with a fake clock (``tests/unit/core/test_core.py``).

In the manner of the ``websockets`` library's ``Protocol``: state in one enum,
every limit a setting, every decision testable without a socket.
"""

from .connection import Action, ConnectionCore, Outcome, SendFrame, WriteClose
from .policies import (
    BUILTIN_ORDER,
    AdmissionContext,
    ConnectionLimitPolicy,
    FrameKind,
    FrameTypePolicy,
    HeartbeatPolicy,
    LifetimePolicy,
    MessageSizePolicy,
    Policy,
    RateLimitPolicy,
)
from .queue import OVERFLOW_POLICIES, OutboundQueue, message_size
from .settings import ConnectionSettings
from .state import ConnectionState, Liveness

__all__ = [
    "BUILTIN_ORDER",
    "OVERFLOW_POLICIES",
    "Action",
    "AdmissionContext",
    "ConnectionCore",
    "ConnectionLimitPolicy",
    "ConnectionSettings",
    "ConnectionState",
    "FrameKind",
    "FrameTypePolicy",
    "HeartbeatPolicy",
    "LifetimePolicy",
    "Liveness",
    "MessageSizePolicy",
    "OutboundQueue",
    "Outcome",
    "Policy",
    "RateLimitPolicy",
    "SendFrame",
    "WriteClose",
    "message_size",
]
