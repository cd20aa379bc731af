"""Producer-side group sends: encode once, and apply backpressure instead of losing.

::

    from channels_tuning.broadcast import broadcast

    report = await broadcast("prices", {"sym": "ACME", "px": 12.5}, on_full="wait", timeout=5)

The payload is encoded once, here (a ``str`` is sent as a text frame, ``bytes`` as a
binary frame, anything else as compact JSON text), and travels through the layer as
a ready ASGI ``websocket.send`` message. Each receiving process deserializes it once
and puts that same message in the bounded send queue of every local member: no
handler call, task or ``json.dumps`` per consumer. Members must be tuned consumers.

``on_full`` says what happens when a receiving process' layer key is at ``capacity``
(the process is not keeping up):

``"wait"`` (default)
    Retry only the full receivers, with a short backoff, until ``timeout`` seconds
    have passed; then raise :class:`DeliveryTimeout` (with the report). Receivers
    that had room got the message once: retries never duplicate.
``"drop"``
    Return the report; the receivers that missed it are counted
    (``channels_tuning_group_send_dropped_total``, reason ``over_capacity``).
``"raise"``
    Raise :class:`ReceiversFull` (with the report) after the one attempt.

At most ``MAX_IN_FLIGHT`` broadcasts per process run at once; more wait their turn,
so a burst of producers cannot open unbounded Redis work.

To a group with history (the ``HISTORY`` setting, :mod:`.layers.history`) the payload is first
appended to the group's history, which numbers it, and clients get it in an envelope
with its offset and epoch (:mod:`channels_tuning.wire.offsets`): ``bytes`` in a binary
protobuf ``Envelope``, anything else as the JSON envelope's ``data`` (a ``str`` as a
JSON string). One more Redis round trip per broadcast; no ``coalesce_key`` there
(coalescing would cut the numbered sequence).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, Literal, overload

from asgiref.sync import async_to_sync
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import get_channel_layer

from .exceptions import DeliveryError, DeliveryTimeout, ReceiversFull
from .layers.acks import collect_reports, new_ack_id
from .layers.capabilities import history_store, reporting
from .layers.frames import FRAME_TYPE, FRAMES_TYPE, encode_frame
from .layers.history import history_policy
from .layers.report import AckReport, DeliveryReport
from .layers.sending import MAX_IN_FLIGHT, send_with_policy
from .runtime.counters import LAYER_ERRORS
from .runtime.ratelog import RateLimitedLog
from .wire.compact import compact_json
from .wire.offsets import data_frame

__all__ = [
    "FRAMES_TYPE",
    "FRAME_TYPE",
    "MAX_IN_FLIGHT",
    "AckReport",
    "DeliveryError",
    "DeliveryReport",
    "DeliveryTimeout",
    "ReceiversFull",
    "broadcast",
    "broadcast_many",
    "broadcast_on_commit",
    "encode_frame",
    "send_to_group",
]


@overload
async def broadcast(
    group: str,
    payload: Any,
    *,
    on_full: str = ...,
    timeout: float = ...,
    coalesce_key: Any = ...,
    exclude: str | None = ...,
    ack: Literal[False] = ...,
    layer_alias: str = ...,
    layer: Any = ...,
) -> DeliveryReport: ...


@overload
async def broadcast(
    group: str,
    payload: Any,
    *,
    on_full: str = ...,
    timeout: float = ...,
    coalesce_key: Any = ...,
    exclude: str | None = ...,
    ack: Literal[True],
    layer_alias: str = ...,
    layer: Any = ...,
) -> AckReport: ...


async def broadcast(
    group: str,
    payload: Any,
    *,
    on_full: str = "wait",
    timeout: float = 5.0,
    coalesce_key: Any = None,
    exclude: str | None = None,
    ack: bool = False,
    layer_alias: str = DEFAULT_CHANNEL_LAYER,
    layer: Any = None,
) -> DeliveryReport | AckReport:
    """Send ``payload`` to every member of ``group`` as one pre-encoded frame.

    ``exclude``: a consumer's ``channel_name`` that does not get it (the sender's own
    connection, as Socket.IO's ``socket.broadcast`` or Phoenix's ``broadcast_from``);
    the report still counts it among the receivers. ``layer``: a layer instance to
    use instead of ``CHANNEL_LAYERS[layer_alias]`` (a producer outside Django, a test).

    ``ack=True``: the package's clients acknowledge the message once they handled it,
    and the call returns an :class:`AckReport` within ``timeout`` (plus half a second
    for the servers' last reports): how many acknowledged, did not in time, were not
    reached, or cannot acknowledge (plain pages); receivers still full at the timeout
    are ``not_reached`` rather than a :class:`DeliveryTimeout`. JSON or ``str``
    payloads, groups without history, no ``exclude`` (:mod:`channels_tuning.layers.acks`)."""
    if layer is None:
        layer = get_channel_layer(layer_alias)
    if ack:
        if exclude is not None:
            raise ValueError("broadcast(ack=True) takes no exclude")
        return await _acknowledged(layer, group, payload, on_full, timeout, coalesce_key)
    policy = history_policy(group)
    if policy is not None:
        _refuse_on_history(group, coalesce_key=coalesce_key, exclude=exclude)
        message = await _numbered(layer, group, payload, policy)
    else:
        # The group and whether the text is JSON: a client subscribed to the group as
        # a topic gets the frame in an envelope naming it (channels_tuning.wire.topics).
        message = {"type": FRAME_TYPE, "frame": encode_frame(payload), "group": group}
        if not isinstance(payload, (str, bytes, bytearray, memoryview)):
            message["json"] = True
        if coalesce_key is not None:
            message["key"] = coalesce_key
        if exclude is not None:
            message["exclude"] = exclude
    return await send_to_group(
        group, message, on_full=on_full, timeout=timeout, layer_alias=layer_alias, layer=layer
    )


async def broadcast_many(
    group: str,
    payloads: Iterable[Any],
    *,
    on_full: str = "wait",
    timeout: float = 5.0,
    exclude: str | None = None,
    layer_alias: str = DEFAULT_CHANNEL_LAYER,
    layer: Any = None,
) -> DeliveryReport:
    """Send several frames to ``group`` in one layer message: one Redis round trip
    and one slot of each receiving process' capacity for the whole batch (to a group
    with history: one broadcast each, so that each has its offset). ``exclude`` as
    for :func:`broadcast`."""
    if history_policy(group) is not None:
        _refuse_on_history(group, exclude=exclude)
        # One report for the batch: receivers as for one message, losses summed.
        total = DeliveryReport(group)
        for payload in payloads:
            report = await broadcast(
                group,
                payload,
                on_full=on_full,
                timeout=timeout,
                layer_alias=layer_alias,
                layer=layer,
            )
            total.receivers = max(total.receivers, report.receivers)
            total.processes = max(total.processes, report.processes)
            total.receivers_over_capacity += report.receivers_over_capacity
            total.receivers_gone += report.receivers_gone
            total.retries += report.retries
            total.state_lost = total.state_lost or report.state_lost
        return total
    payloads = list(payloads)
    message: dict[str, Any] = {
        "type": FRAMES_TYPE,
        "frames": [encode_frame(p) for p in payloads],
        "group": group,  # for subscribed clients' envelopes, as in broadcast()
        "json": [not isinstance(p, (str, bytes, bytearray, memoryview)) for p in payloads],
    }
    if exclude is not None:
        message["exclude"] = exclude
    return await send_to_group(
        group, message, on_full=on_full, timeout=timeout, layer_alias=layer_alias, layer=layer
    )


logger = logging.getLogger("channels_tuning")
_after_commit_log = RateLimitedLog(logger, interval=60.0, level=logging.WARNING)


def broadcast_on_commit(
    group: str, payload: Any, *, using: str | None = None, **options: Any
) -> None:
    """:func:`broadcast` once the current database transaction commits; never if it
    rolls back. Outside a transaction (autocommit), now.

    For the code that changes the data, which is synchronous in Django (a view, a
    ``post_save`` receiver, a Celery task): clients told of a change then read rows
    that exist. Call it from the thread of the transaction (from async code:
    ``await sync_to_async(broadcast_on_commit)(...)`` inside the same
    ``sync_to_async`` function as the transaction). ``options`` are
    :func:`broadcast`'s. Nothing is returned: the send happens later. A send that fails
    after the commit does not undo it: it is logged (a line a minute at most) and
    counted in ``channels_tuning_layer_errors_total{operation="broadcast_on_commit:..."}``
    (receivers over capacity are counted by the send itself)."""
    from django.db import transaction

    def send() -> None:
        try:
            async_to_sync(broadcast)(group, payload, **options)
        except Exception as error:
            LAYER_ERRORS.inc((f"broadcast_on_commit:{type(error).__name__}",))
            _after_commit_log.log(
                "channels_tuning: broadcast to %r after the commit failed: %r", group, error
            )

    transaction.on_commit(send, using=using)


async def _acknowledged(
    layer: Any, group: str, payload: Any, on_full: str, timeout: float, coalesce_key: Any
) -> AckReport:
    if history_policy(group) is not None:
        raise ValueError(
            f"group {group!r} has history: its clients recover what they missed, "
            "broadcast() takes no ack"
        )
    if isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError("broadcast(ack=True) sends JSON text: give a JSON value or a str")
    if reporting(layer) is None:
        raise TypeError(f"broadcast(ack=True) needs a channels_tuning layer, not {layer!r}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    ack_id = new_ack_id()
    reply_to = await layer.new_channel("ct-acks")
    push = {"kind": "push", "id": ack_id, "data": payload}
    message: dict[str, Any] = {
        "type": FRAME_TYPE,
        "frame": encode_frame(payload),  # what a plain page gets
        "group": group,
        "ack": [ack_id, reply_to, time.time() + timeout, timeout],
        "ack_frame": {"type": "websocket.send", "text": compact_json(push)},
    }
    if not isinstance(payload, str):
        message["json"] = True
    if coalesce_key is not None:
        message["key"] = coalesce_key
    # Receivers still full at the deadline are counted not_reached, not raised: the
    # report says what happened to every member.
    delivery = await send_with_policy(
        layer, group, message, on_full=on_full, timeout=timeout, raise_at_deadline=False
    )
    return await collect_reports(layer, reply_to, ack_id, delivery, deadline)


def _refuse_on_history(group: str, **options: Any) -> None:
    """A numbered group's members must get every offset: no coalescing, no exclusion
    (the excluded client would see a gap and ask to recover what it was not sent)."""
    for name, value in options.items():
        if value is not None:
            raise ValueError(f"group {group!r} has history: broadcast() takes no {name}")


async def _numbered(layer: Any, group: str, payload: Any, policy: Any) -> dict[str, Any]:
    """Append ``payload`` to ``group``'s history; the layer message with its offset."""
    history = history_store(layer)
    if history is None:
        raise TypeError(
            f"group {group!r} has HISTORY, which {type(layer).__name__} does not keep "
            "(the tuned Redis and in-memory layers do)"
        )
    binary = isinstance(payload, (bytes, bytearray, memoryview))
    data = bytes(payload) if binary else compact_json(payload).encode()
    offset, epoch = await history.append(group, data, binary, policy)
    return {
        "type": FRAME_TYPE,
        "frame": data_frame(group, offset, epoch, data, binary=binary),
        "group": group,
        "offset": offset,
        "epoch": epoch,
    }


async def send_to_group(
    group: str,
    message: dict[str, Any],
    *,
    on_full: str = "wait",
    timeout: float = 5.0,
    layer_alias: str = DEFAULT_CHANNEL_LAYER,
    layer: Any = None,
) -> DeliveryReport:
    """``group_send`` of any layer message with the ``on_full`` policy (``wait``
    raises :class:`DeliveryTimeout` at the deadline)."""
    if layer is None:
        layer = get_channel_layer(layer_alias)
    if reporting(layer) is None:
        raise TypeError(
            f"broadcast needs a channels_tuning.layers layer, not {type(layer).__name__} "
            f"(CHANNEL_LAYERS[{layer_alias!r}]['BACKEND'])"
        )
    return await send_with_policy(
        layer, group, message, on_full=on_full, timeout=timeout, raise_at_deadline=True
    )
