"""The one table from the error tree (`imagine.errors`) to HTTP status and body.

Every error body is `{"error": "<string>"}`; a 503 adds `estimated_time` (seconds, float) and a
429 carries `Retry-After` (whole seconds). FastAPI's 422 never leaves the server: request
validation errors become 400. A 500 says what failed, never how (no stack trace); the traceback
goes to the server log with the request id.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagine.errors import (
    Canceled,
    ImagineError,
    InvalidRequest,
    JobExpired,
    JobNotFound,
    ModelLoadFailed,
    ModelLoading,
    ModelNotFound,
    Overloaded,
    ServerError,
    Unauthorized,
)

__all__ = [
    "STATUS",
    "error_headers",
    "error_response",
    "install_error_handlers",
    "internal_error_response",
    "status_for",
]

log = logging.getLogger(__name__)

# Most specific first is not needed: lookup walks the exception's MRO.
STATUS: dict[type[ImagineError], int] = {
    InvalidRequest: 400,
    Unauthorized: 401,
    ModelNotFound: 404,
    JobNotFound: 404,
    JobExpired: 410,
    Canceled: 499,  # the client's own cancel (nginx's "client closed request")
    Overloaded: 429,
    ModelLoading: 503,
    ModelLoadFailed: 500,
    ServerError: 500,
    ImagineError: 500,
}


def status_for(exc: ImagineError) -> int:
    """The status of the closest class of `exc` in STATUS."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


def error_headers(exc: ImagineError) -> dict[str, str]:
    """The headers an error carries whatever the API: Retry-After, WWW-Authenticate."""
    if isinstance(exc, Overloaded):
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    return {}


def error_response(exc: ImagineError, *, headers: dict[str, str] | None = None) -> JSONResponse:
    """The HF API's JSON response for one error of the tree: `{"error": "<message>"}`."""
    status = status_for(exc)
    body: dict[str, Any] = {"error": exc.message}
    if isinstance(exc, ModelLoading):
        body["estimated_time"] = float(exc.estimated_time)
    out_headers = {**(headers or {}), **error_headers(exc)}
    return JSONResponse(body, status_code=status, headers=out_headers)


def internal_error_response(exc: BaseException, request_id: str | None) -> JSONResponse:
    """A 500 for an exception outside the tree: logged with traceback, body without it."""
    log.error("unhandled error (request id %s)", request_id, exc_info=exc)
    suffix = f" (request id {request_id})" if request_id else ""
    return JSONResponse({"error": f"internal server error{suffix}"}, status_code=500)


async def _on_imagine_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImagineError)
    status = status_for(exc)
    if status >= 500 and not isinstance(exc, ModelLoading):
        log.error("%s: %s", type(exc).__name__, exc.message)
    return error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
    msg = first.get("msg", "invalid request")
    return error_response(InvalidRequest(f"{where}: {msg}", field=where))


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = 400 if exc.status_code == 422 else exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route for {request.method} {request.url.path}"
    return JSONResponse({"error": detail}, status_code=status, headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    return internal_error_response(exc, getattr(request.state, "request_id", None))


def install_error_handlers(app: FastAPI) -> None:
    """Register the table's handlers on `app`."""
    app.add_exception_handler(ImagineError, _on_imagine_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
