"""Composition only: settings + engine + cache → a FastAPI app (routes, error table, request
ids, lifespan, the engine's metrics). Threads, queues and auth live elsewhere."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from imagine import __version__
from imagine.auth import TokenAuth
from imagine.errors import ImagineError
from imagine.http import monitoring
from imagine.http.errors import install_error_handlers
from imagine.http.request_id import RequestIdMiddleware
from imagine.http.routes import router
from imagine.http.state import BuildRequest, ServerState, compute_type, default_build_request
from imagine.settings import Settings

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from imagine.cache.base import ResultCache
    from imagine.engine.base import Engine

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    engine: Engine,
    cache: ResultCache | None = None,
    *,
    build_request: BuildRequest = default_build_request,
) -> FastAPI:
    """The ASGI app. Its lifespan starts the engine (preloading in the background) and closes
    the engine and the cache on shutdown. `/metrics` serves `engine.metrics` when the engine
    has one (build the cache with the same Metrics to count its hits and misses).
    `build_request` defaults to `imagine.validation.build_request`; tests may pass a stand-in."""
    state = ServerState(
        settings=settings,
        engine=engine,
        cache=cache,
        auth=TokenAuth.from_settings(settings),
        build_request=build_request,
        metrics=getattr(engine, "metrics", None),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        await _await_preload(engine, settings)
        state.compute_type = compute_type(settings)
        try:
            yield
        finally:
            await engine.close()
            if cache is not None:
                await cache.close()

    app = FastAPI(title="imagine", version=__version__, lifespan=lifespan)
    app.state.imagine = state
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    app.include_router(monitoring.router)
    app.include_router(router)
    return app


async def _await_preload(engine: Engine, settings: Settings) -> None:
    """Accept connections only once the preloaded models are ready (uvicorn listens after the
    lifespan starts), so a first `curl` to a fresh server gets an image rather than a 503; models
    loaded on demand still answer 503 + estimated_time while loading. A failed preload is
    logged and the server starts anyway (requests then get the 500 naming the cause)."""
    load = getattr(engine, "load", None)
    if load is None or not settings.ready_after_preload:
        return
    for model_id in settings.preload:
        try:
            await load(model_id)
        except ImagineError as exc:
            log.error("preload of %s failed: %s", model_id, exc.message)
