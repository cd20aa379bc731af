"""Every WebSocket close code the package sends, and how loudly each is logged.

The documentation's close-code table is generated from the same facts; clients decide
from the code whether to reconnect (the table is :mod:`channels_tuning.wire.reconnect`).
"""

from __future__ import annotations

import logging
from enum import IntEnum
from typing import Final, TypeGuard


class CloseCode(IntEnum):
    """Close codes sent by channels-tuning consumers (RFC 6455 and 4000-4999)."""

    #: The application closed the connection normally.
    NORMAL = 1000
    #: The connection reached its maximum lifetime; reconnect (to any server).
    GOING_AWAY = 1001
    #: The client broke the WebSocket protocol (a reserved opcode or bit, an unmasked
    #: or too long control frame): sent by ``channels-tuning-daphne`` (autobahn's check).
    PROTOCOL_ERROR = 1002
    #: The frame type is not accepted by this consumer (text to a binary-only consumer...).
    UNSUPPORTED_DATA = 1003
    #: The frame could not be decoded (malformed JSON, invalid protobuf, text that is
    #: not UTF-8).
    INVALID_PAYLOAD = 1007
    #: The client broke a policy: messages faster than the rate limit, or a recovery
    #: request (``ct_recover``) that cannot be read.
    POLICY_VIOLATION = 1008
    #: An inbound message was larger than ``max_message_size``.
    MESSAGE_TOO_BIG = 1009
    #: A handler raised an exception.
    INTERNAL_ERROR = 1011
    #: The server process is shutting down (graceful drain); reconnect with backoff.
    SERVICE_RESTART = 1012
    #: The process is at its connection limit; try again later, with backoff.
    TRY_AGAIN_LATER = 1013
    #: No frame from the client within ``idle_timeout`` (heartbeat missed).
    HEARTBEAT_TIMEOUT = 4000
    #: The client read too slowly: its outbound queue overflowed (policy ``disconnect``).
    SLOW_CONSUMER = 4001
    #: Too many channel-layer events queued for the consumer's handlers.
    INBOX_OVERFLOW = 4002
    #: The server ended this user's connections (``disconnect_user``: a logout, a
    #: permission change); the client must not come back with the same credentials.
    USER_DISCONNECTED = 4003
    #: The handshake's token (``TokenAuthMiddleware``), or a refresh's, is forged, for
    #: an unknown or inactive user, or for another user than the connection's.
    TOKEN_INVALID = 4004
    #: The connection's token expired without a refresh; reconnect with a new token.
    TOKEN_EXPIRED = 4005
    #: The client left more of the server's requests unanswered than the consumer's
    #: ``max_client_requests`` (it reads its frames but does not answer them).
    UNANSWERED_REQUESTS = 4006


#: Reported to ``disconnect()`` (and by clients) when the connection ended without a
#: close frame: the client vanished, or the application task was cancelled.
#: RFC 6455 reserves it: it is never sent on the wire.
ABNORMAL_CLOSURE: Final = 1006

# Closes that are part of normal operation log at INFO, client faults at WARNING,
# server faults at ERROR.
LOG_LEVELS: Final[dict[int, int]] = {
    CloseCode.NORMAL: logging.DEBUG,
    CloseCode.GOING_AWAY: logging.INFO,
    CloseCode.PROTOCOL_ERROR: logging.WARNING,
    CloseCode.UNSUPPORTED_DATA: logging.WARNING,
    CloseCode.INVALID_PAYLOAD: logging.WARNING,
    CloseCode.POLICY_VIOLATION: logging.WARNING,
    CloseCode.MESSAGE_TOO_BIG: logging.WARNING,
    CloseCode.INTERNAL_ERROR: logging.ERROR,
    CloseCode.SERVICE_RESTART: logging.INFO,
    CloseCode.TRY_AGAIN_LATER: logging.WARNING,
    CloseCode.HEARTBEAT_TIMEOUT: logging.INFO,
    CloseCode.SLOW_CONSUMER: logging.WARNING,
    CloseCode.INBOX_OVERFLOW: logging.WARNING,
    CloseCode.USER_DISCONNECTED: logging.INFO,
    CloseCode.TOKEN_INVALID: logging.WARNING,
    CloseCode.TOKEN_EXPIRED: logging.INFO,
    CloseCode.UNANSWERED_REQUESTS: logging.WARNING,
}


#: Close reasons are at most 123 bytes (RFC 6455: a close frame's payload is 125).
MAX_REASON_BYTES: Final = 123


def application_may_send(code: object) -> TypeGuard[int]:
    """Whether an application may close with ``code`` (1000, or 3000-4999: the rest
    is reserved to the protocol and refused by autobahn's and websockets' close)."""
    return isinstance(code, int) and (code == 1000 or 3000 <= code <= 4999)


def log_level(code: int) -> int:
    return LOG_LEVELS.get(code, logging.INFO)
