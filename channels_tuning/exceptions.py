"""Every exception channels-tuning raises, in one place (no Django imports here).

=============================  ======================================================
exception                      raised when
=============================  ======================================================
:class:`QueueOverflow`         a send queue under policy ``disconnect`` is full
                               (internal: the connection closes with 4001)
:class:`DeliveryError`         base of the two below; ``report`` says who missed
:class:`DeliveryTimeout`       ``broadcast(on_full="wait")`` ran out of time
:class:`ReceiversFull`         ``broadcast(on_full="raise")`` found full receivers
:class:`DecodeError`           a frame is not a valid message for the codec (1007)
:class:`UpstreamChanged`       a library the package hooks into no longer has what
                               the hook relies on (see :mod:`channels_tuning.compat`)
:class:`RecoveryRequestError`  a client's ``ct_recover`` request cannot be read
                               (the connection is refused with 1008)
:class:`ProtocolRequestError`  a client's request of the package's protocol cannot
                               be read (the connection is closed with 1008)
:class:`TopicRequestError`     ... a subscribe or unsubscribe request
:class:`RequestError`          raised by an ``@rpc`` method: the request fails with
                               a code and a message (no traceback to the client)
:class:`ClientRequestFailed`   a consumer's ``request_client()`` got no result: the
                               client's error, ``timeout``, ``closed``, ``unsupported``
=============================  ======================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .layers.report import DeliveryReport


class ChannelsTuningError(Exception):
    """Base of the package's exceptions."""


class QueueOverflow(ChannelsTuningError):
    """The outbound queue is full under the ``disconnect`` policy."""


class DeliveryError(ChannelsTuningError):
    """Some receivers of a broadcast did not get it; ``report`` says how many."""

    reason = "were full"

    def __init__(self, report: DeliveryReport) -> None:
        super().__init__(
            f"{report.receivers_over_capacity} of {report.receivers} receivers of group "
            f"{report.group!r} {self.reason}"
        )
        self.report = report


class DeliveryTimeout(DeliveryError):
    """``on_full="wait"`` ran out of time."""

    reason = "still full at the deadline"


class ReceiversFull(DeliveryError):
    """``on_full="raise"``: some receivers were full."""


class DecodeError(ChannelsTuningError, ValueError):
    """A frame that is not a valid message for the consumer's codec (close 1007)."""


class UpstreamChanged(ChannelsTuningError, RuntimeError):
    """A private detail of daphne, autobahn, Twisted or channels-redis that a hook in
    :mod:`channels_tuning.compat` relies on is missing or behaves differently."""

    def __init__(self, library: str, symbol: str, detail: str) -> None:
        super().__init__(f"{library}: {symbol}: {detail}")
        self.library = library
        self.symbol = symbol
        self.detail = detail


class RecoveryRequestError(ChannelsTuningError, ValueError):
    """A client's ``ct_recover`` request the server cannot read (closed with 1008)."""


class ProtocolRequestError(ChannelsTuningError, ValueError):
    """A client's request of the package's protocol that cannot be read (closed 1008)."""


class TopicRequestError(ProtocolRequestError):
    """A client's ``ct.subscribe`` / ``ct.unsubscribe`` request that cannot be read."""


class RequestError(ChannelsTuningError):
    """Raised by a consumer's ``@rpc`` method: the client's request fails with ``code``
    (a short machine-readable string) and ``message`` (for people), nothing else."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code, self.message = code, message


class ClientRequestFailed(ChannelsTuningError):
    """A consumer's request to its client (``request_client()``) got no result:
    ``code`` is the client's error code, or the package's ``timeout``, ``closed``
    (the connection ended first) or ``unsupported`` (the client does not speak the
    package's protocol)."""

    def __init__(self, method: str, code: str, message: str = "") -> None:
        super().__init__(f"{method}: {code}" + (f" ({message})" if message else ""))
        self.method, self.code, self.message = method, code, message


def __getattr__(name: str) -> type[QueueOverflow]:
    # The name QueueOverflow had before 0.2 (channels_tuning.backpressure.Overflow).
    if name == "Overflow":
        import warnings

        warnings.warn(
            "channels_tuning.exceptions.Overflow is deprecated and removed in 0.3.0: "
            "use QueueOverflow",
            DeprecationWarning,
            stacklevel=2,
        )
        return QueueOverflow
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
