"""A channel layer written from docs/architecture.md's "Writing a layer" alone (steps 1
and 2: no optional capability), on Channels' own in-memory layer. The conformance
tests (tests/e2e/test_layer_conformance.py) run against it as against the package's."""

from __future__ import annotations

from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

from channels_tuning.layers.report import DeliveryReport
from channels_tuning.layers.sending import ReportingGroupSendMixin


# Step 1: the mixin first (it takes the on_full and group_send_timeout options).
class DocumentedLayer(ReportingGroupSendMixin, InMemoryChannelLayer):  # type: ignore[misc]
    # Step 2: one attempt, a report, full members counted and named by channel.
    async def group_send_report(
        self, group: str, message: dict[str, Any], only: dict[str, list[str]] | None = None
    ) -> DeliveryReport:
        report = DeliveryReport(group)
        if only is None:
            channels = list(self.groups.get(group, {}))
        else:
            channels = [channel for names in only.values() for channel in names]
        for channel in channels:
            report.receivers += 1
            try:
                await self.send(channel, message)
            except ChannelFull:
                report.receivers_over_capacity += 1
                report.full[channel] = [channel]
        report.processes = 1 if report.receivers else 0
        return report
