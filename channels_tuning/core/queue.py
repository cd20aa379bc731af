"""A connection's bounded outbound queue and its overflow policies.

Pure data structure, no I/O: the consumer decides when to write; this module
decides what is kept when the client reads slower than the server sends.
Bounded in messages *and* bytes, because one 1 MiB message and a thousand
100-byte ones are both "too much" for a client that is not reading.

Policies when a new message does not fit:

``disconnect``
    Drop everything queued and close the connection with 4001 (slow consumer).
    The default: a client that cannot keep up gets a clean signal and reconnects.
``drop_oldest``
    Drop queued messages from the head until the new one fits (freshest data wins).
``drop_newest``
    Drop the new message (what was queued first is delivered first).
``coalesce``
    Messages sent with a ``coalesce_key`` replace the queued message with the same
    key *at any time*, not only when full (a ticker only needs the latest price).
    When full, unkeyed messages fall back to ``drop_oldest``.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from ..exceptions import QueueOverflow

OVERFLOW_POLICIES: Final = ("disconnect", "drop_oldest", "drop_newest", "coalesce")

# Reasons under which dropped messages are counted.
REASON_DROP_OLDEST: Final = "drop_oldest"
REASON_DROP_NEWEST: Final = "drop_newest"
REASON_COALESCED: Final = "coalesced"
REASON_SLOW_CONSUMER: Final = "slow_consumer"
REASON_CLOSED: Final = "closed"
REASON_INBOX_FULL: Final = "inbox_full"

Message = dict[str, Any]


def message_size(message: Message) -> int:
    """Bytes a ``websocket.send`` message will take (characters for text: cheap and
    a lower bound of its UTF-8 size; control messages count as zero)."""
    payload = message.get("bytes")
    if payload is None:
        payload = message.get("text")
    return len(payload) if payload else 0


class OutboundQueue:
    """FIFO of ASGI messages bounded in count and bytes, with an overflow policy.

    ``put`` returns the number of messages dropped to honour the bound (0 when
    nothing was lost) or raises :class:`~channels_tuning.exceptions.QueueOverflow`
    under ``disconnect``.
    """

    __slots__ = (
        "_bytes",
        "_items",
        "_keys",
        "last_drop_reason",
        "max_bytes",
        "max_messages",
        "policy",
    )

    def __init__(self, max_messages: int, max_bytes: int, policy: str) -> None:
        if policy not in OVERFLOW_POLICIES:
            raise ValueError(f"unknown overflow policy {policy!r}")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.policy = policy
        # Each item is a list [message, size, key] so coalescing can replace in place.
        self._items: deque[list[Any]] = deque()
        self._bytes = 0
        self._keys: dict[Any, list[Any]] | None = None
        #: Why the last ``put`` that dropped something dropped it.
        self.last_drop_reason = REASON_DROP_NEWEST

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def _fits(self, size: int) -> bool:
        return len(self._items) < self.max_messages and self._bytes + size <= self.max_bytes

    def put(self, message: Message, key: Any = None, *, force: bool = False) -> int:
        """Queue ``message``; return how many messages were dropped to make it fit.

        ``force`` bypasses the bound (control frames: close, accept).
        """
        size = message_size(message)
        if key is not None and self.policy == "coalesce" and self._keys:
            item = self._keys.get(key)
            if item is not None:
                self._bytes += size - item[1]
                item[0], item[1] = message, size
                self.last_drop_reason = REASON_COALESCED
                return 1
        dropped = 0
        if not force and not self._fits(size):
            if self.policy == "disconnect":
                raise QueueOverflow()
            if self.policy == "drop_newest" or size > self.max_bytes:
                # drop_newest, or a message larger than the whole bound: it never fits.
                self.last_drop_reason = REASON_DROP_NEWEST
                return 1
            # drop_oldest, and coalesce for messages without a pending twin.
            while not self._fits(size) and self._drop_oldest_data():
                dropped += 1
            self.last_drop_reason = REASON_DROP_OLDEST
        item = [message, size, key]
        self._items.append(item)
        self._bytes += size
        if key is not None and self.policy == "coalesce":
            if self._keys is None:
                self._keys = {}
            self._keys[key] = item
        return dropped

    def _drop_oldest_data(self) -> bool:
        # Control frames (accept, close) are never dropped: skip past them.
        for index, item in enumerate(self._items):
            if item[0].get("type") == "websocket.send":
                del self._items[index]
                self._bytes -= item[1]
                if item[2] is not None and self._keys is not None:
                    self._keys.pop(item[2], None)
                return True
        return False

    def _pop_item(self) -> list[Any]:
        item = self._items.popleft()
        self._bytes -= item[1]
        if item[2] is not None and self._keys is not None:
            self._keys.pop(item[2], None)
        return item

    def get(self) -> Message:
        """Remove and return the oldest message (the queue must not be empty)."""
        message: Message = self._pop_item()[0]
        return message

    def clear(self) -> int:
        """Drop everything; return how many data messages were dropped."""
        dropped = sum(1 for item in self._items if item[0].get("type") == "websocket.send")
        self._items.clear()
        self._bytes = 0
        self._keys = None
        return dropped
