"""What every compat module's ``check()`` does: look for symbols and for the lines
of upstream source a hook relies on, and name what is missing."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from ..exceptions import UpstreamChanged


def source_of(obj: Any) -> str:
    """The source of ``obj``, white space folded (so reformatting upstream is no change)."""
    return " ".join(inspect.getsource(obj).split())


class Checker:
    """Collects :class:`UpstreamChanged` problems for one library."""

    def __init__(self, library: str, source: Any = source_of) -> None:
        self.library = library
        self.problems: list[UpstreamChanged] = []
        self._source = source

    def changed(self, symbol: str, detail: str) -> None:
        self.problems.append(UpstreamChanged(self.library, symbol, detail))

    def callables(self, owner: Any, owner_name: str, names: Iterable[str]) -> None:
        """Each name must be a callable attribute of ``owner`` (inherited or not)."""
        for name in names:
            if not callable(getattr(owner, name, None)):
                self.changed(f"{owner_name}.{name}", "missing")

    def attributes(self, owner: Any, owner_name: str, names: Iterable[str]) -> None:
        for name in names:
            if not hasattr(owner, name):
                self.changed(f"{owner_name}.{name}", "missing")

    def source(self, obj: Any, symbol: str) -> str | None:
        try:
            return " ".join(str(self._source(obj)).split())
        except (OSError, TypeError, AttributeError) as exc:
            self.changed(symbol, f"source unavailable: {exc}")
            return None

    def contains(self, obj: Any, symbol: str, fragments: Iterable[str]) -> None:
        """The source of ``obj`` still contains each fragment (white space folded)."""
        text = self.source(obj, symbol)
        if text is None:
            return
        for fragment in fragments:
            if " ".join(fragment.split()) not in text:
                self.changed(symbol, f"no longer contains {fragment!r}")
