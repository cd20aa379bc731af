"""channels_tuning.exceptions: its table lists every exception, and the 0.1 name warns."""

from __future__ import annotations

import inspect

import pytest

from channels_tuning import exceptions


def test_the_table_lists_every_exception_the_module_defines():
    classes = {
        name
        for name, value in vars(exceptions).items()
        if inspect.isclass(value)
        and issubclass(value, exceptions.ChannelsTuningError)
        and value is not exceptions.ChannelsTuningError
    }
    assert len(classes) >= 7
    assert [name for name in sorted(classes) if f":class:`{name}`" not in exceptions.__doc__] == []


def test_the_name_from_0_1_warns_and_is_the_same_class():
    with pytest.warns(DeprecationWarning, match="QueueOverflow"):
        assert exceptions.Overflow is exceptions.QueueOverflow
    with pytest.raises(AttributeError):
        exceptions.NoSuchThing  # noqa: B018
