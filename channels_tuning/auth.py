"""Token authentication for WebSockets: :class:`TokenAuthMiddleware`, :class:`SignedTokens`.

Browsers cannot set headers on a WebSocket handshake, so a token travels in one of
the two places they do let a page write, both read here:

- **a subprotocol** ``ct-token.<token>`` next to ``channels-tuning.v1`` (the package's
  clients' way): not in URLs, so not in access logs or browser history; it is removed
  from ``scope["subprotocols"]`` before the application sees them.
- **the query string** ``?token=<token>``: works with any client, but query strings end
  up in the access logs of the server and of every proxy on the way (daphne logs the
  path with it). For short-lived tokens only.

(A token in the first message would need the socket accepted before the user is
known; the consumer then runs ``connect()`` for an anonymous user. Not offered.)

A valid token makes ``scope["user"]`` its user, loaded from the database, and gives the
connection a deadline: a tuned consumer closes it with 4005 (``TOKEN_EXPIRED``) at the
token's expiry unless the client sent ``{"type":"ct.refresh","token":"..."}`` with a
new token of the same user before then (answered ``{"type":"ct.refreshed","exp":...}``,
:mod:`channels_tuning.consumers.credentials`). A forged or expired token, or one of an
unknown or inactive user, is refused by a tuned consumer with 4004 (``TOKEN_INVALID``)
or 4005, logged once a second at most and counted in
``channels_tuning_rejected_connections_total{reason="token_invalid"|"token_expired"}``;
a plain Channels consumer sees an anonymous user.

Tokens are Django-signed (:class:`SignedTokens`: ``SECRET_KEY``, a salt, an expiry
inside the signed payload) unless a verifier of your own is given (a JWT library's:
anything with ``verify(token) -> TokenClaims`` that raises :class:`InvalidToken`).

Order with sessions: ``AuthMiddlewareStack(TokenAuthMiddleware(router))``: the session's
user first, the token's when there is one.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.core import signing

from .wire.subprotocol import TOKEN_SUBPROTOCOL_PREFIX

__all__ = [
    "TOKEN_SUBPROTOCOL_PREFIX",
    "InvalidToken",
    "SignedTokens",
    "TokenAuthMiddleware",
    "TokenClaims",
    "TokenVerifier",
]

#: Scope keys the middleware sets for the consumer.
SCOPE_ERROR: Final = "ct_token_error"
SCOPE_EXPIRES: Final = "ct_token_expires_at"
SCOPE_VERIFIER: Final = "ct_token_verifier"
#: Characters of an HTTP token (a subprotocol must be one), for the tokens we make.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~!#$&'*+^`|-]+")
#: Longer tokens are refused before any work (a client chooses what it sends).
MAX_TOKEN_LENGTH: Final = 4096


class InvalidToken(Exception):
    """A token that does not authenticate. ``expired`` tells a lapsed one (the client
    should get a new one) from a forged or unreadable one."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says: whose it is and until when (Unix time)."""

    user_id: str
    expires_at: float


class TokenVerifier(Protocol):
    def verify(self, token: str) -> TokenClaims: ...


class SignedTokens:
    """Tokens signed with Django's ``signing`` (``SECRET_KEY``, ``salt``): the user's
    pk and the expiry, readable by anyone, changed by no one. URL- and
    subprotocol-safe (``.`` separates the parts)."""

    def __init__(self, *, salt: str = "channels_tuning.token", max_age: float = 3600.0) -> None:
        self.salt = salt
        self.max_age = max_age

    def _signer(self) -> signing.Signer:
        return signing.Signer(salt=self.salt, sep=".")

    def issue(self, user: Any, max_age: float | None = None, *, now: float | None = None) -> str:
        """A token for ``user`` (or a pk) valid ``max_age`` seconds (default: the
        verifier's)."""
        user_id = getattr(user, "pk", user)
        expires = (time.time() if now is None else now) + (max_age or self.max_age)
        return self._signer().sign_object(
            {"u": str(user_id), "e": round(expires, 3)}, compress=True
        )

    def verify(self, token: str, *, now: float | None = None) -> TokenClaims:
        try:
            claims = self._signer().unsign_object(token)
            user_id, expires = str(claims["u"]), float(claims["e"])
        except (signing.BadSignature, KeyError, TypeError, ValueError) as error:
            raise InvalidToken("bad signature or payload") from error
        if expires <= (time.time() if now is None else now):
            raise InvalidToken("expired", expired=True)
        return TokenClaims(user_id, expires)


def token_from_scope(scope: dict[str, Any], query_parameter: str | None) -> str | None:
    """The token a handshake carries (a ``ct-token.`` subprotocol first, then the query
    string), and removes the subprotocol from the scope (the caller's copy)."""
    offered = list(scope.get("subprotocols") or ())
    for subprotocol in offered:
        if subprotocol.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            scope["subprotocols"] = [s for s in offered if s != subprotocol]
            return subprotocol[len(TOKEN_SUBPROTOCOL_PREFIX) :]
    if query_parameter:
        raw = scope.get("query_string", b"")
        values = parse_qs(raw.decode("latin-1"), max_num_fields=50).get(query_parameter)
        if values:
            return values[0]
    return None


@database_sync_to_async
def _active_user(user_id: str) -> Any:
    from django.contrib.auth import get_user_model

    model = get_user_model()
    try:
        user = model._default_manager.get(pk=user_id)
    except (model.DoesNotExist, ValueError, TypeError):
        return None
    return user if getattr(user, "is_active", True) else None


async def authenticate(token: str, verifier: TokenVerifier) -> tuple[Any, TokenClaims]:
    """The active user a token names and its claims; :class:`InvalidToken` otherwise."""
    if len(token) > MAX_TOKEN_LENGTH or not _TOKEN_CHARS.fullmatch(token):
        raise InvalidToken("malformed")
    claims = verifier.verify(token)
    user = await _active_user(claims.user_id)
    if user is None:
        raise InvalidToken("unknown or inactive user")
    return user, claims


class TokenAuthMiddleware:
    """ASGI middleware: ``scope["user"]`` from a handshake's token (see the module)."""

    def __init__(
        self,
        inner: Any,
        verifier: TokenVerifier | None = None,
        *,
        query_parameter: str | None = "token",
    ) -> None:
        self.inner = inner
        self.verifier = verifier or SignedTokens()
        self.query_parameter = query_parameter

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        scope = dict(scope)
        token = token_from_scope(scope, self.query_parameter)
        if token is not None:
            try:
                user, claims = await authenticate(token, self.verifier)
            except InvalidToken as error:
                from django.contrib.auth.models import AnonymousUser

                scope["user"] = AnonymousUser()
                scope[SCOPE_ERROR] = error
            else:
                scope["user"] = user
                scope[SCOPE_EXPIRES] = claims.expires_at
                scope[SCOPE_VERIFIER] = self.verifier
        return await self.inner(scope, receive, send)
