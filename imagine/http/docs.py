"""The API documents (`/openapi.json`, `/docs`, `/redoc`) behind the same token as the API.

FastAPI serves them without any auth; with tokens configured the app turns FastAPI's own off
and mounts these, which authenticate first (`docs = false` in the settings drops them all).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse

from imagine.errors import ImagineError
from imagine.http.errors import error_response
from imagine.http.state import ServerState

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


def _denied(request: Request) -> Response | None:
    state: ServerState = request.app.state.imagine
    try:
        state.auth.authenticate(request.headers.get("authorization"))
    except ImagineError as exc:
        return error_response(exc)
    return None


@router.get("/openapi.json")
async def openapi(request: Request) -> Response:
    return _denied(request) or JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger(request: Request) -> Response:
    return _denied(request) or get_swagger_ui_html(openapi_url="/openapi.json", title="imagine")


@router.get("/redoc")
async def redoc(request: Request) -> Response:
    return _denied(request) or get_redoc_html(openapi_url="/openapi.json", title="imagine")
