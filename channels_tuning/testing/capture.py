"""What a test's code sent to groups, :func:`capture_group_sends`, and which
connections the server closed, :func:`capture_closes`.

Every group send through the package's layers is recorded while the block runs:
``broadcast()``, ``broadcast_many()``, ``send_to_user()``, ``disconnect_user()``,
``unsubscribe_user()``, and a consumer's or a view's ``channel_layer.group_send`` on a
tuned layer (Channels' own layers are not seen)::

    with capture_group_sends() as sent:
        await communicator.send_json_to({"message": "hi"})
        await communicator.receive_json_from()
    assert sent.payloads("chat.lobby") == [{"type": "message", "message": "hi"}]

Recorded after the layer's first attempt (``report`` is what it found); nothing is
recorded outside the block, and the hook costs nothing then.

::

    with capture_closes() as closed:
        await communicator.send_to(text_data="x" * 2_000_000)
        await communicator.receive_output()
    assert closed.codes() == [1009]

::

    with capture_presence() as seen:
        await communicator.connect()
        await communicator.disconnect()
    assert seen.joined("chat.lobby") == seen.left("chat.lobby") == ["42"]
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..consumers.outbound import CLOSE_OBSERVERS
from ..layers.frames import FRAME_TYPE, FRAMES_TYPE
from ..layers.presence import PRESENCE_OBSERVERS
from ..layers.report import DeliveryReport
from ..layers.sending import GROUP_SEND_OBSERVERS
from ..wire.offsets import payload_of

__all__ = [
    "Close",
    "Closes",
    "GroupSend",
    "GroupSends",
    "PresenceChange",
    "PresenceChanges",
    "capture_closes",
    "capture_group_sends",
    "capture_presence",
]


@dataclass(frozen=True)
class GroupSend:
    """One group send: the group, the layer message, and the first attempt's report."""

    group: str
    message: dict[str, Any]
    report: DeliveryReport

    @property
    def payloads(self) -> list[Any]:
        """What ``broadcast()`` was given (JSON decoded, ``str`` and ``bytes`` as they
        were), one per frame; [] for a message that is not a broadcast (a
        ``group_send`` event: read :attr:`message`)."""
        kind = self.message.get("type")
        if kind == FRAME_TYPE:
            frames = [self.message["frame"]]
            flags = [bool(self.message.get("json"))]
        elif kind == FRAMES_TYPE:
            frames = self.message["frames"]
            flags = self.message.get("json") or [False] * len(frames)
        else:
            return []
        return [
            _payload(self.message, frame, is_json)
            for frame, is_json in zip(frames, flags, strict=True)
        ]


def _payload(message: dict[str, Any], frame: dict[str, Any], is_json: bool) -> Any:
    text = frame.get("text")
    if "offset" in message:  # a group with history: the payload inside the envelope
        if text is None:
            return payload_of(frame)["bytes"]
        return json.loads(text[text.index(_DATA) + len(_DATA) : -1])  # stored as JSON
    if text is None:
        return frame["bytes"]
    return json.loads(text) if is_json else text


_DATA = ',"data":'


class GroupSends(list[GroupSend]):
    """The group sends of a :func:`capture_group_sends` block, in order."""

    def to(self, group: str) -> list[GroupSend]:
        return [send for send in self if send.group == group]

    def payloads(self, group: str) -> list[Any]:
        """Every payload broadcast to ``group``, in order."""
        return [payload for send in self.to(group) for payload in send.payloads]

    def events(self, group: str) -> list[dict[str, Any]]:
        """The ``group_send`` events (not broadcasts) sent to ``group``."""
        return [send.message for send in self.to(group) if not send.payloads]


@contextlib.contextmanager
def capture_group_sends() -> Iterator[GroupSends]:
    """Record every group send made through the package's layers in the block."""
    sent = GroupSends()

    def observe(group: str, message: dict[str, Any], report: DeliveryReport) -> None:
        sent.append(GroupSend(group, message, report))

    GROUP_SEND_OBSERVERS.append(observe)
    try:
        yield sent
    finally:
        GROUP_SEND_OBSERVERS.remove(observe)


@dataclass(frozen=True)
class Close:
    """A close a tuned consumer wrote: the consumer's class name, the connection's
    path, the code and the reason."""

    consumer: str
    path: str
    code: int
    reason: str


class Closes(list[Close]):
    """The closes of a :func:`capture_closes` block, in order."""

    def codes(self) -> list[int]:
        return [close.code for close in self]


@contextlib.contextmanager
def capture_closes() -> Iterator[Closes]:
    """Record every close a tuned consumer writes in the block (its own ``close()``,
    the policies': heartbeat, rate limit, slow reader..., and the package's protocol);
    each is also in ``channels_tuning_closes_total``."""
    closed = Closes()

    def observe(consumer: Any, code: int, reason: str | None) -> None:
        path = str(getattr(consumer, "scope", {}).get("path", ""))
        closed.append(Close(consumer.consumer_label(), path, code, reason or ""))

    CLOSE_OBSERVERS.append(observe)
    try:
        yield closed
    finally:
        CLOSE_OBSERVERS.remove(observe)


@dataclass(frozen=True)
class PresenceChange:
    """A connection of this process entered (``joined``) or removed (``left``) from a
    group's presence (the ``PRESENCE`` setting), with its identity."""

    kind: str
    group: str
    identity: str
    channel: str


class PresenceChanges(list[PresenceChange]):
    """The presence changes of a :func:`capture_presence` block, in order."""

    def joined(self, group: str) -> list[str]:
        """The identities entered in ``group``'s presence, in order."""
        return [c.identity for c in self if c.group == group and c.kind == "joined"]

    def left(self, group: str) -> list[str]:
        """The identities removed from ``group``'s presence, in order."""
        return [c.identity for c in self if c.group == group and c.kind == "left"]


@contextlib.contextmanager
def capture_presence() -> Iterator[PresenceChanges]:
    """Record every presence entry this process' connections enter or remove in the
    block (the join/leave events members receive are coalesced from these, once a
    second; a ``capture_group_sends`` block sees those frames)."""
    seen = PresenceChanges()

    def observe(kind: str, group: str, identity: str, channel: str) -> None:
        seen.append(PresenceChange(kind, group, identity, channel))

    PRESENCE_OBSERVERS.append(observe)
    try:
        yield seen
    finally:
        PRESENCE_OBSERVERS.remove(observe)
