"""Text computed only when it is formatted: arguments of log lines that are usually
not written (debug), which upstream libraries build eagerly
(``channels_tuning.compat.autobahn`` makes autobahn's lazy with these)."""

from __future__ import annotations

from pprint import pformat
from typing import Any


class LazyPformat:
    """``pformat(obj)``, computed only when the log line is formatted."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __str__(self) -> str:
        return pformat(self.obj)

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(pformat(self.obj), spec)


class LazyCall:
    """``function(*args, **kwargs)`` as text, computed only when formatted."""

    __slots__ = ("args", "function", "kwargs")

    def __init__(self, function: Any, *args: Any, **kwargs: Any) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs

    def __str__(self) -> str:
        return str(self.function(*self.args, **self.kwargs))

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def lazy(function: Any) -> Any:
    """``function`` made lazy: a call returns a :class:`LazyCall`; the original is
    ``.original``."""

    def deferred(*args: Any, **kwargs: Any) -> LazyCall:
        return LazyCall(function, *args, **kwargs)

    deferred.original = function  # type: ignore[attr-defined]
    return deferred
