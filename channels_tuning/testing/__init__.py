"""Test helpers for projects that use channels-tuning.

- :class:`TunedCommunicator` (:mod:`.communicator`): Channels' ``WebsocketCommunicator``
  speaking the package's protocol: heartbeats answered, topics subscribed, topic
  messages unwrapped;
- :func:`capture_group_sends` (:mod:`.capture`): what the code under test broadcast or
  sent to groups, with the delivery reports; :func:`capture_closes`: the connections
  the server closed, with their codes; :func:`capture_presence`: who joined and left
  the groups' presence;
- :func:`fake_clock` (:mod:`.clock`): heartbeats, idle timeouts and lifetimes driven
  without sleeping;
- :func:`assert_no_leaks` (:mod:`.leaks`): the in-process twin of ``manage.py wsstats
  --check``, for the end of a test;
- :class:`LiveServer` and :class:`LiveRedis` (:mod:`.live`): channels-tuning-daphne and
  ``redis-server`` as real processes on free loopback ports;
- :mod:`.plugin`: pytest fixtures ``ct_layer``, ``ct_no_leaks``, ``ct_live_server`` and
  ``ct_live_redis`` (opt-in with ``pytest_plugins = ["channels_tuning.testing.plugin"]``).

The guide is ``docs/topics/testing.md``.
"""

from .capture import (
    Close,
    Closes,
    GroupSend,
    GroupSends,
    PresenceChange,
    PresenceChanges,
    capture_closes,
    capture_group_sends,
    capture_presence,
)
from .clock import FakeClock, fake_clock
from .communicator import TunedCommunicator
from .leaks import assert_no_leaks, find_leaks
from .live import LiveRedis, LiveServer

__all__ = [
    "Close",
    "Closes",
    "FakeClock",
    "GroupSend",
    "GroupSends",
    "LiveRedis",
    "LiveServer",
    "PresenceChange",
    "PresenceChanges",
    "TunedCommunicator",
    "assert_no_leaks",
    "capture_closes",
    "capture_group_sends",
    "capture_presence",
    "fake_clock",
    "find_leaks",
]
