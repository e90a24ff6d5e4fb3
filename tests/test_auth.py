"""Bearer tokens, the public-bind guard, and redaction of secrets in logs."""

from __future__ import annotations

import logging

import pytest

from imagine.auth import (
    InsecureBind,
    RedactSecrets,
    TokenAuth,
    check_bind,
    install_log_redaction,
    is_loopback,
    redact,
)
from imagine.errors import Unauthorized
from imagine.settings import Settings, hash_token


def test_off_without_tokens() -> None:
    auth = TokenAuth(token_hashes=frozenset())
    assert not auth.enabled
    assert auth.authenticate(None) is None
    assert auth.authenticate("Bearer hf_whatever") is None


def test_tokens_required_when_configured() -> None:
    auth = TokenAuth.from_settings(Settings(tokens=["alpha"], token_hashes=[hash_token("beta")]))
    assert auth.enabled
    assert auth.authenticate("Bearer alpha") == hash_token("alpha")
    assert auth.authenticate("bearer  beta ") == hash_token("beta")
    for header in (None, "", "Bearer", "Basic alpha", "Bearer gamma", "alpha"):
        with pytest.raises(Unauthorized) as info:
            auth.authenticate(header)
        assert "alpha" not in info.value.message and "gamma" not in info.value.message


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_public_bind_needs_tokens_or_flag() -> None:
    check_bind(Settings(host="127.0.0.1"))
    check_bind(Settings(host="0.0.0.0", tokens=["t"]))
    check_bind(Settings(host="0.0.0.0", allow_unauthenticated_public=True))
    with pytest.raises(InsecureBind, match="--allow-unauthenticated-public"):
        check_bind(Settings(host="0.0.0.0"))


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer hf_abcdefghijklmnop",
        "headers={'authorization': 'Bearer sk-secret-1'}",
        "got token hf_abcdefghijklmnop from cache",
        '{"Authorization": "my-raw-token"}',
    ],
)
def test_redact(text: str) -> None:
    cleaned = redact(text)
    for secret in ("hf_abcdefghijklmnop", "sk-secret-1", "my-raw-token"):
        assert secret not in cleaned
    assert "***" in cleaned


def test_redaction_filter_on_handlers(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("imagine.test.redaction")
    caplog.handler.addFilter(RedactSecrets())
    caplog.set_level(logging.DEBUG)
    logger.debug("request headers %s", {"authorization": "Bearer tok-123456"})
    assert "tok-123456" not in caplog.text and "***" in caplog.text


def test_install_log_redaction_is_idempotent() -> None:
    handler = logging.StreamHandler()
    logger = logging.getLogger("imagine.test.install")
    logger.addHandler(handler)
    try:
        install_log_redaction(logger)
        install_log_redaction(logger)
        assert sum(isinstance(f, RedactSecrets) for f in handler.filters) == 1
    finally:
        logger.removeHandler(handler)


def test_configured_tokens_are_masked_wherever_they_appear() -> None:
    flt = RedactSecrets(
        tokens=["plain-secret-1"], token_hashes=frozenset({hash_token("hashed-2x")})
    )
    line = 'GET /models/hashed-2x?t=plain-secret-1 "ignoring keys: hashed-2x, other"'
    assert flt.clean(line) == 'GET /models/***?t=*** "ignoring keys: ***, other"'
