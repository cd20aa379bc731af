"""Group memberships of this process' tuned consumers, whichever layer holds them.

A tuned consumer added to a group, by :meth:`join_group` or by Channels' own
``self.channel_layer.group_add``, gets what ``join_group`` gives (recovery and
``subscribed`` for groups with history, presence) and has the membership tracked:
refreshed while it lives (:mod:`.redis.membership` on Redis), left when it ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..runtime.registry import registry


@asynccontextmanager
async def membership_hooks(group: str, channel: str) -> AsyncIterator[None]:
    """Around a tuned layer's ``group_add``: when ``channel`` is a tuned consumer of
    this process, it is told before (a group with history reads where it stands
    first) and after (tracked, presence, ``subscribed``), as :meth:`join_group` does,
    so that Channels' own ``self.channel_layer.group_add`` in ``connect()`` gets the
    same recovery, presence and hygiene."""
    consumer: Any = registry.get(channel)
    hooks = consumer is not None and consumer.wants_membership_hooks(group)
    if hooks:
        await consumer.membership_starting(group)
    try:
        yield
    except BaseException:
        if hooks:
            consumer.membership_failed(group)
        raise
    if consumer is not None:
        consumer.track_group(group)
    if hooks:
        await consumer.membership_added(group)


class TrackedMembershipsMixin:
    """``group_add``/``group_discard`` of every tuned layer, written once: a tuned
    consumer of this process added to a group, by :meth:`join_group` or by Channels'
    own ``self.channel_layer.group_add``, gets the membership hooks (recovery,
    presence, ``subscribed``) and has it tracked (refreshed while it lives, left when
    it ends); ``group_discard`` stops tracking it. A layer says how a membership is
    stored by overriding :meth:`add_membership`/:meth:`discard_membership` (by
    default, the Channels layer's own ``group_add``/``group_discard``)."""

    async def group_add(self, group: str, channel: str) -> None:
        async with membership_hooks(group, channel):
            await self.add_membership(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        await self.discard_membership(group, channel)
        consumer: Any = registry.get(channel)
        if consumer is not None:
            consumer.untrack_group(group)

    async def add_membership(self, group: str, channel: str) -> None:
        await super().group_add(group, channel)  # type: ignore[misc]

    async def discard_membership(self, group: str, channel: str) -> None:
        await super().group_discard(group, channel)  # type: ignore[misc]
