"""Tokens and where a handshake carries them, without a server (the middleware with a
database and a tuned server: tests/e2e/test_tokens.py)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from channels_tuning.auth import (
    InvalidToken,
    SignedTokens,
    TokenClaims,
    authenticate,
    token_from_scope,
)


def test_a_signed_token_carries_its_user_and_expiry():
    tokens = SignedTokens(max_age=60)
    token = tokens.issue(7, now=1000.0)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert tokens.verify(token, now=1059.0) == TokenClaims("7", 1060.0)
    with pytest.raises(InvalidToken) as lapsed:
        tokens.verify(token, now=1060.0)
    assert lapsed.value.expired


def test_a_changed_or_foreign_token_is_refused_as_invalid_not_expired():
    tokens = SignedTokens()
    token = tokens.issue(7)
    payload, signature = token.rsplit(".", 1)
    for forged in (payload + "." + signature[::-1], "x" + token, "", "a.b"):
        with pytest.raises(InvalidToken) as refused:
            tokens.verify(forged)
        assert not refused.value.expired
    with pytest.raises(InvalidToken):
        SignedTokens(salt="another.purpose").verify(token)
    with override_settings(SECRET_KEY="another site" * 5), pytest.raises(InvalidToken):
        tokens.verify(token)


def test_the_token_is_read_from_a_subprotocol_first_then_the_query_string():
    scope = {
        "subprotocols": ["channels-tuning.v1", "ct-token.abc.def"],
        "query_string": b"room=1&token=fromquery",
    }
    assert token_from_scope(scope, "token") == "abc.def"
    assert scope["subprotocols"] == ["channels-tuning.v1"]  # the application never sees it
    assert token_from_scope(scope, "token") == "fromquery"
    assert token_from_scope(scope, None) is None
    assert token_from_scope({"query_string": b"a=1"}, "token") is None


async def test_malformed_tokens_are_refused_before_verification():
    class Counting:
        calls = 0

        def verify(self, token):
            Counting.calls += 1
            raise InvalidToken("never")

    for token in ("x" * 5000, "has space", 'quote"d', "é"):
        with pytest.raises(InvalidToken, match="malformed"):
            await authenticate(token, Counting())
    assert Counting.calls == 0
