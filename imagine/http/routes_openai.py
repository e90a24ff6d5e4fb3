"""The OpenAI Images API routes (see imagine.protocols.openai for the wire format).

    POST /v1/images/generations     images, as URLs (served from the job store, expiring with
                                    job_ttl_s) or base64; `stream` → SSE partial images, completed
    GET  /v1/models                 the aliases and the configured models

Thin: parse → the service layer (validate → cache → engine → encode) → render. Every error is in
OpenAI's envelope. Requests wait for a model that is loading (apps do not retry a 503 for long).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.requests import ClientDisconnect

from imagine import imaging
from imagine.errors import ImagineError, InvalidRequest, JobNotFound
from imagine.http.disconnect import unless_disconnected
from imagine.http.errors import error_headers, internal_error_response, status_for
from imagine.http.monitoring import record_request
from imagine.http.state import ServerState
from imagine.protocols import openai
from imagine.protocols.hf import parse_bool_header
from imagine.request import GenerationRequest
from imagine.service import EncodedImage, consecutive_seeds

__all__ = ["router"]

router = APIRouter()


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.imagine
    return state


def _error(exc: ImagineError, parsed: openai.ImagesRequest | None = None) -> JSONResponse:
    status = status_for(exc)
    param = openai.openai_field(exc, parsed) if isinstance(exc, InvalidRequest) else None
    return JSONResponse(
        openai.error_body(exc, status, param), status_code=status, headers=error_headers(exc)
    )


class _Context:
    """What an error response needs to know about the request (filled in as it is parsed)."""

    parsed: openai.ImagesRequest | None = None
    model_id: str | None = None


@router.post("/v1/images/generations")
async def generations(request: Request) -> Response:
    state = _state(request)
    context = _Context()
    try:
        response = await _generate(request, state, context)
    except ImagineError as exc:
        response = _error(exc, context.parsed)
    except ClientDisconnect:
        response = Response(status_code=499)
    except Exception as exc:  # a bug below: 500 without the traceback
        response = internal_error_response(
            exc, getattr(request.state, "request_id", None), request.url.path
        )
    record_request(state, context.model_id, response.status_code)
    return response


async def _generate(request: Request, state: ServerState, context: _Context) -> Response:
    digest = state.auth.authenticate(request.headers.get("authorization"))
    caller = digest or (request.client.host if request.client else "unknown")
    parsed = openai.parse(await request.body(), max_n=state.settings.openai_max_n)
    context.parsed = parsed
    use_cache = parse_bool_header("x-use-cache", request.headers.get("x-use-cache"))
    info = await state.images.describe(openai.model_for(parsed, state.settings), client_id=caller)
    context.model_id = info.model_id
    params = openai.parameters_for(parsed, info.spec, state.settings)
    first = await state.images.validate(
        info.model_id, parsed.prompt, params, parsed.output_format, info=info
    )
    if parsed.output_compression is not None and parsed.output_format != "png":
        first = replace(first, output_quality=max(1, parsed.output_compression))
    size = f"{first.width}x{first.height}"
    if parsed.stream:
        return _stream(request, state, parsed, first, caller, use_cache is not False, size)
    images = await unless_disconnected(
        request,
        state.images.generate_many(
            first,
            parsed.n,
            client_id=caller,
            seeded="seed" in parsed.parameters,
            use_cache=use_cache is not False,
            wait_for_model=True,
        ),
    )
    if images is None:
        return Response(status_code=499)
    if parsed.response_format == "b64_json":
        items = [{"b64_json": base64.b64encode(image.body).decode()} for image in images]
    else:
        items = await _urls(request, state, parsed, first, images, owner=caller)
    body = openai.render(created=int(time.time()), images=items, request=parsed, size=size)
    return JSONResponse(body)


async def _urls(
    request: Request,
    state: ServerState,
    parsed: openai.ImagesRequest,
    first: GenerationRequest,
    images: list[EncodedImage],
    *,
    owner: str,
) -> list[dict[str, Any]]:
    """Keep the images in the job store; their URLs need no token and expire with the job."""
    if state.jobs is None:
        raise JobNotFound("response_format 'url' needs the job store, which is off here")
    requests = consecutive_seeds(replace(first, seed=images[0].seed), len(images))
    base = (state.settings.public_url or str(request.base_url)).rstrip("/")
    record = await state.jobs.keep(
        owner=owner,
        requests=requests,
        images=images,
        input=parsed.echo(),
        api="openai",
        base_url=str(request.base_url),
    )
    return [{"url": f"{base}/v1/files/{record.id}/{name}"} for name in record.outputs]


def _stream(
    request: Request,
    state: ServerState,
    parsed: openai.ImagesRequest,
    first: GenerationRequest,
    caller: str,
    use_cache: bool,
    size: str,
) -> Response:
    """SSE: at most `partial_images` partial images from the job's previews, spread over its
    steps, then exactly one `completed` (or one error event)."""
    created = int(time.time())
    images = state.images

    async def events() -> AsyncIterator[dict[str, Any]]:
        try:
            hit = await images.cached(first) if use_cache else None
            if hit is not None:
                image = hit
            else:
                job = images.submit(first, client_id=caller, wait_for_model=True, previews=True)
                try:
                    sent, last = 0, 0
                    async for snap in job.events():
                        step = snap.preview_step
                        if snap.preview is None or step <= last or sent >= parsed.partial_images:
                            continue
                        # spread the partials over the steps: the k-th at k/(n+1) of the way
                        if step >= snap.total * sent / (parsed.partial_images + 1):
                            partial = await _as_format(snap.preview, first)
                            yield _event(
                                openai.partial_event(
                                    image=partial,
                                    index=sent,
                                    request=parsed,
                                    size=size,
                                    created=created,
                                )
                            )
                            sent, last = sent + 1, step
                    image = await images.finish(job)
                except (asyncio.CancelledError, GeneratorExit):
                    job.cancel()  # the client went away
                    raise
            yield _event(
                openai.completed_event(image=image.body, request=parsed, size=size, created=created)
            )
        except ImagineError as exc:
            param = openai.openai_field(exc, parsed) if isinstance(exc, InvalidRequest) else None
            yield _event(openai.error_body(exc, status_for(exc), param), kind="error")

    return EventSourceResponse(events(), ping=15, headers={"cache-control": "no-store"})


def _event(data: dict[str, Any], kind: str | None = None) -> dict[str, Any]:
    return {"event": kind or data["type"], "data": json.dumps(data)}


async def _as_format(preview: bytes, request: GenerationRequest) -> bytes:
    """A preview (a small JPEG) as an image of the request's size and format."""
    return await anyio.to_thread.run_sync(
        imaging.convert, preview, (request.width, request.height), request.output_format
    )


@router.get("/v1/models")
async def models(request: Request) -> Response:
    state = _state(request)
    try:
        state.auth.authenticate(request.headers.get("authorization"))
    except ImagineError as exc:
        return _error(exc)
    settings = state.settings
    names = [*settings.openai_model_aliases, settings.default_model, *settings.preload]
    created = int(time.time())
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "imagine"}
                for name in dict.fromkeys(names)
            ],
        }
    )
