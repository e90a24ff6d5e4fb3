"""Composition only: settings + engine + cache + job store → a FastAPI app (routes, error
table, request ids, lifespan, the engine's metrics). Threads, queues and auth live elsewhere."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from imagine import __version__
from imagine.auth import TokenAuth
from imagine.errors import ImagineError
from imagine.http import (
    docs,
    monitoring,
    routes_a1111,
    routes_hf,
    routes_jobs,
    routes_models,
    routes_openai,
    routes_page,
)
from imagine.http.body_limit import BodyLimitMiddleware
from imagine.http.errors import install_error_handlers
from imagine.http.openapi import install_openapi
from imagine.http.request_id import RequestIdMiddleware
from imagine.http.state import ServerState, compute_type
from imagine.settings import Settings

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from imagine.cache.base import ResultCache
    from imagine.engine.base import Engine
    from imagine.jobs.store import JobStore

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    engine: Engine,
    cache: ResultCache | None = None,
    *,
    job_store: JobStore | None = None,
    job_relay: Any = None,
) -> FastAPI:
    """The ASGI app. Its lifespan starts the engine (preloading), queues again the jobs a
    previous run left unfinished, and closes the jobs, the engine and the cache on shutdown.
    `/metrics` serves `engine.metrics` when the engine has one (build the cache with the same
    Metrics to count its hits and misses). `job_store` defaults to the configured one
    (`settings.job_store`; SQLite in `settings.data_dir`, or in a temporary folder deleted at
    shutdown when that is None). `job_relay` (imagine.jobs.relay.RedisJobRelay) shares the
    progress and cancellation of jobs with other replicas of the same Redis job store."""
    from imagine.engine.job import PreviewPolicy
    from imagine.jobs.service import JobService
    from imagine.service import ImageService

    metrics = getattr(engine, "metrics", None)
    images = ImageService(
        settings=settings, engine=engine, cache=cache, previews=_previews(settings, PreviewPolicy)
    )
    state = ServerState(
        settings=settings,
        engine=engine,
        images=images,
        auth=TokenAuth.from_settings(settings),
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with contextlib.ExitStack() as cleanup:
            store = job_store or _configured_store(settings, cleanup)
            webhooks = _webhooks(settings, metrics)
            await webhooks.start()
            state.jobs = JobService(
                images=images,
                store=store,
                ttl_s=settings.job_ttl_s,
                previews=images.previews,
                webhooks=webhooks,
                render=lambda view: _render(view, settings),
                metrics=metrics,
                relay=job_relay,
            )
            await engine.start()
            await _await_preload(engine, settings)
            state.compute_type = compute_type(settings)
            await state.jobs.start()
            try:
                yield
            finally:
                await state.jobs.close()
                await webhooks.close()
                await engine.close()
                if cache is not None:
                    await cache.close()

    # FastAPI's documents need no token; with tokens on they are served behind it (http/docs.py)
    public_docs = settings.docs and not state.auth.enabled
    app = FastAPI(
        title="imagine",
        version=__version__,
        lifespan=lifespan,
        openapi_url="/openapi.json" if public_docs else None,
        docs_url="/docs" if public_docs else None,
        redoc_url="/redoc" if public_docs else None,
    )
    app.state.imagine = state
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    install_openapi(app)
    if settings.docs and state.auth.enabled:
        app.include_router(docs.router)
    app.include_router(monitoring.router)
    app.include_router(routes_jobs.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_a1111.router)
    # Before the HF routes: their GET /models/{model_id:path} must not see /models or /page.
    app.include_router(routes_models.router)
    app.include_router(routes_page.router)
    app.include_router(routes_hf.router)
    return app


def _configured_store(settings: Settings, cleanup: contextlib.ExitStack) -> JobStore:
    from imagine.jobs import create_job_store

    data_dir = settings.data_dir
    if data_dir is None and settings.job_store == "sqlite":
        data_dir = Path(tempfile.mkdtemp(prefix="imagine-jobs-"))
        cleanup.callback(shutil.rmtree, data_dir, True)
    return create_job_store(settings, data_dir=data_dir or Path("."))


def _webhooks(settings: Settings, metrics: Any) -> Any:
    from imagine.jobs.webhooks import WebhookSender

    def count(outcome: str) -> None:
        if metrics is not None:
            metrics.webhook_deliveries.labels(outcome=outcome).inc()

    return WebhookSender(
        secret=settings.webhook_secret,
        allow=settings.webhook_allow,
        retries=settings.webhook_retries,
        on_outcome=count,
    )


def _previews(settings: Settings, policy: Any) -> Any:
    if not settings.previews:
        return None
    return policy(
        every_steps=settings.preview_every_steps,
        interval_s=settings.preview_interval_ms / 1000.0,
        max_side=settings.preview_max_side,
    )


def _render(view: Any, settings: Settings) -> dict[str, Any]:
    """The webhook payload: the prediction object, its URLs under `public_url` when set, else
    the URL the client created the job at."""
    from imagine.protocols import replicate

    base = settings.public_url or view.record.base_url
    return replicate.render(view, base or f"http://{settings.host}:{settings.port}")


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
