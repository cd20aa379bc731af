"""A tuned consumer's groups: joined, tracked, refreshed and always left.

Groups joined through ``groups`` (also those appended later), :meth:`join_group`, or
the tuned layers' ``group_add`` of the consumer's own channel are tracked: refreshed
in Redis while the connection lives (``GROUP_REFRESH_INTERVAL``) and left when it
ends, whatever ends it. Around each membership, the glue of the group features:
recovery and ``subscribed`` for groups with ``HISTORY`` (:mod:`.recovery`), presence
for groups with ``PRESENCE``. Group commands in flight are bounded per process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

from ..layers.capabilities import history_store, presence_store
from ..layers.history import history_policy
from ..layers.presence import presence_policy
from ..layers.redis.membership import refresh_finished
from ..runtime.asyncutil import loop_semaphore
from ..users import user_group
from ..wire.offsets import StreamPosition
from .outbound import OutboundMixin
from .recovery import GroupStreams

logger = logging.getLogger("channels_tuning")

#: Group adds/discards in flight per process. A shutdown or a reconnect storm
#: ends or starts thousands of connections at once; unbounded, their Redis
#: commands exhaust redis-py's connection pool ("Too many connections").
MAX_CONCURRENT_GROUP_OPS = 32


def group_ops_limiter() -> asyncio.Semaphore:
    return loop_semaphore("group_ops", MAX_CONCURRENT_GROUP_OPS)


class MembershipMixin(OutboundMixin):
    """Group memberships and their history and presence glue (the second layer of
    :class:`~channels_tuning.consumers.base.ManagedConnectionMixin`)."""

    channel_name: str = ""  # "" until a channel layer gives one
    #: The channel layer (None without CHANNEL_LAYERS); Channels types it as present.
    channel_layer: Any
    #: The client offered the channels-tuning subprotocol (or CLIENT_PROTOCOL is
    #: "always"): it gets heartbeat frames, history envelopes, subscribed and presence
    #: frames. Any other client gets exactly what the consumer sends.
    tuned_client: bool = False
    #: The groups joined: one group's name (most connections join one, and a set is
    #: 216 bytes for the connection's life), a set of several, or None.
    _joined: str | set[str] | None = None
    #: Groups join_group() is adding now (the layers' group_add leaves hooks to it).
    _joining: set[str] | None = None
    #: Groups with history this connection joined (None: none yet).
    _group_streams: GroupStreams | None = None
    #: The client's recovery requests (``ct_recover``), by group.
    _recover_requests: dict[str, StreamPosition] | None = None
    #: How many entries of self.groups have been joined (appends beyond are new).
    _groups_synced: int = 0
    #: Topics the client subscribed to (:mod:`.topics`), by name.
    _subscriptions: dict[str, Any] | None = None

    async def release(self) -> None:
        """Give back what the connection holds: leaves every joined group (those in
        ``self.groups``, joined with :meth:`join_group` or the layer's ``group_add``)."""
        joined = set(self._joined_groups()) | set(self.groups or ())
        self._joined = None
        # The streams' held frames and replay state go now, not with the consumer
        # (GroupStreams holds no reference back to it: no cycle to break).
        self._group_streams = None
        if not joined or self.channel_layer is None:
            return
        await refresh_finished()
        for group in joined:
            try:
                async with group_ops_limiter():
                    await self.channel_layer.group_discard(group, self.channel_name)
                    await self._leave_presence(group)
            except Exception:
                # Redis down: the membership expires with group_expiry instead.
                logger.warning(
                    "channels_tuning: could not leave group %s for %s",
                    group,
                    self.channel_name,
                    exc_info=True,
                )

    async def join_group(self, group: str) -> None:
        """Join ``group``; it is left automatically when the connection ends."""
        if self.channel_layer is None:
            raise RuntimeError("join_group() needs a channel layer (CHANNEL_LAYERS)")
        joining = self._joining
        if joining is None:
            joining = self._joining = set()
        joining.add(group)  # the tuned layers' group_add then leaves the hooks to us
        try:
            await self.membership_starting(group)
            try:
                async with group_ops_limiter():
                    await self.channel_layer.group_add(group, self.channel_name)
            except BaseException:
                self.membership_failed(group)
                raise
            self.track_group(group)
            await self.membership_added(group)
        finally:
            joining.discard(group)
            if not joining and self._joining is joining:
                self._joining = None  # an empty set is 216 bytes for the connection's life

    # The tuned layers call these around a ``group_add`` of this consumer's channel
    # made elsewhere (``self.channel_layer.group_add`` in ``connect()``, as Channels'
    # tutorial does), so that it gets what ``join_group`` gives: recovery and
    # ``subscribed`` for groups with history, presence.

    def wants_membership_hooks(self, group: str) -> bool:
        """Whether a layer's ``group_add`` of ``group`` should call the hooks below
        (not while :meth:`join_group` calls them itself, nor for a group joined)."""
        return group not in (self._joining or ()) and group not in self._joined_groups()

    async def membership_starting(self, group: str) -> None:
        """Before the membership is added: a group with history starts holding live
        messages, and reads where it stands (consumers.recovery)."""
        policy = history_policy(group)
        streams = self._streams_for(group)
        if policy is not None and streams is not None:
            # A group with history: hold live messages until the client has been
            # told where the group stands (and got what it missed).
            # Bounded like the membership itself: a reconnect storm's history reads
            # exhausted redis-py's pool ("Too many connections") and failed joins.
            async with group_ops_limiter():
                await streams.start(group, policy)

    def _streams_for(self, group: str) -> GroupStreams | None:
        """The connection's streams if ``group`` has history and the client gets its
        envelopes (created at the first such group), else None."""
        history = history_store(self.channel_layer)
        if not self.tuned_client or history is None or history_policy(group) is None:
            return None
        streams = self._group_streams
        if streams is None:
            streams = self._group_streams = GroupStreams(
                history,
                self.core,
                self._recover_requests or {},
                binary=not type(self).accept_text_frames,
            )
        return streams

    def membership_failed(self, group: str) -> None:
        if self._group_streams is not None:
            self._group_streams.forget(group)

    async def membership_added(self, group: str) -> None:
        """After the membership is added: presence, then ``subscribed`` (now, or at
        the accept) and what the client missed."""
        presence = presence_policy(group)
        store = presence_store(self.channel_layer)
        if presence is not None and store is not None:
            await store.add(group, self.channel_name, self.presence_identity(), presence)
        streams = self._group_streams
        if streams is not None and group in streams.streams:
            streams.joined(group, self.send_nowait, self.room_for)

    def presence_identity(self) -> str:
        """Who this connection is in the presence of its groups (``PRESENCE``): the
        authenticated user's id, else the channel name. Override to show a name."""
        user = self.scope.get("user")
        if user is not None and getattr(user, "is_authenticated", False):
            return str(user.pk)
        return str(self.channel_name)

    async def _leave_presence(self, group: str) -> None:
        presence = presence_policy(group)
        store = presence_store(self.channel_layer)
        if presence is not None and store is not None:
            await store.remove(group, self.channel_name, presence)

    async def leave_group(self, group: str) -> None:
        self.untrack_group(group)
        if self._group_streams is not None:
            self._group_streams.forget(group)
        if self.channel_layer is not None:
            await refresh_finished()
            async with group_ops_limiter():
                await self.channel_layer.group_discard(group, self.channel_name)
                await self._leave_presence(group)

    def tracked_groups(self) -> frozenset[str]:
        return frozenset(self._joined_groups())

    def tracked_group_count(self) -> int:
        """How many groups :meth:`tracked_groups` has, without building anything (read
        for every connection at each stats snapshot)."""
        joined = self._joined
        if joined is None:
            return 0
        return 1 if isinstance(joined, str) else len(joined)

    def _joined_groups(self) -> Collection[str]:
        joined = self._joined
        if joined is None:
            return ()
        return (joined,) if isinstance(joined, str) else joined

    def track_group(self, group: str) -> None:
        """Record a membership made elsewhere (the tuned layers call this for
        ``channel_layer.group_add`` of this consumer's channel): refreshed while the
        connection lives, left when it ends."""
        joined = self._joined
        if joined is None or joined == group:
            self._joined = group
        elif isinstance(joined, str):
            self._joined = {joined, group}
        else:
            joined.add(group)

    def untrack_group(self, group: str) -> None:
        joined = self._joined
        if joined == group:
            self._joined = None
        elif isinstance(joined, set):
            joined.discard(group)
            if len(joined) <= 1:  # back to the name, or to None
                self._joined = next(iter(joined), None)

    async def _join_user_group(self) -> None:
        """An authenticated user's connection joins the user's group
        (:func:`channels_tuning.users.user_group`: ``send_to_user``,
        ``disconnect_user``), unless ``USER_GROUPS`` is off."""
        if not self.tuning.user_groups or self.channel_layer is None:
            return
        user = self.scope.get("user")
        if user is not None and getattr(user, "is_authenticated", False):
            await self.join_group(user_group(user.pk))

    async def _join_new_groups(self) -> None:
        """Join what was appended to ``self.groups`` since the last look (at connect,
        then after each handler): Channels would leave such groups unjoined, yet
        discard them at disconnect; here they are joined, tracked and left."""
        groups = self.groups
        start = self._groups_synced if self._groups_synced <= len(groups) else 0
        for group in groups[start:]:
            if self.channel_layer is not None and group not in self._joined_groups():
                await self.join_group(group)
        self._groups_synced = len(groups)
