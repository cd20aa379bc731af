"""A connection authenticated by a token keeps its rights only while the token does:
:class:`CredentialsMixin`.

:class:`~channels_tuning.auth.TokenAuthMiddleware` verifies the handshake's token and
leaves its verdict in the scope; this layer of the tuned consumer acts on it:

- a refused token (forged, unknown user: 4004; expired: 4005) refuses the connection
  like the admission limits do (accepted, then closed with the code, so that a browser
  sees it), logged a line a second at most and counted by reason;
- an accepted one sets a deadline, the token's expiry: the scheduler ticks the
  connection then and it is closed with 4005 (``TOKEN_EXPIRED``), unless
- the client refreshed it: ``{"type":"ct.refresh","token":"..."}``, a frame of the
  package's protocol (rate-limited like any frame, never handed to ``receive()``), with
  a valid token of the same user, answered ``{"type":"ct.refreshed","exp":<unix>}``;
  a refresh that does not verify, or names another user, closes with 4004. A client
  of the package's protocol is told its token's expiry after the accept
  (``{"type":"ct.token","exp":<unix>}``); the package's clients refresh before it.

A connection without a token pays one attribute test per frame. The deadline is a
monotonic time derived from the token's wall-clock expiry at accept (and at each
refresh), so a clock change on the server does not move it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from ..auth import SCOPE_ERROR, SCOPE_EXPIRES, SCOPE_VERIFIER, InvalidToken, authenticate
from ..runtime import clock
from ..runtime.ratelog import RateLimitedLog
from ..wire.closecodes import CloseCode
from ..wire.compact import compact_json
from .arrival import ArrivalMixin

logger = logging.getLogger("channels_tuning")
_refused_log = RateLimitedLog(logger, interval=1.0, level=logging.WARNING)

#: A refresh frame is a JSON object with this near its start; other frames are not
#: parsed.
REFRESH_MARK = '"ct.refresh"'


class CredentialsMixin(ArrivalMixin):
    """Token expiry and refresh (a layer of
    :class:`~channels_tuning.consumers.base.ManagedConnectionMixin`)."""

    #: Monotonic time the connection's token expires (None: no token).
    credentials_deadline: float | None = None

    def _credentials_refusal(self) -> tuple[int, str] | None:
        error = self.scope.get(SCOPE_ERROR)
        if error is None:
            return None
        expired = getattr(error, "expired", False)
        code = CloseCode.TOKEN_EXPIRED if expired else CloseCode.TOKEN_INVALID
        reason = "token_expired" if expired else "token_invalid"
        _refused_log.log(
            "channels_tuning: refused %s: %s (%s)", self.consumer_label(), reason, error
        )
        return int(code), reason

    def _start_credentials(self) -> None:
        """At the handshake: the token's expiry becomes the connection's deadline (the
        scheduler asks :meth:`next_tick_at` once the connection is accepted)."""
        expires: Any = self.scope.get(SCOPE_EXPIRES)
        if expires is not None:
            self.credentials_deadline = clock.monotonic() + (float(expires) - time.time())

    def _announce_credentials(self) -> None:
        """At accept, to a client of the package's protocol: when its token expires
        (``{"type":"ct.token","exp":<unix>}``), so that it refreshes in time."""
        expires = self.scope.get(SCOPE_EXPIRES)
        if expires is not None and self.tuned_client:
            answer = compact_json({"type": "ct.token", "exp": expires})
            self.send_nowait({"type": "websocket.send", "text": answer})

    def next_tick_at(self, now: float) -> float | None:
        due = super().next_tick_at(now)
        deadline = self.credentials_deadline
        if deadline is not None and (due is None or deadline < due):
            return deadline
        return due

    def on_tick(self, now: float) -> None:
        deadline = self.credentials_deadline
        if deadline is not None and now >= deadline:
            self.credentials_deadline = None
            self.close_nowait(CloseCode.TOKEN_EXPIRED, "token expired")
            return
        super().on_tick(now)

    async def _credentials_frame(self, message: dict[str, Any]) -> bool:
        """True if ``message`` was a token refresh (handled here, not delivered)."""
        text = message.get("text")
        if text is None or text[:1] != "{" or REFRESH_MARK not in text[:48]:
            return False
        try:
            request = json.loads(text)
        except ValueError:
            return False  # the application's own data
        if not isinstance(request, dict) or request.get("type") != "ct.refresh":
            return False
        try:
            token = request.get("token")
            if not isinstance(token, str):
                raise InvalidToken("no token")
            scope: dict[str, Any] = dict(self.scope)
            user, claims = await authenticate(token, scope[SCOPE_VERIFIER])
            current = self.scope.get("user")
            if str(user.pk) != str(getattr(current, "pk", None)):
                raise InvalidToken("a token of another user")
        except InvalidToken as error:
            _refused_log.log(
                "channels_tuning: %s refresh refused: %s", self.consumer_label(), error
            )
            self.close_nowait(CloseCode.TOKEN_INVALID, "token refresh refused")
            return True
        # Later than the old deadline: the scheduler finds it when that one comes up.
        self.credentials_deadline = clock.monotonic() + (claims.expires_at - time.time())
        answer = compact_json({"type": "ct.refreshed", "exp": claims.expires_at})
        self.send_nowait({"type": "websocket.send", "text": answer})
        return True
