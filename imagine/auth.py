"""Bearer tokens: who may call the server, and keeping tokens out of every log.

- No tokens configured and a loopback bind: auth is off (the Python client sends the user's
  cached Hub token anyway; it is ignored, never logged, never forwarded).
- Tokens configured (`Settings.tokens` / `token_hashes`, kept as SHA-256 digests): every request
  must carry `Authorization: Bearer <token>`; its digest is compared in constant time with each
  configured digest.
- A non-loopback bind with no tokens refuses to start unless `allow_unauthenticated_public`
  (`--allow-unauthenticated-public`, `IMAGINE_ALLOW_UNAUTHENTICATED_PUBLIC=true`) is set.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import logging
import re
from collections.abc import Sequence
from typing import Any

from imagine.errors import Unauthorized
from imagine.settings import Settings, hash_token

__all__ = [
    "InsecureBind",
    "RedactSecrets",
    "TokenAuth",
    "check_bind",
    "install_log_redaction",
    "is_loopback",
    "redact",
]


class InsecureBind(RuntimeError):
    """A public bind without tokens and without the explicit opt-in flag."""


class TokenAuth:
    """Checks `Authorization` headers against configured SHA-256 token digests."""

    def __init__(self, *, token_hashes: frozenset[str]) -> None:
        self._hashes = tuple(sorted(h.lower() for h in token_hashes))

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenAuth:
        return cls(token_hashes=settings.all_token_hashes())

    @property
    def enabled(self) -> bool:
        return bool(self._hashes)

    def authenticate(self, authorization: str | None, *, basic: bool = False) -> str | None:
        """The digest of the presented token (a stable client id), or None when auth is off
        (then any header, even a malformed one, is ignored).

        `basic`: also accept HTTP Basic with the token as the password (A1111 clients send
        Basic). Raises Unauthorized when auth is on and the header is missing, malformed or
        wrong. The message never repeats the token.
        """
        if not self._hashes:
            return None
        expected = "'Bearer <token>'" + (" or Basic with the token as password" if basic else "")
        if not authorization:
            raise Unauthorized(f"missing token: send 'Authorization: {expected[1:]}")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if basic and scheme.lower() == "basic":
            token = _basic_password(token)
            scheme = "bearer"
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(f"malformed Authorization header: expected {expected}")
        digest = hash_token(token)
        matched = False
        for known in self._hashes:  # no early exit: time does not depend on which one matched
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise Unauthorized("invalid bearer token")
        return digest


def _basic_password(credentials: str) -> str:
    """The password of `Basic base64(user:password)`; empty when it is not one."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1; False for 0.0.0.0, :: and anything else."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse a public bind with no tokens unless explicitly allowed. Raises InsecureBind."""
    if is_loopback(settings.host) or settings.all_token_hashes():
        return
    if settings.allow_unauthenticated_public:
        return
    raise InsecureBind(
        f"refusing to listen on {settings.host} without authentication: configure tokens "
        "(IMAGINE_TOKENS / IMAGINE_TOKEN_HASHES or `tokens` in the config file), bind to "
        "127.0.0.1, or pass --allow-unauthenticated-public "
        "(IMAGINE_ALLOW_UNAUTHENTICATED_PUBLIC=true) to serve anyone who can reach this address"
    )


# Bearer/Basic credentials, Authorization header values, and Hub tokens that slip into a message.
_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^'\",}\s]+(\s+[^'\",}\s]+)?"),
    re.compile(r"\bhf_[A-Za-z0-9]{8,}\b"),
)


def redact(text: str) -> str:
    """`text` with bearer tokens, Authorization values and hf_ tokens replaced by `***`."""
    text = _SECRET_PATTERNS[0].sub(lambda m: f"{m.group(1)} ***", text)
    text = _SECRET_PATTERNS[1].sub(lambda m: f"{m.group(1)}***", text)
    return _SECRET_PATTERNS[2].sub("hf_***", text)


# Pieces of a log line that could be a whole token: runs between separators of URLs, JSON and
# headers. A configured token is masked wherever it appears as such a piece.
_PIECES = re.compile(r"[^\s\"'&=?/:,;{}\[\]()<>]{8,}")


class RedactSecrets(logging.Filter):
    """A handler filter that rewrites each record's message with `redact`, and masks every
    configured token wherever it appears (a query string, a path, a JSON key): plain tokens by
    their text, `token_hashes`-only tokens by hashing each token-shaped piece of the line."""

    def __init__(
        self, *, tokens: Sequence[str] = (), token_hashes: frozenset[str] = frozenset()
    ) -> None:
        super().__init__()
        self._tokens = tuple(sorted({t for t in tokens if t}, key=len, reverse=True))
        self._hashes = token_hashes

    def clean(self, message: str) -> str:
        message = redact(message)
        for token in self._tokens:
            message = message.replace(token, "***")
        if self._hashes:
            message = _PIECES.sub(
                lambda m: "***" if hash_token(m.group(0)) in self._hashes else m.group(0), message
            )
        return message

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_redaction(*loggers: Any, settings: Settings | None = None) -> RedactSecrets:
    """Attach one RedactSecrets filter (masking `settings`' tokens too, when given) to every
    handler of the root logger and of `loggers` (names or Logger objects; default: the uvicorn
    loggers). Returns the filter."""
    flt = (
        RedactSecrets(tokens=settings.tokens, token_hashes=settings.all_token_hashes())
        if settings is not None
        else RedactSecrets()
    )
    names = loggers or ("uvicorn", "uvicorn.error", "uvicorn.access")
    targets = [logging.getLogger()] + [
        logging.getLogger(n) if isinstance(n, str) else n for n in names
    ]
    for logger in targets:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(flt)
    return flt
