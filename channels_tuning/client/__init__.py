"""An asyncio client for channels-tuning servers, on the ``websockets`` library.

It offers the ``channels-tuning.v1`` subprotocol (so that a tuned consumer sends it
heartbeats and envelopes, :mod:`channels_tuning.wire.subprotocol`), answers the
server's heartbeat pings, notices a dead server when no frame
arrives for ``dead_after`` seconds, and reconnects with exponential backoff and
full jitter. It keeps a bounded queue of outgoing messages while disconnected::

    async def main():
        async with ReconnectingClient("ws://127.0.0.1:8000/ws/chat/lobby/", codec="json") as client:
            await client.send({"message": "hello"})
            async for message in client:
                print(message)

What happens on each close code (the server's table is in docs/reference/close-codes.md):

=====================  =====================================================
close code             the client
=====================  =====================================================
1000, 1003, 1007,      stops: the server ended the session, or the client
1009                   sends something the server will never accept
1008, 1013             reconnects after ``try_later_delay`` plus the backoff
1001                   reconnects at once (a random delay up to ``initial_delay``)
anything else, and     reconnects with the backoff
lost connections
=====================  =====================================================

The backoff goes back to its start once a connection has stayed open for
``stable_after`` seconds. ``max_attempts`` failed attempts in a row stop the client.

Recovery (groups with ``HISTORY`` on the server, :mod:`channels_tuning.wire.offsets`):
the client keeps the epoch and last offset of every topic it gets numbered messages
for (``positions``), asks for what it missed when it reconnects, and drops a message
it already has (``duplicates``). A ``subscribed`` message with ``recovered`` false is
passed on like any message (and to ``on_recovery``): messages were lost for good and
the application should reload its state (counted in ``gaps`` when the client had a
position). Needs a codec (``"json"`` or a Codec): raw frames are not read.

Topics (a consumer's ``topics`` table, :mod:`channels_tuning.client.subscriptions`):
``await client.subscribe("ticker")`` returns once subscribed, raises
``SubscriptionRefused`` with the server's reason, and is asked again with the
client's position after every reconnect.

Requests to a consumer's ``@rpc`` methods: ``await client.request("cart.save",
params)`` returns the result or raises ``RequestFailed`` (:mod:`.requests`).

The browser client (``static/channels_tuning/client.js``) behaves the same way.
"""

from __future__ import annotations

from .backoff import DO_NOT_RECONNECT, TRY_LATER, Backoff, reconnect_delay
from .reconnecting import PERMANENT_REFUSALS, ReconnectingClient
from .requests import RequestFailed
from .subscriptions import Subscription, SubscriptionRefused

__all__ = [
    "DO_NOT_RECONNECT",
    "PERMANENT_REFUSALS",
    "TRY_LATER",
    "Backoff",
    "ReconnectingClient",
    "RequestFailed",
    "Subscription",
    "SubscriptionRefused",
    "reconnect_delay",
]
