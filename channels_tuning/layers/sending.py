"""Group sends with a policy for full receivers, shared by every tuned layer.

A receiving process whose layer inbox is at ``capacity`` cannot take a message.
channels-redis drops it with an INFO log; here the layer's ``on_full`` policy
decides, for ``group_send`` (the path existing Channels code already uses) and for
``broadcast()``:

``"wait"`` (the layers' default)
    Retry only the full receivers, with a short backoff, until ``timeout`` seconds
    have passed. Receivers that had room got the message once: retries never
    duplicate. What is still full at the deadline is dropped and counted
    (``group_send`` returns the report; ``broadcast()`` raises
    :class:`~channels_tuning.exceptions.DeliveryTimeout`).
``"drop"``
    One attempt (channels-redis' own behaviour), losses counted and reported.
``"raise"``
    One attempt; :class:`~channels_tuning.exceptions.ReceiversFull` if any missed it.

Every loss is counted twice, so that an operator sees it whoever sent: in the
sending process (``channels_tuning_group_send_dropped_total``, which a view or a
worker may never publish) and, on the Redis layer, in the *receiving* server
process (``channels_tuning_group_messages_missed_total``, in its ``wsstats``
snapshot and on its ``/metrics``), through a small Redis counter next to that
process' inbox that the process collects every stats interval.

Waiting cannot hang: a deadline bounds it (``group_send_timeout``, 2 s by default
for ``group_send``, so a handler that sends to a slow group stalls at most that
long), and the process reader that drains a receiving process' inbox runs apart from
that process' handlers (a handler waiting on its own group does not block its own
inbox).

Waiting is fair across groups: at most ``MAX_IN_FLIGHT`` attempts per process talk to
the layer at once, but a send holds that place only for an attempt, never while it
waits for room; and at most ``MAX_WAITING_PER_GROUP`` sends per group wait at once
(more wait for their turn, within their deadline). Measured before: with one
receiving process stalled, 64 clients posting to a room with members there held all
64 places, and an unrelated room's echo went from 3 ms to 2.3 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

from ..exceptions import DeliveryTimeout, ReceiversFull
from ..runtime.asyncutil import loop_keyed_limiter, loop_semaphore
from ..runtime.counters import GROUP_SEND_DROPPED, LAYER_ERRORS, group_label
from .capabilities import missed_messages
from .report import DeliveryReport

ON_FULL_POLICIES: Final = ("wait", "drop", "raise")
#: Default ``on_full`` and deadline of a tuned layer's ``group_send`` (layer CONFIG
#: keys ``on_full`` and ``group_send_timeout``).
DEFAULT_ON_FULL: Final = "wait"
DEFAULT_GROUP_SEND_TIMEOUT: Final = 2.0

MAX_IN_FLIGHT = 64
#: Sends to one group waiting for full receivers at once (each retries every 50 ms at
#: most: this bounds what one slow group costs the layer).
MAX_WAITING_PER_GROUP = 8
#: Called with ``(group, message, report)`` after each first attempt of a group send
#: (:func:`channels_tuning.testing.capture_group_sends`); empty outside tests.
GROUP_SEND_OBSERVERS: list[Callable[[str, dict[str, Any], DeliveryReport], None]] = []
_RETRY_FIRST_DELAY = 0.002
_RETRY_MAX_DELAY = 0.05


def check_policy(on_full: str, timeout: float) -> None:
    if on_full not in ON_FULL_POLICIES:
        raise ValueError(f"on_full must be 'wait', 'drop' or 'raise', not {on_full!r}")
    if not isinstance(timeout, (int, float)) or timeout < 0:
        raise ValueError(f"group_send_timeout must be a number >= 0, not {timeout!r}")


async def send_with_policy(
    layer: Any,
    group: str,
    message: dict[str, Any],
    *,
    on_full: str,
    timeout: float,
    raise_at_deadline: bool,
) -> DeliveryReport:
    """One group send through ``layer.group_send_report`` with the ``on_full`` policy."""
    check_policy(on_full, timeout)
    started = asyncio.get_running_loop().time()
    async with loop_semaphore("group_send", MAX_IN_FLIGHT):
        report: DeliveryReport = await layer.group_send_report(group, message)
    for observe in GROUP_SEND_OBSERVERS:
        observe(group, message, report)
    if report.receivers_gone:
        # Their server process is gone: nobody reads that inbox any more.
        GROUP_SEND_DROPPED.inc((group_label(group), "process_gone"), report.receivers_gone)
    if report.state_lost:
        # Redis restarted: the group's members are not back yet. Nobody got it.
        GROUP_SEND_DROPPED.inc((group_label(group), "redis_state_lost"))
    if report.complete:
        return report
    if on_full == "drop":
        await _count_loss(layer, report, "over_capacity")
        return report
    if on_full == "raise":
        await _count_loss(layer, report, "raised")
        raise ReceiversFull(report)
    waiting = loop_keyed_limiter("group_send_waiting", MAX_WAITING_PER_GROUP)
    left = timeout - (asyncio.get_running_loop().time() - started)
    delivered = False
    if await waiting.acquire(group, max(left, 0.0)):
        try:
            left = timeout - (asyncio.get_running_loop().time() - started)
            delivered = await _wait_for_room(layer, group, message, report, left)
        finally:
            waiting.release(group)
    if not delivered:
        await _count_loss(layer, report, "deadline")
        if raise_at_deadline:
            raise DeliveryTimeout(report)
    return report


async def _wait_for_room(
    layer: Any, group: str, message: dict[str, Any], report: DeliveryReport, timeout: float
) -> bool:
    """Retry the full receivers until none is full (True) or the deadline (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = _RETRY_FIRST_DELAY
    while report.full:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, _RETRY_MAX_DELAY)
        async with loop_semaphore("group_send", MAX_IN_FLIGHT):  # for the attempt only
            retry = await layer.group_send_report(group, message, only=report.full)
        report.retries += 1
        report.full = retry.full
        report.receivers_over_capacity = retry.receivers_over_capacity
        if retry.receivers_gone:  # a full receiver's process died while we waited
            report.receivers_gone += retry.receivers_gone
            GROUP_SEND_DROPPED.inc((group_label(group), "process_gone"), retry.receivers_gone)
    return True


async def _count_loss(layer: Any, report: DeliveryReport, reason: str) -> None:
    GROUP_SEND_DROPPED.inc((group_label(report.group), reason), report.receivers_over_capacity)
    counter = missed_messages(layer)
    if counter is not None:
        try:
            await counter.record_missed(report.full, reason)
        except Exception as exc:  # Redis trouble: the sender's own counter has the loss
            LAYER_ERRORS.inc((f"record_missed:{type(exc).__name__}",))


class ReportingGroupSendMixin:
    """``group_send`` with the layer's ``on_full`` policy, on top of the layer's
    ``group_send_report`` (one attempt, nothing counted)."""

    on_full: str = DEFAULT_ON_FULL
    group_send_timeout: float = DEFAULT_GROUP_SEND_TIMEOUT

    def __init__(
        self,
        *args: Any,
        on_full: str | None = None,
        group_send_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        # The layer CONFIG's on_full and group_send_timeout; the rest is the layer's.
        super().__init__(*args, **kwargs)
        self.configure_group_send(on_full, group_send_timeout)

    def configure_group_send(self, on_full: str | None, group_send_timeout: float | None) -> None:
        if on_full is not None:
            self.on_full = on_full
        if group_send_timeout is not None:
            self.group_send_timeout = group_send_timeout
        check_policy(self.on_full, self.group_send_timeout)

    async def group_send_report(
        self, group: str, message: dict[str, Any], only: dict[str, list[str]] | None = None
    ) -> DeliveryReport:
        raise NotImplementedError

    async def group_send(self, group: str, message: dict[str, Any]) -> DeliveryReport:
        """Send to every member and return what was delivered.

        Full receivers are handled by the layer's ``on_full`` (``wait`` by default:
        up to ``group_send_timeout`` seconds, then counted as dropped and reported,
        never raised, as Channels' ``group_send`` never raises for full receivers)."""
        return await send_with_policy(
            self,
            group,
            message,
            on_full=self.on_full,
            timeout=self.group_send_timeout,
            raise_at_deadline=False,
        )
