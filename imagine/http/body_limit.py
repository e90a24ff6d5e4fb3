"""A limit on request bodies: a body over `max_body_bytes` is a 413 in the API's error shape,
before the app reads it when Content-Length declares it, else (chunked) as soon as the limit
is passed: the app then sees the client go away, and whatever it answers is replaced by the
413. Pure ASGI, like the request-id middleware."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagine.errors import BodyTooLarge
from imagine.http.errors import shaped_error

__all__ = ["BodyLimitMiddleware"]


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_bytes <= 0:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(int(declared), scope, receive, send)
            return
        seen = 0
        exceeded = replied = False

        async def counted() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # chunked and too long: stop reading it
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal replied
            if not exceeded:
                await send(message)
            elif not replied:
                replied = True
                await self._too_large(seen, scope, receive, send)

        await self.app(scope, counted, guarded)

    async def _too_large(self, size: int, scope: Scope, receive: Receive, send: Send) -> None:
        error = BodyTooLarge(
            f"body: over {self.max_bytes} bytes ({size} seen); this server accepts at most "
            f"{self.max_bytes} (max_body_bytes)"
        )
        response = shaped_error(scope["path"], error)
        response.headers["connection"] = "close"
        await response(scope, receive, send)
