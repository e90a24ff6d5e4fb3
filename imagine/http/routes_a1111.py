"""The AUTOMATIC1111 API subset, over the service layer (wire format: imagine.protocols.a1111).

    GET  /sdapi/v1/sd-models    default model, preloads, `org/name` folders of model_dirs
    GET  /sdapi/v1/options      {sd_model_checkpoint, ...}: the caller's model
    POST /sdapi/v1/options      sd_model_checkpoint switches the caller's model
    GET  /sdapi/v1/samplers     the A1111 sampler names the caller's model can run
    GET  /sdapi/v1/schedulers   A1111's schedule types
    POST /sdapi/v1/txt2img      {images: [base64 PNG], parameters, info: "<JSON>"}
    GET  /sdapi/v1/progress     the caller's own txt2img (A1111's is global)
    POST /sdapi/v1/interrupt    stops the caller's own txt2img
    GET  /sdapi/v1/scripts      none (webuiapi asks when it starts)

A caller is the token's digest with tokens on (Bearer, or HTTP Basic with the token as the
password, as A1111 clients send), else the client's address; with tokens off any
Authorization (Open WebUI sends `Basic ` with nothing after it) is ignored.

Choices: the model picked through options is per caller (A1111's is global: Open WebUI's switch
would change every user's model). An interrupted txt2img answers 200 with the images that
finished before it (maybe none), as A1111 returns what it made; `info` describes only those.
`current_image` in progress is the latest preview, a JPEG (A1111's follows samples_format).
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from imagine.errors import Canceled, ImagineError, InvalidRequest
from imagine.http.a1111_state import Caller, Callers, Run, checkpoint, models, short_hash
from imagine.http.disconnect import unless_disconnected
from imagine.http.errors import error_headers, internal_error_response, status_for
from imagine.http.monitoring import record_request
from imagine.http.state import ServerState
from imagine.protocols import a1111
from imagine.request import GenerationRequest
from imagine.service import EncodedImage, consecutive_seeds

__all__ = ["router"]

router = APIRouter(prefix="/sdapi/v1")


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.imagine
    return state


def _callers(request: Request) -> Callers:
    callers = getattr(request.app.state, "a1111_callers", None)
    if callers is None:
        callers = request.app.state.a1111_callers = Callers()
    return callers


def _who(request: Request, state: ServerState) -> str:
    """Raises Unauthorized (tokens on and no valid Bearer or Basic password)."""
    digest = state.auth.authenticate(request.headers.get("authorization"), basic=True)
    if digest is not None:
        return digest
    return request.client.host if request.client else "unknown"


async def _guard(request: Request, work: Any) -> Response:
    try:
        return await work
    except ImagineError as exc:
        exc = a1111.client_field(exc)
        body = a1111.error_body(exc)
        return JSONResponse(body, status_code=status_for(exc), headers=error_headers(exc))
    except ClientDisconnect:  # gone before its body arrived
        return Response(status_code=499)
    except Exception as exc:  # a bug below: 500 without the traceback
        return internal_error_response(
            exc, getattr(request.state, "request_id", None), request.url.path
        )


def _route(method: str, path: str) -> Any:
    """Register `work(request)` at `path`, its errors rendered in A1111's shape."""

    def register(work: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            return await _guard(request, work(request))

        endpoint.__name__ = work.__name__.lstrip("_")
        router.add_api_route(path, endpoint, methods=[method])
        return work

    return register


def _caller(request: Request) -> tuple[ServerState, Caller, str]:
    """(state, the caller's entry, the caller's model id). Raises Unauthorized."""
    state = _state(request)
    caller = _callers(request).get(_who(request, state))
    return state, caller, caller.model or state.settings.default_model


@_route("GET", "/sd-models")
async def _sd_models(request: Request) -> Response:
    state, _, _ = _caller(request)
    return JSONResponse(await models(state))


@_route("GET", "/options")
async def _get_options(request: Request) -> Response:
    state, _, model_id = _caller(request)
    return JSONResponse(
        {
            "sd_model_checkpoint": model_id,
            "sd_checkpoint_hash": await short_hash(state, model_id),
            "samples_format": "png",
        }
    )


@_route("POST", "/options")
async def _set_options(request: Request) -> Response:
    state, caller, _ = _caller(request)
    name = a1111.parse_options(await request.body())
    if name is not None:
        caller.model = await checkpoint(state, name, "sd_model_checkpoint", caller.id)
    return JSONResponse(None)


@_route("GET", "/samplers")
async def _samplers(request: Request) -> Response:
    state, _, model_id = _caller(request)
    try:
        spec = (await state.images.describe(model_id)).spec
    except ImagineError:
        spec = None
    return JSONResponse(a1111.samplers(spec))


@_route("GET", "/schedulers")
async def _schedulers(request: Request) -> Response:
    _who(request, _state(request))
    return JSONResponse(a1111.schedulers())


@_route("GET", "/scripts")
async def _scripts(request: Request) -> Response:
    _who(request, _state(request))
    return JSONResponse({"txt2img": [], "img2img": []})


# --- txt2img, progress, interrupt


@_route("POST", "/txt2img")
async def _txt2img(request: Request) -> Response:
    state, caller, model_id = _caller(request)
    resolved: list[str] = []  # the model id once known, for the request metrics
    status = 500
    try:
        response = await _txt2img_for(request, state, caller, model_id, resolved)
        status = response.status_code
        return response
    except ImagineError as exc:
        status = status_for(exc)
        raise
    except ClientDisconnect:
        status = 499
        raise
    finally:
        record_request(state, resolved[0] if resolved else None, status)


async def _txt2img_for(
    request: Request, state: ServerState, caller: Caller, model_id: str, resolved: list[str]
) -> Response:
    parsed = a1111.parse_txt2img(await request.body())
    if parsed.checkpoint is not None:
        field = "override_settings.sd_model_checkpoint"
        model_id = await checkpoint(state, parsed.checkpoint, field, caller.id)
    info = await state.images.describe(model_id, client_id=caller.id)
    resolved.append(info.model_id)
    scheduler = a1111.scheduler_for(parsed.sampler, parsed.scheduler, info.spec)
    try:
        first = await state.images.validate(
            info.model_id, parsed.prompt, parsed.canonical(scheduler), info=info
        )
    except InvalidRequest as exc:
        raise a1111.client_field(exc, parsed) from None
    requests = consecutive_seeds(first, parsed.n)
    run = Run(count=parsed.n)
    caller.runs.append(run)
    try:
        images = await unless_disconnected(
            request, _generate(state, requests, run, client_id=caller.id)
        )
    finally:
        caller.runs.remove(run)
    if images is None:
        return Response(status_code=499)
    made = [(r, image) for r, image in zip(requests, images, strict=True) if image]
    when = time.strftime("%Y%m%d%H%M%S", time.localtime(run.started))
    short = info.revision[:10] or None
    return JSONResponse(
        {
            "images": [base64.b64encode(i.body).decode() for _, i in made]
            if parsed.send_images
            else [],
            "parameters": parsed.parameters,
            "info": a1111.render_info(
                parsed, first, [r for r, _ in made], info.model_id, short, when
            ),
        }
    )


async def _generate(
    state: ServerState, requests: list[GenerationRequest], run: Run, *, client_id: str
) -> list[EncodedImage | None]:
    """Each image from the cache, else from one engine job; all jobs are submitted at once (the
    engine batches them). After an interrupt: the images done so far, None for the others."""
    images = state.images
    out: list[EncodedImage | None] = list(
        await asyncio.gather(*(images.cached(r) for r in requests))
    )
    run.ready = sum(1 for image in out if image is not None)
    if run.interrupted:
        return out
    tasks: dict[int, asyncio.Future[EncodedImage]] = {}
    try:
        for i, request in enumerate(requests):
            if out[i] is None:
                job = images.submit(
                    request, client_id=client_id, wait_for_model=True, previews=True
                )
                run.jobs.append(job)
                tasks[i] = asyncio.ensure_future(images.finish(job))
        if tasks:
            await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
            if run.interrupted:  # its jobs are canceled: they settle at once
                await asyncio.wait(tasks.values())
        for i, task in tasks.items():
            if not task.done():
                continue
            error = task.exception()
            if error is None:
                out[i] = task.result()
            elif not (run.interrupted and isinstance(error, Canceled)):
                raise error
        return out
    finally:
        for job in run.jobs:  # a failure, or the client gone: the rest is not wanted
            job.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


@_route("GET", "/progress")
async def _progress(request: Request) -> Response:
    state = _state(request)
    caller = _callers(request).peek(_who(request, state))
    runs = caller.runs if caller is not None else []
    skip_image = request.query_params.get("skip_current_image", "").lower() in ("true", "1")
    if not runs:
        return JSONResponse(a1111.progress_body())
    jobs = [job for run in runs for job in run.jobs]
    count = sum(run.count for run in runs)
    ready = sum(run.ready for run in runs)
    snaps = [job.snapshot for job in jobs]
    finished = sum(1 for s in snaps if s.state.terminal)
    done = ready + sum(
        1.0 if s.state.terminal else s.step / s.total if s.total else 0.0 for s in snaps
    )
    running = next((s for s in snaps if not s.state.terminal and s.total), None)
    preview = next((s.preview for s in reversed(snaps) if s.preview), None)
    return JSONResponse(
        a1111.progress_body(
            fraction=done / count,
            eta_s=max((s.eta_s or 0.0 for s in snaps if not s.state.terminal), default=0.0),
            job_count=count,
            job_no=ready + finished,
            step=running.step if running else 0,
            steps=running.total if running else 0,
            started=runs[0].started,
            interrupted=any(run.interrupted for run in runs),
            image=None if skip_image else preview,
        )
    )


@_route("POST", "/interrupt")
async def _interrupt(request: Request) -> Response:
    state = _state(request)
    caller = _callers(request).peek(_who(request, state))
    for run in caller.runs if caller is not None else []:
        run.interrupted = True
        for job in run.jobs:
            job.cancel()
    return JSONResponse({})
