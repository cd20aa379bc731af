"""The clock the package's timers read: one name a test can replace.

Every deadline a connection's policies keep (heartbeat, idle timeout, lifetime,
credentials expiry, authorization refresh, the request rate) and the scheduler that
ticks them read :func:`monotonic` from here, looked up at each call (``clock.monotonic()``,
never imported by name), so :func:`channels_tuning.testing.fake_clock` can move time
forward for all of them at once without sleeping. Awaits with a timeout (a send's
deadline, a request's timeout) run on the event loop's own clock and are not moved.

Reading it costs what ``time.monotonic()`` costs: one module attribute and the call.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["monotonic"]

#: Seconds since an arbitrary point, never going back (``time.monotonic`` unless a
#: test's fake clock replaced it).
monotonic: Callable[[], float] = time.monotonic
