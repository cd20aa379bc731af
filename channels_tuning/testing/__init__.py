"""Test helpers for projects that use channels-tuning.

- :class:`TunedCommunicator` (:mod:`.communicator`): Channels' ``WebsocketCommunicator``
  speaking the package's protocol: heartbeats answered, topics subscribed, topic
  messages unwrapped;
- :func:`capture_group_sends` (:mod:`.capture`): what the code under test broadcast or
  sent to groups, with the delivery reports;
- :func:`assert_no_leaks` (:mod:`.leaks`): the in-process twin of ``manage.py wsstats
  --check``, for the end of a test;
- :mod:`.plugin`: pytest fixtures ``ct_layer`` and ``ct_no_leaks`` (opt-in with
  ``pytest_plugins = ["channels_tuning.testing.plugin"]``).

The guide is ``docs/topics/testing.md``.
"""

from .capture import GroupSend, GroupSends, capture_group_sends
from .communicator import TunedCommunicator
from .leaks import assert_no_leaks, find_leaks

__all__ = [
    "GroupSend",
    "GroupSends",
    "TunedCommunicator",
    "assert_no_leaks",
    "capture_group_sends",
    "find_leaks",
]
