"""How a layer's messages reach this process' tuned consumers: handed over by the
layer itself (the in-memory and pub/sub layers: :class:`.capabilities.DirectDelivery`),
read from the process' Redis inbox by one task for all (:mod:`.redis.reader`), or, on
any other layer, read by each consumer from its own channel.
"""

from __future__ import annotations

from typing import Any

from .capabilities import DirectDelivery, direct_delivery, provides, reads_process_inbox
from .redis.reader import reader_for


def process_reader_for(layer: Any) -> Any:
    """What delivers ``layer``'s messages to this process' consumers (an object with
    ``attach``/``detach``), or None if each consumer must read its own channel."""
    if provides(layer, DirectDelivery):
        # The tuned in-memory and pub/sub layers deliver directly (the pub/sub one
        # unless channels-redis' internals changed: compat.channels_redis). Asked
        # first: channels-redis' pub/sub layer hands any attribute it lacks (such as
        # process_reader_capable) to its per-loop layer, which needs a running loop.
        return direct_delivery(layer)
    # Only the tuned Redis layer: it routes plain consumers' receive() through the
    # reader too. On channels-redis' own layer a reader would race their receive()
    # for the same inbox, so tuned consumers read their own channels there.
    if not reads_process_inbox(layer):
        return None
    return reader_for(layer)
