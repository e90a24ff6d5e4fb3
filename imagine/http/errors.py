"""The one table from the error tree (`imagine.errors`) to HTTP status and body.

Every error body is `{"error": "<string>"}`; a 503 adds `estimated_time` (seconds, float) and a
429 carries `Retry-After` (whole seconds). FastAPI's 422 never leaves the server: request
validation errors become 400. A 500 says what failed, never how (no stack trace); the traceback
goes to the server log with the request id.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagine.errors import (
    BodyTooLarge,
    Canceled,
    ImagineError,
    InvalidRequest,
    JobExpired,
    JobNotFound,
    MethodNotAllowed,
    ModelLoadFailed,
    ModelLoading,
    ModelNotFound,
    Overloaded,
    RouteNotFound,
    ServerError,
    Unauthorized,
)

__all__ = [
    "STATUS",
    "error_headers",
    "error_response",
    "install_error_handlers",
    "internal_error_response",
    "shaped_error",
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
    BodyTooLarge: 413,
    RouteNotFound: 404,
    MethodNotAllowed: 405,
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
    if isinstance(exc, MethodNotAllowed):
        return {"Allow": ", ".join(exc.allow)}
    return {}


def error_response(exc: ImagineError, *, headers: dict[str, str] | None = None) -> JSONResponse:
    """The HF API's JSON response for one error of the tree: `{"error": "<message>"}`."""
    status = status_for(exc)
    body: dict[str, Any] = {"error": exc.message}
    if isinstance(exc, ModelLoading):
        body["estimated_time"] = float(exc.estimated_time)
    out_headers = {**(headers or {}), **error_headers(exc)}
    return JSONResponse(body, status_code=status, headers=out_headers)


def shaped_error(path: str, exc: ImagineError) -> JSONResponse:
    """`exc` in the error shape of the API `path` belongs to (for answers given outside the
    routes: the body limit, unknown routes, wrong methods)."""
    from imagine.protocols import a1111, openai, replicate

    status = status_for(exc)
    field = getattr(exc, "field", None)
    body: dict[str, Any]
    if path.startswith("/v1/images") or path.rstrip("/") == "/v1/models":
        body = openai.error_body(exc, status, field)
    elif path.startswith("/v1/"):
        body = replicate.error_body(exc, status)
    elif path.startswith("/sdapi/"):
        body = a1111.error_body(exc, field)
    else:
        return error_response(exc)
    return JSONResponse(body, status_code=status, headers=error_headers(exc))


def internal_error_response(
    exc: BaseException, request_id: str | None, path: str = "/"
) -> JSONResponse:
    """A 500 for an exception outside the tree: logged with traceback; the body, in the error
    shape of the API `path` belongs to, says only that it failed and the request id."""
    log.error("unhandled error (request id %s)", request_id, exc_info=exc)
    suffix = f" (request id {request_id})" if request_id else ""
    return shaped_error(path, ServerError(f"internal server error{suffix}"))


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
    """Starlette's own 404 and 405 (and any other HTTPException), in the API's error shape. A
    405's Allow lists every method the path has: Starlette named only the first route's."""
    assert isinstance(exc, StarletteHTTPException)
    path = request.url.path
    if exc.status_code == 404:
        return shaped_error(path, RouteNotFound(f"no route for {request.method} {path[:200]}"))
    if exc.status_code == 405:
        allow = _methods(request)
        return shaped_error(
            path,
            MethodNotAllowed(
                f"{request.method} is not allowed here; use {', '.join(allow)}", allow=allow
            ),
        )
    status = 400 if exc.status_code == 422 else exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    return JSONResponse({"error": detail}, status_code=status, headers=exc.headers)


def _methods(request: Request) -> list[str]:
    """Every method a route at this path answers."""
    methods: set[str] = set()
    for route in _routes(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(request.url.path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _routes(routes: Iterable[Any]) -> Iterator[Any]:
    """The routes, those of included routers too (FastAPI wraps each in `original_router`)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)
        else:
            yield route


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    return internal_error_response(
        exc, getattr(request.state, "request_id", None), request.url.path
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the table's handlers on `app`."""
    app.add_exception_handler(ImagineError, _on_imagine_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
