"""Channels' in-memory layer with reporting group sends and direct delivery."""

from __future__ import annotations

from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer

from ..compat import channels as channels_hooks
from ..runtime.counters import GROUP_SENDS, group_label
from . import capabilities
from .history import MemoryHistory
from .membership import TrackedMembershipsMixin
from .presence import MemoryPresence
from .report import DeliveryReport
from .sending import ReportingGroupSendMixin


# group_send returns a DeliveryReport where Channels' returns None (docs/differences.md).
class InMemoryChannelLayer(  # type: ignore[misc]
    TrackedMembershipsMixin, ReportingGroupSendMixin, ChannelsInMemoryChannelLayer
):
    """Channels' in-memory layer, with reporting group sends, and direct delivery
    to tuned consumers: no reader task per connection, no deep copy per member."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._receivers: dict[str, Any] = {}
        #: Groups' recent broadcasts (groups with HISTORY), in this process.
        self.history = MemoryHistory()
        #: Who is in groups with presence (this process is the whole world).
        self.presence = MemoryPresence(self)

    # Direct delivery (layers.capabilities.DirectDelivery), as the Redis reader does.
    def attach(self, consumer: Any) -> None:
        self._receivers[consumer.channel_name] = consumer

    def detach(self, consumer: Any) -> None:
        channel = consumer.channel_name
        if self._receivers.get(channel) is consumer:
            del self._receivers[channel]

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        consumer = self._receivers.get(channel)
        if consumer is not None:
            consumer.deliver_layer_message(message)
        else:
            await super().send(channel, message)

    async def group_send_report(
        self, group: str, message: dict[str, Any], only: dict[str, list[str]] | None = None
    ) -> DeliveryReport:
        assert isinstance(message, dict), "Message is not a dict"
        capabilities.require_valid_group_name(self, group)
        channels_hooks.clean_expired(self)
        report = DeliveryReport(group)
        channels = list(self.groups.get(group, {})) if only is None else list(only)
        for channel in channels:
            report.receivers += 1
            consumer = self._receivers.get(channel)
            if consumer is not None:
                if consumer.layer_backlog >= consumer.inbox_high_water:
                    # Its handlers are behind: a full receiver, as on Redis.
                    report.receivers_over_capacity += 1
                    report.full[channel] = [channel]
                    continue
                # One shared message for all local consumers: they never mutate it.
                consumer.deliver_layer_message(message)
                continue
            try:
                await super().send(channel, message)
            except ChannelFull:
                report.receivers_over_capacity += 1
                report.full[channel] = [channel]
        report.processes = 1 if report.receivers else 0
        GROUP_SENDS.inc((group_label(group),))
        return report
