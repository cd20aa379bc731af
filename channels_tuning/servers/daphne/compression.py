"""Opt-in permessage-deflate for ``channels-tuning-daphne`` (``--ws-compression``).

Measured in docs/compression.md: zlib's defaults cost a few hundred KiB per
connection; these a few tens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept


@dataclass(frozen=True)
class Compression:
    """Opt-in permessage-deflate (RFC 7692) with memory-conscious defaults.

    zlib's own defaults (15 window bits, memLevel 8) cost a few hundred KiB per
    connection; these cost a few tens (see docs/compression.md for the measured
    figures). Frames shorter than ``threshold`` bytes are sent uncompressed: for
    small messages deflate's CPU buys nothing. ``no_context_takeover`` starts
    every message from an empty window (worse ratio, no history to keep).
    """

    threshold: int = 1024
    window_bits: int = 11
    mem_level: int = 4
    no_context_takeover: bool = True

    def accept(self, offers: list[Any]) -> Any:
        """autobahn's ``perMessageCompressionAccept`` hook."""
        for offer in offers:
            if not isinstance(offer, PerMessageDeflateOffer):
                continue
            bits = self.window_bits
            if offer.request_max_window_bits:
                bits = min(bits, offer.request_max_window_bits)
            return PerMessageDeflateOfferAccept(
                offer,
                request_no_context_takeover=(
                    self.no_context_takeover and offer.accept_no_context_takeover
                ),
                request_max_window_bits=bits if offer.accept_max_window_bits else 0,
                no_context_takeover=self.no_context_takeover,
                window_bits=bits,
                mem_level=self.mem_level,
            )
        return None
