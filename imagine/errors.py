"""The error tree, defined once and free of HTTP.

    ImagineError                what                                     status  code
    ├── ClientError             the caller can fix it
    │   ├── InvalidRequest      a field is malformed or out of range         400  invalid_request
    │   ├── Unauthorized        missing or wrong bearer token                401  unauthorized
    │   ├── ModelNotFound       the id resolves to nothing loadable          404  model_not_found
    │   ├── JobNotFound         no such job (or not the caller's)            404  job_not_found
    │   ├── JobExpired          the job's results passed their TTL           410  job_expired
    │   ├── BodyTooLarge        the body is over max_body_bytes              413  body_too_large
    │   ├── RouteNotFound       no route at this path                        404  route_not_found
    │   └── MethodNotAllowed    the path has no route for this method        405  method_not_allowed
    ├── Canceled                the job was canceled                         499  canceled
    ├── Overloaded              queue full / per-client cap; retry_after     429  overloaded
    ├── ModelLoading            still loading; has estimated_time            503  model_loading
    └── ServerError             our fault or the model's                     500  server_error
        ├── ModelLoadFailed     the model could not be loaded (the cause)    500  model_load_failed
        └── GenerationFailed    the pipeline raised while generating         500  generation_failed

Each class carries a stable machine `code` (the right-hand column) that every protocol renders
in its own envelope; `imagine.http.errors` maps classes to status codes in one table. Messages
are written for the client: they name the field, the value and the allowed range, and never
carry a stack trace or a secret.
"""

from __future__ import annotations


class ImagineError(Exception):
    """Base of every error imagine raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ClientError(ImagineError):
    """The request cannot be served as sent."""

    code = "client_error"


class InvalidRequest(ClientError):
    """A field is missing, malformed or out of range."""

    code = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unauthorized(ClientError):
    """Tokens are configured and the request carries none or a wrong one."""

    code = "unauthorized"


class ModelNotFound(ClientError):
    """The model id resolves to nothing this server can load."""

    code = "model_not_found"


class JobNotFound(ClientError):
    """No job with this id, or one the caller may not see (the same answer, on purpose)."""

    code = "job_not_found"


class JobExpired(ClientError):
    """The job existed, but its results passed their TTL and were deleted."""

    code = "job_expired"


class BodyTooLarge(ClientError):
    """The request body is larger than the server accepts."""

    code = "body_too_large"


class RouteNotFound(ClientError):
    """No route answers at this path."""

    code = "route_not_found"


class MethodNotAllowed(ClientError):
    """The path exists, but not with this method; `allow` lists the methods it has."""

    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: list[str]) -> None:
        super().__init__(message)
        self.allow = allow


class Canceled(ImagineError):
    """The job was canceled before it finished (by its owner, or its client went away)."""

    code = "canceled"


class Overloaded(ImagineError):
    """Admission control refused the request; the client should retry later."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelLoading(ImagineError):
    """The model is loading and the client did not ask to wait."""

    code = "model_loading"

    def __init__(self, model_id: str, *, estimated_time: float) -> None:
        super().__init__(f"Model {model_id} is currently loading")
        self.model_id = model_id
        self.estimated_time = estimated_time


class ServerError(ImagineError):
    """Something failed on our side."""

    code = "server_error"


class ModelLoadFailed(ServerError):
    """Loading the model raised; the message names the cause."""

    code = "model_load_failed"


class GenerationFailed(ServerError):
    """The pipeline raised while generating."""

    code = "generation_failed"
