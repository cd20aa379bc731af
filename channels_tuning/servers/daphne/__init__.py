"""daphne with flow control, a bounded inbound queue and a graceful drain.

Run it instead of ``daphne`` (same options)::

    channels-tuning-daphne -b 127.0.0.1 -p 8000 example_project.asgi:application

What it changes, for WebSocket connections only (HTTP is daphne's, untouched):

- **Outbound flow control.** Plain daphne writes every frame into Twisted's
  buffer at once (daphne #170): a client that stops reading grows the process
  without limit. Here each connection's transport has a streaming producer
  registered; Twisted pauses it when more than ``bufferSize`` (64 KiB) is
  waiting for the kernel, and the application's ``send`` is a
  :class:`FlowControlledSend` whose ``await send(...)`` waits until the buffer
  has drained, like asyncio's ``drain()``. Tuned consumers see the pause and
  queue (bounded, with their overflow policy) instead.
- **Inbound bound.** daphne's per-connection input queue is unbounded; here,
  when ``INBOUND_HIGH_WATER`` frames are waiting for the application, the
  server stops reading the socket (TCP pushes back on the client) until the
  application has caught up to a quarter of that.
- **Bounded kernel buffers** (``--ws-send-buffer``): each WebSocket's SO_SNDBUF is
  fixed (64 KiB by default) instead of autotuned up to 4 MB: with eager writes the
  kernel's buffer is the first a burst fills, outside the process and its bounds.
- **Bounded upgrades in progress** (``--max-pending-upgrades``, 500): beyond that many
  upgrades waiting for their application's accept, a new one gets 503 before Django,
  so a reconnect storm is refused in part instead of served too late for all.
- **Opt-in permessage-deflate** (``--ws-compression``), see :class:`Compression`.
- **A health endpoint** for load balancers (``--health-path``, ``/_ct/health``):
  200 while serving (also when full), 503 while draining; ``?ready``: 503 when full
  too; see :mod:`.health`.
- **Graceful drain** on SIGTERM/SIGINT: health check 503 (and ``--drain-health-delay``
  seconds of serving, for the balancer to notice), then stop listening, close every WebSocket
  with 1012 in batches (``--drain-rate`` a second), give applications
  ``--drain-timeout`` seconds to run their disconnect handlers (group cleanup), then
  cancel what is left and exit, logging the phases. A second signal exits at once.
- **A handoff on one port** (``--reuse-port``): a new process listens beside the old
  one, whose clients reconnect to it without a refused attempt; see :mod:`.handoff`.
"""

from __future__ import annotations

from .cli import TunedCommandLineInterface, main
from .compression import Compression
from .send import INBOUND_HIGH_WATER, FlowControlledSend, InboundQueue
from .server import (
    DEFAULT_MAX_PENDING_UPGRADES,
    DEFAULT_SEND_BUFFER,
    TunedOptions,
    TunedServer,
)

__all__ = [
    "DEFAULT_MAX_PENDING_UPGRADES",
    "DEFAULT_SEND_BUFFER",
    "INBOUND_HIGH_WATER",
    "Compression",
    "FlowControlledSend",
    "InboundQueue",
    "TunedCommandLineInterface",
    "TunedOptions",
    "TunedServer",
    "main",
]
