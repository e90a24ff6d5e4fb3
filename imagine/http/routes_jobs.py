"""The job routes, spoken as Replicate's predictions API (see imagine.protocols.replicate).

    POST /v1/models/{owner}/{name}/predictions    create (model in the path)
    POST /v1/predictions                          create (`version` = model id[:revision])
    GET  /v1/predictions                          list, newest first, cursor pagination
    GET  /v1/predictions/{id}                     one prediction
    POST /v1/predictions/{id}/cancel              cancel
    GET  /v1/predictions/{id}/stream              SSE: Replicate's output / logs / error / done
    GET  /v1/predictions/{id}/events              SSE: imagine's status / preview / done
    GET  /v1/predictions/{id}/preview             the latest preview (JPEG)
    GET  /v1/files/{id}/{name}                    a result image (no token: the id is the key)

Thin: parse (protocol module) → the job service → render. Every error is problem details.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.requests import ClientDisconnect

from imagine.errors import ImagineError, InvalidRequest, JobNotFound
from imagine.http.errors import error_headers, internal_error_response, status_for
from imagine.http.state import ServerState
from imagine.jobs.service import JobService, JobView
from imagine.jobs.webhooks import check_target
from imagine.protocols import replicate
from imagine.service import consecutive_seeds

__all__ = ["router"]

router = APIRouter()

_KEEPALIVE_S = 15
_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PAGE_SIZE = 20


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.imagine
    return state


def _jobs(state: ServerState) -> JobService:
    if state.jobs is None:
        raise JobNotFound("jobs are off on this server")
    return state.jobs


def _who(request: Request, state: ServerState) -> tuple[str, str, str | None]:
    """(owner, engine client id, visibility filter). Raises Unauthorized. With tokens on a job
    belongs to the token's digest and only it sees the job; with tokens off it records the
    client's address (idempotency keys are per owner) and everyone sees every job."""
    digest = state.auth.authenticate(request.headers.get("authorization"))
    if digest is not None:
        return digest, digest, digest
    client = request.client.host if request.client else "unknown"
    return client, client, None


def _problem(exc: ImagineError) -> JSONResponse:
    status = status_for(exc)
    exc = replicate.client_field(exc)
    return JSONResponse(
        replicate.error_body(exc, status), status_code=status, headers=error_headers(exc)
    )


async def _guard(request: Request, work: Any) -> Response:
    try:
        return await work
    except ImagineError as exc:
        return _problem(exc)
    except ClientDisconnect:  # gone before its body arrived (or cut off by the body limit)
        return Response(status_code=499)
    except Exception as exc:  # a bug below: 500 without the traceback
        return internal_error_response(
            exc, getattr(request.state, "request_id", None), request.url.path
        )


def _base(request: Request) -> str:
    return str(request.base_url)


# --- create


async def _create(request: Request, model_id: str | None) -> Response:
    state = _state(request)
    jobs = _jobs(state)
    owner, client_id, _ = _who(request, state)
    wait_s = replicate.parse_prefer_wait(request.headers.get("prefer"))
    parsed = replicate.parse_create(await request.body(), model_id=model_id)
    first = await state.images.validate(
        parsed.model_id,
        parsed.prompt,
        parsed.parameters,
        parsed.output_format,
        client_id=client_id,
    )
    if parsed.revision is not None and parsed.revision != first.model_revision:
        raise InvalidRequest(
            f"version: revision {parsed.revision[:64]!r} is not served; this server runs "
            f"{parsed.model_id}:{first.model_revision}",
            field="version",
        )
    if parsed.webhook is not None:
        check_target(parsed.webhook, state.settings.webhook_allow)
    view = await jobs.create(
        owner=owner,
        client_id=client_id,
        requests=consecutive_seeds(first, parsed.num_outputs),
        input=parsed.input,
        webhook=parsed.webhook,
        webhook_events_filter=parsed.webhook_events_filter,
        idempotency_key=request.headers.get("idempotency-key"),
        previews=parsed.previews,
        base_url=_base(request),
    )
    if wait_s is not None:
        view = await jobs.wait(view.record.id, owner=None, timeout_s=wait_s)
    body = replicate.render(view, _base(request))
    if wait_s is not None and not view.state.terminal:
        # The official client takes any status but `starting` after a wait as finished (and
        # would return no output): a wait that ran out says `starting`.
        body["status"] = "starting"
    return JSONResponse(body, status_code=201)


@router.post("/v1/models/{owner}/{name}/predictions")
async def create_for_model(request: Request, owner: str, name: str) -> Response:
    return await _guard(request, _create(request, f"{owner}/{name}"))


@router.post("/v1/predictions")
async def create(request: Request) -> Response:
    return await _guard(request, _create(request, None))


# --- read, list, cancel


async def _get(request: Request, job_id: str) -> Response:
    state = _state(request)
    _, _, visible = _who(request, state)
    view = await _jobs(state).get(job_id, owner=visible)
    return JSONResponse(replicate.render(view, _base(request)))


@router.get("/v1/predictions/{job_id}")
async def get(request: Request, job_id: str) -> Response:
    return await _guard(request, _get(request, job_id))


async def _list(request: Request) -> Response:
    state = _state(request)
    _, _, visible = _who(request, state)
    cursor = request.query_params.get("cursor") or None
    views, next_cursor = await _jobs(state).list(owner=visible, cursor=cursor, limit=_PAGE_SIZE)
    base = _base(request).rstrip("/")
    return JSONResponse(
        {
            "results": [replicate.render(v, _base(request)) for v in views],
            "next": f"{base}/v1/predictions?cursor={next_cursor}" if next_cursor else None,
            "previous": None,
        }
    )


@router.get("/v1/predictions")
async def list_predictions(request: Request) -> Response:
    return await _guard(request, _list(request))


async def _cancel(request: Request, job_id: str) -> Response:
    state = _state(request)
    _, _, visible = _who(request, state)
    view = await _jobs(state).cancel(job_id, owner=visible)
    return JSONResponse(replicate.render(view, _base(request)))


@router.post("/v1/predictions/{job_id}/cancel")
async def cancel(request: Request, job_id: str) -> Response:
    return await _guard(request, _cancel(request, job_id))


# --- files and previews


async def _file(request: Request, job_id: str, name: str) -> Response:
    data = await _jobs(_state(request)).output(job_id, name)
    suffix = name.rsplit(".", 1)[-1]
    return Response(data, media_type=_CONTENT_TYPES.get(suffix, "application/octet-stream"))


@router.get("/v1/files/{job_id}/{name}")
async def file(request: Request, job_id: str, name: str) -> Response:
    return await _guard(request, _file(request, job_id, name))


async def _preview(request: Request, job_id: str) -> Response:
    state = _state(request)
    _, _, visible = _who(request, state)
    jobs = _jobs(state)
    await jobs.get(job_id, owner=visible)
    data = jobs.preview(job_id)
    if data is None:
        raise JobNotFound(f"job {job_id[:64]} has no preview now")
    return Response(data, media_type="image/jpeg", headers={"cache-control": "no-store"})


@router.get("/v1/predictions/{job_id}/preview")
async def preview(request: Request, job_id: str) -> Response:
    return await _guard(request, _preview(request, job_id))


# --- streams


async def _open_stream(request: Request, job_id: str) -> AsyncIterator[JobView]:
    """Check access before the stream starts (errors as JSON, not as a broken stream)."""
    state = _state(request)
    _, _, visible = _who(request, state)
    return await _jobs(state).events(job_id, owner=visible)


async def _replicate_events(views: AsyncIterator[JobView], base: str) -> AsyncIterator[dict]:
    """Replicate's events, each with an id: logs as they grow, outputs, error, done."""
    sent_logs = 0
    n = 0
    last: JobView | None = None
    async for view in views:
        last = view
        logs = view.record.logs
        if len(logs) > sent_logs:
            n += 1
            yield {"event": "logs", "id": str(n), "data": logs[sent_logs:].rstrip("\n")}
            sent_logs = len(logs)
    if last is None:
        return
    prediction = replicate.render(last, base)
    record = last.record
    if prediction["status"] == "succeeded":
        outputs = prediction["output"]
        for url in outputs if isinstance(outputs, list) else [outputs]:
            n += 1
            yield {"event": "output", "id": str(n), "data": url}
        yield {"event": "done", "id": str(n + 1), "data": "{}"}
    elif prediction["status"] == "failed":
        yield {"event": "error", "id": str(n + 1), "data": record.error or "failed"}
        yield {"event": "done", "id": str(n + 2), "data": json.dumps({"reason": "error"})}
    else:
        yield {"event": "done", "id": str(n + 1), "data": json.dumps({"reason": "canceled"})}


async def _imagine_events(views: AsyncIterator[JobView], base: str) -> AsyncIterator[dict]:
    """imagine's progress: status on every change, a preview when a new one appears, done."""
    n = 0
    preview_step = -1
    last: JobView | None = None
    async for view in views:
        last = view
        progress = view.progress
        status = replicate.render(view, base)
        n += 1
        yield {
            "event": "status",
            "id": str(n),
            "data": json.dumps(
                {
                    "id": view.record.id,
                    "status": status["status"],
                    "queue_position": status["queue_position"],
                    "progress": status["progress"],
                    "eta_s": status["eta_s"],
                }
            ),
        }
        if progress is not None and progress.preview and progress.preview_step != preview_step:
            preview_step = progress.preview_step
            url = "data:image/jpeg;base64," + base64.b64encode(progress.preview).decode()
            n += 1
            yield {
                "event": "preview",
                "id": str(n),
                "data": json.dumps({"step": preview_step, "image": url}),
            }
    if last is not None:
        yield {"event": "done", "id": str(n + 1), "data": json.dumps(replicate.render(last, base))}


async def _stream(request: Request, job_id: str, kind: str) -> Response:
    views = await _open_stream(request, job_id)
    make = _replicate_events if kind == "replicate" else _imagine_events
    state = _state(request)
    metrics = state.metrics

    async def events() -> AsyncIterator[dict]:
        gauge = metrics.sse_subscribers.labels(stream=kind) if metrics is not None else None
        if gauge is not None:
            gauge.inc()
        try:
            async for event in make(views, _base(request)):
                yield event
        finally:
            if gauge is not None:
                gauge.dec()

    return EventSourceResponse(events(), ping=_KEEPALIVE_S, headers={"cache-control": "no-store"})


@router.get("/v1/predictions/{job_id}/stream")
async def stream(request: Request, job_id: str) -> Response:
    return await _guard(request, _stream(request, job_id, "replicate"))


@router.get("/v1/predictions/{job_id}/events")
async def events(request: Request, job_id: str) -> Response:
    return await _guard(request, _stream(request, job_id, "imagine"))
