"""What a group send reached: :class:`DeliveryReport`, shared by every tuned layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..observability.stats import GROUP_SEND_DROPPED


@dataclass
class DeliveryReport:
    """What one group send reached."""

    group: str
    #: Channels (consumers) that were members of the group.
    receivers: int = 0
    #: Receiving processes (channel-layer keys) written to.
    processes: int = 0
    #: Channels whose process key was full: they did not get the message.
    receivers_over_capacity: int = 0
    #: Sends retried because receivers were full (``broadcast(on_full="wait")``).
    retries: int = 0
    #: Per process key still full: the channels behind it (for retries).
    full: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def delivered(self) -> int:
        return self.receivers - self.receivers_over_capacity

    @property
    def complete(self) -> bool:
        return self.receivers_over_capacity == 0


class ReportingGroupSendMixin:
    """``group_send`` on top of a layer's ``group_send_report``."""

    async def group_send_report(
        self, group: str, message: dict[str, Any], only: dict[str, list[str]] | None = None
    ) -> DeliveryReport:
        raise NotImplementedError

    async def group_send(self, group: str, message: dict[str, Any]) -> DeliveryReport:
        """Send to every member; return what was delivered. Never raises for full
        receivers: they are counted (reason ``over_capacity``) and reported."""
        report = await self.group_send_report(group, message)
        if report.receivers_over_capacity:
            GROUP_SEND_DROPPED.inc((group, "over_capacity"), report.receivers_over_capacity)
        return report
