"""Request/reply: a client calls a consumer's declared method and gets one answer,
:class:`RpcMixin`.

::

    class CartConsumer(TunedJsonWebsocketConsumer):
        @rpc("cart.save")
        async def save_cart(self, params):
            if not isinstance(params, dict):
                raise RequestError("invalid", "an object expected")
            cart = await save(self.scope["user"], params)
            return {"saved": cart.pk}              # the reply's result

A client of the package's protocol sends ``{"type":"ct.request","id":1,
"method":"cart.save","params":{...}}`` and gets ``{"kind":"reply","id":1,"result":...}``
or ``{"kind":"reply","id":1,"error":code,"message":...}`` (:mod:`channels_tuning.wire.rpc`).
What is guaranteed:

- only declared methods run: the client's method name is looked up in the table the
  decorators built, never as an attribute;
- every request gets one answer: the result, the method's ``RequestError``,
  ``unknown_method``, ``timeout`` after ``request_timeout`` seconds (30; the method is
  cancelled), or ``internal`` for any other exception (logged with its traceback on the
  server, never sent);
- requests are handled in order, one at a time per connection, like client frames in
  Channels: a client cannot have more than one running; the frame rate limit bounds
  how many wait, and the next is read only when the reply fits in half the send
  queue (a client that does not read its replies stops being read). An unreadable
  request closes with 1008 (one log line a second at most);
- counted in ``channels_tuning_requests_total{consumer, outcome}``.

A consumer without methods pays one attribute test per frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from ..exceptions import ProtocolRequestError, RequestError
from ..runtime.counters import REQUESTS
from ..runtime.ratelog import RateLimitedLog
from ..wire.closecodes import CloseCode
from ..wire.rpc import Request, error_reply_frame, parse_request, reply_frame
from .credentials import CredentialsMixin

logger = logging.getLogger("channels_tuning")
#: Clients decide how often they send unreadable requests: a line a second at most.
_refused_log = RateLimitedLog(logger, interval=1.0, level=logging.INFO)

Method = TypeVar("Method", bound=Callable[..., Any])
_MARK = "_channels_tuning_rpc"


def rpc(name: str) -> Callable[[Method], Method]:
    """Declare the decorated ``async def method(self, params)`` as the request
    ``name``; its return value (JSON-serializable) is the reply's result."""

    def declare(method: Method) -> Method:
        setattr(method, _MARK, name)
        return method

    return declare


class RpcMixin(CredentialsMixin):
    """Requests to declared methods (a layer of
    :class:`~channels_tuning.consumers.base.ManagedConnectionMixin`)."""

    #: Seconds a method may take before the request fails with ``timeout``.
    request_timeout: ClassVar[float] = 30.0
    #: Request name -> attribute, built from the ``@rpc`` declarations of the class.
    _rpc_methods: ClassVar[dict[str, str]] = {}
    _has_methods: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        methods: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                name = getattr(value, _MARK, None)
                if isinstance(name, str):
                    methods[name] = attribute
        cls._rpc_methods = methods
        cls._has_methods = bool(methods)

    async def _request_frame(self, message: dict[str, Any]) -> bool:
        """True if ``message`` was a request (answered here, not delivered)."""
        try:
            request = parse_request(message, binary=self._binary_frames())
        except ProtocolRequestError as error:
            REQUESTS.inc((self.consumer_label(), "malformed"))
            _refused_log.log(
                "channels_tuning: %s request refused: %s", self.consumer_label(), error
            )
            self.close_nowait(CloseCode.POLICY_VIOLATION, "unreadable request")
            return True
        if request is None:
            return False
        frame = await self._answer(request)
        # The reply waits until the client has read earlier ones (half the send queue),
        # and the next request is read only then: a client that asks faster than it
        # reads is slowed by TCP, not closed 4001 by its own replies.
        await self.room_for(len(frame.get("text") or frame["bytes"]), self.request_timeout)
        if not self.closing:
            self.send_nowait(frame)
        return True

    def _binary_frames(self) -> bool:
        """Whether the package's protocol frames to this client are binary (a codec)."""
        return not type(self).accept_text_frames

    async def _answer(self, request: Request) -> dict[str, Any]:
        label, binary = self.consumer_label(), self._binary_frames()
        attribute = self._rpc_methods.get(request.method)
        if attribute is None:
            REQUESTS.inc((label, "unknown_method"))
            refusal = RequestError("unknown_method", request.method)
            return error_reply_frame(request.id, refusal, binary=binary)
        try:
            result = await asyncio.wait_for(
                getattr(self, attribute)(request.params), self.request_timeout
            )
            frame = reply_frame(request.id, result, binary=binary)
        except RequestError as error:
            REQUESTS.inc((label, "error"))
            return error_reply_frame(request.id, error, binary=binary)
        except asyncio.TimeoutError:
            REQUESTS.inc((label, "timeout"))
            refusal = RequestError("timeout", request.method)
            return error_reply_frame(request.id, refusal, binary=binary)
        except Exception:
            REQUESTS.inc((label, "internal"))
            logger.exception("channels_tuning: request %s of %s raised", request.method, label)
            return error_reply_frame(request.id, RequestError("internal"), binary=binary)
        REQUESTS.inc((label, "ok"))
        return frame
