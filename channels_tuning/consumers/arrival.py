"""When a client frame arrived, for the rate limit: :class:`ArrivalMixin`.

Client frames are handled one at a time; while a handler awaits (a slow query, a
group send waiting for room) the client's next frames wait in the server's queue and
are read together when it returns. Charged to ``RATE_LIMIT`` when read, an honest
client's frames look like a burst and it is closed 1008 for the server's slowness
(issue #26 measured it). So each frame is charged when it arrived:

- ``channels-tuning-daphne`` says when (its input queue keeps each frame's arrival
  time: ``transport.received_at``);
- other servers (uvicorn, hypercorn, plain daphne) do not: a frame read as a slow
  handler returns is charged by
  :meth:`~channels_tuning.core.ConnectionCore.queued_arrival`, as if the client had
  sent at the rate allowed while the handler waited. The bound stays
  ``burst + rate x time``; only the burst a slow handler hides is forgiven.

Two floats per connection, set only after a handler slower than
:data:`SLOW_HANDLER` (class defaults otherwise).
"""

from __future__ import annotations

from ..core import ConnectionCore
from ..runtime import clock
from .timers import TimersMixin

#: A handler slower than this may have let frames queue behind it (an honest client
#: within a rate limit sends a few frames in 20 ms; a faster handler hides none).
SLOW_HANDLER = 0.02
#: A frame read this soon after a slow handler returned was (or may have been)
#: waiting for it: the server hands queued frames over within a few loop turns.
QUEUED_GAP = 0.005


class ArrivalMixin(TimersMixin):
    """Arrival times of client frames (a layer of
    :class:`~channels_tuning.consumers.base.ManagedConnectionMixin`)."""

    #: Since when frames may have queued behind a slow handler (None: they did not).
    _queued_since: float | None = None
    #: When the last handler returned, while catching up after a slow one.
    _handler_done: float = 0.0

    def _received_at(self, core: ConnectionCore) -> float:
        """When the frame being read arrived: told by the tuned server, else
        estimated after a slow handler, else now."""
        now = clock.monotonic()
        arrived: float = getattr(self.transport, "received_at", 0.0)
        if core.last_seen <= arrived <= now:
            return arrived
        since = self._queued_since
        if since is not None:
            if now - self._handler_done <= QUEUED_GAP:
                return core.queued_arrival(since, now)
            self._queued_since = None  # caught up: the queue was empty
        return now

    def _handled(self, began: float) -> None:
        """A handler that began at ``began`` returned."""
        done = clock.monotonic()
        if self._queued_since is not None or done - began > SLOW_HANDLER:
            self._handler_done = done
            if self._queued_since is None:
                self._queued_since = began
