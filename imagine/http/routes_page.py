"""The web page: plain HTML, CSS and JavaScript shipped in the package (imagine/http/page/), no
build step and nothing fetched from another origin.

    GET /              the page, for a browser (Accept names text/html); API clients keep the
                       default model's status (routes_hf asks `wants_page`)
    GET /page/{name}   its ES modules (app.js and what it imports), style sheet and icon

The page and its files need no token (they hold no data); everything the page reads does, so
with tokens on it asks for one. Its Content-Security-Policy lets it load and connect to this
origin only (images also from data: and blob: URLs, which previews and kept results use).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import PurePosixPath

from fastapi import APIRouter, Request, Response

from imagine.errors import RouteNotFound
from imagine.http.errors import error_response

__all__ = ["page_response", "router", "wants_page"]

router = APIRouter()

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
_HEADERS = {
    "content-security-policy": _CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Revalidate every time (cheap: an ETag match is a 304), so an upgrade shows at once.
    "cache-control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    etag: str


@cache
def _files() -> dict[str, _File]:
    """The page's files, read once from the package (they change only with it)."""
    folder = resources.files("imagine.http").joinpath("page")
    files = {}
    for entry in folder.iterdir():
        if entry.is_file() and PurePosixPath(entry.name).suffix in _TYPES:
            body = entry.read_bytes()
            files[entry.name] = _File(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return files


def wants_page(accept: str | None) -> bool:
    """Whether `Accept` names HTML, as a browser's navigation does. API clients send no
    Accept, `*/*` or JSON, and keep their JSON."""
    if not accept:
        return False
    types = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    return "text/html" in types or "application/xhtml+xml" in types


def _serve(name: str, request: Request) -> Response:
    page = _files()[name]
    headers = {**_HEADERS, "etag": page.etag}
    if request.headers.get("if-none-match") == page.etag:
        return Response(status_code=304, headers=headers)
    return Response(page.body, media_type=_TYPES[PurePosixPath(name).suffix], headers=headers)


def page_response(request: Request) -> Response:
    """The page itself (`GET /` from a browser)."""
    return _serve("index.html", request)


@router.get("/page/{name}", include_in_schema=False)
async def page_file(request: Request, name: str) -> Response:
    if name not in _files() or name == "index.html":
        return error_response(RouteNotFound(f"no page file {name[:64]!r}"))
    return _serve(name, request)
