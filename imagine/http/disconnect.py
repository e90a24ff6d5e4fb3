"""Work that stops when its client goes away: a closed connection cancels the generation
(the engine then drops the job, or stops its pipeline call at the next step)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

__all__ = ["unless_disconnected"]

log = logging.getLogger(__name__)
T = TypeVar("T")


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Await `work`; if the client disconnects first, cancel it and return None. Call it only
    once the request body has been read."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        log.info("client disconnected; cancelling request %s", request.state.request_id)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # let the engine see it
        return None
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


async def _wait_disconnect(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect (servers send it when
    # the peer closes, or once the response is complete).
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
