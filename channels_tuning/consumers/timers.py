"""The scheduler's side of a consumer: :class:`TimersMixin`.

The process scheduler (:mod:`channels_tuning.runtime.scheduler`) ticks a connection
only when it is due. This mixin is what it calls: :meth:`~TimersMixin.on_tick` runs the
core's timers (heartbeat, idle timeout, lifetime) and aborts a close the client never
reads; :meth:`~TimersMixin.next_tick_at` says when the next tick has work. Connecting
and closing connections (few, short-lived) are ticked at every tick; open ones at
their earliest deadline; a plain client watched by the server's own keepalive, with
no lifetime, not at all.
"""

from __future__ import annotations

from ..core import ConnectionState, Liveness
from ..runtime.scheduler import scheduler
from .inbox import LayerInboxMixin


class TimersMixin(LayerInboxMixin):
    """Timers of one connection, driven by the process scheduler."""

    _registered: bool = False
    #: The deadline of this connection's entry in the scheduler's timers (None: none).
    timer_due: float | None = None

    def on_tick(self, now: float) -> None:
        """Called by the process scheduler when :meth:`next_tick_at` said (every tick
        for a subclass that overrides this alone): ticks the core (heartbeat, idle
        timeout, lifetime). Override to add timers; call ``super()``."""
        core = self.core
        transport = self.transport
        if core.liveness is Liveness.TRANSPORT:
            # The server notes the client's protocol pongs and pings.
            core.note_activity(transport.last_activity)
        core.tick(now)
        if core.has_actions:
            self._perform(core.take_actions())
        if core.state is ConnectionState.CLOSING:
            waited = transport.stalled_for(now)
            if waited > self.close_flush_timeout:
                self._abort_stalled(waited)

    def _write_close(self, code: int, reason: str | None, urgent: bool) -> None:
        if self._registered:
            # Closing: ticked from now on, to abort a close the client never reads.
            scheduler.schedule(self, 0.0)
        super()._write_close(code, reason, urgent)

    def next_tick_at(self, now: float) -> float | None:
        """When :meth:`on_tick` next has work (monotonic); None: not until an event.
        Asked by the scheduler after each tick. A subclass that overrides
        :meth:`on_tick` is ticked at every tick, as before this hook; override this
        too to say when its own timers are due."""
        state = self.core.state
        if state is ConnectionState.OPEN:
            if _ticks_every_time(type(self)):
                return now
            return self.core.next_due()
        if state is ConnectionState.CLOSED:
            return None
        # Connecting (a connect() still running) or closing (the stalled-close abort
        # in on_tick): few, short-lived, ticked at every tick.
        return now


def _ticks_every_time(cls: type) -> bool:
    """A class whose ``on_tick`` is its own but whose ``next_tick_at`` is not (timers
    written before the scheduler asked when they are due)."""
    flag = _TICKS_EVERY_TIME.get(cls)
    if flag is None:
        # The package's own layers (credentials.py) override both; a class of the
        # user's that overrides on_tick below them, and not next_tick_at, is this case.
        flag = _defined_at(cls, "on_tick") < _defined_at(cls, "next_tick_at")
        _TICKS_EVERY_TIME[cls] = flag
    return flag


def _defined_at(cls: type, name: str) -> int:
    """How far up ``cls``' MRO ``name`` is defined (0: by ``cls`` itself)."""
    for depth, klass in enumerate(cls.__mro__):
        if name in vars(klass):
            return depth
    return len(cls.__mro__)


_TICKS_EVERY_TIME: dict[type, bool] = {}
