"""The error tree, defined once and free of HTTP.

    ImagineError
    ├── ClientError                 the caller can fix it
    │   ├── InvalidRequest          a field is missing, malformed or out of range   → 400
    │   ├── Unauthorized            missing or wrong bearer token                   → 401
    │   └── ModelNotFound           the id resolves to nothing loadable              → 404
    ├── Overloaded                  queue full / per-client cap; has retry_after     → 429
    ├── ModelLoading                still loading; has estimated_time                → 503
    └── ServerError                 our fault or the model's
        ├── ModelLoadFailed         the model could not be loaded (names the cause)  → 500
        └── GenerationFailed        the pipeline raised while generating             → 500

`imagine.http.errors` maps these to status codes in one table. Messages are written for the
client: they name the field, the value and the allowed range, and never carry a stack trace or
a secret.
"""

from __future__ import annotations


class ImagineError(Exception):
    """Base of every error imagine raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ClientError(ImagineError):
    """The request cannot be served as sent."""


class InvalidRequest(ClientError):
    """A field is missing, malformed or out of range."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unauthorized(ClientError):
    """Tokens are configured and the request carries none or a wrong one."""


class ModelNotFound(ClientError):
    """The model id resolves to nothing this server can load."""


class Overloaded(ImagineError):
    """Admission control refused the request; the client should retry later."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelLoading(ImagineError):
    """The model is loading and the client did not ask to wait."""

    def __init__(self, model_id: str, *, estimated_time: float) -> None:
        super().__init__(f"Model {model_id} is currently loading")
        self.model_id = model_id
        self.estimated_time = estimated_time


class ServerError(ImagineError):
    """Something failed on our side."""


class ModelLoadFailed(ServerError):
    """Loading the model raised; the message names the cause."""


class GenerationFailed(ServerError):
    """The pipeline raised while generating."""
