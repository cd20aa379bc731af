"""The one state of a connection, replacing the six booleans it used to be."""

from __future__ import annotations

import enum


class ConnectionState(enum.Enum):
    """Where a connection is in its life. Transitions only go forward::

    CONNECTING ──accept──> OPEN ──close──> CLOSING ──disconnect──> CLOSED
         └────────────close (refused)────────┘                        ^
         └──────────────────────disconnect (client left first)────────┘
    """

    #: The ASGI scope arrived; the application has not accepted yet.
    CONNECTING = "connecting"
    #: Accepted: frames flow both ways.
    OPEN = "open"
    #: The server sent (or queued) its close frame; nothing more is sent or delivered.
    CLOSING = "closing"
    #: The connection is gone (``websocket.disconnect`` or the application ended).
    CLOSED = "closed"
