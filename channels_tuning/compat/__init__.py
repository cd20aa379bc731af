"""Private hooks into other libraries, one module per library, each guarded.

The package reaches into daphne, autobahn, Twisted and channels-redis where their
public API has no way to do what it needs (flow control, close codes, eager
writes, reporting group sends), and into asyncio's registry of tasks (counting
them without copying them). Everything it relies on is named in the module of
that library (a package when one module would be too long), here and nowhere else,
with:

- ``check()``: what no longer matches in the installed version (a list of
  :class:`~channels_tuning.exceptions.UpstreamChanged`, each naming the symbol);
- ``apply(problems)``: switch the affected hooks to their documented fallbacks;
- a canary test per hook in ``tests/unit/compat/test_compat.py``.

:func:`self_check` runs at server start (``channels-tuning-daphne``): a changed
upstream is logged as an error naming the symbol and the fallback, never a silent
no-op. Channels itself is used only through its public API.
"""

from __future__ import annotations

import logging

from ..exceptions import UpstreamChanged

logger = logging.getLogger("channels_tuning.compat")

_checked: list[UpstreamChanged] | None = None


def self_check(*, server: bool = True) -> list[UpstreamChanged]:
    """Check every hook once per process, log what changed, apply the fallbacks.

    ``server``: also check the server-side libraries (daphne, autobahn, Twisted);
    False for a process that only uses the channel layer."""
    global _checked
    if _checked is not None:
        return _checked
    from . import asyncio_tasks, channels, channels_redis

    problems = []
    for layer_side in (asyncio_tasks, channels, channels_redis):
        found = layer_side.check()
        layer_side.apply(found)
        problems.extend(found)
    if server:
        from . import autobahn, daphne, twisted

        for module in (daphne, autobahn, twisted):
            found = module.check()
            module.apply(found)
            problems.extend(found)
    _log(problems)
    _checked = problems
    return problems


def self_check_server(name: str) -> list[UpstreamChanged]:
    """Check the hooks into one of the optional servers ("uvicorn", "hypercorn"),
    once, when a process first serves a connection through it."""
    from importlib import import_module

    module = import_module(f"{__name__}.{name}")
    problems: list[UpstreamChanged] = module.check()
    module.apply(problems)
    _log(problems)
    return problems


def _log(problems: list[UpstreamChanged]) -> None:
    for problem in problems:
        logger.error(
            "channels_tuning: %s changed: %s (%s). The hook that relies on it is off and "
            "its fallback is used; see channels_tuning/compat/%s",
            problem.library,
            problem.symbol,
            problem.detail,
            _MODULES.get(problem.library, problem.library.lower().replace("-", "_") + ".py"),
        )


#: Where the hooks of a library whose name is not their module's are.
_MODULES = {"asyncio": "asyncio_tasks.py", "autobahn": "autobahn/"}
