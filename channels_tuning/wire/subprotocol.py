"""Which clients speak channels-tuning's protocol: the ``channels-tuning.v1`` subprotocol.

A plain WebSocket page (``new WebSocket(url)``, Channels' tutorial) must get exactly
the frames its consumer sends, nothing else: no ``ct.ping`` shown as a chat line, no
``{"kind":"data",…}`` envelope around its messages. The package's own clients (the
browser's ``ChannelsTuningClient``, :mod:`channels_tuning.client`) want more: the
application-level heartbeat (a browser cannot see protocol pings, so it needs frames
of its own to notice a dead server), history envelopes with offsets, ``subscribed``
and ``presence`` frames. They say so in the handshake, the way WebSocket offers for
it: ``Sec-WebSocket-Protocol: channels-tuning.v1`` (RFC 6455 1.9). A tuned consumer
that accepts without a subprotocol of its own selects it in the answer, so the
client knows the server understood; a consumer that selects another one of the
offered subprotocols still treats the client as a channels-tuning client.

The setting ``CLIENT_PROTOCOL`` (or a consumer's ``client_protocol``) is
``"negotiate"`` (the default: as above) or ``"always"``: every client is taken to
speak it, as the 0.1 releases did, for fleets of older package clients that do
not offer the subprotocol yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

#: The subprotocol the package's clients offer.
SUBPROTOCOL: Final = "channels-tuning.v1"
#: A subprotocol offered as ``ct-token.<token>`` carries an authentication token
#: (:mod:`channels_tuning.auth`); it is never selected.
TOKEN_SUBPROTOCOL_PREFIX: Final = "ct-token."

#: Values of ``CLIENT_PROTOCOL``.
NEGOTIATE: Final = "negotiate"
ALWAYS: Final = "always"
CLIENT_PROTOCOL_CHOICES: Final = (NEGOTIATE, ALWAYS)


def offers_subprotocol(scope: Mapping[str, Any]) -> bool:
    """Whether the client offered :data:`SUBPROTOCOL` in its handshake."""
    offered: Iterable[str] = scope.get("subprotocols") or ()
    return SUBPROTOCOL in offered


def speaks_tuned_protocol(scope: Mapping[str, Any], client_protocol: str) -> bool:
    """Whether the connection of ``scope`` gets heartbeat frames and envelopes."""
    return client_protocol == ALWAYS or offers_subprotocol(scope)
