"""Request ids: echo the caller's `X-Request-Id` (or `X-Amzn-Trace-Id`), else make one; every
response, errors included, carries it as `x-request-id`. Pure ASGI (no BaseHTTPMiddleware), so
streaming and cancellation behave."""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestIdMiddleware", "choose_request_id"]

_SAFE = re.compile(r"^[A-Za-z0-9._:;=/+\-]{1,200}$")


def choose_request_id(headers: dict[str, str]) -> str:
    """The caller's id when it is a short printable token, else a fresh uuid4 hex."""
    for name in ("x-request-id", "x-amzn-trace-id"):
        value = headers.get(name, "").strip()
        if value and _SAFE.match(value):
            return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Puts the id in `request.state.request_id` and in the `x-request-id` response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = choose_request_id(headers)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                raw.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_with_id)
