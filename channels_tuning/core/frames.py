"""Frames of recently framed payloads, by payload object (sans-I/O).

A ``group_send`` event reaches every local member's handler with the same ``str``
(the event dict's, shared by all of them), and each handler's
``self.send(text_data=event["text"])`` is a message of its own: without a cache, the
server frames that one text once per member. ``channels-tuning-daphne``'s write path
(:func:`channels_tuning.compat.autobahn.write_message`) asks :class:`RecentFrames`
first. A single "last framed" entry is not enough: a write batch writes each member's
frames of several events together, so the events' texts alternate and each evicts
the other. In the unthrottled burst of ``benchmarks/fanout.py --group-send`` (500
members), framing took 9 % of the server's py-spy samples with one entry and 0.06 %
with this table.

What is guaranteed, and why:

- **A frame is reused only for the very object it was built from.** Entries are keyed
  by ``id()`` and hold the payload, so ``is`` cannot match a new object at a freed
  one's address; only ``str`` and ``bytes`` (immutable) are kept, never a
  ``bytearray`` or ``memoryview`` whose content can change after framing. The
  framing context (autobahn's factory) is part of the match.
- **Bounded, whatever the application sends.** At most ``capacity`` payloads, each
  of at most ``longest`` characters or bytes, and ``budget`` of them in total; a
  table that would exceed either limit is emptied and starts again. With the
  defaults the table holds at most 1 MiB of payload characters (up to 4 MiB of
  ``str`` for text outside Latin-1) and their frames. An application that sends a
  new text to every connection costs a dictionary entry per message, then a clear.
"""

from __future__ import annotations

from typing import Any


class RecentFrames:
    """Frames by payload object, for payloads framed recently (see the module)."""

    def __init__(self, capacity: int = 128, longest: int = 65536, budget: int = 1 << 20) -> None:
        self.capacity = capacity
        self.longest = longest
        self.budget = budget
        self._frames: dict[int, tuple[Any, Any, Any]] = {}
        self._held = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def held(self) -> int:
        """Characters or bytes of the payloads held."""
        return self._held

    def get(self, content: object, context: object) -> Any:
        """The frame of ``content`` made in ``context``, or None."""
        entry = self._frames.get(id(content))
        if entry is not None and entry[0] is content and entry[1] is context:
            return entry[2]
        return None

    def put(self, content: object, context: object, frame: Any) -> None:
        """Keep ``frame`` for ``content`` if it is immutable and within the bounds."""
        if type(content) is not str and type(content) is not bytes:
            return
        size = len(content)
        if size > self.longest:
            return
        if len(self._frames) >= self.capacity or self._held + size > self.budget:
            self._frames.clear()
            self._held = 0
        previous = self._frames.get(id(content))
        if previous is not None:
            self._held -= len(previous[0])
        self._frames[id(content)] = (content, context, frame)
        self._held += size
